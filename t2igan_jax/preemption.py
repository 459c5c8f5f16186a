"""Preemption: finish the current step, save a checkpoint, exit cleanly.

Cloud TPU VMs and spot GPUs announce an eviction with SIGTERM a little before
killing the process. The training loops call ``watcher.reached(step)`` after
every step; when it turns True they force a checkpoint of that step, wait for
it to be committed and return (``main.py`` then exits 0). The next start
resumes from that checkpoint.

* One process: a SIGTERM handler sets a flag (the previous handler is chained
  and restored when the watcher closes).
* Several processes (``jax.distributed`` initialised): JAX's preemption sync
  service owns SIGTERM (its notifier is installed by
  ``jax.distributed.initialize``; a Python handler would replace it). A notice
  received by any host is propagated to all, and
  ``multihost_utils.reached_preemption_sync_point(step)`` turns True on every
  host at the same step (the max step of all hosts + 1), so all of them save
  the same step. This is what orbax's ``CheckpointManager.reached_preemption``
  calls. Every host must call ``reached`` at every step.
"""

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils


def _multi_process() -> bool:
  return jax.distributed.is_initialized() and jax.process_count() > 1


class PreemptionWatcher:
  """Context manager: ``reached(step)`` says when to save and stop.

  Usage::

    with preemption.PreemptionWatcher() as watcher:
      while step < total:
        ...one step...
        if watcher.reached(step):
          save(step, force=True); break
  """

  def __init__(self, signals=(signal.SIGTERM,), enabled: bool = True):
    self._signals = tuple(signals) if enabled else ()
    self._previous = {}
    self._flag = threading.Event()
    self._installed = False
    self.step: int | None = None  # the step at which it was reached

  def __enter__(self) -> "PreemptionWatcher":
    if not self._signals:
      return self
    if _multi_process():
      logging.info("preemption: JAX's multi-host preemption sync service "
                   "handles SIGTERM")
      return self
    if threading.current_thread() is not threading.main_thread():
      logging.warning("preemption: not in the main thread, SIGTERM is not "
                      "watched (a preemption will not save a checkpoint)")
      return self
    for sig in self._signals:
      self._previous[sig] = signal.getsignal(sig)
      signal.signal(sig, self._handle)
      # An enclosing watcher (train.run's, installed before set-up and
      # compiling) may already have been told: inherit its notice.
      outer = getattr(self._previous[sig], "__self__", None)
      if isinstance(outer, PreemptionWatcher) and outer.requested():
        self._flag.set()
    self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      for sig, handler in self._previous.items():
        signal.signal(sig, handler)
      self._installed = False

  def _handle(self, signum, frame, quiet: bool = False) -> None:
    if not self._flag.is_set() and not quiet:
      logging.warning("preemption: received %s; saving a checkpoint after the "
                      "current step, then exiting", signal.Signals(signum).name)
    self._flag.set()
    previous = self._previous.get(signum)
    outer = getattr(previous, "__self__", None)
    if isinstance(outer, PreemptionWatcher):  # e.g. GAN around DAMSM: told once
      outer._handle(signum, frame, quiet=True)  # pylint: disable=protected-access
    elif callable(previous):
      previous(signum, frame)

  def stop_before_first_step(self, step: int, directory: str) -> bool:
    """Whether a notice came during start-up (imports, data, restore,
    compiling): then logs what is saved (nothing new) and returns True.

    Call once before the first step, on every process, with the restored
    step (0 without a checkpoint); the loop then calls ``reached`` with the
    steps after it.
    """
    if not self.reached(step):
      return False
    saved = (f"checkpoint step {step} (restored) stays the newest in "
             f"{directory}" if step else f"no checkpoint in {directory} yet")
    logging.warning("preempted during start-up, before the first step: "
                    "nothing new saved (%s); exiting", saved)
    return True

  def requested(self) -> bool:
    """Whether this process received a preemption notice (no sync)."""
    return self._flag.is_set()

  def reached(self, step: int) -> bool:
    """True at the step where every process should save and stop.

    Call it after every step, on every process, with the step just finished.
    """
    if _multi_process():
      reached = bool(multihost_utils.reached_preemption_sync_point(step))
    else:
      reached = self._flag.is_set()
    if reached and self.step is None:
      self.step = step
    return reached
