"""Checkpoints in the workdir: model state, data-iterator state and metadata.

A thin layer over orbax's ``CheckpointManager``. Each checkpoint step holds
three items:

* ``state``: the train-state pytree (parameters, optimiser states, BN and
  spectral-norm statistics, step, RNG key);
* ``data``: the JSON state of the training data iterator, so a resumed run
  continues with exactly the batches it would have seen;
* ``meta``: JSON facts about the run (vocabulary fingerprint, job, model
  sections of the config) used to refuse restoring into an incompatible run,
  plus ``state_digest``, a checksum of every array of ``state``, and
  ``items_digest``, a SHA-256 of that checksum with the ``data`` and ``meta``
  items' JSON: every item of a step is covered (a changed ``next_batch`` is
  corruption like a flipped weight).

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

A step without digests (written before they existed, or with its digest
removed) counts as corrupt, unless ``accept_undigested`` (the config's
``accept_undigested_checkpoints``) accepts it with a warning.

``read_only=True`` (a DAMSM directory a GAN job reads) never writes, moves or
cleans anything in the directory and does not fall back: a damaged step is an
error naming it.

Orbax's own log records (their tracebacks included) are kept at debug level:
a failed read or write is reported once, by this module, in one line.
"""

import contextlib
import functools
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
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
ITEMS_DIGEST_KEY = "items_digest"
ACCEPT_FLAG = "config.accept_undigested_checkpoints"


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint was written by a run with another model/config."""


class Checkpointer:
  """Saves every ``interval`` steps (and when forced), keeps ``max_to_keep``.

  ``keep_period`` (in steps) keeps every multiple of it forever (snapshots).
  """

  def __init__(self, directory: str, *, max_to_keep: int, interval: int,
               keep_period: int | None = None, read_only: bool = False,
               accept_undigested: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self.accept_undigested = accept_undigested
    self.interval = max(int(interval), 1)
    self._last_save: int | None = None  # the step of the newest save started
    self._quiet = _OrbaxToDebug()
    self._quiet.install()
    with self._quiet.everything():
      if read_only:
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False, cleanup_tmp_directories=False,
            save_interval_steps=0, max_to_keep=None,
            enable_async_checkpointing=False)
      else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            keep_period=keep_period if keep_period and keep_period > 0 else None,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=True)
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
      with self._quiet.everything():
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
    """Compares the restored items' digests with the saved ones (collective:
    every process computes the same global digest)."""
    state, data, meta = restored
    expected = meta.get(DIGEST_KEY)
    expected_items = meta.get(ITEMS_DIGEST_KEY)
    where = f"checkpoint step {step} in {self.directory}"
    if expected_items is None and not self.accept_undigested:
      missing = "digests" if expected is None else "data/meta digest"
      return CheckpointError(
          f"{where} has no {missing} (written by an older version, or "
          "tampered with): treated as corrupt; to accept such checkpoints "
          f"unverified, set {ACCEPT_FLAG}=True")
    if expected is None:
      logging.warning("%s has no digest: restored unverified (%s=True)",
                      where, ACCEPT_FLAG)
      return None
    got = state_digest(state)
    if got != expected:
      return CheckpointError(
          f"{where} is corrupt: its arrays' digest {got[:12]}... differs from "
          f"the one saved with it ({expected[:12]}...)")
    if expected_items is None:
      logging.warning("%s has no digest of its data/meta items: arrays "
                      "verified, data position and metadata unverified "
                      "(%s=True)", where, ACCEPT_FLAG)
      return None
    got_items = items_digest(got, data, meta)
    if got_items != expected_items:
      return CheckpointError(
          f"{where} is corrupt: its data/meta items' digest {got_items[:12]}"
          f"... differs from the one saved with them ({expected_items[:12]}"
          "...); e.g. the data iterator position was changed")
    return None

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
      with self._quiet.everything():
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
    A read-only checkpointer tries the newest step only and raises
    CheckpointError when it is unusable (nothing is moved).
    """
    failures = []
    steps = sorted(self.all_steps(), reverse=True)
    for step in steps[:1] if self.read_only else steps:
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
      if self.read_only:
        raise error
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

  def _compatibility_check(self, meta, keys, views=None, check=None):
    """``check_meta(step, saved_meta)`` raising IncompatibleCheckpointError
    when the saved meta differs from ``meta`` in ``keys`` (after
    ``views[key]``) or ``check`` refuses it (see ``restore_compatible``)."""
    views = views or {}

    def check_meta(step, saved):
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
      if check is not None:
        check(step, saved)

    return check_meta

  def restore_compatible(self, state: Any, meta: dict[str, Any],
                         keys: tuple[str, ...],
                         views: Optional[dict[str, Callable[[Any], Any]]] = None,
                         check: Optional[Callable[[int, dict[str, Any]], None]] = None):
    """Restores the newest intact step into the layout of ``state``.

    Returns ``(state, data_state)``, or None when there is no checkpoint.
    Raises CheckpointError when the saved ``meta`` differs from ``meta`` in
    any of ``keys`` (another model, vocabulary or image sizes), naming the
    first differing field, or when no checkpoint is intact. ``views[key]``,
    when given, is applied to the saved value before comparing (e.g. to drop
    fields that do not make runs incompatible). ``check(step, saved_meta)``,
    when given, may raise ``IncompatibleCheckpointError`` too.
    """
    found = self.restore_newest_intact(
        abstract_like(state), self._compatibility_check(meta, keys, views,
                                                        check))
    if found is None:
      return None
    _, restored, data_state, _ = found
    return restored, data_state

  def finished_step(self, total_steps: int, meta: dict[str, Any],
                    keys: tuple[str, ...], views=None, check=None):
    """The newest step when it reached ``total_steps`` and its metadata is
    compatible (``restore_compatible``'s arguments), else None. Reads only
    the metadata (no model is built): for "this run is already finished".
    """
    step = self.latest_step()
    if step is None or step < total_steps:
      return None
    try:
      saved = self.restore_meta(step) or {}
    except IncompatibleCheckpointError:
      raise
    except CheckpointError:
      return None  # unreadable: the full restore reports or skips it
    self._compatibility_check(meta, keys, views, check)(step, saved)
    return step

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
    meta = {k: v for k, v in meta.items()
            if k not in (DIGEST_KEY, ITEMS_DIGEST_KEY)}
    digest = state_digest(state)
    meta[ITEMS_DIGEST_KEY] = items_digest(digest, data_state, meta)
    meta[DIGEST_KEY] = digest
    self._last_save = step
    with self._write_errors(step):
      return self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=ocp.args.JsonSave(data_state),
              meta=ocp.args.JsonSave(meta)),
          force=True)

  @contextlib.contextmanager
  def _write_errors(self, step: int | None = None):
    """A failed (possibly earlier, asynchronous) save as one CheckpointError
    line naming the directory and the free space (orbax's own records of it
    stay at debug level)."""
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:  # orbax/tensorstore raise many types
      free = ""
      try:
        free = f" ({shutil.disk_usage(self.directory).free / 2**30:.2f} GiB free)"
      except OSError:
        pass
      step = self._last_save if step is None else step
      what = "a checkpoint" if step is None else f"checkpoint step {step}"
      raise CheckpointError(
          f"cannot write {what} in {self.directory}{free}: "
          f"{_first_line(e)}") from e

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
    with self._write_errors():
      self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      with self._write_errors():
        self._manager.wait_until_finished()
    finally:
      with self._quiet.everything():
        self._manager.close()
      self._quiet.uninstall()


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


