"""FF-GAN on CUB-200-2011 birds (FF-GAN code/cfg/bird_DMGAN.yml, SPEC-ffgan §5).

DM-GAN's bird recipe with the FF-Block + GSR refinement stage; the only other
difference in the reference YAML is the batch size (4, the author's local run).

  python main.py --config=configs/ffgan_bird.py --workdir=/ckpt/ffgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:ffgan,bird (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("ffgan,bird", arg))
