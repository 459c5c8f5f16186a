"""Two processes on loopback (jax.distributed over CPU, gloo collectives).

``python main.py --config=configs/dmgan_shapes.py:tiny`` runs as 2 processes
(``config.distributed`` with an explicit coordinator address, process count
and id), each with 2 fake CPU devices, writing checkpoints into one shared
workdir. The test

1. kills one process (SIGKILL) mid-run; the other one is stopped too;
2. restarts both: they resume from the last checkpoint; then sends SIGTERM to
   process 1 only: JAX's preemption sync service tells both, both save the
   same step and exit 0;
3. restarts both with 1 device each (2 devices instead of 4): the checkpoint
   is restored onto the new device layout and training finishes.
"""

import os
import re
import signal
import socket
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gan_fixtures import write_untrained_damsm
from main_process import Run, subprocess_env

from configs import dmgan_shapes

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.slow]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(base, workdir, damsm_dir, max_steps, devices, tag):
  port = _free_port()
  runs = []
  for pid in range(2):
    env = subprocess_env(base / f"jax_cache_{devices}dev_p{pid}", devices)
    args = [
        "--config=configs/dmgan_shapes.py:tiny", f"--workdir={workdir}",
        f"--config.gan.damsm_dir={damsm_dir}",
        f"--config.max_steps={max_steps}", "--config.gan.epochs=4",
        "--config.checkpoint_every_steps=2", "--config.image_every_steps=1000",
        "--config.distributed=True",
        f"--config.coordinator_address=127.0.0.1:{port}",
        "--config.num_processes=2", f"--config.process_id={pid}"]
    runs.append(Run(args, env, base / f"{tag}_p{pid}.log"))
  return runs


def _stop_all(runs):
  for r in runs:
    if r.proc.poll() is None:
      r.proc.send_signal(signal.SIGKILL)
  for r in runs:
    r.finish(60)


def _finish_all(runs, timeout=600):
  deadline = time.monotonic() + timeout
  try:
    return [r.finish(max(deadline - time.monotonic(), 1)) for r in runs]
  finally:
    _stop_all(runs)


def _resumed_step(run):
  m = re.search(r"resumed from checkpoint step (\d+)", run.output())
  return int(m.group(1)) if m else None


def _steps(ckpt_dir):
  return sorted(int(x) for x in os.listdir(ckpt_dir) if x.isdigit())


def test_two_processes_survive_kill_preemption_and_new_device_count(
    tmp_path):
  base = tmp_path
  damsm_dir = str(base / "damsm")
  write_untrained_damsm(dmgan_shapes.get_config("tiny"), damsm_dir)
  workdir = str(base / "w")
  ckpt_dir = os.path.join(workdir, "checkpoints")

  # 1. Both start; process 1 is killed after step 3.
  runs = _start(base, workdir, damsm_dir, 16, devices=2, tag="run1")
  try:
    m = runs[1].wait_for(r"INFO step (\d+): g_loss", 600,
                         lambda m: int(m.group(1)) >= 3)
    assert m is not None, runs[1].output()[-3000:]
    # Both processes see the 2-process, 4-device job.
    for r in runs:
      assert "4 devices (2 local" in r.output()
    runs[1].proc.send_signal(signal.SIGKILL)
    # The survivor cannot go on without its peer; it errors out or blocks
    # in a collective. Either way the job is dead: stop it.
    time.sleep(2)
  finally:
    _stop_all(runs)
  assert runs[1].proc.returncode == -signal.SIGKILL
  saved = _steps(ckpt_dir)
  assert saved and saved[-1] >= 2, saved

  # 2. Restart both: they resume from the last checkpoint. Then SIGTERM to
  # process 1 only: JAX's preemption sync service tells process 0, both save
  # the same step and exit 0.
  runs = _start(base, workdir, damsm_dir, 16, devices=2, tag="run2")
  try:
    m = runs[1].wait_for(r"INFO step (\d+): g_loss", 600,
                         lambda m: int(m.group(1)) >= saved[-1] + 1)
    assert m is not None, runs[1].output()[-3000:]
    runs[1].proc.send_signal(signal.SIGTERM)
  finally:
    rcs = _finish_all(runs)
  assert rcs == [0, 0], [r.output()[-3000:] for r in runs]
  for r in runs:
    assert _resumed_step(r) == saved[-1], r.output()[-3000:]
  preempted = [int(re.search(r"preempted: saved checkpoint step (\d+)",
                             r.output()).group(1)) for r in runs]
  assert preempted[0] == preempted[1] > saved[-1], preempted
  assert preempted[0] < 16 and preempted[0] in _steps(ckpt_dir)

  # 3. Restart with 1 device per process (2 devices instead of 4): the
  # checkpoint is restored onto the new layout and training goes on.
  final = preempted[0] + 2
  runs = _start(base, workdir, damsm_dir, final, devices=1, tag="run3")
  rcs = _finish_all(runs)
  assert rcs == [0, 0], [r.output()[-3000:] for r in runs]
  for r in runs:
    assert "2 devices (1 local" in r.output()
    assert _resumed_step(r) == preempted[0], r.output()[-3000:]
  assert _steps(ckpt_dir)[-1] == final
  path = os.path.join(ckpt_dir, str(final), "state")
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
      ocp.StandardCheckpointer().metadata(path).item_metadata)
  state = ocp.StandardCheckpointer().restore(path, target)
  assert int(state["step"]) == final
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["g_params"]))
