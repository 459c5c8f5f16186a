"""Validates a config before anything is built, naming the bad field.

Every field of ``configs/base.py`` is classified in one of the tables below
(``CHOICES``, ``RANGES``, ``FILE_NAMES``, ``INPUT_PATHS``, ``FREE_TEXT``) or
is a bool; tests/test_cli.py checks that no field is left out. The allowed
jobs, datasets, sources and refiner families are read from where they are
defined (``configs/base.py:JOB_DESCRIPTIONS``,
``input_pipeline/datasets.py``, ``t2igan_jax/models/families.py``); none of
these imports JAX.
"""

import math
import os
from typing import Any, Callable, NamedTuple

import ml_collections

from configs import base
from input_pipeline import datasets
from t2igan_jax.errors import ConfigError
from t2igan_jax.models import families

JOBS = base.JOBS  # the one list of jobs

# field path -> allowed values (reference behaviour listed first).
CHOICES = {
    "job": JOBS,
    "on_nonfinite": ("stop", "skip"),
    "dtype": ("auto", "float32", "bfloat16"),
    "remat": ("none", "last_stage", "refiners"),
    "data.name": tuple(datasets.DATASETS),
    "data.caption_truncation": ("random_subset", "prefix"),
    "data.source": tuple(datasets.SOURCES),
    "data.on_bad_example": ("error", "skip"),
    "data.shapes_scenes": ("full", "single"),
    "image_encoder.backbone": ("inception", "small"),
    "damsm.word_score": ("code", "paper"),
    "model.architecture": tuple(families.ARCHITECTURES),
    "model.refiner": tuple(families.REFINER_FAMILIES),
    "model.attn_mask_mode": ("rolled", "per_caption"),
    "model.word_axis_length": ("batch_max", "words_num"),
    "model.ffgan_word_mask": ("none", "padding"),
    "model.sn_update": ("every_call", "d_step_only"),
    "model.bn_running_var": ("unbiased", "biased"),
    "model.conv_weight_grad": ("auto", "xla", "per_tap"),
    "model.small_map_conv": ("auto", "xla", "matmul"),
    "gan.kl_reduction": ("mean", "sum"),
    "gan.bce": ("torch_clamped", "logits"),
    "gan.wrong_pair": ("shift", "other_class"),
    "gan.snapshot_bn_stats": ("live",),  # 'recompute' not implemented yet
    "eval.is_protocol": ("auto",) + datasets.IS_PROTOCOLS,
    "eval.rprec_fold_slice": ("full", "reference"),
    "eval.png_quantization": ("truncate", "round"),
    "sample.weights": ("ema", "raw", "ema_debiased"),
}

class Rule(NamedTuple):
  """A constraint on a number: ``test(value)`` holds; ``expected`` says it."""
  test: Callable[[Any], bool]
  expected: str


def _finite(v) -> bool:
  return math.isfinite(v)


POSITIVE = Rule(lambda v: v > 0, "a positive integer")
NON_NEGATIVE = Rule(lambda v: v >= 0, "an integer >= 0")
EVEN_POSITIVE = Rule(lambda v: v > 0 and v % 2 == 0,
                     "a positive even integer (half per RNN direction)")
STEP_OR_LATEST = Rule(lambda v: v == -1 or v > 0,
                      "-1 (the latest checkpoint) or a step > 0")
