"""DF-GAN on the embedded shapes dataset: the bird recipe at 64 px on a CPU.

The bird values (nf 32, batch 32, the official Adams, no EMA, truncation
0.88) with what 64 px implies (one 64 px stage: 4 G blocks), and the run
length and budget of the shapes preset (configs/gan.py ``DATASETS['shapes']``:
16 epochs or 28 minutes, DAMSM pretrained first without gan.damsm_dir).

  python main.py --config=configs/dfgan_shapes.py --workdir=/tmp/dfgan_shapes
  python main.py --config=configs/dfgan_shapes.py --workdir=/tmp/dfgan_shapes \
      --config.job=evaluate
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dfgan,shapes (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("dfgan,shapes", arg))
