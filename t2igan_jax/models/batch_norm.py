"""BatchNorm with PyTorch's running-statistics semantics.

Train mode normalises with the batch statistics (biased variance), exactly as
``torch.nn.BatchNorm{1,2}d`` and ``flax.linen.BatchNorm`` do. The difference is
the running update: PyTorch folds the *unbiased* batch variance
``var * n / (n - 1)`` into ``running_var``; Flax folds the biased one. The
running variance is what eval-mode sampling uses, so the reference behaviour is
the default (``running_var="unbiased"``, SPEC.md §4.1 ``bn_running_var``).

    y = (x - mean_B) / sqrt(var_B + eps) * scale + bias
    running_mean <- momentum * running_mean + (1 - momentum) * mean_B
    running_var  <- momentum * running_var  + (1 - momentum) * var_B * n/(n-1)

``momentum`` is Flax's convention (weight of the old value): PyTorch's 0.1 is
0.9 here. Statistics are reduced over every axis but the last (NHWC / [B, C]);
under ``jax.jit`` with a batch sharded over devices this is the global batch.

Variables: ``params/{scale, bias}`` [C]; ``batch_stats/{mean, var}`` [C].
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

Initializer = Callable[..., jnp.ndarray]


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch running-variance semantics."""
  momentum: float = 0.9
  epsilon: float = 1e-5
  running_var: str = "unbiased"  # 'unbiased' (PyTorch) | 'biased' (Flax)
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Initializer = nn.initializers.ones
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    if self.running_var not in ("unbiased", "biased"):
      raise ValueError(
          f"bn_running_var must be 'unbiased' or 'biased', got {self.running_var!r}")
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean",
                            lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var",
                           lambda: jnp.ones((features,), jnp.float32))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, axis=axes)
      var = jnp.mean(jnp.square(xf - mean), axis=axes)
      if not self.is_initializing():
        n = 1
        for a in axes:
          n *= x.shape[a]
        update_var = var * (n / max(n - 1, 1)) if self.running_var == "unbiased" else var
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * update_var
    y = (x - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
    if self.use_scale:
      y = y * self.param("scale", self.scale_init, (features,), jnp.float32)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (features,), jnp.float32)
    return y.astype(x.dtype)
