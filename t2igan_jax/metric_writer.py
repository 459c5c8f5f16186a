"""TensorBoard output (tensorboardX, no TensorFlow) and the progress line.

Only process 0 writes; other processes get a writer that drops everything.
"""

import json
import logging
import os
import time
from typing import Any, Mapping

import jax
import numpy as np


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
  """Logs ``step/total, steps/s, ETA`` and measures step time."""

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total = total_steps
    self._t0 = time.monotonic()
    self._step0 = start_step
    self._last_t = self._t0
    self._last_step = start_step

  def update(self, step: int) -> dict[str, float]:
    """Returns {'steps_per_sec', 'step_time'} since the previous update."""
    now = time.monotonic()
    dt = now - self._last_t
    ds = step - self._last_step
    rate = ds / dt if dt > 0 and ds > 0 else 0.0
    overall = (step - self._step0) / max(now - self._t0, 1e-9)
    remaining = (self.total - step) / overall if overall > 0 else float("inf")
    logging.info("step %d/%d (%.1f%%)  %.2f steps/s  ETA %s", step, self.total,
                 100.0 * step / max(self.total, 1), rate, format_eta(remaining))
    self._last_t, self._last_step = now, step
    return {"steps_per_sec": rate, "step_time": dt / ds if ds else 0.0}


def format_eta(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h:d}:{m:02d}:{s:02d}"


def fetch_checked(pending: list[tuple[int, Any]]):
  """Fetches per-step device metrics to the host and checks them finite."""
  fetched = jax.device_get(pending)
  check_finite(fetched)
  return fetched


def write_interval(writer: "MetricWriter", progress: "Progress",
                   pending: list[tuple[int, Any]], step: int) -> dict[str, float]:
  """Fetches and checks the interval's metrics, writes their means.

  Returns ``{'train/<name>': mean over the interval}`` plus the progress
  timings (``train/steps_per_sec``, ``train/step_time``).
  """
  fetched = fetch_checked(pending)
  timing = progress.update(step)
  scalars = {f"train/{k}": float(np.mean([m[k] for _, m in fetched]))
             for k in fetched[-1][1]}
  scalars.update({f"train/{k}": v for k, v in timing.items()})
  writer.write_scalars(step, scalars)
  return scalars


def check_finite(step_metrics: list[tuple[int, Mapping[str, Any]]]) -> None:
  """Raises FloatingPointError naming the first step with a non-finite value."""
  for step, metrics in step_metrics:
    for name, value in metrics.items():
      if not np.all(np.isfinite(np.asarray(value))):
        raise FloatingPointError(
            f"non-finite {name}={np.asarray(value)!r} at step {step}; "
            "stopping (the last checkpoint is intact)")


def append_json_record(path: str, record: Mapping[str, Any]) -> None:
  """Appends ``record`` to the JSON list in ``path`` (atomic replace)."""
  records = []
  if os.path.exists(path):
    with open(path) as f:
      records = json.load(f)
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
