"""DF-GAN through ``job=train_gan`` (configs/gan.py:dfgan,shapes,tiny).

The job loop is the one of the other families (t2igan_jax/train_loop.py):
checkpoints, resume, sample grids, TensorBoard. Here: a run writes its
checkpoints and grids; a run resumed after 2 of 4 steps ends in bitwise the
same state with the same per-step losses; 8 CPU devices give the losses of 1
(tolerance: float summation order only, as tests/test_scale_out.py).
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gan_fixtures import write_untrained_damsm

from configs import gan
from t2igan_jax import checkpointing
from t2igan_jax import gan_lib
from t2igan_jax import generation
from t2igan_jax import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STEPS = 4


def tiny_config(num_devices=1, max_steps=STEPS, damsm_dir=""):
  c = gan.get_config("dfgan,shapes,tiny")
  c.num_devices = num_devices
  c.max_steps = max_steps
  c.gan.epochs = 4
  c.checkpoint_every_steps = 2
  c.image_every_steps = 2
  c.gan.damsm_dir = damsm_dir
  return c


@pytest.fixture(scope="module")
def damsm_dir(tmp_path_factory):
  """Untrained DAMSM encoders on the shapes vocabulary (no pretraining)."""
  workdir = str(tmp_path_factory.mktemp("damsm"))
  write_untrained_damsm(tiny_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, damsm_dir):
  """(workdir, result) of one uninterrupted 4-step run on 1 device."""
  workdir = str(tmp_path_factory.mktemp("dfgan") / "w")
  return workdir, train.run(tiny_config(damsm_dir=damsm_dir), workdir)


def _restore_raw(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(path)


def _raw(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def _losses(workdir):
  with open(os.path.join(workdir, "losses.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_job_trains_and_writes_checkpoints_and_grids(trained):
  workdir, result = trained
  assert result["step"] == STEPS
  for key in ("g_loss", "d_loss", "d_real", "d_fake", "d_mis", "ma_gp"):
    assert np.isfinite(result[f"train/{key}"]), key
  assert sorted(gan_lib.list_steps(workdir)) == [2, 4]
  state = _restore_raw(workdir, STEPS)
  assert int(state["step"]) == STEPS
  assert set(state["d_params"]) == {"netD", "netC"}
  # 4 G blocks at 32 px: fc -> 4x4 -> 8 -> 16 -> 32.
  assert "GBlocks_2" in state["g_params"] and "GBlocks_3" not in state[
      "g_params"]
  ckpt = checkpointing.Checkpointer(gan_lib.checkpoint_dir(workdir),
                                    max_to_keep=10, interval=1, read_only=True)
  meta = ckpt.restore_meta(STEPS)
  ckpt.close()
  assert meta["model"]["architecture"] == "dfgan"
  assert meta["stage_sizes"] == [32]
  samples = os.listdir(os.path.join(workdir, "samples"))
  assert f"step{STEPS:07d}_samples_stage0_32px.png" in samples
  assert not any("raw_generator" in f for f in samples)  # no EMA: one grid
  assert [r["step"] for r in _losses(workdir)] == list(range(1, STEPS + 1))


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path, damsm_dir, trained):
  workdir = str(tmp_path / "w")
  first = train.run(tiny_config(max_steps=2, damsm_dir=damsm_dir), workdir)
  assert first["step"] == 2
  result = train.run(tiny_config(damsm_dir=damsm_dir), workdir)
  assert result["step"] == STEPS
  want, got = _restore_raw(trained[0], STEPS), _restore_raw(workdir, STEPS)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got),
                          jax.tree.leaves(want)):
    np.testing.assert_array_equal(_raw(a), _raw(b),
                                  err_msg=jax.tree_util.keystr(path))
  assert _losses(workdir) == _losses(trained[0])


def test_eight_devices_give_the_losses_of_one(tmp_path, damsm_dir, trained):
  assert len(jax.devices()) >= 8
  workdir = str(tmp_path / "w8")
  train.run(tiny_config(num_devices=8, damsm_dir=damsm_dir), workdir)
  one, eight = _losses(trained[0]), _losses(workdir)
  assert [r["step"] for r in eight] == [r["step"] for r in one]
  for a, b in zip(one, eight):
    assert set(a) == set(b)
    for k in a:
      # Measured: the O(1) terms within 4e-7 relative; g_loss (a mean of
      # nearly cancelling logits, ~0.002-0.03) within 3e-7 absolute.
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {a['step']} {k}")


def test_stacked_checkpoint_is_not_resumed_as_dfgan(tmp_path, damsm_dir,
                                                    trained):
  """Another architecture in the workdir is refused, naming the field."""
  c = tiny_config(damsm_dir=damsm_dir)
  c.model.architecture = "stacked"
  c.data.branch_num = 2
  c.sample.weights = "ema"
  c.sample.truncation = 0.0
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"model\.architecture"):
    train.run(c, trained[0])


CAPTIONS = "a red circle\na big green star, in the center\n"


@pytest.fixture(scope="module")
def sampled_and_evaluated(trained, tmp_path_factory):
  """job=sample and job=evaluate (eval.fid=False) on a copy of the run."""
  out = tmp_path_factory.mktemp("dfgan_jobs")
  workdir = str(out / "w")
  shutil.copytree(trained[0], workdir)
  (out / "captions.txt").write_text(CAPTIONS)
  c = tiny_config()
  c.job = "sample"
  c.sample.captions_file = str(out / "captions.txt")
  c.sample.output_dir = str(out / "samples")
  c.sample.num_per_caption = 3
  report = train.run(c, workdir)
  c = tiny_config()
  c.job = "evaluate"
  c.eval.fid = False
  c.eval.num_samples = 12
  return workdir, report, out / "samples", train.run(c, workdir)


def test_sample_job_on_a_dfgan_workdir(sampled_and_evaluated):
  _, report, out, _ = sampled_and_evaluated
  assert report["num_sampled"] == 2
  files = set(os.listdir(out))
  assert {"caption_001.png", "caption_002.png", "report.json"} <= files
  assert not any("attention" in f for f in files)   # DF-GAN has none


def test_evaluate_job_on_a_dfgan_workdir(sampled_and_evaluated):
  workdir, _, _, result = sampled_and_evaluated
  result = result[-1] if isinstance(result, list) else result
  assert result["step"] == STEPS and result["fid"] is None
  assert result["generator_weights_used"] == "raw"
  assert (result["architecture"], result["truncation"]) == ("dfgan", 0.88)
  assert np.isfinite(result["is_mean"])
  assert 0.0 <= result["r_precision_mean"] <= 1.0
  assert os.path.isfile(os.path.join(workdir, f"eval_{STEPS}_raw.json"))


def test_generation_api_draws_truncated_noise(sampled_and_evaluated):
  """z = 0.88 * truncnorm(-2, 2) (sample.truncation); one stage, no CA."""
  workdir = sampled_and_evaluated[0]
  c = tiny_config()
  c.job = "sample"
  gen = gan_lib.restore_generator(c, workdir)
  z, eps = generation.draw_noise(jax.random.key(0), 256, gen)
  assert z.shape == (256, c.model.z_dim) and eps.shape == (256, 0)
  assert float(jnp.max(jnp.abs(z))) <= 2 * 0.88 + 1e-6
  assert 0.6 < float(jnp.std(z)) < 0.95      # 0.88 * 0.88 = 0.77
  out = generation.generate(gen, ["a red circle", "a green star"],
                            key=jax.random.key(1))
  assert len(out.images) == 1 and out.images[0].shape == (2, 32, 32, 3)
  again = generation.generate(gen, ["a red circle", "a green star"],
                              z=out.z, eps=out.eps)
  np.testing.assert_array_equal(again.images[0], out.images[0])
  c.sample.truncation = 0.0
  gen = gan_lib.restore_generator(c, workdir)
  z0, _ = generation.draw_noise(jax.random.key(0), 256, gen)
  assert float(jnp.max(jnp.abs(z0))) > 2 * 0.88
