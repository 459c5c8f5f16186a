"""Validates a config before anything is built, naming the bad field."""

import ml_collections

from t2igan_jax.errors import ConfigError

JOBS = ("pretrain_damsm", "train_gan", "evaluate", "sample")

# field path -> allowed values (reference behaviour listed first).
CHOICES = {
    "job": JOBS,
    "on_nonfinite": ("stop", "skip"),
    "dtype": ("auto", "float32", "bfloat16"),
    "remat": ("none", "last_stage", "refiners"),
    "data.name": ("shapes", "birds", "coco"),
    "data.caption_truncation": ("random_subset", "prefix"),
    "data.source": ("attngan", "coco_json", "tfds"),
    "data.on_bad_example": ("error", "skip"),
    "data.shapes_scenes": ("full", "single"),
    "image_encoder.backbone": ("inception", "small"),
    "damsm.word_score": ("code", "paper"),
    "model.refiner": ("memory", "ffblock", "attention"),
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
    "eval.is_protocol": ("auto", "shapes", "cub", "coco", "none"),
    "eval.rprec_fold_slice": ("full", "reference"),
    "eval.png_quantization": ("truncate", "round"),
    "sample.weights": ("ema", "raw"),
}

POSITIVE_INTS = (
    "data.captions_per_image", "data.words_num", "data.eval_words_num",
    "data.base_size", "data.branch_num", "data.shapes_num_train",
    "data.shapes_num_test", "text_encoder.embedding_dim", "text_encoder.word_dim",
    "image_encoder.input_size", "damsm.batch_size", "damsm.epochs",
    "damsm.words_num", "damsm.image_size", "damsm.eval_batches",
    "damsm.retrieval_candidates", "model.ngf", "model.ndf", "model.z_dim",
    "model.condition_dim", "model.r_num", "gan.batch_size", "gan.epochs",
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "eval.num_samples", "eval.batch_size", "eval.fid_batch_size",
    "eval.is_splits", "eval.rprec_candidates", "eval.rprec_folds",
    "eval.classifier_steps", "eval.classifier_batch_size",
    "eval.classifier_width", "eval.classifier_input_size",
    "eval.classifier_num_train", "sample.num_per_caption",
)


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


def _check_schema(config, base, prefix: str = "") -> None:
  """Every field of ``config`` exists in ``base`` with a compatible type.

  An int is accepted where the base has a float, a list where it has a
  tuple; a ``None`` default accepts anything.
  """
  for key in config.keys():
    path = f"{prefix}{key}"
    value = config[key]
    if key not in base:
      raise ConfigError(
          f"config.{path} is not a known field (fields are defined in "
          "configs/base.py; check the spelling)")
    ref = base[key]
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


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field with a bad value."""
  from configs import base  # pylint: disable=g-import-not-at-top
  _check_schema(config, base.get_config())
  for path, allowed in CHOICES.items():
    value = _get(config, path)
    if value not in allowed:
      raise ConfigError(f"config.{path}={value!r} is not one of {allowed}")
  for path in POSITIVE_INTS:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.{path}={value!r} must be a positive integer")
  if (config.data.name != "shapes" and config.data.source != "tfds"
      and not config.data.data_dir):
    raise ConfigError(
        f"config.data.data_dir is empty: dataset {config.data.name!r} needs the "
        "directory holding its AttnGAN-layout data")
  if config.data.name == "shapes" and config.data.captions_per_image > 10:
    raise ConfigError("config.data.captions_per_image must be <= 10 for the "
                      "embedded shapes dataset")
  for path in ("damsm.lr", "damsm.lr_decay", "damsm.lr_floor_div", "gan.g_lr",
               "gan.d_lr", "gan.ema_decay", "damsm.gamma1", "damsm.gamma2",
               "damsm.gamma3"):
    value = _get(config, path)
    if not isinstance(value, (int, float)) or value <= 0:
      raise ConfigError(f"config.{path}={value!r} must be a positive number")
  if not 0 < config.gan.ema_decay < 1:
    raise ConfigError(f"config.gan.ema_decay={config.gan.ema_decay} must be in (0, 1)")
  _validate_reliability(config)


def _validate_reliability(config) -> None:
  """Stage sizes, workdir, multi-host and non-finite handling fields."""
  if config.job != "pretrain_damsm":
    _check_stage_sizes(config)
  if config.max_train_seconds < 0:
    raise ConfigError(f"config.max_train_seconds={config.max_train_seconds} "
                      "must be >= 0 (0: no time budget)")
  if config.min_free_disk_gb < 0:
    raise ConfigError(f"config.min_free_disk_gb={config.min_free_disk_gb} "
                      "must be >= 0")
  if not config.step_log or "/" in config.step_log:
    raise ConfigError(f"config.step_log={config.step_log!r} must be a file "
                      "name (written inside the workdir)")
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
