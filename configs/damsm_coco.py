"""DAMSM pretraining on MS-COCO 2014 (AttnGAN cfg/DAMSM/coco.yml).

  python main.py --config=configs/damsm_coco.py --workdir=/ckpt/damsm_coco \
      --config.data.data_dir=/data/coco
"""

from configs import base
from configs import damsm


def get_config(arg=None):
  """configs/damsm.py:coco (``arg``: None or a size preset)."""
  return damsm.get_config(base.with_size("coco", arg))
