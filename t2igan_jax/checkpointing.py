"""Checkpoints in the workdir: model state, data-iterator state and metadata.

A thin layer over orbax's ``CheckpointManager``. Each checkpoint step holds
three items:

* ``state``: the train-state pytree (parameters, optimiser states, BN and
  spectral-norm statistics, step, RNG key);
* ``data``: the JSON state of the training data iterator, so a resumed run
  continues with exactly the batches it would have seen;
* ``meta``: JSON facts about the run (vocabulary fingerprint, job, model
  sections of the config) used to refuse restoring into an incompatible run.

orbax writes each step into a temporary directory and renames it when complete,
so a crash never leaves a half-written checkpoint that looks finished.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from t2igan_jax import metric_writer
from t2igan_jax.errors import CheckpointError

ITEMS = ("state", "data", "meta")


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
        enable_async_checkpointing=True)
    self.interval = max(int(interval), 1)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: int | None = None):
    """Returns (state, data_state, meta) of ``step`` (default: latest) or None."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    try:
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              data=ocp.args.JsonRestore(),
              meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; report one clear line.
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f"cannot restore checkpoint step {step} in {self.directory}: "
          f"{type(e).__name__}: {first[:300]}") from e
    return restored.state, restored.data, restored.meta

  def restore_meta(self, step: int | None = None) -> dict[str, Any] | None:
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    try:
      return self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:
      raise CheckpointError(
          f"cannot read checkpoint metadata of step {step} in "
          f"{self.directory}: {type(e).__name__}") from e

  def restore_compatible(self, state: Any, meta: dict[str, Any],
                         keys: tuple[str, ...]):
    """Restores the latest step into the layout of ``state``.

    Returns ``(state, data_state)``, or None when there is no checkpoint.
    Raises CheckpointError when the saved ``meta`` differs from ``meta`` in
    any of ``keys`` (another model, vocabulary or image sizes).
    """
    latest = self.latest_step()
    if latest is None:
      return None
    saved = self.restore_meta(latest) or {}
    for key in keys:
      if saved.get(key) != meta[key]:
        raise CheckpointError(
            f"checkpoint step {latest} in {self.directory} was written by an "
            f"incompatible run ({key} differs); use a new --workdir")
    restored, data_state, _ = self.restore(abstract_like(state), latest)
    return restored, data_state

  def should_save(self, step: int) -> bool:
    return step % self.interval == 0

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves asynchronously; returns whether a save was started."""
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      return False
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

    ``pending_metrics`` are the not yet fetched per-step metrics: a state is
    never checkpointed before its losses were found finite. Returns whether
    the metrics were consumed (the caller then clears them).
    """
    if not (force or self.should_save(step)):
      return False
    metric_writer.fetch_checked(pending_metrics)
    self.save(step, state, data_iterator.get_state(), meta, force=force)
    return True

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing ``tree``, for restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
