"""DAMSM pretraining on CUB-200-2011 birds (AttnGAN cfg/DAMSM/bird.yml).

  python main.py --config=configs/damsm_bird.py --workdir=/ckpt/damsm_bird \
      --config.data.data_dir=/data/birds
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.job = "pretrain_damsm"
  c.data.name = "birds"
  c.data.captions_per_image = 10
  c.damsm.words_num = 18
  c.damsm.batch_size = 48
  c.damsm.epochs = 600
  c.damsm.snapshot_interval = 50
  return base.apply_variant(c, arg)
