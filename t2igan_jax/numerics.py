"""Non-finite losses and gradient norms: stop the run (default) or skip updates.

``config.on_nonfinite``:

* ``'stop'`` (default, the reference's behaviour of not hiding NaNs): the step
  is applied as computed; the host check (``metric_writer.StepMetrics``)
  raises FloatingPointError naming the step and the non-finite terms before
  the state is ever checkpointed.
* ``'skip'``: inside the jitted step, on device and without a host sync,

      ok    = AND_k isfinite(m_k)        over every loss term and gradient norm
      state' = ok ? new_state : old_state   (parameters, optimiser and BN/SN
                                             statistics; ``step`` still advances
                                             so data order and RNG stay aligned)
      nonfinite_skipped' = nonfinite_skipped + (1 - ok)

  The counter is part of the train state (so it survives restarts) and logged
  as ``train/nonfinite_skipped``.

``config.debug_nonfinite_step`` / ``debug_nonfinite_term`` (testing only)
multiply one loss term by NaN at one step, so its gradients are NaN too.
"""

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from t2igan_jax.errors import ConfigError

# State fields that advance even when an update is skipped.
_ALWAYS_ADVANCE = ("step", "rng", "nonfinite_skipped")


def all_finite(metrics: Mapping[str, jax.Array]) -> jax.Array:
  """Scalar bool: every entry of every metric is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                            for v in jax.tree.leaves(metrics)]))


def guard_update(config, old_state, new_state, metrics: Mapping[str, Any]):
  """``new_state``, or with ``on_nonfinite='skip'`` the guarded update above.

  ``old_state`` / ``new_state`` are flax struct dataclasses with a
  ``nonfinite_skipped`` int32 field; ``metrics`` are the terms checked.
  """
  if config.on_nonfinite != "skip":
    return new_state
  ok = all_finite(metrics)
  kept = {}
  for field in dataclasses.fields(new_state):
    if field.name in _ALWAYS_ADVANCE:
      continue
    kept[field.name] = jax.tree.map(lambda n, o: jnp.where(ok, n, o),
                                    getattr(new_state, field.name),
                                    getattr(old_state, field.name))
  skipped = old_state.nonfinite_skipped + jnp.where(ok, 0, 1).astype(jnp.int32)
  return new_state.replace(nonfinite_skipped=skipped, **kept)


def debug_poison(config, name: str, value: jax.Array, step: jax.Array):
  """Testing only: ``value * NaN`` at step ``config.debug_nonfinite_step``.

  ``step`` is the 0-based state step of the update (logged as ``step + 1``).
  A no-op (nothing traced) unless ``name == config.debug_nonfinite_term``.
  """
  if config.debug_nonfinite_step <= 0 or name != config.debug_nonfinite_term:
    return value
  hit = step + 1 == config.debug_nonfinite_step
  return value * jnp.where(hit, jnp.nan, 1.0).astype(value.dtype)


def poison_terms(config, terms: Mapping[str, jax.Array],
                 step: jax.Array) -> dict[str, jax.Array]:
  """Testing only: :func:`debug_poison` applied to every loss term of a step.

  The one place a training step injects the debug NaN: ``terms`` maps the
  names ``config.debug_nonfinite_term`` may give to scalar losses; the
  returned dict has the same keys and order.
  """
  return {k: debug_poison(config, k, v, step) for k, v in terms.items()}


def check_debug_term(config, names: Sequence[str], job: str) -> None:
  """ConfigError unless the debug term (when set) is a loss term of ``job``."""
  if config.debug_nonfinite_step > 0 and (
      config.debug_nonfinite_term not in names):
    raise ConfigError(
        f"config.debug_nonfinite_term={config.debug_nonfinite_term!r} is not a "
        f"loss term of {job}; one of {tuple(names)}")
