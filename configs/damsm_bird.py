"""DAMSM pretraining on CUB-200-2011 birds (AttnGAN cfg/DAMSM/bird.yml).

  python main.py --config=configs/damsm_bird.py --workdir=/ckpt/damsm_bird \
      --config.data.data_dir=/data/birds
"""

from configs import base
from configs import damsm


def get_config(arg=None):
  """configs/damsm.py:bird (``arg``: None or a size preset)."""
  return damsm.get_config(base.with_size("bird", arg))
