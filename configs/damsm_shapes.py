"""DAMSM pretraining on the embedded procedural shapes dataset (no download).

Learnable on a 2-core CPU in minutes: 64 px images, the small CNN image
backbone (trained, since no ImageNet weights exist for it) instead of the
frozen Inception-v3 of the reference.

  python main.py --config=configs/damsm_shapes.py --workdir=/tmp/damsm_shapes
"""

from configs import base
from configs import damsm


def get_config(arg=None):
  """configs/damsm.py:shapes (``arg``: None or a size preset)."""
  return damsm.get_config(base.with_size("shapes", arg))
