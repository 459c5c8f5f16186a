"""DAMSM pretraining on MS-COCO 2014 (AttnGAN cfg/DAMSM/coco.yml).

  python main.py --config=configs/damsm_coco.py --workdir=/ckpt/damsm_coco \
      --config.data.data_dir=/data/coco
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.job = "pretrain_damsm"
  c.data.name = "coco"
  c.data.captions_per_image = 5
  c.data.words_num = 12
  c.data.eval_words_num = 20
  c.damsm.words_num = 15
  c.damsm.batch_size = 48
  c.damsm.epochs = 600
  c.damsm.snapshot_interval = 5
  return base.apply_variant(c, arg)
