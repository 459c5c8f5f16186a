"""Errors of single bad examples, which ``on_bad_example='skip'`` may skip.

Everything else a reader finds wrong (a missing or foreign pickle, a malformed
annotation file, a wrong config) stops the run with ``ValueError`` /
``FileNotFoundError`` whatever ``config.data.on_bad_example`` says: there is
no example to skip, the data set itself is wrong.
"""

ON_BAD_EXAMPLE = ("error", "skip")


class BadExampleError(ValueError):
  """One example cannot be used (unreadable image, unusable captions).

  The message names the file and what is wrong with it.
  """


class MissingExampleFileError(FileNotFoundError, BadExampleError):
  """An example's image (or caption) file does not exist."""


def check_on_bad_example(value: str) -> str:
  """Returns ``value``; raises ValueError naming the config field if unknown."""
  if value not in ON_BAD_EXAMPLE:
    raise ValueError(f"config.data.on_bad_example must be one of "
                     f"{ON_BAD_EXAMPLE}, got {value!r}")
  return value


class DatasetError(ValueError):
  """Several problems of one data set, found by one check and listed together.

  Attributes:
    problems: the exceptions, one per problem; each message names the file
      (or config field), the count, the first keys and what would fix it.
  """

  def __init__(self, where: str, problems):
    self.problems = list(problems)
    lines = [f"{where}: {len(self.problems)} problems (the whole data set was "
             "checked; fix them all before the next run):"]
    lines += [f"  {j}. {e}" for j, e in enumerate(self.problems, 1)]
    super().__init__("\n".join(lines))


def flatten_problems(problems) -> list[Exception]:
  """``problems`` with each DatasetError expanded and repeats dropped."""
  out, seen = [], set()
  for e in problems:
    for p in (e.problems if isinstance(e, DatasetError) else [e]):
      if str(p) not in seen:
        seen.add(str(p))
        out.append(p)
  return out


def raise_problems(where: str, problems) -> None:
  """Raises nothing, the only problem (its own type), or one DatasetError."""
  problems = flatten_problems(problems)
  if len(problems) == 1:
    raise problems[0]
  if problems:
    raise DatasetError(where, problems)


def first_few(items, n: int = 3) -> str:
  """``'a', 'b', 'c' and 7 more``: the first ``n`` of ``items`` (repr)."""
  items = list(items)
  shown = ", ".join(repr(x) for x in items[:n])
  return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def skipped_summary(label: str, skipped, total: int) -> str:
  """One log line for the examples ``on_bad_example='skip'`` left out.

  ``skipped`` is a list of ``(key, reason)``; the line holds the count, the
  first keys and the first reason (every key's reason is logged at debug
  level where it is found).
  """
  keys = [k for k, _ in skipped]
  return (f"{label}: {len(skipped)} of {total} images skipped as bad examples "
          f"(config.data.on_bad_example=skip), e.g. {first_few(keys)}; first "
          f"reason: {skipped[0][1]} (each key at debug level)")
