"""DM-GAN dynamic memory (SPEC-dmgan §3.4 steps 1-7), NHWC, einsum.

Index letters: b batch, q pixel (row-major over (y, x) = NHWC reshape to
[B, H·W, C]), t word slot, c image channel (N_r = ngf), e word channel
(N_w = text_dim), m memory channel (N_m = memory_dim).

    r̄[b,c]   = mean_q h[b,q,c]                         (stop_gradient by default)
    g_w[b,t] = σ(Σ_e A[e] w[b,t,e] + Σ_c B[c] r̄[b,c])  memory writing gate
    Mw[b,t,m] = ReLU(Σ_e w[b,t,e] Wmw[e,m] + bmw[m])
    Mr[b,m]   = ReLU(Σ_c r̄[b,c] Wmr[c,m] + bmr[m])
    M[b,t,m]  = Mw[b,t,m] g_w[b,t] + Mr[b,m] (1 - g_w[b,t])
    K[b,t,c]  = ReLU(M Wk + bk),  V[b,t,c] = ReLU(M Wv + bv)
    α[b,q,t]  = softmax_t(masked(Σ_c h[b,q,c] K[b,t,c]))  key addressing
    o[b,q,c]  = Σ_t α[b,q,t] V[b,t,c]                    value reading
    g_r[b,q]  = σ(Σ_c [h, o][b,q,c] Wr[c] + br)          response gate ([h, o] order)
    h'        = h (1 - g_r) + o g_r

Mixed precision: ``dtype`` is the computation dtype (float32 default); Dense /
conv parameters stay float32; the addressing softmax runs in float32
(``masked_word_softmax``) and α is cast back to ``dtype`` for value reading.

Conv1d(k=1) layers of the reference are ``Dense`` layers here (orthogonal
kernel, PyTorch default bias ``U(±1/sqrt(fan_in))``); ``A`` and ``B`` are
bias-free ``Dense(1)`` (orthogonal init of a 1×n matrix = a random unit vector).

Converter (reference ``h_netK.*`` -> Flax ``h_netK/...``; Conv1d weight (O, I, 1)
-> kernel (I, O); Linear (O, I) -> kernel (I, O); Conv2d 1×1 OIHW -> HWIO):

=====================================  ===========================================
``A.weight`` (1, 256)                  ``memory_writer/A/kernel`` (256, 1)
``B.weight`` (1, 64)                   ``memory_writer/B/kernel`` (64, 1)
``M_w.0.{weight,bias}``                ``memory_writer/M_w/{kernel,bias}``
``M_r.0.{weight,bias}``                ``memory_writer/M_r/{kernel,bias}``
``key.0.{weight,bias}``                ``key_addressing/key/{kernel,bias}``
``value.0.{weight,bias}``              ``value_reading/value/{kernel,bias}``
``response_gate.0.{weight,bias}``      ``response_gate/conv/{kernel,bias}`` (1,1,128,1)
=====================================  ===========================================
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models import conv_grad
from t2igan_jax.models.init_utils import torch_default_bias, torch_orthogonal
from t2igan_jax.models.model_config import ModelConfig

ATTN_MASK_MODES = ("rolled", "per_caption")


def _dense(features: int, fan_in: int, *, use_bias: bool = True, name=None,
           dtype: Any = jnp.float32) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, kernel_init=torch_orthogonal(),
                  bias_init=torch_default_bias(fan_in), name=name, dtype=dtype,
                  param_dtype=jnp.float32)


def expand_word_mask(mask: jnp.ndarray, num_pixels: int, mode: str) -> jnp.ndarray:
  """Per-pixel word mask [B, Q, T] (True = masked) from the caption mask [B, T].

  ``'per_caption'``: row (b, q) uses ``mask[b]``.
  ``'rolled'`` (reference, SPEC §4.1 ``attn_mask_mode``): the reference tiles the
  B×T mask Q times (``mask.repeat(Q, 1)``) against logits laid out as (B·Q)×T,
  so row (b, q) uses ``mask[(b·Q + q) mod B]``. B is the *global* batch as
  ordered by the loader (length-sorted). Both coincide when all captions have
  the same length.
  """
  b, t = mask.shape
  if mode == "per_caption":
    return jnp.broadcast_to(mask[:, None, :], (b, num_pixels, t))
  if mode == "rolled":
    rows = (jnp.arange(b)[:, None] * num_pixels + jnp.arange(num_pixels)[None, :]) % b
    return mask[rows]
  raise ValueError(f"attn_mask_mode must be one of {ATTN_MASK_MODES}, got {mode!r}")


def masked_word_softmax(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """``softmax_t`` with masked slots excluded (logits [..., T], mask broadcastable).

  The reference fills masked logits with -inf. A finite ``finfo.min`` gives the
  identical result whenever a row keeps at least one visible slot (always the
  case for real captions, which have >= 1 word) and a uniform row instead of NaN
  for a fully masked one. Computed in float32 whatever the logits' dtype
  (mixed precision); the result is float32.
  """
  logits = logits.astype(jnp.float32)
  logits = jnp.where(mask, jnp.finfo(logits.dtype).min, logits)
  return jax.nn.softmax(logits, axis=-1)


class MemoryWriter(nn.Module):
  """Memory writing (steps 1-3): ``(h [B,H,W,C], w [B,T,E]) -> M [B,T,N_m]``.

      r̄   = mean_{y,x} h                      [B, C]  (stop_gradient if ``stop_grad``)
      g_w = σ(A·w + B·r̄)                      [B, T]
      M   = ReLU(M_w w)·g_w + ReLU(M_r r̄)·(1 - g_w)

  ``stop_grad=True`` (reference ``memory_gate_stop_grad``: the pooled feature is
  detached) blocks the gradient into h; A, B, M_r still get gradients.
  Padded word slots (w = 0) give ``ReLU(b_mw)·σ(B·r̄) + M_r(r̄)·(1-σ(B·r̄))``, not 0.
  """
  memory_dim: int = 128
  stop_grad: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, words):
    r_bar = jnp.mean(h.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)  # [B, C]
    if self.stop_grad:
      r_bar = jax.lax.stop_gradient(r_bar)
    e, c = words.shape[-1], r_bar.shape[-1]
    dense = lambda *a, **k: _dense(*a, **k, dtype=self.dtype)
    gate_w = dense(1, e, use_bias=False, name="A")(words)[..., 0]      # [B, T]
    gate_r = dense(1, c, use_bias=False, name="B")(r_bar)              # [B, 1]
    g = jax.nn.sigmoid(gate_w + gate_r)                                 # [B, T]
    m_w = nn.relu(dense(self.memory_dim, e, name="M_w")(words))         # [B, T, m]
    m_r = nn.relu(dense(self.memory_dim, c, name="M_r")(r_bar))         # [B, m]
    return m_w * g[..., None] + m_r[:, None, :] * (1.0 - g[..., None])


class KeyAddressing(nn.Module):
  """Key addressing (steps 4-5): ``(h [B,H,W,C], M [B,T,N_m], mask [B,T]) -> α [B,Q,T]``.

      K[b,t,c]    = ReLU(M W_k + b_k)                       [B, T, C]
      logit[b,q,t] = einsum('bqc,btc->bqt', h_flat, K)      no scaling
      α           = softmax_t(logit, masked per ``mask_mode``)

  ``mask`` is True at padding. ``mask_mode``: 'rolled' (reference) or
  'per_caption'; see ``expand_word_mask``.
  """
  mask_mode: str = "rolled"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, memory, mask):
    b, hh, ww, c = h.shape
    q = hh * ww
    keys = nn.relu(_dense(c, memory.shape[-1], name="key",
                          dtype=self.dtype)(memory))                  # [B, T, C]
    logits = jnp.einsum("bqc,btc->bqt", h.reshape(b, q, c).astype(self.dtype),
                        keys)
    return masked_word_softmax(logits, expand_word_mask(mask, q, self.mask_mode))


class ValueReading(nn.Module):
  """Value reading (step 6): ``(M [B,T,N_m], α [B,Q,T]) -> o [B,Q,features]``.

      V[b,t,c] = ReLU(M W_v + b_v);   o[b,q,c] = einsum('bqt,btc->bqc', α, V)
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, memory, alpha):
    values = nn.relu(_dense(self.features, memory.shape[-1], name="value",
                            dtype=self.dtype)(memory))
    return jnp.einsum("bqt,btc->bqc", alpha.astype(self.dtype), values)


class ResponseGate(nn.Module):
  """Response gate (step 7): ``(h, o) [B,H,W,C] -> h' [B,H,W,C]``.

      g_r = σ(conv1x1_{2C->1}([h, o]) + b)   (concat order [h, o])
      h'  = h·(1 - g_r) + o·g_r

  ``config``: ``dtype`` and ``conv_weight_grad`` ('xla' | 'per_tap',
  ``conv_grad.conv_fn``) of the ``ModelConfig``.
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, o):
    dt = self.config.dtype
    h, o = h.astype(dt), o.astype(dt)
    x = jnp.concatenate([h, o], axis=-1)
    gate = nn.Conv(1, (1, 1), padding=((0, 0), (0, 0)), use_bias=True,
                   kernel_init=torch_orthogonal(),
                   bias_init=torch_default_bias(x.shape[-1]), name="conv",
                   dtype=dt, param_dtype=jnp.float32,
                   conv_general_dilated=conv_grad.conv_fn(self.config.conv_weight_grad))(x)
    gate = jax.nn.sigmoid(gate)
    return h * (1.0 - gate) + o * gate
