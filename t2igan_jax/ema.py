"""The moving average of G's parameters that is sampled and evaluated.

Reference (``gan.ema_debias = False``): the EMA starts at G's initial
parameters θ_0 and after t updates (``train_step``, decay d)::

    a_t = d·a_{t-1} + (1 − d)·θ_t,   a_0 = θ_0

so it still carries d^t of θ_0 (0.999^1000 = 37% after 1,000 steps): short
runs sample a generator close to the untrained one.

Bias-corrected (``gan.ema_debias = True``, Adam-style): the same update
started from zeros, read out divided by the weight it has accumulated::

    e_t = d·e_{t-1} + (1 − d)·θ_t,   e_0 = 0,    sampled: e_t / (1 − d^t)

The checkpoint holds e_t in ``GanState.g_ema`` (same layout as a_t) and its
metadata says which of the two it is (``META_KEY``); checkpoints without the
key hold the reference a_t. Since a_t = e_t + d^t·θ_0, the bias-corrected
weights of a reference run are ``(a_t − d^t·θ_0) / (1 − d^t)``
(:func:`debias_plain_ema`).

t counts the EMA updates actually applied: ``step − nonfinite_skipped``
(an update dropped by ``on_nonfinite='skip'`` leaves the EMA unchanged).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Checkpoint metadata key: True for a zero-started (bias-corrected) EMA; absent
# (None) for the reference EMA, which is what older checkpoints hold.
META_KEY = "gan.ema_debias"


def init(params, debias: bool):
  """The EMA's value before the first update: θ_0 (reference) or zeros."""
  if debias:
    return jax.tree.map(jnp.zeros_like, params)
  return params


def num_updates(state) -> int:
  """EMA updates applied to ``state`` (a GanState): step − skipped updates."""
  return int(state.step) - int(state.nonfinite_skipped)


def weight_sum(decay: float, t: int) -> float:
  """1 − d^t (float64): the total weight of θ_1..θ_t in a zero-started EMA."""
  return 1.0 - float(decay) ** int(t)


def _scale(tree, factor: float):
  return jax.tree.map(lambda a: a * np.asarray(factor, np.asarray(a).dtype),
                      tree)


def debiased(zero_started_ema, decay: float, t: int):
  """e_t / (1 − d^t) for an EMA started from zeros after ``t`` >= 1 updates."""
  if t < 1:
    raise ValueError(f"a zero-started EMA has no weights before its first "
                     f"update (t={t})")
  return _scale(zero_started_ema, 1.0 / weight_sum(decay, t))


def debias_plain_ema(plain_ema, initial_params, decay: float, t: int):
  """(a_t − d^t·θ_0) / (1 − d^t): bias-corrected weights of a reference EMA.

  Args:
    plain_ema: a_t, the reference EMA (started at ``initial_params``) after
      ``t`` updates, e.g. ``GanState.g_ema`` of a ``gan.ema_debias=False`` run.
    initial_params: θ_0, G's parameters before the first step (for a
      ``train_gan`` run: ``create_state(models, key(config.seed)).g_params``).
    decay: the EMA decay d (``gan.ema_decay``).
    t: number of EMA updates (:func:`num_updates`); t = 0 gives θ_0.

  Returns:
    A tree like ``plain_ema``; equal (up to rounding) to the weights a
    ``gan.ema_debias=True`` run with the same θ_0..θ_t samples.
  """
  if t < 1:
    return initial_params
  d_t = float(decay) ** int(t)
  inv = 1.0 / weight_sum(decay, t)
  return jax.tree.map(
      lambda a, p: (a - p * np.asarray(d_t, np.asarray(a).dtype))
      * np.asarray(inv, np.asarray(a).dtype), plain_ema, initial_params)


def describe(debias: bool, decay: float, t: int) -> str:
  """One line naming the EMA weights (for logs and reports)."""
  if debias:
    return (f"bias-corrected EMA of G (decay {decay}, {t} updates: e_t / "
            f"(1 - {decay}^{t}) = e_t / {weight_sum(decay, t):.4g})")
  return (f"EMA of G (reference, decay {decay}, {t} updates; still "
          f"{float(decay) ** int(t):.1%} of the initial weights)")


def sampling_params(state, decay: float, debias: bool) -> Any:
  """The EMA weights to sample from a GanState (θ_0 before any update)."""
  if not debias:
    return state.g_ema
  t = num_updates(state)
  if t < 1:
    return state.g_params
  return debiased(state.g_ema, decay, t)
