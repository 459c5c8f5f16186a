"""GAN presets: ``configs/gan.py:<family>,<dataset>[,<size>]``.

A generator family (``dmgan``, ``ffgan``, ``attngan``, ``dfgan``), a dataset (``bird``,
``coco``, ``shapes``) and optionally a size (``tiny``: shrunk models for tests
and smoke runs; the data stays)::

  python main.py --config=configs/gan.py:dmgan,bird --workdir=/ckpt/dmgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
  python main.py --config=configs/gan.py:ffgan,shapes,tiny --workdir=/tmp/ff

The three families share DM-GAN's discriminators, losses, schedule and widths
and differ in the refinement stage (``model.refiner``), so they compare on
equal footing. ``attngan`` is AttnGAN's refinement stage, not AttnGAN's own
recipe (its discriminators use BatchNorm instead of SN and its widths and
batch sizes differ). ``dfgan`` is another architecture
(``model.architecture='dfgan'``, SPEC-dfgan) with its own official recipe
(``FAMILIES['dfgan']``); it shares the data, the frozen DAMSM and the
evaluation. The files ``configs/<family>_<dataset>.py`` are aliases of these
presets.
"""

import ml_collections

from configs import base
from configs import damsm

# Family presets: the refinement stage (t2igan_jax/models/families.py).
FAMILIES = {
    "dmgan": {"model.refiner": "memory"},       # DM-GAN dynamic memory
    "ffgan": {"model.refiner": "ffblock"},      # FF-GAN FF-Block + GSR
    "attngan": {"model.refiner": "attention"},  # AttnGAN word attention
    # DF-GAN (tobran/DF-GAN at HEAD 78f14fd: code/cfg/bird.yml, coco.yml,
    # code/src/train.py, code/lib/perpare.py): NetG(nf, z_dim, cond_dim,
    # imsize), NetD(nf, imsize), NetC(nf, cond_dim) with nf = model.ngf (for
    # all three; model.ndf is not read), cond_dim = the DAMSM sentence vector
    # (text_encoder.embedding_dim, 256), imsize = data.base_size (one stage).
    # The optimisers are hard-coded in train.py: G Adam(1e-4, (0, 0.9)),
    # D+C Adam(4e-4, (0, 0.9)); batch 32 per GPU (scripts/train.sh). No EMA
    # (samples the raw G). Sampling and evaluation draw z with
    # truncated_noise(trunc_rate): 0.88 in bird.yml at HEAD (an older
    # bird.yml had 0.86). Fields of the stacked architecture are ignored by
    # it: model.refiner, r_num, condition_dim, memory_dim, ndf, the attention
    # / SN / BN / CA quirk flags, gan.lambda_damsm, kl_reduction, bce,
    # wrong_pair, ema_decay, ema_debias; dtype and remat (it runs in float32).
    "dfgan": {
        "model.architecture": "dfgan",
        "model.ngf": 32,             # nf
        "model.ndf": 32,             # (= nf; not read by DF-GAN)
        "model.z_dim": 100,
        "data.base_size": 256,       # imsize
        "data.branch_num": 1,
        "gan.batch_size": 32,
        "gan.g_lr": 1e-4,
        "gan.d_lr": 4e-4,
        "gan.beta1": 0.0,
        "gan.beta2": 0.9,
        "sample.weights": "raw",
        "sample.truncation": 0.88,
    },
}

