"""State safety: one job per workdir, every checkpoint item verified, the
frozen DAMSM checked on resume and read-only, start-up preemption, finished
runs, failed saves and evaluations (issue 24 items 1-3, 8-10, 12).

The GAN tests share one tiny run (module fixture): 2 steps of
``configs/dmgan_shapes.py:tiny`` on an untrained DAMSM, preempted by a real
SIGTERM during its last step.
"""

import functools
import json
import logging
import os
import resource
import signal
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import gan_fixtures
from gan_fixtures import write_untrained_damsm
from main_process import ROOT

from configs import base
from configs import dmgan_shapes
from t2igan_jax import checkpointing
from t2igan_jax import damsm_lib
from t2igan_jax import metric_writer
from t2igan_jax import train
from t2igan_jax.errors import CheckpointError, WorkdirError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _toy_state(seed):
  rng = np.random.default_rng(seed)
  return {"w": jax.numpy.asarray(rng.normal(size=(64, 32)), np.float32),
          "step": jax.numpy.int32(seed)}


def _save_steps(directory, steps, **kwargs):
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1,
                                    **kwargs)
  for s in steps:
    ckpt.save(s, _toy_state(s), {"next_batch": s}, {"model": {"ngf": 8}})
  ckpt.close()


def _restore(directory, **kwargs):
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1,
                                    **kwargs)
  try:
    return ckpt.restore_compatible(_toy_state(0), {"model": {"ngf": 8}},
                                   ("model",))
  finally:
    ckpt.close()


def _item_file(directory, step, item):
  return os.path.join(directory, str(step), item, "metadata")


def _edit_json(path, fn):
  with open(path) as f:
    obj = json.load(f)
  fn(obj)
  with open(path, "w") as f:
    json.dump(obj, f)


_damsm_config = gan_fixtures.tiny_damsm_config


def _tree_files(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      p = os.path.join(root, name)
      with open(p, "rb") as f:
        out[os.path.relpath(p, directory)] = f.read()
  return out


# ------------------------------------------------------ 1. workdir lock
def test_second_job_on_a_workdir_in_use_stops_naming_the_holder(tmp_path):
  from t2igan_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  with workdir_lock.WorkdirLock(workdir, "pretrain_damsm"):
    with pytest.raises(WorkdirError) as e:
      train.run(_damsm_config(max_steps=1), workdir)
  msg = str(e.value)
  assert "is in use by another job" in msg and f"pid {os.getpid()}" in msg
  assert "host " in msg and "since 20" in msg and "\n" not in msg
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_lock_of_a_killed_job_is_taken_over_with_a_warning(tmp_path, caplog):
  from t2igan_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from t2igan_jax import workdir_lock; "
       f"lock = workdir_lock.WorkdirLock({workdir!r}, 'train_gan'); "
       "lock.acquire(); "
       "print('held', flush=True); time.sleep(600)"],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"pid {holder.pid}, job train_gan"):
      workdir_lock.WorkdirLock(workdir, "train_gan").acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
  with caplog.at_level(logging.WARNING):
    with workdir_lock.WorkdirLock(workdir, "train_gan") as lock:
      assert lock.took_over["pid"] == holder.pid
      with open(lock.path) as f:
        assert json.load(f)["pid"] == os.getpid()
  assert f"pid {holder.pid}" in caplog.text and "taking it over" in caplog.text
  with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
    assert not f.read()  # released: nothing left to take over
  # Processes > 0 of a multi-host job do not take it (enabled=False).
  with workdir_lock.WorkdirLock(workdir, "train_gan"):
    with workdir_lock.WorkdirLock(workdir, "train_gan", enabled=False):
      pass


# ------------------------------------------- 2. every item under digest
def test_changed_data_position_is_corruption(tmp_path, caplog):
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [2, 4])
  _edit_json(_item_file(directory, 4, "data"),
             lambda d: d.update(next_batch=9))
  with caplog.at_level(logging.WARNING):
    state, data = _restore(directory)
  assert data == {"next_batch": 2} and int(state["step"]) == 2
  assert "checkpoint step 4" in caplog.text
  assert "data/meta items' digest" in caplog.text


def test_missing_digest_is_corrupt_unless_accepted(tmp_path, caplog):
  assert base.get_config().accept_undigested_checkpoints is False
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [3])
  _edit_json(_item_file(directory, 3, "meta"),
             lambda m: [m.pop(k, None) for k in ("state_digest",
                                                 "items_digest")])
  with pytest.raises(CheckpointError,
                     match=r"step 3 .* has no digests .*"
                     r"config\.accept_undigested_checkpoints=True"):
    _restore(directory)
  with caplog.at_level(logging.WARNING):
    state, data = _restore(directory, accept_undigested=True)
  assert int(state["step"]) == 3 and data == {"next_batch": 3}
  assert "restored unverified" in caplog.text


