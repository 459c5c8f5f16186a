"""Reliability: preemption, kills, corrupt checkpoints, NaNs, bad configs.

The kill test runs ``python main.py --config=configs/dmgan_shapes.py:tiny`` in
subprocesses (with JAX's persistent compilation cache, so restarts only pay
start-up), kills it with SIGKILL at seeded random moments (during start-up,
after a step, while a checkpoint is being written), also preempts it with
SIGTERM, restarts it each time until it finishes, and compares the final
checkpoint and the per-step loss log bitwise with an uninterrupted run.
"""

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import gan_fixtures
from gan_fixtures import write_untrained_damsm
from main_process import ROOT, Run, subprocess_env

from configs import damsm_shapes
from configs import dmgan_shapes
from t2igan_jax import checkpointing
from t2igan_jax import gan_lib
from t2igan_jax import metric_writer
from t2igan_jax import numerics
from t2igan_jax import preemption
from t2igan_jax import train
from t2igan_jax.errors import CheckpointError, ConfigError, WorkdirError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ------------------------------------------------------------------ helpers
def _raw(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def _restore_raw(ckpt_dir, step):
  path = os.path.join(ckpt_dir, str(step), "state")
  return ocp.StandardCheckpointer().restore(path)


def _assert_trees_equal(a, b):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  assert len(flat_a) == len(flat_b) and flat_a
  for path, x in flat_a:
    np.testing.assert_array_equal(_raw(x), _raw(flat_b[path]),
                                  err_msg=jax.tree_util.keystr(path))


def _steps(ckpt_dir):
  return sorted(int(x) for x in os.listdir(ckpt_dir) if x.isdigit())


_CompileCounter = gan_fixtures.CompileCounter


@pytest.fixture
def compile_counter():
  counter = _CompileCounter()
  jax.monitoring.register_event_duration_secs_listener(counter)
  yield counter
  jax.monitoring.unregister_event_duration_listener(counter)


# ------------------------------------------------------------- preemption
def test_preemption_watcher_sigterm_sets_flag_and_restores_handler():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher() as outer:
    with preemption.PreemptionWatcher() as inner:
      assert not inner.reached(1)
      os.kill(os.getpid(), signal.SIGTERM)
      # Python runs the handler between bytecodes of the main thread.
      for _ in range(100):
        if inner.requested():
          break
        time.sleep(0.01)
      assert inner.reached(2) and inner.step == 2
    # The enclosing watcher (GAN around DAMSM pretraining) heard it too.
    assert outer.requested() and outer.reached(3)
  assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------- numerics
@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  rng: jax.Array
  nonfinite_skipped: jax.Array


def _toy_states():
  old = _State(step=jnp.int32(4), params={"w": jnp.arange(3.0)},
               rng=jax.random.key(0), nonfinite_skipped=jnp.int32(2))
  new = old.replace(step=jnp.int32(5), params={"w": jnp.arange(3.0) + 1})
  return old, new


@pytest.mark.parametrize("bad", [None, "loss", "grad_norm"])
def test_guard_update_skips_nonfinite_and_counts(bad):
  old, new = _toy_states()
  metrics = {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(2.0)}
  if bad:
    metrics[bad] = jnp.float32(np.inf if bad == "loss" else np.nan)
  config = ml_collections.ConfigDict({"on_nonfinite": "skip"})
  out = jax.jit(lambda o, n, m: numerics.guard_update(config, o, n, m))(
      old, new, metrics)
  # NumPy reference: keep the old parameters iff some metric is not finite.
  finite = all(np.isfinite(np.asarray(v)) for v in metrics.values())
  expect_w = np.arange(3.0) + 1 if finite else np.arange(3.0)
  np.testing.assert_array_equal(np.asarray(out.params["w"]), expect_w)
  assert int(out.step) == 5  # the step (data position, RNG) still advances
  assert int(out.nonfinite_skipped) == (2 if finite else 3)
  # 'stop' (default) applies the update as computed.
  stop = ml_collections.ConfigDict({"on_nonfinite": "stop"})
  out = numerics.guard_update(stop, old, new, metrics)
  np.testing.assert_array_equal(np.asarray(out.params["w"]),
                                np.arange(3.0) + 1)


def test_debug_poison_makes_value_and_gradient_nan_at_one_step():
  config = ml_collections.ConfigDict({"debug_nonfinite_step": 3,
                                      "debug_nonfinite_term": "kl_loss"})

  def f(x, step, name):
    return numerics.debug_poison(config, name, x * x, step)

  for step, name, bad in ((2, "kl_loss", True), (1, "kl_loss", False),
                          (2, "g_w_loss", False)):
    value, grad = jax.value_and_grad(f)(jnp.float32(1.5), step, name)
    assert np.isnan(value) == bad and np.isnan(grad) == bad
    if not bad:
      assert value == 2.25 and grad == 3.0


def test_check_finite_names_step_and_terms_losses_first():
  ok = {"loss": np.float32(1.0), "w_loss0": np.float32(0.5),
        "text_grad_norm": np.float32(1.0)}
  bad = {"loss": np.float32(np.nan), "text_grad_norm": np.float32(np.nan),
         "w_loss0": np.float32(np.nan)}
  metric_writer.check_finite([(1, ok)])
  with pytest.raises(FloatingPointError) as e:
    metric_writer.check_finite([(1, ok), (2, bad), (3, bad)])
  msg = str(e.value)
  assert "at step 2" in msg
  assert msg.index("w_loss0") < msg.index("loss=") < msg.index("text_grad_norm")


def test_step_log_truncates_after_restored_step_and_torn_lines(tmp_path):
  path = str(tmp_path / "losses.jsonl")
  log = metric_writer.StepLog(path, enabled=True)
  log.truncate(0)
  log.append([(1, {"loss": np.float32(0.1)}), (2, {"loss": np.float32(0.2)})])
  log.append([(2, {"loss": np.float32(9.0)}), (3, {"loss": np.float32(0.3)})])
  with open(path, "a") as f:
    f.write('{"step": 4, "lo')  # a kill in the middle of a write
  assert [r["step"] for r in metric_writer.read_step_log(path)] == [1, 2, 3]
  # float32 values round-trip exactly.
  assert metric_writer.read_step_log(path)[1]["loss"] == float(np.float32(0.2))
  resumed = metric_writer.StepLog(path, enabled=True)
  resumed.truncate(2)
  resumed.append([(3, {"loss": np.float32(0.33)})])
  assert [(r["step"], r["loss"]) for r in metric_writer.read_step_log(path)] == [
      (1, float(np.float32(0.1))), (2, float(np.float32(0.2))),
      (3, float(np.float32(0.33)))]


# --------------------------------------------------------- checkpointing
def _toy_state(seed, sharding=None):
  rng = np.random.default_rng(seed)
  state = {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(32,)), jnp.bfloat16),
           "step": jnp.int32(seed), "key": jax.random.key(seed)}
  if sharding is not None:
    state = jax.device_put(state, sharding)
  return state


