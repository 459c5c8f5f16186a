"""Whole-job tests of DAMSM pretraining: 1 and 8 devices, resume, bad input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import damsm_shapes
from t2igan_jax import damsm_lib
from t2igan_jax import train
from t2igan_jax.errors import CheckpointError, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(num_devices, max_steps=2):
  c = damsm_shapes.get_config("tiny")
  c.num_devices = num_devices
  c.max_steps = max_steps
  c.damsm.epochs = 4
  c.checkpoint_every_steps = 2
  return c


def _checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit())


@pytest.mark.parametrize("num_devices", [1, 8])
def test_two_steps_write_checkpoint_events_metrics(tmp_path, num_devices):
  workdir = str(tmp_path / f"d{num_devices}")
  result = train.run(tiny_config(num_devices), workdir)
  assert _checkpoint_steps(workdir) == [2]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  with open(os.path.join(workdir, "metrics.json")) as f:
    records = json.load(f)
  assert records[-1]["step"] == 2
  assert 0.0 <= records[-1]["retrieval_top1"] <= 1.0
  assert np.isfinite(records[-1]["test_loss"])
  assert result["step"] == 2
  for name in ("vocab.json", "damsm_config.json"):
    assert os.path.isfile(os.path.join(workdir, name))


def test_one_and_eight_devices_agree(tmp_path):
  """Same data, same init: sharding the batch over 8 devices keeps the math."""
  out, evals = [], []
  for n in (1, 8):
    workdir = str(tmp_path / f"agree{n}")
    evals.append(train.run(tiny_config(n, max_steps=1), workdir))
    text, text_params, _, image_vars, _ = damsm_lib.load_encoders(workdir)
    del text
    out.append((text_params, image_vars))
  flat1 = jax.tree.leaves(out[0])
  flat8 = jax.tree.leaves(out[1])
  assert len(flat1) == len(flat8)
  # Adam's first update is ~lr * sign(g): summation-order noise in a near-zero
  # gradient moves a parameter by a fraction of lr (2e-3), hence atol 1e-4.
  for a, b in zip(flat1, flat8):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3,
                               atol=1e-4)
  np.testing.assert_allclose(evals[0]["test_loss"], evals[1]["test_loss"],
                             rtol=1e-4)
  assert evals[0]["retrieval_top1"] == evals[1]["retrieval_top1"]


def test_resume_continues_from_saved_step(tmp_path):
  workdir = str(tmp_path / "resume")
  train.run(tiny_config(8, max_steps=2), workdir)
  assert _checkpoint_steps(workdir) == [2]
  # The same workdir with a longer budget resumes at step 2, not 0.
  result = train.run(tiny_config(8, max_steps=4), workdir)
  assert result["step"] == 4
  assert _checkpoint_steps(workdir) == [2, 4]
  # An uninterrupted run to step 4 gives the same parameters.
  straight = str(tmp_path / "straight")
  train.run(tiny_config(8, max_steps=4), straight)
  a = damsm_lib.load_encoders(workdir)
  b = damsm_lib.load_encoders(straight)
  for x, y in zip(jax.tree.leaves((a[1], a[3])), jax.tree.leaves((b[1], b[3]))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                               atol=1e-6)


def test_learning_rate_schedule_matches_reference():
  c = damsm_shapes.get_config()
  c.damsm.lr = 0.002
  # Reference loop: after each epoch, lr *= 0.98 while lr > lr0 / 10.
  lr, expected = 0.002, []
  for _ in range(130):
    expected.append(lr)
    if lr > 0.002 / 10:
      lr *= 0.98
  got = [float(damsm_lib.learning_rate(c, e)) for e in range(130)]
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_retrieval_top1_protocol():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(40, 6))
  classes = np.arange(40) % 10
  # Sentences equal to the image codes: every true caption wins.
  assert damsm_lib.retrieval_top1(codes, codes, classes, 20, 0) == 1.0
  # Sentences of a random permutation: about chance (1/20) and well below 1.
  perm = rng.permutation(40)
  score = damsm_lib.retrieval_top1(codes, codes[perm], classes, 20, 0)
  assert score < 0.5
  with pytest.raises(ConfigError, match="retrieval_candidates"):
    damsm_lib.retrieval_top1(codes, codes, classes, 39, 0)


def test_inception_without_weights_is_refused(tmp_path):
  c = tiny_config(1)
  c.image_encoder.backbone = "inception"
  c.image_encoder.train_trunk = False
  with pytest.raises(ConfigError, match="trunk_weights"):
    train.run(c, str(tmp_path / "w"))


def test_bad_enum_field_is_named(tmp_path):
  c = tiny_config(1)
  c.damsm.word_score = "nonsense"
  with pytest.raises(ConfigError, match="damsm.word_score"):
    train.run(c, str(tmp_path / "w"))


def test_missing_data_dir_is_named(tmp_path):
  c = tiny_config(1)
  c.data.name = "birds"
  c.data.data_dir = str(tmp_path / "no_such_dir")
  with pytest.raises((FileNotFoundError, ConfigError), match="no_such_dir"):
    train.run(c, str(tmp_path / "w"))


def test_unreadable_checkpoint_is_reported(tmp_path):
  workdir = str(tmp_path / "broken")
  train.run(tiny_config(1), workdir)
  step_dir = os.path.join(workdir, "checkpoints", "2", "state")
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(CheckpointError, match="checkpoint step 2"):
    train.run(tiny_config(1, max_steps=4), workdir)


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_main_bad_config_field_one_line(tmp_path):
  proc = _main("--config=configs/damsm_shapes.py:tiny",
               "--config.damsm.no_such_field=3", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert "no_such_field" in last and last.startswith("error:")


def test_main_bad_value_one_line(tmp_path):
  proc = _main("--config=configs/damsm_shapes.py:tiny",
               "--config.data.name=imagenet", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "config.data.name" in last


def test_main_missing_config_file_one_line(tmp_path):
  proc = _main("--config=configs/no_such_config.py", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "no_such_config.py" in last
