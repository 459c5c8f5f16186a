"""Shared setup for the GAN tests (a plain module, not a test file).

* ``write_untrained_damsm``: a DAMSM workdir with freshly initialised encoders.
* ``job_config`` / ``trained_workdir``: the tiny DM-GAN job trained once per
  session (a 1-epoch DAMSM, then 4 GAN steps, checkpoints at steps 2 and 4),
  used by test_sample.py and test_evaluate.py.
* ``host_batch`` / ``untrained_gan``: a random host batch and untrained
  models plus DAMSM encoders for one direct ``gan_lib.train_step``, used by
  test_mixed_precision.py and test_scale_out.py.
"""

import functools
import json
import os

import jax
import numpy as np

from configs import damsm_shapes
from configs import dmgan_shapes
from t2igan_jax import checkpointing
from t2igan_jax import damsm_lib
from t2igan_jax import gan_lib
from t2igan_jax import train

N_WORDS = 40      # vocabulary size of the random batches and encoders
NUM_CLASSES = 6   # class ids of the random batches



def tiny_damsm_config(**overrides):
  """configs/damsm_shapes.py:tiny on one device, 4 epochs, a checkpoint per
  step; ``overrides`` maps dotted field paths to values."""
  c = damsm_shapes.get_config("tiny")
  c.num_devices = 1
  c.damsm.epochs = 4
  c.checkpoint_every_steps = 1
  c.keep_checkpoints = 10
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c

def write_untrained_damsm(config, workdir):
  """A DAMSM workdir with freshly initialised encoders (no pretraining).

  The vocabulary is that of ``config``'s training split, so a GAN job on the
  same data accepts it.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  vocab = pipeline.get_source(config, "train", 64).vocab
  os.makedirs(workdir, exist_ok=True)
  text, image = damsm_lib.build_models(config, vocab.n_words)
  state = jax.jit(functools.partial(damsm_lib.create_state, config, text,
                                    image))(jax.random.key(0))
  for name, obj in ((damsm_lib.VOCAB_FILE, vocab.to_json()),
                    (damsm_lib.ENCODER_CONFIG_FILE,
                     damsm_lib.encoder_config(config))):
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(obj, f)
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, damsm_lib.CHECKPOINT_DIR), max_to_keep=1,
      interval=1)
  ckpt.save(1, state, {}, {}, force=True)
  ckpt.close()


def job_config(job, num_devices=1):
  """configs/dmgan_shapes.py:tiny as a 4-step ``job`` (checkpoints every 2)."""
  c = dmgan_shapes.get_config("tiny")
  c.job = job
  c.num_devices = num_devices
  c.max_steps = 4
  c.gan.epochs = 4
  c.checkpoint_every_steps = 2
  c.image_every_steps = 100
  return c


def trained_workdir(tmp_path_factory) -> str:
  """A tiny trained GAN workdir, shared by every module of the session."""
  workdir = tmp_path_factory.getbasetemp() / "tiny_gan_for_eval_and_sample"
  if not (workdir / "checkpoints" / "4").is_dir():
    train.run(job_config("train_gan"), str(workdir))
  return str(workdir)


def host_batch(config, seed=0):
  """A random GAN batch (numpy): images per stage, padded captions, classes."""
  rng = np.random.default_rng(seed)
  b, t = config.gan.batch_size, config.data.words_num
  lens = np.sort(rng.integers(2, t + 1, size=b))[::-1].astype(np.int32)
  caps = rng.integers(1, N_WORDS, size=(b, t)).astype(np.int32)
  caps[np.arange(t)[None, :] >= lens[:, None]] = 0
  sizes = [config.data.base_size * 2**i for i in range(config.data.branch_num)]
  images = tuple(rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
                 for s in sizes)
  return {"images": images, "captions": caps, "caption_lens": lens,
          "class_ids": rng.integers(0, NUM_CLASSES, size=b).astype(np.int32)}


def untrained_gan(config):
  """(GanModels, Encoders) with DAMSM encoders freshly initialised (key 1)."""
  text_model, image_model = damsm_lib.build_models(config, N_WORDS)
  dstate = jax.jit(functools.partial(damsm_lib.create_state, config,
                                     text_model, image_model))(
                                         jax.random.key(1))
  enc = gan_lib.Encoders.from_damsm_state(dstate)
  return gan_lib.GanModels(config, text_model, image_model), enc


class CompileCounter:
  """Counts XLA compilations (JAX's backend-compile duration events)."""

  def __init__(self):
    self.count = 0

  def __call__(self, event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      self.count += 1
