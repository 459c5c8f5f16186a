"""AttnGAN's refinement stage on the embedded shapes dataset: configs/dmgan_shapes.py with
``model.refiner='attention'`` (word-context attention, [h, context], residual
blocks, up-block; SPEC-dmgan §3.5).

Everything else is DM-GAN's (spectral-norm discriminators, losses, schedule,
widths), so the three generator families compare on equal footing. It is not
AttnGAN's own recipe: AttnGAN's discriminators use BatchNorm instead of SN and
its widths/batch sizes differ (SPEC-dmgan §4.4).

  python main.py --config=configs/attngan_shapes.py --workdir=/tmp/attngan_shapes
"""

from configs import base
from configs import dmgan_shapes


def get_config(arg=None):
  c = dmgan_shapes.get_config()
  c.model.refiner = "attention"
  return base.apply_variant(c, arg)