# Dataset presets: the DAMSM's data (configs/damsm.py:DATA) and the GAN
# recipe of the reference YAMLs (DM-GAN code/cfg/<dataset>_DMGAN.yml).
DATASETS = {
    "bird": {
        **damsm.DATA["bird"],
        "model.r_num": 2,             # ResBlocks per refinement stage
        "gan.batch_size": 10,
        "gan.epochs": 800,
        "gan.lambda_damsm": 5.0,
        "gan.snapshot_interval": 25,  # epochs
    },
    "coco": {
        **damsm.DATA["coco"],
        "model.r_num": 3,
        "gan.batch_size": 16,
        "gan.epochs": 200,
        "gan.lambda_damsm": 50.0,
        "gan.snapshot_interval": 5,
    },
    # The whole pipeline on a CPU: without gan.damsm_dir the command first
    # pretrains a DAMSM into workdir/damsm (configs/damsm.py:shapes, 8
    # epochs), then trains a two-stage (32, 64 px) GAN with reduced widths
    # for 16 epochs (4,000 steps) or until the 28-minute budget is spent
    # (docs/results.md, "DM-GAN on shapes in 30 CPU minutes").
    "shapes": {
        **damsm.DATA["shapes"],
        **damsm.SCHEDULES["shapes"],
        "gan.pretrain_damsm_if_missing": True,
        # One large centred object per image (input_pipeline/shapes.py):
        # shapes form within the 30-minute budget; on the default 'full'
        # scenes this config learns the colours but not the shapes.
        "data.shapes_scenes": "single",
        "data.base_size": 32,
        "data.branch_num": 2,
        # The reference's rolled word mask (SPEC §4.1) gives pixel q of every
        # image the mask of caption q mod B. Here B = 16 divides the 32 x 32
        # = 1,024 attention positions, so each image column x sees only the
        # words of caption x mod 16 of the length-sorted batch: the shapes
        # captions run from 2 to 16 words, so most columns cannot see the
        # colour or kind words. The demo uses each caption's own mask
        # (reference behaviour: --config.model.attn_mask_mode=rolled).
        "model.attn_mask_mode": "per_caption",
        "damsm.epochs": 8,   # test retrieval top-1 ~80% (single scenes), ~5 min
        "model.ngf": 16,
        "model.ndf": 16,
        "model.r_num": 1,
        "gan.batch_size": 16,
        "gan.epochs": 16,
        # ... or 28 minutes for the whole command, whichever comes first: the
        # DAMSM pretraining gets up to a quarter of it (7 min; 8 epochs take
        # ~5-6 min on a quiet 2-core CPU), the GAN loop the rest (23 min after
        # a 5-minute DAMSM: 4,000 steps at 3.5 steps/s, ~3,400 at 2.5
        # steps/s). Each loop checkpoints where it stops; running the command
        # again resumes. With set-up and the last images the command ends
        # within 30 minutes.
        "max_train_seconds": 28 * 60.0,
        "gan.damsm_budget_share": 0.25,
        "gan.lambda_damsm": 5.0,
        # Short runs: sample the bias-corrected EMA (the reference's plain
        # EMA still weighs the untrained G by 0.999^t;
        # --config.gan.ema_debias=False).
        "gan.ema_debias": True,
        "gan.snapshot_interval": 5,
        "log_every_steps": 25,
        "image_every_steps": 250,
        "checkpoint_every_steps": 250,
        # Evaluation sized for a CPU: 2,000 samples (not the papers' 30,000;
        # FID is biased upwards at small N, so compare only runs with equal
        # N), the training batch (with attn_mask_mode=rolled the samples
        # depend on it), FID against the 1,000 real test images, IS with the
        # project's classifier.
        "eval.num_samples": 2000,
        "eval.batch_size": 16,
        "eval.is_protocol": "shapes",
    },
}

# A family's own value on one dataset: FF-GAN's bird YAML differs from
# DM-GAN's only in the batch size (4, the author's local run; SPEC-ffgan §5).
FAMILY_ON_DATASET = {
    ("ffgan", "bird"): {"gan.batch_size": 4},
    # DF-GAN's YAMLs at HEAD: max_epoch 1301 (bird) / 301 (coco), i.e.
    # epochs 1..1300 / 1..300 (range(1, max_epoch)); save_interval 10 epochs.
    # NOT checked against the file: the only copy readable here is an older
    # commit (3856ede: MAX_EPOCH 601 / 121, batch 24); check HEAD's YAMLs
    # before comparing schedules.
    ("dfgan", "bird"): {"gan.epochs": 1300, "gan.snapshot_interval": 10},
    ("dfgan", "coco"): {"gan.epochs": 300, "gan.snapshot_interval": 10},
    # Shapes: the bird recipe at the shapes data's 64 px (4 G blocks, 5 D
    # blocks); the run length and budget of the shapes preset (as DM-GAN's).
    ("dfgan", "shapes"): {"data.base_size": 64},
}

# A family's own value at a size preset (applied after it).
FAMILY_ON_SIZE = {
    ("dfgan", "tiny"): {"data.branch_num": 1},   # one 32 px stage
}

# The groups of a variant of this file, in the order they are applied.
GROUPS = {"family": FAMILIES, "dataset": DATASETS, "size": base.SIZES}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The GAN config of ``arg`` = ``'<family>,<dataset>[,<size>]'``."""
  chosen = base.parse_variant(arg, GROUPS, file="configs/gan.py",
                              required=("family", "dataset"))
  family, dataset = chosen["family"], chosen["dataset"]
  c = base.get_config()
  c.job = "train_gan"
  base.override(c, DATASETS[dataset])
  base.override(c, FAMILIES[family])
  base.override(c, FAMILY_ON_DATASET.get((family, dataset), {}))
  c = base.apply_variant(c, chosen["size"])
  return base.override(c, FAMILY_ON_SIZE.get((family, chosen["size"]), {}))

