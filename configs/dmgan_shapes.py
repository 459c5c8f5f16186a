"""DM-GAN on the embedded shapes dataset: the whole pipeline on a CPU.

Without ``gan.damsm_dir`` it first pretrains a DAMSM into ``workdir/damsm``
(configs/damsm_shapes.py settings, 8 epochs), then trains a two-stage
(32, 64 px) DM-GAN with reduced widths for 16 epochs (4,000 steps) or until
the command's 28-minute budget (``max_train_seconds``, DAMSM phase included)
is spent, the whole run sized to finish within 30 minutes on a 2-core CPU
(docs/results.md, "DM-GAN on shapes in 30 CPU minutes", has the measured times and
samples).

  python main.py --config=configs/dmgan_shapes.py --workdir=/tmp/dmgan_shapes
  python main.py --config=configs/dmgan_shapes.py --workdir=/tmp/dmgan_shapes \
      --config.job=evaluate
  python main.py --config=configs/dmgan_shapes.py --workdir=/tmp/dmgan_shapes \
      --config.job=sample --config.sample.captions_file=captions.txt
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:dmgan,shapes (``arg``: None or a size preset); the
  values and why: configs/gan.py, ``DATASETS['shapes']``."""
  return gan.get_config(base.with_size("dmgan,shapes", arg))
