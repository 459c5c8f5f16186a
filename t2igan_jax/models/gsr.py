"""FF-GAN's GSR (global semantic refinement, reference ``SentenceAttention``;
SPEC-ffgan §3), NHWC, einsum.

A generator module (not a loss): a per-channel spatial-softmax gating of the
projected DAMSM sentence embedding (the raw sentence vector, not the CA code).
Index letters: b batch, q pixel (row-major over (y, x)), c channel, e text dim.

    s'[b,c]   = Σ_e s[b,e] P[e,c]                    1×1 conv, no bias (``conv_context``)
    a[b,q,c]  = softmax_q(h[b,q,c] · s'[b,c])        over the H·W positions, per (b, c)
    g[b,q,c]  = s'[b,c] · a[b,q,c]                   -> [B, H, W, C]

Each channel of g sums over space to s'[b,c] (its per-pixel size is about
s'/(H·W) unless the softmax is peaked). The reference's second output (the map a)
is unused and not returned.

Converter (Conv2d 1×1 OIHW weight (ngf, text_dim, 1, 1) -> Dense kernel
(text_dim, ngf) = ``weight[:, :, 0, 0].T``):

=========================================  =========================================
reference key                              Flax path
=========================================  =========================================
``h_netK.s_att.conv_context.weight``       ``h_netK/s_att/conv_context/kernel``
=========================================  =========================================

Parameters per stage at ngf=64, text_dim=256: 16,384.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_orthogonal


class GSR(nn.Module):
  """``(h [B,H,W,C], sent [B,E]) -> g [B,H,W,C]``.

  Params: ``conv_context/kernel`` [E, C] (orthogonal, no bias; C = h's channels).
  ``dtype``: computation dtype (float32 default); the spatial softmax runs in
  float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, sent):
    b, hh, ww, c = h.shape
    s_proj = nn.Dense(c, use_bias=False, kernel_init=torch_orthogonal(),
                      name="conv_context", dtype=self.dtype,
                      param_dtype=jnp.float32)(sent)                  # [B, C]
    logits = jnp.einsum("bqc,bc->bqc",
                        h.reshape(b, hh * ww, c).astype(self.dtype), s_proj)
    a = jax.nn.softmax(logits.astype(jnp.float32), axis=1)            # over q
    g = jnp.einsum("bc,bqc->bqc", s_proj, a.astype(self.dtype))
    return g.reshape(b, hh, ww, c)
