"""One importable function per job; ``run`` dispatches on ``config.job``.

Colab, tests and ``main.py`` all call these:

  from t2igan_jax import train
  train.run(config, workdir)                 # whatever config.job says
  train.pretrain_damsm(config, workdir)      # DAMSM encoders
"""

import logging
import os

import jax
import ml_collections

from t2igan_jax import config_validation
from t2igan_jax import sharding


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of orbax (a line per save thread); keeps warnings."""

  def filter(self, record):
    return record.levelno > logging.INFO or "/orbax/" not in record.pathname


def _setup(config: ml_collections.ConfigDict, workdir: str) -> None:
  config_validation.validate(config)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
      handler.addFilter(_QuietLibraries())
  if config.distributed:
    jax.distributed.initialize()
  logging.info("t2igan-jax job %s, workdir %s", config.job, workdir)
  logging.info("topology: %s", sharding.describe_topology())
  os.makedirs(workdir, exist_ok=True)


def pretrain_damsm(config: ml_collections.ConfigDict, workdir: str):
  """Pretrains the DAMSM text and image encoders (config.job='pretrain_damsm')."""
  from t2igan_jax import damsm_pretrain  # pylint: disable=g-import-not-at-top
  return damsm_pretrain.pretrain(config, workdir)


def train_gan(config: ml_collections.ConfigDict, workdir: str):
  """Trains the text-to-image GAN (config.job='train_gan')."""
  from t2igan_jax import gan_train  # pylint: disable=g-import-not-at-top
  return gan_train.train(config, workdir)


def _not_yet(job):
  def fn(config, workdir):
    del config, workdir
    raise NotImplementedError(
        f"config.job={job!r} is not implemented yet in t2igan-jax "
        "(evaluation and sampling arrive with a later release)")
  return fn


JOB_FUNCTIONS = {
    "pretrain_damsm": pretrain_damsm,
    "train_gan": train_gan,
    "evaluate": _not_yet("evaluate"),
    "sample": _not_yet("sample"),
}


def run(config: ml_collections.ConfigDict, workdir: str):
  """Validates the config, sets up the process and runs ``config.job``."""
  _setup(config, workdir)
  return JOB_FUNCTIONS[config.job](config, workdir)


# flax-examples style alias: the default job of a config.
train_and_evaluate = run
