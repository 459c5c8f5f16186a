"""Spectral-normalised conv with the reference's per-call power iteration (SPEC-dmgan §4.3).

Per call, with ``W = kernel`` viewed as PyTorch's ``out x (in·kh·kw)`` matrix and
the stored ``u`` [out]:

    v  = Wᵀu / (‖Wᵀu‖ + ε)          (no gradient)
    u' = W v / (‖W v‖ + ε)          (no gradient)
    σ  = u'ᵀ W v                     (gradient flows through W)
    y  = conv(x, kernel / σ) + bias

ε = 1e-12 and the ``x / (‖x‖ + ε)`` normalisation are the reference's
(christiancosgrove-style ``SpectralNorm`` wrapper). One call = one power
iteration from the stored u. ``update_stats=True`` stores u' (reference
behaviour on every call: ``sn_update='every_call'``; the collection must then be
mutable, else Flax raises); ``update_stats=False`` still runs the iteration from
the stored u but does not store the result (the ``nn.SpectralNorm`` convention;
used for ``sn_update='d_step_only'``); ``update_stats=None`` (default) stores
u' iff the collection is mutable in this ``apply``, so the ``mutable=[...]``
argument alone selects the behaviour. Nothing is
stored during ``init``, so the first real call performs the first iteration,
as the first PyTorch forward does.

We do not use ``flax.linen.SpectralNorm``: it normalises with
``x / sqrt(‖x‖² + ε)``, draws u un-normalised and keeps u as (1, out) plus a
``sigma`` entry; this module matches the reference exactly and keeps one
vector per conv.

Variables:
  params/kernel  [kh, kw, in, out]  (HWIO; = reference ``weight_bar`` OIHW
                                     transposed (2, 3, 1, 0)); orthogonal init
  params/bias    [out]              PyTorch default ``U(±1/sqrt(in·kh·kw))``
  batch_stats/u  [out]              (= reference ``weight_u``; ``weight_v`` is
                                     never read and is not kept); init N(0, I)
                                     normalised.

The collection is 'batch_stats' (configurable with ``collection``): DM-GAN's
discriminators have no BatchNorm, so a D's 'batch_stats' holds only SN vectors,
and G and D states are threaded the same way (``mutable=['batch_stats']``).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models import small_map_conv
from t2igan_jax.models.init_utils import torch_default_bias, torch_orthogonal

SN_EPSILON = 1e-12


def l2_normalize(x: jnp.ndarray, eps: float = SN_EPSILON) -> jnp.ndarray:
  """``x / (‖x‖ + eps)`` (the reference's ``l2normalize``)."""
  return x / (jnp.linalg.norm(x) + eps)


def power_iteration(w_mat: jnp.ndarray, u: jnp.ndarray, eps: float = SN_EPSILON):
  """One power iteration on ``w_mat`` [out, fan_in] from ``u`` [out].

  Returns ``(sigma, u_new, v)``; u_new and v carry no gradient, sigma is
  differentiable w.r.t. ``w_mat``.
  """
  w_sg = jax.lax.stop_gradient(w_mat)
  v = l2_normalize(w_sg.T @ u, eps)
  u_new = l2_normalize(w_sg @ v, eps)
  u_new, v = jax.lax.stop_gradient(u_new), jax.lax.stop_gradient(v)
  sigma = jnp.dot(u_new, w_mat @ v)
  return sigma, u_new, v


class SpectralConv(nn.Module):
  """Conv2d (NHWC, explicit symmetric padding, bias) wrapped in reference spectral norm."""
  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  epsilon: float = SN_EPSILON
  collection: str = "batch_stats"
  # Computation dtype of the conv (float32 = reference). The kernel, bias, u
  # and the power iteration stay float32; kernel/σ is cast to it.
  dtype: Any = jnp.float32
  # 'xla' | 'matmul' | 'auto' (config model.small_map_conv): small output maps
  # as one patch-matrix GEMM (models/small_map_conv.py); same sums.
  small_map_conv: str = "xla"

  @nn.compact
  def __call__(self, x, *, update_stats: Optional[bool] = None):
    k, cin, cout = self.kernel_size, x.shape[-1], self.features
    kernel = self.param("kernel", torch_orthogonal(), (k, k, cin, cout), jnp.float32)
    bias = self.param("bias", torch_default_bias(cin * k * k), (cout,), jnp.float32)
    u_var = self.variable(
        self.collection, "u",
        lambda: l2_normalize(jax.random.normal(self.make_rng("params"), (cout,)),
                             self.epsilon))
    w_mat = kernel.transpose(3, 2, 0, 1).reshape(cout, -1)   # torch view out x in·kh·kw
    sigma, u_new, _ = power_iteration(w_mat, u_var.value, self.epsilon)
    if update_stats is None:
      update_stats = self.is_mutable_collection(self.collection)
    if update_stats and not self.is_initializing():
      u_var.value = u_new
    p = self.padding
    x = x.astype(self.dtype)
    w = (kernel / sigma).astype(self.dtype)
    if small_map_conv.uses_matmul(self.small_map_conv, x.shape, k,
                                  self.strides, p):
      y = small_map_conv.conv_matmul(x, w, self.strides, p)
    else:
      y = jax.lax.conv_general_dilated(
          x, w, window_strides=(self.strides, self.strides),
          padding=((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)
