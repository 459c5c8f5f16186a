"""DAMSM pretraining on the embedded procedural shapes dataset (no download).

Learnable on a 2-core CPU in minutes: 64 px images, the small CNN image
backbone (trained, since no ImageNet weights exist for it) instead of the
frozen Inception-v3 of the reference.

  python main.py --config=configs/damsm_shapes.py --workdir=/tmp/damsm_shapes
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.job = "pretrain_damsm"
  c.data.name = "shapes"
  c.data.captions_per_image = 7
  c.data.words_num = 16
  c.data.eval_words_num = 20
  c.image_encoder.backbone = "small"
  c.image_encoder.input_size = 64
  c.image_encoder.small_width = 32
  c.image_encoder.train_trunk = True
  c.damsm.image_size = 64
  c.damsm.words_num = 16
  c.damsm.batch_size = 48
  c.damsm.epochs = 12
  c.damsm.snapshot_interval = 4
  c.damsm.eval_batches = 10
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  return base.apply_variant(c, arg)