def _canonical_json(obj: Any) -> bytes:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                    default=str).encode()


def items_digest(digest: str, data_state: Any, meta: dict[str, Any]) -> str:
  """Hex SHA-256 of a step's state digest, data item and meta item (the meta
  without its digests), as their JSON round trip gives them back."""
  meta = {k: v for k, v in (meta or {}).items()
          if k not in (DIGEST_KEY, ITEMS_DIGEST_KEY)}
  blob = json.loads(_canonical_json({"state": digest, "data": data_state,
                                     "meta": meta}))
  return hashlib.sha256(_canonical_json(blob)).hexdigest()


class _OrbaxToDebug(logging.Filter):
  """Keeps orbax's log records at debug level.

  Installed on the ``absl`` logger (orbax logs through absl) while a
  Checkpointer lives: orbax records with a traceback (a failed background
  save logs one per thread) are dropped unless debug logging is on; inside
  ``everything()`` (restore attempts, which this module reports itself) all
  orbax records of level WARNING and above are, and so are the "Exception
  ignored in <coroutine ...>" tracebacks Python prints for each of orbax's
  abandoned array reads after a failed one (logged at debug level instead).
  """

  def __init__(self):
    super().__init__()
    self._depth = 0

  def filter(self, record):
    if "/orbax/" not in record.pathname or record.levelno < logging.WARNING:
      return True
    if not (record.exc_info or record.levelno >= logging.ERROR
            or self._depth):
      return True
    return logging.getLogger().isEnabledFor(logging.DEBUG)

  def install(self):
    logging.getLogger("absl").addFilter(self)

  def uninstall(self):
    logging.getLogger("absl").removeFilter(self)

  @contextlib.contextmanager
  def everything(self):
    self._depth += 1
    hook = sys.unraisablehook
    if self._depth == 1:
      sys.unraisablehook = _unraisable_to_debug
    try:
      yield
    finally:
      if self._depth == 1:
        gc.collect()  # finalises abandoned reads while the hook is ours
        sys.unraisablehook = hook
      self._depth -= 1


def _unraisable_to_debug(unraisable) -> None:
  logging.debug("checkpoint I/O: %s: %r", unraisable.err_msg,
                unraisable.exc_value)


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
