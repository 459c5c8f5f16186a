"""DM-GAN on MS-COCO 2014 (DM-GAN code/cfg/coco_DMGAN.yml).

  python main.py --config=configs/dmgan_coco.py --workdir=/ckpt/dmgan_coco \
      --config.data.data_dir=/data/coco --config.gan.damsm_dir=/ckpt/damsm_coco
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.job = "train_gan"
  c.data.name = "coco"
  c.data.captions_per_image = 5
  c.data.words_num = 12
  c.data.eval_words_num = 20
  c.damsm.words_num = 15
  c.model.refiner = "memory"
  c.model.r_num = 3
  c.gan.batch_size = 16
  c.gan.epochs = 200
  c.gan.lambda_damsm = 50.0
  c.gan.snapshot_interval = 5
  return base.apply_variant(c, arg)
