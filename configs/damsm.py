"""DAMSM pretraining presets: ``configs/damsm.py:<dataset>[,<size>]``.

One config per dataset preset (``bird``, ``coco``, ``shapes``), optionally
shrunk by a size preset (``tiny``)::

  python main.py --config=configs/damsm.py:bird --workdir=/ckpt/damsm_bird \
      --config.data.data_dir=/data/birds
  python main.py --config=configs/damsm.py:shapes --workdir=/tmp/damsm_shapes

``DATA`` holds what a dataset preset shares with the GAN presets of
``configs/gan.py`` (a GAN must read the captions its DAMSM was trained on and
use its encoders); ``SCHEDULES`` holds the pretraining run itself. Adding a
dataset adds one entry to each (plus its GAN preset in configs/gan.py).
"""

import ml_collections

from configs import base

# Dataset presets: the data set and its caption lengths (SPEC.md section 3),
# and for shapes the DAMSM's small image encoder. Shared by configs/gan.py.
DATA = {
    # CUB-200-2011 birds (AttnGAN cfg/DAMSM/bird.yml).
    "bird": {
        "data.name": "birds",
        "data.captions_per_image": 10,
        "data.words_num": 18,         # WORDS_NUM in GAN training
        "data.eval_words_num": 25,    # WORDS_NUM in evaluation (a quirk)
        "damsm.words_num": 18,        # WORDS_NUM in pretraining
    },
    # MS-COCO 2014 (AttnGAN cfg/DAMSM/coco.yml).
    "coco": {
        "data.name": "coco",
        "data.captions_per_image": 5,
        "data.words_num": 12,
        "data.eval_words_num": 20,
        "damsm.words_num": 15,
    },
    # The embedded procedural shapes dataset (no download). Learnable on a
    # 2-core CPU in minutes: 64 px images, the small CNN image backbone
    # (trained, since no ImageNet weights exist for it) instead of the frozen
    # Inception-v3 of the reference.
    "shapes": {
        "data.name": "shapes",
        "data.captions_per_image": 7,
        "data.words_num": 16,
        "data.eval_words_num": 20,
        "damsm.words_num": 16,
        "damsm.image_size": 64,
        "image_encoder.backbone": "small",
        "image_encoder.input_size": 64,
        "image_encoder.small_width": 32,
        "image_encoder.train_trunk": True,
    },
}

# The pretraining run of each dataset preset.
SCHEDULES = {
    "bird": {
        "damsm.batch_size": 48,
        "damsm.epochs": 600,
        "damsm.snapshot_interval": 50,
    },
    "coco": {
        "damsm.batch_size": 48,
        "damsm.epochs": 600,
        "damsm.snapshot_interval": 5,
    },
    "shapes": {
        "damsm.batch_size": 48,
        "damsm.epochs": 12,
        "damsm.snapshot_interval": 4,
        "damsm.eval_batches": 10,
        "log_every_steps": 20,
        "checkpoint_every_steps": 200,
    },
}

# The groups of a variant of this file, in the order they are applied.
GROUPS = {"dataset": DATA, "size": base.SIZES}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The DAMSM config of ``arg`` = ``'<dataset>[,<size>]'``."""
  chosen = base.parse_variant(arg, GROUPS, file="configs/damsm.py",
                              required=("dataset",))
  c = base.get_config()
  c.job = "pretrain_damsm"
  base.override(c, DATA[chosen["dataset"]])
  base.override(c, SCHEDULES[chosen["dataset"]])
  return base.apply_variant(c, chosen["size"])