# -------------------------------- 3. the DAMSM directory is read-only
def _write_damsm_steps(config, directory, seeds):
  """A DAMSM dir with one checkpoint step per seed (untrained encoders)."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  write_untrained_damsm(config, directory)
  vocab = pipeline.get_source(config, "train", 64).vocab
  text, image = damsm_lib.build_models(config, vocab.n_words)
  ckpt_dir = os.path.join(directory, damsm_lib.CHECKPOINT_DIR)
  shutil.rmtree(ckpt_dir)
  ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=10, interval=1)
  for step, seed in enumerate(seeds, start=1):
    state = jax.jit(functools.partial(damsm_lib.create_state, config,
                                      text, image))(jax.random.key(seed))
    ckpt.save(step, state, {}, {})
  ckpt.close()


def test_corrupt_newest_damsm_step_is_an_error_and_moves_nothing(tmp_path):
  from test_reliability import _array_files, _flip_bytes  # pylint: disable=g-import-not-at-top
  c = dmgan_shapes.get_config("tiny")
  damsm_dir = str(tmp_path / "damsm")
  _write_damsm_steps(c, damsm_dir, seeds=(0, 1))
  ckpt_dir = os.path.join(damsm_dir, "checkpoints")
  _flip_bytes(_array_files(os.path.join(ckpt_dir, "2"))[0])
  before = _tree_files(tmp_path)
  with pytest.raises(CheckpointError) as e:
    damsm_lib.load_encoders(damsm_dir)
  msg = str(e.value)
  assert "checkpoint step 2" in msg and damsm_dir in msg
  assert "gan.damsm_step" in msg and "\n" not in msg
  assert _tree_files(tmp_path) == before  # nothing moved, cleaned or written
  # An explicit older step is the way to use it.
  damsm_lib.load_encoders(damsm_dir, step=1)
  assert _tree_files(tmp_path) == before


# ---------------------------------------- GAN: one tiny preempted run
def _gan_config(damsm_dir, max_steps):
  c = dmgan_shapes.get_config("tiny")
  c.num_devices = 1
  c.max_steps = max_steps
  c.gan.epochs = 4
  c.checkpoint_every_steps = 1
  c.image_every_steps = 100
  c.gan.damsm_dir = damsm_dir
  return c


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
  """2 GAN steps; a real SIGTERM arrives while the last one is logged."""
  base_dir = tmp_path_factory.mktemp("gan_state_safety")
  damsm_dir = str(base_dir / "damsm")
  write_untrained_damsm(dmgan_shapes.get_config("tiny"), damsm_dir)
  workdir = str(base_dir / "w")
  real_write_interval = metric_writer.write_interval

  def write_interval_then_sigterm(writer, progress, pending, step, **kw):
    out = real_write_interval(writer, progress, pending, step, **kw)
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.05)  # the handler runs between bytecodes
    return out

  metric_writer.write_interval = write_interval_then_sigterm
  try:
    result = train.run(_gan_config(damsm_dir, 2), workdir)
  finally:
    metric_writer.write_interval = real_write_interval
  return {"base": base_dir, "damsm_dir": damsm_dir, "workdir": workdir,
          "result": result}


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def test_sigterm_at_the_last_step_still_records_the_losses(gan_run):
  assert not gan_run["result"].get("preempted"), gan_run["result"]
  records = _metrics(gan_run["workdir"])
  assert [r["step"] for r in records] == [2]
  assert np.isfinite(records[0]["train/g_loss"])
  meta = checkpointing.Checkpointer(
      os.path.join(gan_run["workdir"], "checkpoints"), max_to_keep=10,
      interval=1, read_only=True).restore_meta(2)
  assert len(meta["damsm_digest"]) == 64  # the frozen encoders' digest


def test_restarting_a_finished_run_says_so_and_recomputes_nothing(
    gan_run, caplog):
  workdir = gan_run["workdir"]
  losses = open(os.path.join(workdir, "losses.jsonl")).read()  # noqa: SIM115
  with caplog.at_level(logging.WARNING):
    result = train.run(_gan_config(gan_run["damsm_dir"], 2), workdir)
  assert result["already_finished"] and result["step"] == 2
  assert result["train/g_loss"] == _metrics(workdir)[0]["train/g_loss"]
  assert "already finished" in caplog.text
  assert [r["step"] for r in _metrics(workdir)] == [2]  # no record added
  assert open(os.path.join(workdir, "losses.jsonl")).read() == losses  # noqa: SIM115


def test_resume_with_other_damsm_encoders_is_refused(gan_run):
  other = str(gan_run["base"] / "other_damsm")
  _write_damsm_steps(dmgan_shapes.get_config("tiny"), other, seeds=(5,))
  with pytest.raises(CheckpointError) as e:
    train.run(_gan_config(other, 3), gan_run["workdir"])
  msg = str(e.value)
  assert "DAMSM" in msg and gan_run["damsm_dir"] in msg and other in msg
  assert "\n" not in msg


# ------------------------------------- 8. preemption during start-up
def test_sigterm_during_startup_stops_before_the_first_step(tmp_path,
                                                            monkeypatch,
                                                            caplog):
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  real_get_source = pipeline.get_source

  def get_source_then_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    return real_get_source(*args, **kwargs)

  monkeypatch.setattr(pipeline, "get_source", get_source_then_sigterm)
  workdir = str(tmp_path / "w")
  with caplog.at_level(logging.WARNING):
    result = train.run(_damsm_config(max_steps=3), workdir)
  assert result == {"step": 0, "preempted": True, "before_first_step": True}
  assert "preempted during start-up" in caplog.text
  assert "no checkpoint in" in caplog.text
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert not os.path.isdir(ckpt_dir) or not [
      d for d in os.listdir(ckpt_dir) if d.isdigit()]
  assert not metric_writer.read_step_log(os.path.join(workdir,
                                                      "losses.jsonl"))


def test_sigterm_while_main_loads_exits_0_with_a_message(tmp_path):
  """A SIGTERM one second after start lands while main.py imports JAX (or,
  on a fast machine, during set-up): either way a clean exit 0 that says it
  was preempted before running anything (today's main: status 143, silent)."""
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "main.py"),
       "--config=configs/damsm_shapes.py:tiny", "--config.num_devices=1",
       f"--workdir={tmp_path / 'w'}"], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-2000:]
  assert "preempted during start-up" in out, out[-2000:]


