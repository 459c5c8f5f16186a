"""Command-line discovery and one-line errors for ``main.py`` (no JAX).

``python main.py --help`` lists the jobs, the presets, the config files and
the reference-quirk fields, and how to print a config's fields (``usage``);
``--print_config`` prints them (``format_config``); a missing config file,
an unknown preset or a misspelt field is one line naming what exists.
"""

import difflib
import importlib.util
import os
from typing import Any, Iterator

import ml_collections

import configs
from configs import base
from configs import gan

HELP_ARGS = ("-h", "-help", "--help", "--helpshort", "-?")
# The section of the config each job reads most (ranks "did you mean").
_JOB_SECTION = {"pretrain_damsm": "damsm", "train_gan": "gan",
                "evaluate": "eval", "sample": "sample"}


def _presets() -> str:
  """The presets of configs/gan.py and configs/damsm.py, one group a line."""
  def group(presets, field):
    # (a family of another architecture names that instead of a refiner)
    return (f"{', '.join(presets)} ({field}: " + ", ".join(
        v.get(field) or f"model.architecture={v['model.architecture']}"
        for v in presets.values()) + ")")
  return (f"  family   {group(gan.FAMILIES, 'model.refiner')}\n"
          f"  dataset  {group(gan.DATASETS, 'data.name')}\n"
          f"  size     {', '.join(base.SIZES)} (small models and a short run "
          "for tests and smoke runs;\n           the data set stays)")


def _quirks() -> str:
  """The reference-quirk fields, wrapped at 78 columns."""
  lines, line = [], " "
  for path in base.QUIRK_FLAGS:
    if len(line) + len(path) + 2 > 78:
      lines.append(line.rstrip())
      line = " "
    line += f" {path},"
  return "\n".join(lines + [line.rstrip(",")])


def usage() -> str:
  """The text of ``python main.py --help``."""
  jobs = "\n".join(f"  {job:<15} {text}"
                   for job, text in base.JOB_DESCRIPTIONS.items())
  rows = []
  for name in configs.config_names():
    job, summary = configs.describe(name)
    rows.append(f"  configs/{name + '.py':<19} {job:<15} {summary}")
  variants = ", ".join(f":{v}" for v in base.SIZES)
  return f"""\
t2igan-jax: text-to-image GANs (DM-GAN, FF-GAN, AttnGAN) with DAMSM encoders.

usage:
  python main.py --config=configs/<name>.py[:<variant>] --workdir=DIR \\
      [--config.<field>=<value> ...]
  python main.py --config=configs/<name>.py[:<variant>] --print_config \\
      [--config.<field>=<value> ...]

flags:
  --config=FILE[:VARIANT]   a config file below; VARIANT: comma-separated
                            presets (configs/gan.py:dmgan,bird,tiny); the
                            other files take {variants} or nothing
  --workdir=DIR             checkpoints, TensorBoard events, metrics.json and
                            losses.jsonl; an existing run there resumes
  --config.<field>=<value>  override a field, e.g. --config.job=sample,
                            --config.gan.batch_size=16
  --print_config            print every field of the config (after the
                            overrides) with its value and exit
  --helpfull                every flag, including absl's and JAX's

jobs (--config.job=<job>; each config file sets its default):
{jobs}

presets (configs/gan.py:<family>,<dataset>[,<size>],
         configs/damsm.py:<dataset>[,<size>]):
{_presets()}

configs (default job, what it trains on; configs/<family>_<dataset>.py is
configs/gan.py:<family>,<dataset>, configs/damsm_<dataset>.py is
configs/damsm.py:<dataset>):
{chr(10).join(rows)}

reference quirks (defaults reproduce the official code; docs/ARCHITECTURE.md
section 4; --print_config marks them):
{_quirks()}

Every field, its default and what it means: configs/base.py. Example:
  python main.py --config=configs/dmgan_shapes.py --print_config
"""


