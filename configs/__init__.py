"""Config files, each with ``get_config(arg)``.

``python main.py --config=configs/<name>.py[:<variant>]`` loads one: the
presets ``configs/gan.py:<family>,<dataset>[,<size>]`` and
``configs/damsm.py:<dataset>[,<size>]``, the per family x dataset aliases of
them (``configs/dmgan_bird.py[:tiny]``, ...). Every field and its default is
in ``configs/base.py``.
"""

import importlib
import os
import re

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
# Modules of this package that are not config files.
_NOT_CONFIGS = ("__init__.py", "base.py")
# Config files that need a variant: the one ``describe`` loads.
EXAMPLE_VARIANTS = {"gan": "dmgan,shapes", "damsm": "shapes"}


def config_names() -> list[str]:
  """The config files of this package (``dmgan_shapes``, ...), sorted."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and f not in _NOT_CONFIGS)


def config_paths() -> list[str]:
  """``configs/<name>.py`` for each config file, as --config takes them."""
  return [f"configs/{name}.py" for name in config_names()]


def describe(name: str) -> tuple[str, str]:
  """``(job, what it trains on)`` of config file ``name``: its default job and
  its docstring's first phrase (up to ':', '(' or '.')."""
  module = importlib.import_module(f"configs.{name}")
  doc = " ".join((module.__doc__ or "").split())
  variant = EXAMPLE_VARIANTS.get(name)
  config = module.get_config(variant) if variant else module.get_config()
  return config.job, re.split(r": | \(|\. |\.$", doc)[0]
