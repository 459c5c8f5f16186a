"""The one training loop of every training job (``train_gan``, ``pretrain_damsm``).

A job builds its state, data iterator, checkpointer and jitted step, then
hands them to :func:`run`, which owns what every training run does the same
way:

* compiling the step before the first one, so that a preemption notice
  during start-up stops the job before it runs a step;
* per step: the step's device metrics kept on device (``StepMetrics``),
  fetched every ``config.log_every_steps`` steps: step log, interval means
  to TensorBoard, the job's log line, the progress / ETA line;
* the time budget (``max_train_seconds``) and preemption
  (``time_budget.stop_reason``): on either, a checkpoint of the step just
  finished and a clean exit;
* checkpoints at the interval, at every snapshot and at the last step
  (``Checkpointer.save_loop_step``), each saved *before* the job's hooks run;
* the job's :class:`Hook` s (GAN sample grids, DAMSM evaluation): at their
  interval, at the last step and when the time budget stops the loop, never
  after a preemption notice (the job exits at once);
* the closing record (``{'step', 'seconds', **interval means}``) appended to
  ``config.metrics_json`` when the job asks for it;
* at start, the table of the trained parameters (``clu.parameter_overview``).

The interval means stay ``metric_writer.write_interval``'s (float64 over the
finite values): ``clu.metrics.Average`` sums in float32 and lets one skipped
non-finite step poison the mean, which would change logged numbers.
"""

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

from clu import parameter_overview
import jax
import ml_collections

from t2igan_jax import checkpointing
from t2igan_jax import json_files
from t2igan_jax import metric_writer
from t2igan_jax import sharding
from t2igan_jax import time_budget


@dataclasses.dataclass(frozen=True)
class Hook:
  """Host-side work after a step's save: ``fn(step, state)``."""
  every: int
  fn: Callable[[int, Any], Any]

  def due(self, step: int, total_steps: int, stop: str) -> bool:
    if stop == time_budget.PREEMPTED:
      return False
    return (step % self.every == 0 or step == total_steps
            or stop == time_budget.OUT_OF_TIME)


@dataclasses.dataclass(frozen=True)
class Job:
  """What a training job hands to the loop."""
  name: str                  # in the time-budget line: 'the GAN loop'
  total_steps: int
  snapshot_every: int        # steps between kept snapshots
  step_fn: Any               # jitted (state, batch, *step_args), state donated
  log_line: Callable[[Mapping[str, float]], str]  # from the interval means
  step_args: tuple = ()
  budget_seconds: float = 0.0
  budget_note: str = ""      # appended to the time-budget line
  extra_scalars: Mapping[str, float] = dataclasses.field(default_factory=dict)
  hooks: Sequence[Hook] = ()
  record_result: bool = False  # append the closing record to metrics_json
  # state -> {name: parameter tree}: the table logged at start.
  parameters: Callable[[Any], Mapping[str, Any]] | None = None


@dataclasses.dataclass
class Result:
  """How the loop ended."""
  step: int
  stop: str                  # '' | time_budget.PREEMPTED | OUT_OF_TIME
  seconds: float
  scalars: dict[str, float]  # the last interval's means
  state: Any
  before_first_step: bool = False  # preempted during start-up

  def record(self, total_steps: int) -> dict[str, Any]:
    """``{'step', 'seconds', **scalars}`` with ``time_budget_reached`` and,
    when preempted before the last step, ``preempted`` set."""
    out = {"step": self.step, "seconds": self.seconds, **self.scalars}
    if self.stop == time_budget.OUT_OF_TIME:
      out["time_budget_reached"] = True
    if self.stop == time_budget.PREEMPTED and self.step < total_steps:
      out["preempted"] = True
    return out


def early_stop_record(step: int) -> dict[str, Any]:
  """The result of a job preempted during start-up."""
  return {"step": step, "preempted": True, "before_first_step": True}


def recorded_result(metrics_path: str, step: int,
                    key: str | None = None) -> dict[str, Any] | None:
  """The last record of ``step`` in metrics.json (one holding ``key`` when
  given), or None."""
  records = [r for r in json_files.read_json_records(metrics_path)
             if isinstance(r, dict) and r.get("step") == step
             and (key is None or key in r)]
  return records[-1] if records else None


def log_already_finished(step: int, directory: str, total_steps: int,
                         how: str) -> None:
  """Says that a run whose checkpoint reached its steps has nothing to do."""
  logging.warning(
      "this run is already finished: checkpoint step %d in %s reached its %d "
      "steps%s", step, directory, total_steps, how)


def log_parameters(params: Mapping[str, Any], what: str) -> None:
  """clu's parameter table (name, shape, dtype, size; no statistics, so
  nothing is computed on device) to the INFO log, by process 0."""
  parameter_overview.log_parameter_overview(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params),
      include_stats=False, msg=f"{what}: trained parameters",
      jax_logging_process=0)


