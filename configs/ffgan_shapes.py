"""FF-GAN on the embedded shapes dataset: configs/dmgan_shapes.py with the
FF-Block + GSR refinement stage (same sizes, data and schedule, for a
like-for-like comparison with DM-GAN and AttnGAN).

  python main.py --config=configs/ffgan_shapes.py --workdir=/tmp/ffgan_shapes
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:ffgan,shapes (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("ffgan,shapes", arg))
