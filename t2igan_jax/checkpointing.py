"""Checkpoints in the workdir: model state, data-iterator state and metadata.

A thin layer over orbax's ``CheckpointManager``. Each checkpoint step holds
three items:

* ``state``: the train-state pytree (parameters, optimiser states, BN and
  spectral-norm statistics, step, RNG key);
* ``data``: the JSON state of the training data iterator, so a resumed run
  continues with exactly the batches it would have seen;
* ``meta``: JSON facts about the run (vocabulary fingerprint, job, model
  sections of the config) used to refuse restoring into an incompatible run,
  plus ``state_digest``, a checksum of every array of ``state``.

Integrity. orbax writes each step into a temporary directory and renames it
when complete, so a killed save never leaves a directory that looks finished
(leftover temporary directories are removed at the next start). A committed
checkpoint can still be damaged later (a truncated or overwritten file): on
restore the state's digest is recomputed and compared; a step that cannot be
read or does not match is skipped with a warning and the next older step is
tried; once one restores, the skipped steps are moved to
``<checkpoints>_corrupt/``. Restoring raises ``CheckpointError`` when no step
can be restored (then nothing is moved: the cause may be this run, e.g. a
missing file system), or when the newest readable step belongs to another
model (the message names the differing config field).
"""

import functools
import hashlib
import logging
import os
import shutil
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from t2igan_jax import metric_writer
from t2igan_jax.errors import CheckpointError

