"""DM-GAN on CUB-200-2011 birds (DM-GAN code/cfg/bird_DMGAN.yml).

  python main.py --config=configs/dmgan_bird.py --workdir=/ckpt/dmgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dmgan,bird (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("dmgan,bird", arg))