def _save_steps(directory, steps, meta=None):
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  for s in steps:
    ckpt.save(s, _toy_state(s), {"next_batch": s}, meta or {"model": {"ngf": 8}})
  ckpt.close()


def test_state_digest_is_layout_independent_and_sees_one_bit():
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  state = _toy_state(1)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  sharded = jax.device_put(state, {"w": NamedSharding(mesh, P("data")),
                                   "b": NamedSharding(mesh, P()),
                                   "step": NamedSharding(mesh, P()),
                                   "key": NamedSharding(mesh, P())})
  assert checkpointing.state_digest(state) == checkpointing.state_digest(sharded)
  w = np.asarray(state["w"]).copy()
  w.view(np.uint32)[5, 7] ^= 1  # the lowest mantissa bit of one weight
  flipped = dict(state, w=jnp.asarray(w))
  assert checkpointing.state_digest(flipped) != checkpointing.state_digest(state)
  # Two swapped values keep the plain sum: the position weights see it.
  w = np.asarray(state["w"]).copy()
  w[0, 0], w[0, 1] = w[0, 1], w[0, 0]
  swapped = dict(state, w=jnp.asarray(w))
  assert checkpointing.state_digest(swapped) != checkpointing.state_digest(state)


def _array_files(step_dir):
  """Data files of the state item (OCDBT/zarr chunks), largest first."""
  out = []
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    if os.path.basename(root) != "d":
      continue
    for name in files:
      p = os.path.join(root, name)
      out.append((os.path.getsize(p), p))
  return [p for _, p in sorted(out, reverse=True)]


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _flip_bytes(path):
  """Overwrites bytes in the middle of the file (same size)."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    chunk = f.read(16)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _garble_meta(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, "meta")):
    for name in files:
      with open(os.path.join(root, name), "w") as f:
        f.write("{not json")


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_newest_checkpoint_falls_back_and_says_so(tmp_path, damage,
                                                          caplog):
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [2, 4, 6])
  step_dir = os.path.join(directory, "6")
  if damage == "truncate":
    _truncate(_array_files(step_dir)[0])
  elif damage == "flip":
    _flip_bytes(_array_files(step_dir)[0])
  else:
    _garble_meta(step_dir)
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  with caplog.at_level(logging.WARNING):
    state, data, _ = ckpt.restore_compatible(
        _toy_state(0), {"model": {"ngf": 8}}, ("model",)) + (None,)
  _assert_trees_equal(state, _toy_state(4))
  assert data == {"next_batch": 4}
  text = caplog.text
  assert "checkpoint step 6" in text and "falling back" in text
  assert "resuming from checkpoint step 4" in text
  # The damaged step is moved aside (kept for inspection), so a later save of
  # step 6 is not skipped as "already saved".
  assert ckpt.all_steps() == [2, 4]
  assert os.listdir(directory + "_corrupt")[0].startswith("6-")
  assert ckpt.save(6, _toy_state(6), {"next_batch": 6}, {"model": {"ngf": 8}})
  ckpt.close()


def test_no_intact_checkpoint_is_an_error(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [1])
  _flip_bytes(_array_files(os.path.join(directory, "1"))[0])
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  with pytest.raises(CheckpointError, match="no intact checkpoint.*step 1"):
    ckpt.restore_compatible(_toy_state(0), {"model": {"ngf": 8}}, ("model",))
  assert ckpt.all_steps() == [1]  # nothing moved: the fault may be this run's
  ckpt.close()


def test_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [2])
  # What a save killed before its commit leaves: orbax's temporary directory.
  tmp = os.path.join(directory, "4.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(tmp, "state"))
  with open(os.path.join(tmp, "state", "partial"), "wb") as f:
    f.write(b"\0" * 100)
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  assert ckpt.all_steps() == [2]
  state, _ = ckpt.restore_compatible(_toy_state(0), {"model": {"ngf": 8}},
                                     ("model",))
  _assert_trees_equal(state, _toy_state(2))
  # The resumed run saves step 4 again; the leftover is gone by then.
  assert ckpt.save(4, _toy_state(4), {"next_batch": 4}, {"model": {"ngf": 8}})
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["2", "4"]


def test_checkpoint_of_other_model_names_the_field(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [2], meta={"model": {"ngf": 8, "r_num": 1}})
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  with pytest.raises(CheckpointError,
                     match=r"model\.ngf is 8 there but 16 in this config"):
    ckpt.restore_compatible(_toy_state(0), {"model": {"ngf": 16, "r_num": 1}},
                            ("model",))
  assert ckpt.all_steps() == [2]  # refused, not treated as corrupt
  ckpt.close()


def test_execution_only_model_fields_do_not_block_a_resume(tmp_path):
  # conv_weight_grad picks how kernel gradients are computed, not the model:
  # a checkpoint written with one value (or before the field existed) restores
  # under another; a real model field still refuses.
  directory = str(tmp_path / "checkpoints")
  _save_steps(directory, [2], meta={"model": {"ngf": 8,
                                              "conv_weight_grad": "xla"}})
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=10, interval=1)
  ours = gan_lib.model_meta({"ngf": 8, "conv_weight_grad": "per_tap"})
  assert ours == {"ngf": 8}
  state, _ = ckpt.restore_compatible(_toy_state(0), {"model": ours},
                                     ("model",),
                                     views={"model": gan_lib.model_meta})
  assert int(state["step"]) == 2
  with pytest.raises(CheckpointError, match=r"model\.conv_weight_grad is "):
    ckpt.restore_compatible(_toy_state(0), {"model": ours}, ("model",))
  with pytest.raises(CheckpointError, match=r"model\.ngf is 8 there but 16"):
    ckpt.restore_compatible(_toy_state(0), {"model": {"ngf": 16}}, ("model",),
                            views={"model": gan_lib.model_meta})
  ckpt.close()


# ------------------------------------------------- configs and workdir
_damsm_config = gan_fixtures.tiny_damsm_config


def test_unknown_field_and_wrong_type_are_refused(tmp_path, compile_counter):
  d = damsm_shapes.get_config("tiny").to_dict()
  d["gan"]["lambda_dasm"] = 5.0
  with pytest.raises(ConfigError, match=r"config\.gan\.lambda_dasm is not a "
                     "known field"):
    train.run(ml_collections.ConfigDict(d), str(tmp_path / "a"))
  d = damsm_shapes.get_config("tiny").to_dict()
  d["damsm"]["batch_size"] = 8.0
  with pytest.raises(ConfigError, match=r"config\.damsm\.batch_size=8\.0 has "
                     "type float; expected int"):
    train.run(ml_collections.ConfigDict(d), str(tmp_path / "b"))
  d = damsm_shapes.get_config("tiny").to_dict()
  d["on_nonfinite"] = "ignore"
  with pytest.raises(ConfigError, match="config.on_nonfinite"):
    train.run(ml_collections.ConfigDict(d), str(tmp_path / "c"))
  assert compile_counter.count == 0


def test_batch_not_divisible_by_devices_before_compiling(tmp_path,
                                                         compile_counter):
  c = dmgan_shapes.get_config("tiny")
  c.num_devices = 3
  with pytest.raises(ConfigError, match=r"config\.gan\.batch_size=8 is not "
                     "divisible by the 3 devices"):
    train.run(c, str(tmp_path / "w"))
  c = _damsm_config(num_devices=0)  # all 8 test devices
  c.damsm.batch_size = 12
  with pytest.raises(ConfigError, match=r"config\.damsm\.batch_size=12"):
    train.run(c, str(tmp_path / "w"))
  assert compile_counter.count == 0


def test_stage_sizes_not_matching_the_model_before_compiling(tmp_path,
                                                             compile_counter):
  c = dmgan_shapes.get_config("tiny")
  c.data.base_size = 48
  with pytest.raises(ConfigError, match=r"config\.data\.base_size=48 with "
                     r"config\.data\.branch_num=2 gives stage sizes \(48, 96\)"):
    train.run(c, str(tmp_path / "w"))
  assert compile_counter.count == 0


def test_damsm_dir_with_other_vocabulary_before_compiling(tmp_path,
                                                          compile_counter):
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from input_pipeline.text import Vocabulary  # pylint: disable=g-import-not-at-top
  c = dmgan_shapes.get_config("tiny")
  words = list(pipeline.get_source(c, "train", 64).vocab.words)
  # The same words with two swapped: another vocabulary of the same size.
  words[1], words[2] = words[2], words[1]
  damsm_dir = tmp_path / "damsm"
  damsm_dir.mkdir()
  (damsm_dir / damsm_lib.VOCAB_FILE).write_text(
      json.dumps(Vocabulary(words).to_json()))
  (damsm_dir / damsm_lib.ENCODER_CONFIG_FILE).write_text(
      json.dumps(damsm_lib.encoder_config(c)))
  c.gan.damsm_dir = str(damsm_dir)
  with pytest.raises(ConfigError, match=r"vocab\.json.*does not match"):
    train.run(c, str(tmp_path / "w"))
  assert compile_counter.count == 0


def test_workdir_unwritable_or_full_fails_at_start(tmp_path, compile_counter):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(WorkdirError, match="a_file/w cannot be created"):
    train.run(_damsm_config(), str(blocker / "w"))
  if os.geteuid() != 0:  # root writes through permission bits
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
      with pytest.raises(WorkdirError, match="ro is not writable"):
        train.run(_damsm_config(), str(ro))
    finally:
      ro.chmod(0o700)
  with pytest.raises(WorkdirError, match=r"GiB free, less than "
                     r"config\.min_free_disk_gb=1000000000\.0"):
    train.run(_damsm_config(min_free_disk_gb=1e9), str(tmp_path / "full"))
  assert compile_counter.count == 0


def _main(*args, env=None, timeout=300):
  env = dict(os.environ if env is None else env, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_main_batch_error_is_one_line(tmp_path):
  proc = _main("--config=configs/dmgan_shapes.py:tiny",
               "--config.gan.batch_size=12", f"--workdir={tmp_path}")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.gan.batch_size=12 is not divisible by "
                         "the 8 devices"), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


# ------------------------------------------------ NaN in a training run
def test_nonfinite_stops_with_step_and_term_after_falling_back(tmp_path,
                                                               caplog):
  """DAMSM run: a corrupt newest checkpoint, then a NaN w_loss0.

  The resumed run falls back to the intact step 2, recomputes step 3, and
  stops at step 4 naming it and the term; no checkpoint holds a NaN state.
  """
  workdir = str(tmp_path / "w")
  train.run(_damsm_config(max_steps=3), workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert _steps(ckpt_dir) == [1, 2, 3]
  first = _restore_raw(ckpt_dir, 3)
  _flip_bytes(_array_files(os.path.join(ckpt_dir, "3"))[0])
  c = _damsm_config(max_steps=5, debug_nonfinite_step=4,
                    debug_nonfinite_term="w_loss0")
  with caplog.at_level(logging.WARNING):
    with pytest.raises(FloatingPointError,
                       match=r"non-finite w_loss0=.*nan.* at step 4"):
      train.run(c, workdir)
  assert "checkpoint step 3" in caplog.text and "corrupt" in caplog.text
  assert _steps(ckpt_dir) == [1, 2, 3]
  # Step 3 recomputed from step 2 equals the first run's step 3.
  _assert_trees_equal(_restore_raw(ckpt_dir, 3), first)
  records = metric_writer.read_step_log(os.path.join(workdir, "losses.jsonl"))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert np.isnan(records[-1]["w_loss0"]) and np.isfinite(records[2]["loss"])


# -------------------------------------------- kills, restarts, preemption
KILL_STEPS = 12
NAN_STEP = 5  # the kill runs skip a NaN kl_loss at this step (on_nonfinite)
_STEP_LINE = re.compile(r"INFO step (\d+): g_loss")
_TMP_MARK = ".orbax-checkpoint-tmp"


def _kill_args(workdir, damsm_dir):
  return [
      "--config=configs/dmgan_shapes.py:tiny", f"--workdir={workdir}",
      f"--config.gan.damsm_dir={damsm_dir}", f"--config.max_steps={KILL_STEPS}",
      "--config.gan.epochs=4", "--config.checkpoint_every_steps=1",
      "--config.keep_checkpoints=100", "--config.image_every_steps=1000",
      "--config.on_nonfinite=skip", f"--config.debug_nonfinite_step={NAN_STEP}",
      "--config.debug_nonfinite_term=kl_loss"]


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory):
  """A DAMSM dir, the subprocess env and one uninterrupted reference run."""
  base = tmp_path_factory.mktemp("kill")
  damsm_dir = str(base / "damsm")
  write_untrained_damsm(dmgan_shapes.get_config("tiny"), damsm_dir)
  env = subprocess_env(base / "jax_cache", devices=1)
  straight = str(base / "straight")
  run = Run(_kill_args(straight, damsm_dir), env, base / "straight.log")
  assert run.finish(600) == 0, run.output()[-3000:]
  return {"base": base, "damsm_dir": damsm_dir, "env": env,
          "straight": straight}


@pytest.mark.slow
def test_uninterrupted_run_skips_the_nan_update(kill_setup):
  """The reference run itself: GAN step with on_nonfinite='skip'."""
  ckpt_dir = os.path.join(kill_setup["straight"], "checkpoints")
  before = _restore_raw(ckpt_dir, NAN_STEP - 1)
  at = _restore_raw(ckpt_dir, NAN_STEP)
  after = _restore_raw(ckpt_dir, NAN_STEP + 1)
  assert int(at["step"]) == NAN_STEP and int(at["nonfinite_skipped"]) == 1
  assert int(before["nonfinite_skipped"]) == 0
  for field in ("g_params", "g_ema", "g_stats", "d_params", "d_stats",
                "g_opt", "d_opt"):
    _assert_trees_equal(before[field], at[field])  # the update was dropped
  moved = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.array_equal(a, b), at["g_params"],
      after["g_params"]))
  assert any(moved)  # the next update applies again
  records = metric_writer.read_step_log(
      os.path.join(kill_setup["straight"], "losses.jsonl"))
  assert [r["step"] for r in records] == list(range(1, KILL_STEPS + 1))
  bad = [r["step"] for r in records if not np.isfinite(r["kl_loss"])]
  assert bad == [NAN_STEP]
  assert [r["nonfinite_skipped"] for r in records] == [
      int(s >= NAN_STEP) for s in range(1, KILL_STEPS + 1)]


def _tmp_dirs(ckpt_dir):
  if not os.path.isdir(ckpt_dir):
    return []
  return [d for d in os.listdir(ckpt_dir) if _TMP_MARK in d]


@pytest.mark.slow
def test_kills_and_preemptions_change_nothing(kill_setup):
  """10 SIGKILLs (start-up, after a step, mid checkpoint write) and a
  SIGTERM; the restarted run ends bitwise equal to the uninterrupted one."""
  rnd = random.Random(20261123)
  base, env = kill_setup["base"], kill_setup["env"]
  workdir = str(base / "killed")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  args = _kill_args(workdir, kill_setup["damsm_dir"])
  log = base / "killed.log"
  plan = ["startup"] * 3 + ["step"] * 3 + ["save"] * 4 + ["sigterm"]
  rnd.shuffle(plan)
  history = []
  for kind in plan:
    done = max(_steps(ckpt_dir)) if os.path.isdir(ckpt_dir) and _steps(
        ckpt_dir) else 0
    tmp_before = set(_tmp_dirs(ckpt_dir))
    run = Run(args, env, log)
    event = {"kind": kind, "from": done}
    if kind == "startup":  # imports, data, restore, tracing, compiling
      time.sleep(rnd.uniform(0.3, 6.0))
      run.proc.send_signal(signal.SIGKILL)
    elif kind in ("step", "sigterm"):
      target = min(done + rnd.randint(1, 3), KILL_STEPS - 1)
      m = run.wait_for(_STEP_LINE, 300, lambda m: int(m.group(1)) >= target)
      assert m is not None, run.output()[-3000:]
      event["at_step"] = int(m.group(1))
      run.proc.send_signal(signal.SIGTERM if kind == "sigterm"
                           else signal.SIGKILL)
    else:  # kill while orbax writes a checkpoint (its temporary directory)
      old = set(_tmp_dirs(ckpt_dir))
      deadline = time.monotonic() + 300
      while run.proc.poll() is None and time.monotonic() < deadline:
        fresh = [d for d in _tmp_dirs(ckpt_dir) if d not in old]
        if fresh and int(fresh[0].split(".")[0]) < KILL_STEPS:
          time.sleep(rnd.uniform(0.0, 0.02))
          run.proc.send_signal(signal.SIGKILL)
          event["writing"] = fresh[0].split(".")[0]
          break
        time.sleep(0.001)
    rc = run.finish()
    event["rc"] = rc
    if kind == "sigterm":
      assert rc == 0, run.output()[-3000:]
      m = re.search(r"preempted: saved checkpoint step (\d+)", run.output())
      assert m, run.output()[-3000:]
      saved = int(m.group(1))
      assert saved >= event["at_step"] and saved in _steps(ckpt_dir)
      event["saved"] = saved
    else:
      assert rc == -signal.SIGKILL, (kind, rc, run.output()[-3000:])
      # A kill mid-write leaves orbax's temporary directory behind.
      event["left_tmp"] = bool(set(_tmp_dirs(ckpt_dir)) - tmp_before)
    history.append(event)
  final = Run(args, env, log)
  assert final.finish(600) == 0, final.output()[-3000:]
  history.append({"kind": "final", "rc": 0})
  print("\n".join(map(str, history)))

  kills = [e for e in history if e.get("rc") == -signal.SIGKILL]
  assert len(kills) >= 10
  assert sum(e.get("left_tmp", False) for e in kills) >= 2, history
  assert not _tmp_dirs(ckpt_dir)  # cleaned up at the next start
  straight_dir = os.path.join(kill_setup["straight"], "checkpoints")
  _assert_trees_equal(_restore_raw(ckpt_dir, KILL_STEPS),
                      _restore_raw(straight_dir, KILL_STEPS))
  with open(os.path.join(workdir, "losses.jsonl")) as f:
    killed_log = f.read()
  with open(os.path.join(kill_setup["straight"], "losses.jsonl")) as f:
    straight_log = f.read()
  assert killed_log == straight_log