# --------------------------- 9. a failed save is one line, no tracebacks
# (orbax's failed background write leaves an asyncio callback behind.)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_failed_checkpoint_write_is_one_error_line(tmp_path, caplog):
  directory = str(tmp_path / "checkpoints")
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  rng = np.random.default_rng(0)
  big = {"w": [jax.numpy.asarray(rng.normal(size=(64, 64)), np.float32)
               for _ in range(8)]}  # 128 KB that do not compress
  old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  # Files may grow to 8 KB: writes past it fail (EFBIG) like a full disk.
  resource.setrlimit(resource.RLIMIT_FSIZE, (8192, old_limit[1]))
  try:
    with caplog.at_level(logging.INFO):
      with pytest.raises(CheckpointError,
                         match=r"cannot write checkpoint step 1 in .*"
                         r"checkpoints \(.* GiB free\)"):
        ckpt.save(1, big, {"next_batch": 1}, {})
        ckpt.wait()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)
    ckpt.close()
  loud = [r for r in caplog.records
          if r.levelno >= logging.WARNING or r.exc_info]
  assert not loud, [r.getMessage()[:200] for r in loud]


# ------------------------ 10. a failing evaluation keeps the training
def test_failing_evaluation_keeps_the_checkpoint_of_its_step(tmp_path,
                                                             monkeypatch):
  def broken(*args, **kwargs):
    raise RuntimeError("evaluation broke")

  monkeypatch.setattr(damsm_lib, "retrieval_top1", broken)
  workdir = str(tmp_path / "w")
  c = _damsm_config(max_steps=2, checkpoint_every_steps=100)
  c.damsm.eval_every_epochs = 100
  with pytest.raises(RuntimeError, match="evaluation broke"):
    train.run(c, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == [2]
  # Restarted (evaluation fixed): nothing is retrained, the evaluation runs.
  monkeypatch.undo()
  result = train.run(c, workdir)
  assert result["step"] == 2 and "retrieval_top1" in result
  assert [r["step"] for r in metric_writer.read_step_log(
      os.path.join(workdir, "losses.jsonl"))] == [1, 2]
  # And once more: finished and evaluated, so nothing is recomputed.
  again = train.run(c, workdir)
  assert again["already_finished"] and again["test_loss"] == result[
      "test_loss"]
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert [r["step"] for r in json.load(f)] == [2]


# ------------- 9. a failed read is one warning line, not one per array
_FAILED_READ = """
import sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from t2igan_jax import checkpointing
from t2igan_jax.errors import CheckpointError
repl = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)),
                     PartitionSpec())
def arrays(seed):
  rng = np.random.default_rng(seed)
  return {"w": [jax.device_put(rng.normal(size=(rng.integers(1, 300), 64))
                               .astype(np.float32), repl) for _ in range(100)]}
ckpt = checkpointing.Checkpointer(sys.argv[1], max_to_keep=10, interval=1)
ckpt.save(1, arrays(1), {}, {})
ckpt.close()
ckpt = checkpointing.Checkpointer(sys.argv[1], max_to_keep=10, interval=1)
try:
  ckpt.restore_compatible(arrays(0), {}, ())
except CheckpointError as e:
  print("error:", str(e)[:60], file=sys.stderr)
ckpt.close()
"""


def test_failed_read_prints_no_traceback_per_array(tmp_path):
  """A step whose arrays cannot be read (here: other shapes) is one line;
  orbax's abandoned reads ("Exception ignored in <coroutine ...>", a
  traceback each: 23 here before) stay at debug level."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run(
      [sys.executable, "-c", _FAILED_READ, str(tmp_path / "checkpoints")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "error: no intact checkpoint" in proc.stderr, proc.stderr[-3000:]
  assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
  # (A read finishing after orbax closed its event loop may still print one
  # or two "Event loop is closed" tracebacks, from tensorstore's thread.)
  # tensorstore's thread may print late "Event loop is closed" tracebacks
  # (their number varies with timing); no other traceback is allowed.
  others = (proc.stderr.count("Traceback")
            - proc.stderr.count("RuntimeError: Event loop is closed"))
  assert others <= 2, proc.stderr[-3000:]
