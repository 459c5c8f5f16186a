"""A wall-clock budget for one invocation of a training loop.

``config.max_train_seconds > 0`` stops a training job after the first step
whose end lies past that many seconds of its loop (compilation and the first
step included; set-up before the loop is not counted). The loop then saves a
checkpoint of that step exactly as for a preemption and returns normally, with
``result['time_budget_reached'] = True``; starting the job again resumes from
that checkpoint with a fresh budget. This gives equal-CPU-budget comparisons
and runs that fit a Colab session.

Several processes must stop at the same step, so process 0 decides and the
decision is broadcast every ``sync_every`` steps (each broadcast is a small
host collective); a single process checks its own clock after every step.
"""

import logging
import time

import jax
from jax.experimental import multihost_utils
import numpy as np


class TimeBudget:
  """``reached(step)``: True once the budget is spent (0 = no budget)."""

  def __init__(self, seconds: float, sync_every: int = 1):
    if seconds < 0:
      raise ValueError(f"max_train_seconds must be >= 0, got {seconds}")
    self.seconds = float(seconds)
    self.sync_every = max(int(sync_every), 1)
    self._start = time.monotonic()
    self.step: int | None = None  # the step at which it was reached

  def elapsed(self) -> float:
    return time.monotonic() - self._start

  def reached(self, step: int) -> bool:
    """Call after every step on every process, with the step just finished."""
    if self.seconds <= 0:
      return False
    if jax.process_count() > 1:
      if step % self.sync_every:
        return False
      spent = np.int32(self.elapsed() >= self.seconds)
      spent = bool(multihost_utils.broadcast_one_to_all(spent))
    else:
      spent = self.elapsed() >= self.seconds
    if spent and self.step is None:
      self.step = step
      logging.info("config.max_train_seconds=%g reached after step %d",
                   self.seconds, step)
    return spent


PREEMPTED = "preempted"
OUT_OF_TIME = "time budget reached"


def stop_reason(watcher, budget: TimeBudget, step: int) -> str:
  """Why a training loop stops after ``step``: '' (it goes on), PREEMPTED or
  OUT_OF_TIME (a preemption wins when both happen at once).

  Polls ``watcher`` (preemption.PreemptionWatcher) and ``budget`` every step,
  as both require on every process.
  """
  preempted = watcher.reached(step)
  out_of_time = budget.reached(step)
  if preempted:
    return PREEMPTED
  return OUT_OF_TIME if out_of_time else ""
