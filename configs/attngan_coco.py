"""AttnGAN's refinement stage on MS-COCO 2014: configs/dmgan_coco.py with
``model.refiner='attention'`` (word-context attention, [h, context], residual
blocks, up-block; SPEC-dmgan §3.5).

Everything else is DM-GAN's (spectral-norm discriminators, losses, schedule,
widths), so the three generator families compare on equal footing. It is not
AttnGAN's own recipe: AttnGAN's discriminators use BatchNorm instead of SN and
its widths/batch sizes differ (SPEC-dmgan §4.4).

  python main.py --config=configs/attngan_coco.py --workdir=/ckpt/attngan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base
from configs import gan


def get_config(arg=None):
  """configs/gan.py:attngan,coco (``arg``: None or a size preset)."""
  return gan.get_config(base.with_size("attngan,coco", arg))