STEP_OR_OFF = Rule(lambda v: v == -1 or v > 0, "-1 (off) or a step > 0")
RATE = Rule(lambda v: _finite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE_NUMBER = Rule(lambda v: _finite(v) and v >= 0,
                           "a finite number >= 0")
AT_LEAST_ONE = Rule(lambda v: _finite(v) and v >= 1, "a finite number >= 1")
OPEN_UNIT = Rule(lambda v: 0 < v < 1, "in (0, 1)")
BETA = Rule(lambda v: 0 <= v < 1, "in [0, 1) (an Adam beta)")
DROPOUT = Rule(lambda v: 0 <= v < 1, "in [0, 1) (a dropout rate)")

# Every int and float field: field path -> rule.
RANGES = {
    "seed": NON_NEGATIVE,
    "num_processes": NON_NEGATIVE,          # 0: auto-detect
    "process_id": Rule(lambda v: v >= -1, "-1 (auto-detect) or an index >= 0"),
    "num_devices": NON_NEGATIVE,            # 0: all devices
    "data.captions_per_image": POSITIVE,
    "data.words_num": POSITIVE,
    "data.eval_words_num": POSITIVE,
    "data.base_size": POSITIVE,
    "data.branch_num": POSITIVE,
    "data.num_workers": NON_NEGATIVE,
    "data.shapes_num_train": POSITIVE,
    "data.shapes_num_test": POSITIVE,
    "data.shapes_seed": NON_NEGATIVE,
    "text_encoder.embedding_dim": EVEN_POSITIVE,
    "text_encoder.word_dim": POSITIVE,
    "text_encoder.dropout": DROPOUT,
    "image_encoder.input_size": POSITIVE,
    "image_encoder.small_width": POSITIVE,
    "damsm.gamma1": RATE,
    "damsm.gamma2": RATE,
    "damsm.gamma3": RATE,
    "damsm.batch_size": POSITIVE,
    "damsm.epochs": POSITIVE,
    "damsm.words_num": POSITIVE,
    "damsm.image_size": POSITIVE,
    "damsm.lr": RATE,
    "damsm.lr_decay": OPEN_UNIT,
    "damsm.lr_floor_div": AT_LEAST_ONE,
    "damsm.rnn_grad_clip": RATE,
    "damsm.snapshot_interval": POSITIVE,    # epochs
    "damsm.eval_batches": POSITIVE,
    "damsm.eval_every_epochs": POSITIVE,
    "damsm.retrieval_candidates": POSITIVE,
    "model.ngf": POSITIVE,
    "model.ndf": POSITIVE,
    "model.z_dim": POSITIVE,
    "model.condition_dim": POSITIVE,
    "model.r_num": POSITIVE,
    "model.memory_dim": POSITIVE,
    "gan.batch_size": POSITIVE,
    "gan.epochs": POSITIVE,
    "gan.g_lr": RATE,
    "gan.d_lr": RATE,
    "gan.beta1": BETA,
    "gan.beta2": BETA,
    "gan.lambda_damsm": NON_NEGATIVE_NUMBER,
    "gan.ema_decay": OPEN_UNIT,
    "gan.snapshot_interval": POSITIVE,      # epochs
    "gan.damsm_step": Rule(lambda v: v >= -1, "-1 (the newest step of "
                           "gan.damsm_dir) or a checkpoint step >= 0"),
    "eval.num_samples": POSITIVE,
    "eval.batch_size": POSITIVE,
    "eval.seed": NON_NEGATIVE,
    "eval.step": STEP_OR_LATEST,
    "eval.fid_batch_size": POSITIVE,
    "eval.is_splits": POSITIVE,
    "eval.rprec_candidates": POSITIVE,
    "eval.rprec_folds": POSITIVE,
    "eval.watch_timeout_s": RATE,
    "eval.watch_poll_s": RATE,
    "eval.classifier_steps": POSITIVE,
    "eval.classifier_batch_size": POSITIVE,
    "eval.classifier_width": POSITIVE,
    "eval.classifier_input_size": POSITIVE,
    "eval.classifier_num_train": POSITIVE,
    "sample.num_per_caption": POSITIVE,
    "sample.checkpoint_step": STEP_OR_LATEST,
    "sample.seed": NON_NEGATIVE,
    "sample.truncation": Rule(lambda v: _finite(v) and v >= 0,
                              "0 (off) or the truncation rate > 0"),
    "sample.interpolate": Rule(lambda v: v == 0 or v >= 2,
                               "0 (off) or the images per row, >= 2"),
    "log_every_steps": POSITIVE,
    "image_every_steps": POSITIVE,
    "checkpoint_every_steps": POSITIVE,
    "keep_checkpoints": POSITIVE,
    "max_steps": Rule(lambda v: v == -1 or v > 0, "-1 (no limit) or > 0"),
    "max_train_seconds": NON_NEGATIVE_NUMBER,  # 0: no time budget
    "gan.damsm_budget_share": OPEN_UNIT,
    "min_free_disk_gb": NON_NEGATIVE_NUMBER,
    "debug_nonfinite_step": STEP_OR_OFF,
}

# Files the job writes, named relative to the workdir.
FILE_NAMES = ("metrics_json", "step_log")
# Names the project itself uses inside a workdir (not for FILE_NAMES).
_WORKDIR_NAMES = ("checkpoints", "damsm", "samples", "vocab.json",
                  "damsm_config.json", "shapes_classifier")

# Files or directories read late in a job ('' = unused / the default):
# path -> the jobs that read it, where a set local path must exist.
INPUT_PATHS = {
    "image_encoder.trunk_weights": ("pretrain_damsm", "train_gan"),
    "eval.fid_stats": ("evaluate",),
    "eval.fid_weights": ("evaluate",),
    "eval.is_weights": ("evaluate",),
}
# Paths the job checks itself at start, before compiling: the data sources
# (data.data_dir, data.tfds_data_dir), the DAMSM loader (gan.damsm_dir) and
# job=sample (sample.captions_file; sample.output_dir is created).
CHECKED_BY_JOB = ("data.data_dir", "data.tfds_data_dir", "gan.damsm_dir",
                  "sample.captions_file", "sample.output_dir")
# Strings without a fixed form.
FREE_TEXT = ("coordinator_address", "debug_nonfinite_term",
             "compilation_cache_dir")  # created by JAX where missing


def _get(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path} is missing (the config must build on "
                        "configs/base.py)")
    node = node[part]
  return node


def _type_name(value) -> str:
  return type(value).__name__


def _check_schema(config, reference, prefix: str = "") -> None:
  """Every field of ``config`` exists in ``base`` with a compatible type.

  An int is accepted where the base has a float, a list where it has a
  tuple; a ``None`` default accepts anything.
  """
  for key in config.keys():
    path = f"{prefix}{key}"
    value = config[key]
    if key not in reference:
      raise ConfigError(
          f"config.{path} is not a known field (fields are defined in "
          "configs/base.py; check the spelling)")
    ref = reference[key]
    if isinstance(ref, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config.{path} must be a section (a ConfigDict), "
                          f"got {_type_name(value)} {value!r}")
      _check_schema(value, ref, f"{path}.")
      continue
    if ref is None:
      continue
    if isinstance(ref, bool):
      ok = isinstance(value, bool)
    elif isinstance(ref, int):
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(ref, float):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(ref, (tuple, list)):
      ok = isinstance(value, (tuple, list))
    else:
      ok = isinstance(value, type(ref))
    if not ok:
      raise ConfigError(f"config.{path}={value!r} has type {_type_name(value)}"
                        f"; expected {_type_name(ref)} (like the default "
                        f"{ref!r} in configs/base.py)")


def _check_stage_sizes(config) -> None:
  """The GAN's first stage must be 4·2^n px with n >= 2 (16, 32, 64, ...).

  The initial stage upsamples a 4x4 map by 2 per block; discriminator k
  reduces its 2^k-times larger image by 2^(4+k) to a code of size_0/16.
  """
  d = config.data
  size = d.base_size
  n = size.bit_length() - 1
  if size < 16 or size % 16 or size != 2 ** n:
    sizes = tuple(size * 2**i for i in range(d.branch_num))
    raise ConfigError(
        f"config.data.base_size={size} with config.data.branch_num="
        f"{d.branch_num} gives stage sizes {sizes}, but the first stage must "
        "be a power of two >= 16 (16, 32, 64, ...): the generator upsamples "
        "4x4 by 2 per block and each discriminator reduces its image 16-fold "
        "and more")


def _check_ranges(config) -> None:
  """Every number against its rule in ``RANGES``."""
  for path, rule in RANGES.items():
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"config.{path}={value!r} must be a number")
    if not rule.test(value):
      raise ConfigError(f"config.{path}={value!r} must be {rule.expected}")


