"""AttnGAN's refinement stage on CUB-200-2011 birds: configs/dmgan_bird.py with
``model.refiner='attention'`` (word-context attention, [h, context], residual
blocks, up-block; SPEC-dmgan §3.5).

Everything else is DM-GAN's (spectral-norm discriminators, losses, schedule,
widths), so the three generator families compare on equal footing. It is not
AttnGAN's own recipe: AttnGAN's discriminators use BatchNorm instead of SN and
its widths/batch sizes differ (SPEC-dmgan §4.4).

  python main.py --config=configs/attngan_bird.py --workdir=/ckpt/attngan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:attngan,bird (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("attngan,bird", arg))
