"""FF-GAN on CUB-200-2011 birds (FF-GAN code/cfg/bird_DMGAN.yml, SPEC-ffgan §5).

DM-GAN's bird recipe with the FF-Block + GSR refinement stage; the only other
difference in the reference YAML is the batch size (4, the author's local run).

  python main.py --config=configs/ffgan_bird.py --workdir=/ckpt/ffgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base
from configs import dmgan_bird


def get_config(arg=None):
  c = dmgan_bird.get_config()
  c.model.refiner = "ffblock"
  c.model.r_num = 2
  c.gan.batch_size = 4
  c.gan.epochs = 800
  return base.apply_variant(c, arg)
