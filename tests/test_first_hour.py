"""A new user's first hour: one time budget for the whole command, the ETA,
the closing summary, the learning-rate scalars, the compilation cache."""

import glob
import logging
import os
import sys

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from gan_fixtures import job_config
from configs import damsm_shapes, dmgan_bird
from t2igan_jax import metric_writer
from t2igan_jax import time_budget
from t2igan_jax import train


@pytest.fixture
def own_compilation_cache(tmp_path):
  """No JAX cache dir (as for a user without JAX_COMPILATION_CACHE_DIR), every
  program cached; the session's settings come back afterwards."""
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compilation_cache.reset_cache()
  hits = []
  listener = lambda event, **kw: hits.append(event)  # noqa: E731
  jax.monitoring.register_event_listener(listener)
  yield tmp_path / "jax_cache", hits
  jax.monitoring.unregister_event_listener(listener)
  jax.config.update("jax_compilation_cache_dir", saved[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
  compilation_cache.reset_cache()


def test_second_start_compiles_from_the_cache(own_compilation_cache, tmp_path):
  cache_dir, events = own_compilation_cache
  c = damsm_shapes.get_config("tiny")
  c.num_devices = 1
  c.compilation_cache_dir = str(cache_dir)
  train.run(c, str(tmp_path / "first"))
  assert jax.config.jax_compilation_cache_dir == str(cache_dir)
  written = sorted(os.listdir(cache_dir))
  assert written, "the first start wrote nothing to the cache"
  assert "/jax/compilation_cache/cache_hits" not in events
  events.clear()
  train.run(c, str(tmp_path / "second"))   # the same programs: all cached
  hits = events.count("/jax/compilation_cache/cache_hits")
  requests = events.count("/jax/compilation_cache/compile_requests_use_cache")
  assert hits > 0 and hits == requests, (hits, requests)
  assert sorted(os.listdir(cache_dir)) == written


def test_empty_cache_dir_leaves_jax_alone(own_compilation_cache):
  assert train.configure_compilation_cache("") is None
  assert jax.config.jax_compilation_cache_dir is None
  jax.config.update("jax_compilation_cache_dir", "/tmp/theirs")
  assert train.configure_compilation_cache("/tmp/ours") == "/tmp/theirs"


# ------------------------------------------------- one budget, honest ETA
def test_budget_split_and_eta():
  assert time_budget.split_for_damsm(1680.0, 0.25) == 420.0
  assert time_budget.split_for_damsm(0.0, 0.25) == 0.0       # no budget
  assert time_budget.left_for_gan(1680.0, 300.0) == 1380.0
  assert time_budget.left_for_gan(1680.0, 2000.0) == 1e-3    # one step, then stop
  assert time_budget.left_for_gan(0.0, 300.0) == 0.0

  class FixedBudget:
    def __init__(self, left):
      self.left = left

    def remaining(self):
      return self.left

  progress = metric_writer.Progress(4000, budget=FixedBudget(600.0))
  t0 = progress._t0  # pylint: disable=protected-access
  # 100 steps in 100 s: 3,900 steps would take 3,900 s; the budget ends first.
  assert progress.eta(100, now=t0 + 100.0) == (600.0, "time budget")
  progress.budget = FixedBudget(5000.0)
  assert progress.eta(100, now=t0 + 100.0) == (3900.0, "steps")
  progress.budget = None
  assert progress.eta(100, now=t0 + 100.0) == (3900.0, "steps")


def test_next_commands_repeat_the_config_and_overrides(monkeypatch):
  monkeypatch.setattr(sys, "argv", [
      "main.py", "--config=configs/attngan_bird.py", "--workdir", "/w",
      "--config.model.ngf=32", "--config.job=train_gan"])
  assert metric_writer.main_command("/w", "sample", ("--x=1",)) == (
      "python main.py --config=configs/attngan_bird.py --config.model.ngf=32 "
      "--workdir=/w --config.job=sample --x=1")
  monkeypatch.setattr(sys, "argv", ["colab_kernel.py"])
  assert metric_writer.main_command("/w", "evaluate") == (
      "python main.py --config=<config file> --workdir=/w "
      "--config.job=evaluate")


def test_missing_damsm_names_both_ways(tmp_path):
  c = dmgan_bird.get_config("tiny")
  c.data.name = "birds"
  assert not c.gan.damsm_dir and not c.gan.pretrain_damsm_if_missing
  with pytest.raises(FileNotFoundError,
                     match=r"configs/damsm_bird.py.*t2igan_jax.convert.*"
                     r"DAMSMencoders/bird/text_encoder200.pth"):
    train.resolve_damsm_dir(c, str(tmp_path))


def test_one_budget_for_damsm_and_gan(tmp_path, caplog):
  """The quick start's shape (DAMSM pretrained first, then the GAN) under one
  max_train_seconds: the split is stated at start, each phase stops at its
  part (here both after their first step), the learning rates reach
  TensorBoard, the run ends on where its outputs are and what to run next,
  and a second start would keep the DAMSM the GAN trained against."""
  caplog.set_level(logging.INFO)
  c = job_config("train_gan")
  assert c.gan.pretrain_damsm_if_missing and not c.gan.damsm_dir
  c.max_train_seconds = 1e-3
  workdir = str(tmp_path / "run")
  result = train.run(c, workdir)
  log = caplog.text
  assert "time budget in force for the whole command" in log
  assert "DAMSM pretraining gets up to 0 s (gan.damsm_budget_share=0.25)" in log
  assert "time budget in force: DAMSM pretraining stops" in log
  assert "time budget in force: the GAN loop stops" in log
  stop_file = os.path.join(workdir, "damsm", train.DAMSM_BUDGET_STOP_FILE)
  assert os.path.isfile(stop_file)
  assert result["step"] == 1 and result["time_budget_reached"]
  assert result["train/g_lr"] == c.gan.g_lr and result["train/d_lr"] == c.gan.d_lr
  events = b"".join(open(p, "rb").read()
                    for p in glob.glob(os.path.join(workdir, "events.*")))
  assert b"train/g_lr" in events and b"train/d_lr" in events
  summary = caplog.records[-1].getMessage()
  assert summary.startswith("GAN training stopped by the time budget at step 1")
  for part in (f"sample grids: {workdir}/samples/", "step0000001_samples_",
               f"checkpoints:  {workdir}/checkpoints/",
               f"tensorboard --logdir={workdir}", "--config.job=sample",
               "--config.sample.captions_file=docs/shapes_demo_captions.txt",
               "--config.job=evaluate"):
    assert part in summary, part
  # A second start keeps those encoders (the GAN's checkpoint needs them).
  caplog.clear()
  assert not train.pretrains_damsm(c, workdir)
  assert train.resolve_damsm_dir(c, workdir) == os.path.join(
      workdir, "damsm")
  assert "stopped at its share of the time budget" in caplog.text


def test_missing_trunk_weights_say_what_to_download(tmp_path):
  from t2igan_jax.errors import ConfigError
  c = damsm_shapes.get_config("tiny")
  c.image_encoder.backbone = "inception"
  c.image_encoder.train_trunk = False
  with pytest.raises(ConfigError, match=r"download.pytorch.org/models/"
                     r"inception_v3_google-0cc3c7bd.pth.*trunk_weights="):
    train.run(c, str(tmp_path / "w"))
