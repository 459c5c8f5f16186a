"""TensorBoard output (tensorboardX, no TensorFlow) and the progress line.

Only process 0 writes; other processes get a writer that drops everything.
"""

import json
import logging
import os
import shlex
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from t2igan_jax import json_files


class MetricWriter:
  """Scalars and image grids as TensorBoard event files under ``logdir``."""

  def __init__(self, logdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """``images``: name -> [H, W, 3] uint8 (or float in [0, 1])."""
    if self._writer is None:
      return
    for name, image in images.items():
      self._writer.add_image(name, np.asarray(image), global_step=step,
                             dataformats="HWC")

  def write_text(self, step: int, name: str, text: str) -> None:
    if self._writer is not None:
      self._writer.add_text(name, text, global_step=step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class Progress:
  """Logs ``step/total, steps/s, ETA`` and measures step time.

  With a ``budget`` (``time_budget.TimeBudget``) the ETA is the earlier of
  the remaining steps at the overall rate and the budget's end, and says
  which: ``ETA 0:21:40 (time budget; the 3,900 steps left would take
  1:38:29)``.
  """

  def __init__(self, total_steps: int, start_step: int = 0, budget=None):
    self.total = total_steps
    self.budget = budget
    self._t0 = time.monotonic()
    self._step0 = start_step
    self._last_t = self._t0
    self._last_step = start_step

  def _by_steps(self, step: int, now: float) -> float:
    overall = (step - self._step0) / max(now - self._t0, 1e-9)
    return (self.total - step) / overall if overall > 0 else float("inf")

  def eta(self, step: int, now: float | None = None) -> tuple[float, str]:
    """(seconds to the end, what ends it: 'steps' or 'time budget')."""
    now = time.monotonic() if now is None else now
    by_steps = self._by_steps(step, now)
    left = self.budget.remaining() if self.budget is not None else float("inf")
    if left < by_steps:
      return left, "time budget"
    return by_steps, "steps"

  def update(self, step: int) -> dict[str, float]:
    """Returns {'steps_per_sec', 'step_time'} since the previous update."""
    now = time.monotonic()
    dt = now - self._last_t
    ds = step - self._last_step
    rate = ds / dt if dt > 0 and ds > 0 else 0.0
    remaining, reason = self.eta(step, now)
    note = ""
    if reason != "steps":
      note = (f" ({reason}; the {self.total - step:,d} steps left would take "
              f"{format_eta(self._by_steps(step, now))})")
    logging.info("step %d/%d (%.1f%%)  %.2f steps/s  ETA %s%s", step, self.total,
                 100.0 * step / max(self.total, 1), rate, format_eta(remaining),
                 note)
    self._last_t, self._last_step = now, step
    return {"steps_per_sec": rate, "step_time": dt / ds if ds else 0.0}


def main_command(workdir: str, job: str, extra: tuple[str, ...] = ()) -> str:
  """The ``python main.py`` line that runs ``job`` on ``workdir``.

  It repeats this process's ``--config`` and ``--config.<field>`` overrides
  (a model width given at training, e.g. ``--config.model.ngf=32``, is needed
  by every later job) when this process is ``main.py``; else it shows a
  placeholder for the config file.
  """
  argv = list(sys.argv)
  config_args = []
  if argv and os.path.basename(argv[0]) == "main.py":
    i = 1
    while i < len(argv):
      arg = argv[i]
      if arg in ("--config", "--workdir") and i + 1 < len(argv):
        arg, i = f"{arg}={argv[i + 1]}", i + 1
      i += 1
      if arg.startswith("--config") and not arg.startswith("--config.job="):
        config_args.append(arg)
  if not any(a.startswith("--config=") for a in config_args):
    config_args.insert(0, "--config=<config file>")
  words = ["python", "main.py", *config_args, f"--workdir={workdir}",
           f"--config.job={job}", *extra]
  return " ".join(shlex.quote(w) if "<" not in w else w for w in words)


def format_eta(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h:d}:{m:02d}:{s:02d}"


# Per-step metrics that count (logged as their last value, not averaged).
COUNTERS = ("nonfinite_skipped",)


def nonfinite_terms(metrics: Mapping[str, Any]) -> list[str]:
  """``name=value`` of the non-finite metrics: loss terms first, then the
  totals (``loss``, ``g_loss``), then gradient norms (which follow from them)."""
  bad = [name for name, value in metrics.items()
         if not np.all(np.isfinite(np.asarray(value)))]
  bad.sort(key=lambda n: ("grad_norm" in n, n in ("loss", "g_loss")))
  return [f"{n}={np.asarray(metrics[n])!r}" for n in bad]


def check_finite(step_metrics: list[tuple[int, Mapping[str, Any]]]) -> None:
  """Raises FloatingPointError naming the first bad step and its bad terms."""
  for step, metrics in step_metrics:
    bad = nonfinite_terms(metrics)
    if bad:
      raise FloatingPointError(
          f"non-finite {', '.join(bad)} at step {step}; stopping (the last "
          "checkpoint is intact; config.on_nonfinite='skip' skips such "
          "updates instead)")


class StepLog:
  """Per-step metrics as JSON lines (``{"step": s, name: value, ...}``).

  Written by process 0 only, a line per step, flushed at once, so a killed
  process loses no line it wrote. ``truncate(step)`` (called at every start
  with the restored step) drops the lines past ``step`` and a torn last line:
  after any number of restarts the file holds each step once, with the values
  of the run that produced the checkpoint it continued from.
  """

  def __init__(self, path: str, enabled: bool | None = None):
    self.path = path
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.last_step = 0

  def truncate(self, step: int) -> None:
    self.last_step = int(step)
    if not self.enabled:
      return
    kept = [r for r in read_step_log(self.path, upto_step=step)
            if r["step"] <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for record in kept:
        f.write(json.dumps(record) + "\n")
    os.replace(tmp, self.path)

  def append(self, step_metrics: list[tuple[int, Mapping[str, Any]]]) -> None:
    """Appends the steps after the last one written (a step is never doubled)."""
    new = [(s, m) for s, m in step_metrics if s > self.last_step]
    if not new:
      return
    self.last_step = new[-1][0]
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      for step, metrics in new:
        record = {"step": int(step)}
        record.update({k: np.asarray(v).item() for k, v in metrics.items()})
        f.write(json.dumps(record) + "\n")
      f.flush()


def read_step_log(path: str,
                  upto_step: int | None = None) -> list[dict[str, Any]]:
  """The complete records of a step log (a torn last line is ignored).

  A line that is not a step record raises DamagedFileError naming the file
  and line, unless ``upto_step`` (the restored step) is given and the line
  lies past that step's record: then it is dropped, with a warning, like the
  records after it.
  """
  if not os.path.exists(path):
    return []
  lines = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.endswith("\n"):
        break  # torn by a kill mid-write
      lines.append((line, json_files.step_record(line)))
  bad = next((i for i, (_, r) in enumerate(lines) if r is None), None)
  records = [r for _, r in lines[:bad]]
  if bad is None:
    return records
  line = lines[bad][0].rstrip("\n")[:60]
  past = upto_step is not None and (
      (records[-1]["step"] if records else 0) >= upto_step
      and all(r is None or r["step"] > upto_step for _, r in lines[bad:]))
  if not past:
    raise json_files.DamagedFileError(
        f"{path} line {bad + 1} is not a step record ({line!r}): delete or "
        "fix that line (a missing step only leaves a gap in the log), or move "
        "the file aside to start a new one")
  logging.warning("%s line %d is not a step record (%r); it lies past the "
                  "restored step %d and is dropped with the lines after it",
                  path, bad + 1, line, upto_step)
  return records


class StepMetrics:
  """The per-step device metrics of a training loop.

  ``add`` keeps them on device (no dispatch stall); ``fetch`` brings the new
  ones to the host once, checks them (``on_nonfinite='stop'``: raise naming the
  step and the terms; ``'skip'``: warn, the step already dropped its update),
  and appends them to the step log. ``pop_interval`` returns (and forgets)
  everything since the last call, for the interval means.
  """

  def __init__(self, on_nonfinite: str = "stop",
               step_log: StepLog | None = None):
    self.on_nonfinite = on_nonfinite
    self.step_log = step_log
    self._device: list[tuple[int, Any]] = []
    self._host: list[tuple[int, Any]] = []

  def add(self, step: int, metrics: Any) -> None:
    self._device.append((step, metrics))

  def fetch(self) -> list[tuple[int, Any]]:
    if self._device:
      fetched = jax.device_get(self._device)
      self._device = []
      if self.step_log is not None:  # bad values too: they explain a stop
        self.step_log.append(fetched)
      if self.on_nonfinite == "skip":
        for step, metrics in fetched:
          bad = nonfinite_terms(metrics)
          if bad:
            logging.warning("step %d: update skipped (non-finite %s); %d "
                            "skipped so far", step, ", ".join(bad),
                            int(metrics.get("nonfinite_skipped", -1)))
      else:
        check_finite(fetched)
      self._host.extend(fetched)
    return self._host

  def pop_interval(self) -> list[tuple[int, Any]]:
    fetched = self.fetch()
    self._host = []
    return fetched


def fetch_checked(pending: list[tuple[int, Any]]):
  """Fetches per-step device metrics to the host and checks them finite."""
  fetched = jax.device_get(pending)
  check_finite(fetched)
  return fetched


def _finite_mean(values) -> float:
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return float(np.mean(finite)) if finite.size else float("nan")


def write_interval(writer: "MetricWriter", progress: "Progress",
                   pending: "StepMetrics | list[tuple[int, Any]]",
                   step: int,
                   extra: Mapping[str, float] | None = None) -> dict[str, float]:
  """Fetches and checks the interval's metrics, writes their means.

  Returns ``{'train/<name>': mean over the interval}`` (over the finite
  values: skipped steps do not poison the mean) plus the progress timings
  (``train/steps_per_sec``, ``train/step_time``) and the host-side ``extra``
  scalars written as they are (e.g. ``data/skipped_examples``).
  """
  if isinstance(pending, StepMetrics):
    fetched = pending.pop_interval()
  else:
    fetched = fetch_checked(pending)
  timing = progress.update(step)
  scalars = {f"train/{k}": _finite_mean([m[k] for _, m in fetched])
             for k in fetched[-1][1]}
  for k in COUNTERS:  # cumulative: the interval's last value
    if k in fetched[-1][1]:
      scalars[f"train/{k}"] = float(np.asarray(fetched[-1][1][k]))
  scalars.update({f"train/{k}": v for k, v in timing.items()})
  scalars.update({k: float(v) for k, v in (extra or {}).items()})
  writer.write_scalars(step, scalars)
  return scalars


def append_json_record(path: str, record: Mapping[str, Any]) -> None:
  """Appends ``record`` to the JSON list in ``path`` (atomic replace)."""
  records = json_files.read_json_records(path)
  records.append(dict(record))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(records, f, indent=1)
  os.replace(tmp, path)


def image_grid(images: np.ndarray, ncols: int | None = None) -> np.ndarray:
  """[N, H, W, 3] in [-1, 1] -> one uint8 grid image."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  grid = np.zeros((nrows * (h + 2) + 2, ncols * (w + 2) + 2, c), np.uint8)
  quant = np.clip((images + 1.0) * 127.5, 0, 255).astype(np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    grid[2 + r * (h + 2):2 + r * (h + 2) + h,
         2 + col * (w + 2):2 + col * (w + 2) + w] = quant[i]
  return grid
