"""DF-GAN on MS-COCO 2014 (tobran/DF-GAN code/cfg/coco.yml).

  python main.py --config=configs/dfgan_coco.py --workdir=/ckpt/dfgan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dfgan,coco (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("dfgan,coco", arg))
