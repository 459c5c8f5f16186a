"""DM-GAN on MS-COCO 2014 (DM-GAN code/cfg/coco_DMGAN.yml).

  python main.py --config=configs/dmgan_coco.py --workdir=/ckpt/dmgan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dmgan,coco (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("dmgan,coco", arg))
