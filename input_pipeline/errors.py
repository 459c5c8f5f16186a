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
