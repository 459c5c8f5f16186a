"""A wall-clock budget for one invocation of a training loop.

``config.max_train_seconds > 0`` stops a training job after the first step
whose end lies past that many seconds of its loop (compilation and the first
step included; set-up before the loop is not counted). The loop then saves a
checkpoint of that step exactly as for a preemption and returns normally, with
``result['time_budget_reached'] = True``; starting the job again resumes from
that checkpoint with a fresh budget. This gives equal-CPU-budget comparisons
and runs that fit a Colab session.

A ``train_gan`` command that first pretrains its DAMSM
(``gan.pretrain_damsm_if_missing``) has one budget for both phases: the DAMSM
loop gets ``gan.damsm_budget_share`` of ``max_train_seconds``
(:func:`split_for_damsm`), the GAN loop what the DAMSM phase (set-up,
evaluations and all) left (:func:`left_for_gan`). The progress line's ETA is
the earlier of the steps' and the budget's end.

Several processes must stop at the same step, so process 0 decides and the
decision is broadcast every ``sync_every`` steps (each broadcast is a small
host collective); a single process checks its own clock after every step.
"""

import logging
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from t2igan_jax import metric_writer


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

  def remaining(self) -> float:
    """Seconds left (inf without a budget; 0 once spent)."""
    if self.seconds <= 0:
      return float("inf")
    return max(self.seconds - self.elapsed(), 0.0)

  def describe(self, what: str) -> str:
    """One line saying the budget is in force (for the log at start)."""
    return (f"time budget in force: {what} stops after the first step past "
            f"{self.seconds:.0f} s ({metric_writer.format_eta(self.seconds)}) and saves "
            "a checkpoint; running the same command again resumes it")

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


def split_for_damsm(total_seconds: float, share: float) -> float:
  """The DAMSM phase's seconds of a command budget (0: no budget)."""
  return total_seconds * share if total_seconds > 0 else 0.0


def left_for_gan(total_seconds: float, spent: float) -> float:
  """The GAN loop's seconds: what the DAMSM phase left of the command's
  budget (0: no budget; at least a millisecond, so one step runs)."""
  if total_seconds <= 0:
    return 0.0
  return max(total_seconds - spent, 1e-3)


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