ITEMS = ("state", "data", "meta")
DIGEST_KEY = "state_digest"


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint was written by a run with another model/config."""


class Checkpointer:
  """Saves every ``interval`` steps (and when forced), keeps ``max_to_keep``.

  ``keep_period`` (in steps) keeps every multiple of it forever (snapshots).
  """

  def __init__(self, directory: str, *, max_to_keep: int, interval: int,
               keep_period: int | None = None):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        keep_period=keep_period if keep_period and keep_period > 0 else None,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=True)
    self.interval = max(int(interval), 1)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  # ------------------------------------------------------------- restore
  def _restore_items(self, abstract_state: Any, step: int):
    """(state, data, meta) of ``step`` as read, or CheckpointError."""
    try:
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              data=ocp.args.JsonRestore(),
              meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; report one clear line.
      raise CheckpointError(
          f"cannot restore checkpoint step {step} in {self.directory}: "
          f"{_first_line(e)}") from e
    return restored.state, restored.data, restored.meta or {}

  def _verify(self, step: int, restored) -> CheckpointError | None:
    """Compares the restored state's digest with the saved one (collective:
    every process computes the same global digest)."""
    state, _, meta = restored
    expected = meta.get(DIGEST_KEY)
    if expected is None:  # written before digests were saved
      return None
    got = state_digest(state)
    if got == expected:
      return None
    return CheckpointError(
        f"checkpoint step {step} in {self.directory} is corrupt: its arrays' "
        f"digest {got[:12]}... differs from the one saved with it "
        f"({expected[:12]}...)")

  def restore(self, abstract_state: Any, step: int | None = None):
    """Returns (state, data_state, meta) of ``step`` or None when there is none.

    ``step=None``: the newest intact step (see ``restore_newest_intact``). A
    given ``step`` is restored and verified, or raises CheckpointError.
    """
    if step is not None:
      restored = self._restore_items(abstract_state, step)
      error = self._verify(step, restored)
      if error is not None:
        raise error
      return restored
    found = self.restore_newest_intact(abstract_state)
    return None if found is None else found[1:]

  def restore_meta(self, step: int | None = None) -> dict[str, Any] | None:
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    try:
      return self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:
      raise CheckpointError(
          f"cannot read the metadata of checkpoint step {step} in "
          f"{self.directory}: {_first_line(e)}") from e

  def restore_newest_intact(
      self, abstract_state: Any,
      check_meta: Callable[[int, dict[str, Any]], None] | None = None):
    """(step, state, data, meta) of the newest intact step, or None if none.

    Steps are tried newest first; one that cannot be read or whose digest
    does not match is skipped with a warning. Once an older step restores
    (which shows the failure was the newer step's, not this run's), the
    skipped ones are moved to ``<directory>_corrupt/`` so that they are not
    mistaken for saved steps later. ``check_meta(step, meta)`` may raise
    ``IncompatibleCheckpointError``, which is never a reason to fall back.
    Raises CheckpointError (moving nothing) when no step can be restored.
    """
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      error, restored = None, None
      try:
        meta = self.restore_meta(step) or {}
        if check_meta is not None:
          check_meta(step, meta)
        restored = self._restore_items(abstract_state, step)
      except IncompatibleCheckpointError:
        raise
      except CheckpointError as e:
        error = e
      # Agree before the (collective) digest, so processes stay in step.
      if _all_processes_agree(error is None):
        error = self._verify(step, restored)
      elif error is None:
        error = CheckpointError(
            f"checkpoint step {step} in {self.directory} could not be "
            "restored on another process")
      if error is None:
        for bad, reason in failures:
          moved = self._quarantine(bad)
          logging.warning("%s; moved it to %s", reason, moved)
        if failures:
          logging.warning(
              "resuming from checkpoint step %d, the newest intact one in %s "
              "(skipped unusable step(s) %s)", step, self.directory,
              ", ".join(str(b) for b, _ in failures))
        return (step, *restored)
      failures.append((step, error))
      logging.warning("%s; falling back to an older checkpoint", error)
    if failures:
      raise CheckpointError(
          f"no intact checkpoint in {self.directory} (nothing was moved); "
          f"the newest: {failures[0][1]}")
    return None

  def _quarantine(self, step: int) -> str:
    """Moves step ``step`` out of the manager's directory (process 0)."""
    target_dir = self.directory + "_corrupt"
    target = os.path.join(target_dir, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      src = os.path.join(self.directory, str(step))
      if os.path.exists(src):
        shutil.move(src, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"t2igan_quarantine_{step}")
    self._manager.reload()
    return target

  def restore_compatible(self, state: Any, meta: dict[str, Any],
                         keys: tuple[str, ...],
                         views: Optional[dict[str, Callable[[Any], Any]]] = None):
    """Restores the newest intact step into the layout of ``state``.

    Returns ``(state, data_state)``, or None when there is no checkpoint.
    Raises CheckpointError when the saved ``meta`` differs from ``meta`` in
    any of ``keys`` (another model, vocabulary or image sizes), naming the
    first differing field, or when no checkpoint is intact. ``views[key]``,
    when given, is applied to the saved value before comparing (e.g. to drop
    fields that do not make runs incompatible).
    """
    views = views or {}

    def check(step, saved):
      for key in keys:
        theirs = saved.get(key)
        if key in views and theirs is not None:
          theirs = views[key](theirs)
        where = _first_difference(theirs, meta[key], key)
        if where is not None:
          path, theirs, ours = where
          raise IncompatibleCheckpointError(
              f"checkpoint step {step} in {self.directory} was written by an "
              f"incompatible run: {path} is {theirs!r} there but {ours!r} in "
              "this config; use a new --workdir (or the old config)")

    found = self.restore_newest_intact(abstract_like(state), check)
    if found is None:
      return None
    _, restored, data_state, _ = found
    return restored, data_state

  # ---------------------------------------------------------------- save
  def should_save(self, step: int) -> bool:
    return step % self.interval == 0

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves asynchronously; returns whether a save was started."""
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      return False
    meta = dict(meta, **{DIGEST_KEY: state_digest(state)})
    return self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)),
        force=True)

  def save_checked(self, step: int, state: Any, data_iterator, meta,
                   pending_metrics, *, force: bool = False) -> bool:
    """Saves at the interval (or when forced) after checking the losses.

    ``pending_metrics`` (a ``metric_writer.StepMetrics``, or a list of
    ``(step, device metrics)``) are fetched and checked first: a state is
    never checkpointed before its losses were found finite (or, with
    ``on_nonfinite='skip'``, before its bad updates were dropped). Returns
    whether a save was due.
    """
    if not (force or self.should_save(step)):
      return False
    if isinstance(pending_metrics, metric_writer.StepMetrics):
      pending_metrics.fetch()
    else:
      metric_writer.fetch_checked(pending_metrics)
    self.save(step, state, data_iterator.get_state(), meta, force=force)
    return True

  def save_loop_step(self, step: int, state: Any, data_iterator, meta,
                     pending_metrics, *, total_steps: int, snapshot_every: int,
                     stop: str = "") -> None:
    """A training loop's save after ``step`` (``save_checked``).

    Saves at the interval, and forced at the last step (``total_steps``), at
    every snapshot (multiples of ``snapshot_every``) and when ``stop`` names
    why the loop stops after this step (``time_budget.stop_reason``: a
    preemption notice or the time budget); then, when stopping, waits for the
    save to be written and logs that the run exits (the caller leaves its
    loop).
    """
    self.save_checked(step, state, data_iterator, meta, pending_metrics,
                      force=(step == total_steps or bool(stop)
                             or step % snapshot_every == 0))
    if stop:
      self.wait()
      logging.warning("%s: saved checkpoint step %d in %s; exiting (the next "
                      "start resumes from it)", stop, step, self.directory)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing ``tree``, for restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# ------------------------------------------------------------------ digest
def _leaf_sums(x: jax.Array) -> jax.Array:
  """[2] uint32: sum of the bit patterns, and the sum weighted by 2i+1."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = x.dtype.itemsize
  if size not in (1, 2, 4):
    raise TypeError(f"cannot digest arrays of {x.dtype}")
  bits = jax.lax.bitcast_convert_type(
      x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]).astype(jnp.uint32)
  weights = jnp.arange(bits.shape[0], dtype=jnp.uint32) * 2 + 1
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32),
                    jnp.sum(bits * weights, dtype=jnp.uint32)])


