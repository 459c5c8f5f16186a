"""FF-GAN on MS-COCO 2014 (FF-GAN code/cfg/coco_DMGAN.yml, SPEC-ffgan §5).

DM-GAN's COCO recipe (the YAML is byte-identical) with the FF-Block + GSR
refinement stage.

  python main.py --config=configs/ffgan_coco.py --workdir=/ckpt/ffgan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:ffgan,coco (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("ffgan,coco", arg))
