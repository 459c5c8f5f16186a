"""Whole-job tests of GAN training: 1 and 8 devices, bitwise resume."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import dmgan_shapes
from t2igan_jax import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def tiny_config(num_devices, max_steps=2, damsm_dir=""):
  c = dmgan_shapes.get_config("tiny")
  c.num_devices = num_devices
  c.max_steps = max_steps
  c.gan.epochs = 4
  c.damsm.epochs = 1
  c.checkpoint_every_steps = 2
  c.image_every_steps = 2
  c.gan.damsm_dir = damsm_dir
  return c


@pytest.fixture(scope="module")
def damsm_dir(tmp_path_factory):
  """One tiny pretrained DAMSM shared by the tests of this module."""
  workdir = str(tmp_path_factory.mktemp("damsm"))
  c = tiny_config(8)
  c.job = "pretrain_damsm"
  train.run(c, workdir)
  return workdir


def _restore_raw(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(path)


def test_pretrains_damsm_when_missing_then_trains(tmp_path):
  workdir = str(tmp_path / "w")
  result = train.run(tiny_config(8), workdir)
  assert result["step"] == 2
  assert os.path.isdir(os.path.join(workdir, "damsm", "checkpoints"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  events = [f for f in os.listdir(workdir) if f.startswith("events.out")]
  assert events
  for key in ("train/g_loss", "train/d_loss0", "train/d_loss1",
              "train/g_w_loss", "train/kl_loss"):
    assert np.isfinite(result[key]), key
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)[-1]["step"] == 2


@pytest.mark.parametrize("num_devices", [1, 8])
def test_two_steps(tmp_path, damsm_dir, num_devices):
  workdir = str(tmp_path / f"g{num_devices}")
  result = train.run(tiny_config(num_devices, damsm_dir=damsm_dir), workdir)
  assert result["step"] == 2
  state = _restore_raw(workdir, 2)
  assert int(state["step"]) == 2
  # G moved, EMA moved by (1 - decay) of it, Ds moved, SN vectors advanced.
  leaves = jax.tree.leaves(state["g_params"])
  assert all(np.all(np.isfinite(x)) for x in leaves)


def test_resume_is_bitwise_equal(tmp_path, damsm_dir):
  straight = str(tmp_path / "straight")
  train.run(tiny_config(8, max_steps=4, damsm_dir=damsm_dir), straight)
  resumed = str(tmp_path / "resumed")
  train.run(tiny_config(8, max_steps=2, damsm_dir=damsm_dir), resumed)
  train.run(tiny_config(8, max_steps=4, damsm_dir=damsm_dir), resumed)
  a = _restore_raw(straight, 4)
  b = _restore_raw(resumed, 4)
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  assert len(flat_a) == len(flat_b)
  def raw(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return np.asarray(jax.random.key_data(x))
    return np.asarray(x)

  for path, x in flat_a:
    np.testing.assert_array_equal(raw(x), raw(flat_b[path]),
                                  err_msg=jax.tree_util.keystr(path))


def test_missing_damsm_dir_is_named(tmp_path):
  c = tiny_config(1, damsm_dir=str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="nope"):
    train.run(c, str(tmp_path / "w"))