def _leaf_sums_all(leaves):
  return jnp.stack([_leaf_sums(x) for x in leaves]) if leaves else jnp.zeros(
      (0, 2), jnp.uint32)


@functools.lru_cache(maxsize=None)
def _digest_fn(out_sharding):
  return jax.jit(_leaf_sums_all, out_shardings=out_sharding)


def state_digest(state: Any) -> str:
  """Hex SHA-256 of per-array bit checksums of ``state`` (order-independent
  integer sums: the same for any device layout or process count)."""
  leaves = jax.tree.leaves(state)
  out_sharding = None
  for x in leaves:
    if isinstance(getattr(x, "sharding", None), NamedSharding):
      out_sharding = NamedSharding(x.sharding.mesh, PartitionSpec())
      break
  sums = _digest_fn(out_sharding)(leaves)
  host = np.asarray(
      multihost_utils.process_allgather(sums, tiled=True)
      if jax.process_count() > 1 else jax.device_get(sums))
  structure = str(jax.tree.structure(state)).encode()
  return hashlib.sha256(structure + host.astype("<u4").tobytes()).hexdigest()


# ------------------------------------------------------------------ helpers
def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  first = text.splitlines()[0] if text else ""
  return f"{type(e).__name__}: {first[:300]}"


def _all_processes_agree(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  flags = multihost_utils.process_allgather(np.asarray([ok], np.int32))
  return bool(np.all(np.asarray(flags)))


def _first_difference(theirs: Any, ours: Any, path: str):
  """(dotted path, their value, our value) of the first difference, or None."""
  if isinstance(theirs, dict) and isinstance(ours, dict):
    for key in list(ours) + [k for k in theirs if k not in ours]:
      if key not in theirs:
        return f"{path}.{key}", "<missing>", ours[key]
      if key not in ours:
        return f"{path}.{key}", theirs[key], "<missing>"
      where = _first_difference(theirs[key], ours[key], f"{path}.{key}")
      if where is not None:
        return where
    return None
  if isinstance(theirs, (list, tuple)) and isinstance(ours, (list, tuple)):
    if len(theirs) == len(ours):
      for i, (a, b) in enumerate(zip(theirs, ours)):
        where = _first_difference(a, b, f"{path}[{i}]")
        if where is not None:
          return where
      return None
  if theirs != ours:
    return path, theirs, ours
  return None
