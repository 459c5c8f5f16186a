"""DF-GAN on CUB-200-2011 birds (tobran/DF-GAN code/cfg/bird.yml).

  python main.py --config=configs/dfgan_bird.py --workdir=/ckpt/dfgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dfgan,bird (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("dfgan,bird", arg))