def config_spec(argv: list[str]) -> str | None:
  """The value of ``--config`` in ``argv`` (``--config=X`` or ``--config X``)."""
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def missing_config_message(spec: str) -> str | None:
  """One line when the file of ``--config=spec`` does not exist, else None."""
  path = spec.split(":", 1)[0]
  if os.path.isfile(path):
    return None
  what = "is a directory" if os.path.isdir(path) else "does not exist"
  return (f"--config={spec}: {path} {what}; the config files are "
          f"{', '.join(configs.config_paths())} (python main.py --help "
          "describes them)")


def variant_error(exc: BaseException) -> base.UnknownVariantError | None:
  """The innermost UnknownVariantError behind ``exc`` (flag parsing wraps
  it, ml_collections in its own type with a traceback as message)."""
  found, seen = None, set()
  while exc is not None and id(exc) not in seen:
    if isinstance(exc, base.UnknownVariantError):
      found = exc
    seen.add(id(exc))
    exc = exc.__cause__ or exc.__context__
  return found


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``get_config(variant)`` of the file in ``spec`` (``path[:variant]``)."""
  path, *variant = spec.split(":", 1)
  module_spec = importlib.util.spec_from_file_location("t2igan_cli_config",
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*variant)


def flat_fields(config, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """``(dotted path, value)`` of every leaf field, in definition order."""
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from flat_fields(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _overrides(argv: list[str]) -> list[tuple[str, str]]:
  """``(field, argument)`` of each ``--config.<field>=...`` in ``argv``."""
  out = []
  for arg in argv:
    for start in ("--config.", "-config.", "--noconfig.", "-noconfig."):
      if arg.startswith(start):
        out.append((arg[len(start):].split("=", 1)[0], arg))
  return out


def suggestions(name: str, fields: list[str], job: str = "") -> list[str]:
  """Fields like ``name``: close whole paths, then close last components
  (``batchsize`` -> ``gan.batch_size``), the job's own section first."""
  leaf = name.rsplit(".", 1)[-1]
  scored = {}
  for field in fields:
    ratio = max(difflib.SequenceMatcher(None, name, field).ratio(),
                difflib.SequenceMatcher(None, leaf,
                                        field.rsplit(".", 1)[-1]).ratio())
    if ratio >= 0.8:
      scored[field] = ratio
  section = _JOB_SECTION.get(job, "")
  return sorted(scored, key=lambda f: (-round(scored[f], 2),
                                       f.split(".")[0] != section))[:4]


def unknown_field_message(spec: str, argv: list[str]) -> str | None:
  """One line naming the first override that is not a field, with the
  nearest fields; None when every override names a field."""
  try:
    config = load_config(spec)
  except Exception:  # pylint: disable=broad-except
    return None  # the caller reports the original error
  fields = [path for path, _ in flat_fields(config)]
  known = set(fields)
  for path in list(fields):  # a section may be overridden as a whole
    parts = path.split(".")
    known.update(".".join(parts[:i]) for i in range(1, len(parts)))
  for name, arg in _overrides(argv):
    if name in known:
      continue
    near = suggestions(name, fields, config.get("job", ""))
    hint = (f"; did you mean {' or '.join(near)}?" if near else
            "; fields are defined in configs/base.py")
    return (f"unknown config field {name!r} ({arg}){hint} (python main.py "
            f"--config={spec} --print_config lists every field)")
  return None


def format_config(config: ml_collections.ConfigDict, spec: str) -> str:
  """Every field as ``path = value``, noting defaults that differ from
  configs/base.py."""
  defaults = dict(flat_fields(base.get_config()))
  lines = [f"# --config={spec}: every field (override with "
           "--config.<field>=<value>; meanings in configs/base.py)"]
  for path, value in flat_fields(config):
    notes = []
    if path in defaults and defaults[path] != value:
      notes.append(f"configs/base.py: {defaults[path]!r}")
    if path in base.QUIRK_FLAGS:
      notes.append("reference quirk")
    lines.append(f"{path} = {value!r}" + (f"  # {'; '.join(notes)}"
                                          if notes else ""))
  return "\n".join(lines)