class _Loop:
  """One run of the loop (the mutable bookkeeping of :func:`run`)."""

  def __init__(self, config, workdir, job: Job, *, mesh, ckpt, meta,
               train_iter, writer, watcher):
    self.c, self.job, self.mesh = config, job, mesh
    self.ckpt, self.meta, self.train_iter = ckpt, meta, train_iter
    self.writer, self.watcher = writer, watcher
    self.metrics_path = os.path.join(workdir, config.metrics_json)
    self.step_log = metric_writer.StepLog(os.path.join(workdir,
                                                       config.step_log))
    self.pending = metric_writer.StepMetrics(config.on_nonfinite,
                                             self.step_log)
    self.budget = time_budget.TimeBudget(job.budget_seconds,
                                         sync_every=config.log_every_steps)
    self.scalars: dict[str, float] = {}

  def start(self, state) -> tuple[int, Any]:
    """Step log, budget line, progress; compiles the step on the first batch.
    Returns ``(step, first_batch or None)``."""
    step = int(state.step)
    json_files.read_json_records(self.metrics_path)  # damaged: stop now
    if self.job.parameters is not None:
      log_parameters(self.job.parameters(state), self.job.name)
    self.step_log.truncate(step)
    if self.budget.seconds > 0:
      logging.info("%s%s", self.budget.describe(self.job.name),
                   self.job.budget_note)
    self.progress = metric_writer.Progress(self.job.total_steps,
                                           start_step=step, budget=self.budget)
    first_batch = None
    if step < self.job.total_steps:
      first_batch = next(self.train_iter)
      self.job.step_fn.lower(state, self._device(first_batch),
                             *self.job.step_args).compile()
    return step, first_batch

  def _device(self, local_batch):
    return sharding.device_batch(local_batch, self.mesh)

  def write_interval(self, step: int) -> None:
    self.scalars = metric_writer.write_interval(
        self.writer, self.progress, self.pending, step,
        extra={"data/skipped_examples": self.train_iter.num_skipped,
               **self.job.extra_scalars})
    logging.info("step %d: %s", step, self.job.log_line(self.scalars))

  def after_step(self, step: int, state, metrics) -> str:
    """Logs, saves and runs the hooks after ``step``; returns the stop reason."""
    job = self.job
    self.pending.add(step, metrics)
    logged = step % self.c.log_every_steps == 0 or step == job.total_steps
    if logged:
      self.write_interval(step)
    stop = time_budget.stop_reason(self.watcher, self.budget, step)
    if stop == time_budget.OUT_OF_TIME and not logged:
      self.write_interval(step)
    self.ckpt.save_loop_step(step, state, self.train_iter, self.meta,
                             self.pending, total_steps=job.total_steps,
                             snapshot_every=job.snapshot_every, stop=stop)
    for hook in job.hooks:
      if hook.due(step, job.total_steps, stop):
        hook.fn(step, state)
    return stop

  def steps(self, state, step: int, first_batch) -> tuple[Any, int, str]:
    stop = ""
    while step < self.job.total_steps:
      local_batch, first_batch = first_batch or next(self.train_iter), None
      state, metrics = self.job.step_fn(state, self._device(local_batch),
                                        *self.job.step_args)
      step += 1
      stop = self.after_step(step, state, metrics)
      if stop:
        break
    return state, step, stop

  def close(self) -> None:
    try:
      self.ckpt.close()
    finally:
      self.writer.close()


def run(config: ml_collections.ConfigDict, workdir: str, job: Job, state, *,
        mesh, ckpt: checkpointing.Checkpointer, meta: dict[str, Any],
        train_iter, writer: metric_writer.MetricWriter, watcher) -> Result:
  """Trains ``state`` from its step to ``job.total_steps`` (or a stop).

  Closes ``ckpt`` and ``writer`` when it returns. ``watcher`` is the job's
  ``preemption.PreemptionWatcher`` (entered before start-up).
  """
  loop = _Loop(config, workdir, job, mesh=mesh, ckpt=ckpt, meta=meta,
               train_iter=train_iter, writer=writer, watcher=watcher)
  t_start = time.monotonic()
  try:
    step, first_batch = loop.start(state)
    if watcher.stop_before_first_step(step, ckpt.directory):
      return Result(step, time_budget.PREEMPTED, 0.0, {}, state,
                    before_first_step=True)
    state, step, stop = loop.steps(state, step, first_batch)
  finally:
    loop.close()
  result = Result(step, stop, time.monotonic() - t_start, loop.scalars, state)
  record = result.record(job.total_steps)
  if job.record_result and "preempted" not in record and (
      jax.process_index() == 0):
    metric_writer.append_json_record(loop.metrics_path, record)
  return result
