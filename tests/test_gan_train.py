"""Whole-job tests of GAN training: each generator family on 1 and 8 devices.

Resume after an interruption is bitwise equal to an uninterrupted run:
tests/test_reliability.py::test_kills_and_preemptions_change_nothing (10 SIGKILLs
and a SIGTERM across a run, final state and per-step losses compared).
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gan_fixtures import write_untrained_damsm

from configs import attngan_shapes
from configs import dmgan_shapes
from configs import ffgan_shapes
from t2igan_jax import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


FAMILY_CONFIGS = {"memory": dmgan_shapes, "ffblock": ffgan_shapes,
                  "attention": attngan_shapes}


def tiny_config(num_devices, max_steps=2, damsm_dir="", refiner="memory"):
  c = FAMILY_CONFIGS[refiner].get_config("tiny")
  assert c.model.refiner == refiner
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
  assert result["data/skipped_examples"] == 0   # the loader's skip counter
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)[-1]["step"] == 2


# Every family on one device; the 8-device data mesh once (the families differ
# only in the refinement stage; tests/test_scale_out.py compares 1 with 2, 4
# and 8 devices number by number).
@pytest.mark.parametrize("num_devices,refiner", [
    (1, "memory"), (1, "ffblock"), (1, "attention"), (8, "memory")])
def test_two_steps(tmp_path, damsm_dir, num_devices, refiner):
  """Each generator family trains 2 steps (configs/<family>_shapes.py:tiny)."""
  workdir = str(tmp_path / f"g{num_devices}")
  result = train.run(tiny_config(num_devices, damsm_dir=damsm_dir,
                                 refiner=refiner), workdir)
  assert result["step"] == 2
  for key in ("train/g_loss", "train/d_loss0", "train/d_loss1"):
    assert np.isfinite(result[key]), key
  state = _restore_raw(workdir, 2)
  assert int(state["step"]) == 2
  # G moved, EMA moved by (1 - decay) of it, Ds moved, SN vectors advanced.
  leaves = jax.tree.leaves(state["g_params"])
  assert all(np.all(np.isfinite(x)) for x in leaves)


def test_missing_damsm_dir_is_named(tmp_path):
  c = tiny_config(1, damsm_dir=str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="nope"):
    train.run(c, str(tmp_path / "w"))


def _tiny_bird_config(shared_data, tmp_path):
  """configs/dmgan_bird.py:tiny on a real CUB sample laid out in tmp_path."""
  import attngan_layout  # pylint: disable=g-import-not-at-top
  from configs import dmgan_bird  # pylint: disable=g-import-not-at-top
  root = attngan_layout.make_birds_layout(shared_data, tmp_path / "birds")
  c = dmgan_bird.get_config("tiny")
  c.data.name = "birds"
  c.data.data_dir = str(root)
  c.data.captions_per_image = attngan_layout.BIRDS_CAPTIONS_PER_IMAGE
  c.num_devices = 2
  c.gan.batch_size = 2
  c.max_steps = 2
  return c


def test_dmgan_bird_config_starts_on_real_cub_sample(tmp_path, shared_data):
  """configs/dmgan_bird.py (shrunk) trains on real CUB photos and captions."""
  c = _tiny_bird_config(shared_data, tmp_path)
  c.gan.damsm_dir = str(tmp_path / "damsm")
  write_untrained_damsm(c, c.gan.damsm_dir)
  result = train.run(c, str(tmp_path / "gan"))
  assert result["step"] == 2
  assert np.isfinite(result["train/g_loss"])


def test_damsm_vocabulary_mismatch_is_refused(tmp_path, damsm_dir,
                                              shared_data):
  c = _tiny_bird_config(shared_data, tmp_path)
  c.gan.damsm_dir = damsm_dir  # pretrained on shapes: another vocabulary
  with pytest.raises(ValueError, match="vocabulary"):
    train.run(c, str(tmp_path / "gan"))


def test_time_budget_stops_saves_and_resumes(tmp_path, damsm_dir):
  """config.max_train_seconds: stop after the step that spends the budget,
  checkpoint it, and resume from it with a fresh budget."""
  workdir = str(tmp_path / "w")
  c = tiny_config(1, max_steps=3, damsm_dir=damsm_dir)
  c.max_train_seconds = 1e-3    # spent by the first step
  result = train.run(c, workdir)
  assert result["step"] == 1 and result["time_budget_reached"]
  assert "preempted" not in result
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "1"))
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)[-1]["step"] == 1
  c.max_train_seconds = 0.0
  result = train.run(c, workdir)     # resumes at step 1, runs to max_steps
  assert result["step"] == 3 and "time_budget_reached" not in result
