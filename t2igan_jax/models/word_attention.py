"""Word-context attention: AttnGAN's ``GlobalAttentionGeneral`` (SPEC-dmgan §3.5),
also FF-GAN's ``WordAttention`` (SPEC-ffgan §2 (a)-(b)), NHWC, einsum.

Index letters: b batch, q pixel (row-major over (y, x) = NHWC reshape to
[B, H·W, C]), t word slot, c image channel (ngf), e word channel (text_dim).

    w'[b,t,c]    = Σ_e w[b,t,e] P[e,c]                 1×1 conv, no bias (``conv_context``)
    ℓ[b,q,t]     = Σ_c h[b,q,c] w'[b,t,c]              no 1/√d scaling, no temperature
    α[b,q,t]     = softmax_t(ℓ, masked slots excluded) mask [B|1, Q|1, T], True = masked
    ctx[b,q,c]   = Σ_t α[b,q,t] w'[b,t,c]              -> [B, H, W, C]

Keys and values are the same projected words; no gates. The mask is passed in
already expanded by the caller (AttnGAN: the rolled caption mask; FF-GAN: none,
only the columns past the batch maximum, or each caption's own padding), so this
module has no mask policy of its own. ``mask=None`` = every slot visible.

Padded word slots hold exact zeros and P has no bias, so an unmasked padded slot
has logit 0: it takes softmax mass ``exp(0)/Z`` but adds nothing to ``ctx``.

Converter (reference Conv2d 1×1 weight (ngf, text_dim, 1, 1) -> Dense kernel
(text_dim, ngf) = ``weight[:, :, 0, 0].T``):

=========================================  =========================================
reference key                              Flax path
=========================================  =========================================
``h_netK.att.conv_context.weight``         ``h_netK/att/conv_context/kernel`` (AttnGAN)
``h_netK.w_att.conv_context.weight``       ``h_netK/ff_block/w_att/conv_context/kernel``
                                           (FF-GAN)
=========================================  =========================================
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_orthogonal
from t2igan_jax.models.memory import masked_word_softmax


class WordContextAttention(nn.Module):
  """``(h [B,H,W,C], words [B,T,E], mask) -> (ctx [B,H,W,C], α [B,H·W,T])``.

  Params: ``conv_context/kernel`` [E, C] (orthogonal, no bias; C = h's channels).
  ``dtype``: computation dtype (float32 default); the softmax runs in float32
  and α is returned in float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, words, mask: Optional[jnp.ndarray] = None):
    b, hh, ww, c = h.shape
    proj = nn.Dense(c, use_bias=False, kernel_init=torch_orthogonal(),
                    name="conv_context", dtype=self.dtype,
                    param_dtype=jnp.float32)(words)                   # [B, T, C]
    logits = jnp.einsum("bqc,btc->bqt",
                        h.reshape(b, hh * ww, c).astype(self.dtype), proj)
    if mask is None:
      mask = jnp.zeros((1, 1, words.shape[1]), jnp.bool_)
    alpha = masked_word_softmax(logits, mask)                         # [B, Q, T]
    ctx = jnp.einsum("bqt,btc->bqc", alpha.astype(self.dtype), proj)
    return ctx.reshape(b, hh, ww, c), alpha
