"""DM-GAN on CUB-200-2011 birds (DM-GAN code/cfg/bird_DMGAN.yml).

  python main.py --config=configs/dmgan_bird.py --workdir=/ckpt/dmgan_bird \
      --config.data.data_dir=/data/birds --config.gan.damsm_dir=/ckpt/damsm_bird
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.job = "train_gan"
  c.data.name = "birds"
  c.data.captions_per_image = 10
  c.data.words_num = 18
  c.data.eval_words_num = 25
  c.model.refiner = "memory"
  c.model.r_num = 2
  c.gan.batch_size = 10
  c.gan.epochs = 800
  c.gan.lambda_damsm = 5.0
  c.gan.snapshot_interval = 25
  return base.apply_variant(c, arg)