def _check_paths(config) -> None:
  """Output file names stay inside the workdir; set input paths exist."""
  for path in FILE_NAMES:
    name = _get(config, path)
    if (not name or name in (".", "..") or "/" in name or "\\" in name
        or name in _WORKDIR_NAMES):
      raise ConfigError(
          f"config.{path}={name!r} must be a plain file name, written inside "
          f"the workdir (no '/', not '.' or '..', not one of {_WORKDIR_NAMES})")
  names = [_get(config, p) for p in FILE_NAMES]
  if len(set(names)) < len(names):
    given = " and ".join(f"config.{p}={n!r}" for p, n in zip(FILE_NAMES, names))
    raise ConfigError(f"{given} must name different files")
  for path, jobs in INPUT_PATHS.items():
    value = _get(config, path)
    if path == "eval.is_weights" and _shapes_is_protocol(config):
      continue  # the shapes IS classifier is trained into that directory
    if (config.job in jobs and value and "://" not in value
        and not os.path.exists(value)):
      raise ConfigError(f"config.{path}={value!r}: no such file or directory")


def _shapes_is_protocol(config) -> bool:
  """True when IS uses the project's shapes classifier (made on first use)."""
  return datasets.resolve_is_protocol(
      config.data.name, config.eval.is_protocol) == "shapes"


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field with a bad value."""
  _check_schema(config, base.get_config())
  for path, allowed in CHOICES.items():
    value = _get(config, path)
    if value not in allowed:
      raise ConfigError(f"config.{path}={value!r} is not one of {allowed}")
  _check_ranges(config)
  _check_paths(config)
  _check_source(config.data)
  if config.data.name == "shapes" and config.data.captions_per_image > 10:
    raise ConfigError("config.data.captions_per_image must be <= 10 for the "
                      "embedded shapes dataset")
  _validate_reliability(config)


def _check_source(data) -> None:
  """The dataset comes from ``data.source``, whose directory is set; a
  generated dataset leaves ``data.source`` at its default (it reads none)."""
  try:
    source = datasets.source(data)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  default = base.get_config().data.source
  if source is None and data.source != default:
    raise ConfigError(
        f"config.data.source={data.source!r}: dataset {data.name!r} is "
        f"generated in memory and reads no source (leave config.data.source "
        f"at its default {default!r}, or choose a dataset of "
        f"{tuple(n for n, d in datasets.DATASETS.items() if d.sources)})")
  if source is not None and source.dir_required and not data[source.dir_field]:
    raise ConfigError(
        f"config.data.{source.dir_field} is empty: source {data.source!r} of "
        f"dataset {data.name!r} reads {source.reads} there")


def _check_dfgan(config) -> None:
  """DF-GAN is one stage of 2^n >= 32 px, without an EMA or skipped steps."""
  d = config.data
  if d.branch_num != 1 or d.base_size < 32:
    raise ConfigError(
        f"config.data.branch_num={d.branch_num}, config.data.base_size="
        f"{d.base_size}: model.architecture='dfgan' generates one stage, so "
        "branch_num must be 1 and base_size (its image size) a power of two "
        ">= 32")
  if config.sample.weights != "raw":
    raise ConfigError(
        f"config.sample.weights={config.sample.weights!r}: "
        "model.architecture='dfgan' keeps no EMA of G; use 'raw'")
  if config.on_nonfinite != "stop":
    raise ConfigError(
        f"config.on_nonfinite={config.on_nonfinite!r}: "
        "model.architecture='dfgan' supports only 'stop'")


def _validate_reliability(config) -> None:
  """Stage sizes, workdir, multi-host and non-finite handling fields."""
  if config.job != "pretrain_damsm":
    _check_stage_sizes(config)
    if config.model.architecture == "dfgan":
      _check_dfgan(config)
  explicit = {"coordinator_address": config.coordinator_address != "",
              "num_processes": config.num_processes != 0,
              "process_id": config.process_id != -1}
  if any(explicit.values()) and not config.distributed:
    name = next(k for k, v in explicit.items() if v)
    raise ConfigError(f"config.{name} is set but config.distributed is False; "
                      "set config.distributed=True for a multi-host run")
  if config.num_processes < 0 or config.process_id < -1 or (
      config.num_processes and config.process_id >= config.num_processes):
    raise ConfigError(
        f"config.process_id={config.process_id} must be in [0, "
        f"config.num_processes={config.num_processes}) (or -1 and 0: auto)")
  if config.debug_nonfinite_step > 0 and not config.debug_nonfinite_term:
    raise ConfigError("config.debug_nonfinite_step is set but "
                      "config.debug_nonfinite_term is empty")
