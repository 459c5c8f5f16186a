"""FF-GAN on the embedded shapes dataset: configs/dmgan_shapes.py with the
FF-Block + GSR refinement stage (same sizes, data and schedule, for a
like-for-like comparison with DM-GAN and AttnGAN).

  python main.py --config=configs/ffgan_shapes.py --workdir=/tmp/ffgan_shapes
"""

from configs import base
from configs import dmgan_shapes


def get_config(arg=None):
  c = dmgan_shapes.get_config()
  c.model.refiner = "ffblock"
  return base.apply_variant(c, arg)
