"""Validates a config before anything is built, naming the bad field."""

import ml_collections

from t2igan_jax.errors import ConfigError

JOBS = ("pretrain_damsm", "train_gan", "evaluate", "sample")

# field path -> allowed values (reference behaviour listed first).
CHOICES = {
    "job": JOBS,
    "data.name": ("shapes", "birds", "coco"),
    "data.caption_truncation": ("random_subset", "prefix"),
    "image_encoder.backbone": ("inception", "small"),
    "damsm.word_score": ("code", "paper"),
    "model.refiner": ("memory", "ffblock", "attention"),
    "model.attn_mask_mode": ("rolled", "per_caption"),
    "model.word_axis_length": ("batch_max", "words_num"),
    "model.ffgan_word_mask": ("none", "padding"),
    "model.sn_update": ("every_call", "d_step_only"),
    "model.bn_running_var": ("unbiased", "biased"),
    "gan.kl_reduction": ("mean", "sum"),
    "gan.bce": ("torch_clamped", "logits"),
    "gan.wrong_pair": ("shift", "other_class"),
    "gan.snapshot_bn_stats": ("live",),  # 'recompute' not implemented yet
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
)


def _get(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path} is missing (the config must build on "
                        "configs/base.py)")
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field with a bad value."""
  for path, allowed in CHOICES.items():
    value = _get(config, path)
    if value not in allowed:
      raise ConfigError(f"config.{path}={value!r} is not one of {allowed}")
  for path in POSITIVE_INTS:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.{path}={value!r} must be a positive integer")
  if config.data.name != "shapes" and not config.data.data_dir:
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
