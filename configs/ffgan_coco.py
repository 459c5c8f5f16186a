"""FF-GAN on MS-COCO 2014 (FF-GAN code/cfg/coco_DMGAN.yml, SPEC-ffgan §5).

DM-GAN's COCO recipe (the YAML is byte-identical) with the FF-Block + GSR
refinement stage.

  python main.py --config=configs/ffgan_coco.py --workdir=/ckpt/ffgan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base
from configs import dmgan_coco


def get_config(arg=None):
  c = dmgan_coco.get_config()
  c.model.refiner = "ffblock"
  c.model.r_num = 3
  c.gan.batch_size = 16
  c.gan.epochs = 200
  return base.apply_variant(c, arg)
