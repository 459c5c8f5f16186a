"""Conditioning augmentation (CA_NET, SPEC-dmgan §3.2) and its KL term.

    x          = GLU(fc(s))                 s: [B, text_dim] (DAMSM sentence embedding)
    mu, logvar = x[:, :ncf], x[:, ncf:]     fc: Dense(text_dim -> 4·ncf) with bias
    c          = mu + eps * exp(logvar / 2) eps ~ N(0, I), rng stream 'noise'
    KL         = -1/2 · mean_{b,k}(1 + logvar - mu^2 - exp(logvar))   ('mean', reference)

The reference samples eps on every forward, inference included
(``ca_sample_at_eval=True``); ``sample=False`` returns ``c = mu``.

Converter: ``ca_net.fc.weight`` (400, 256) -> ``ca_net/fc/kernel`` (256, 400)
(transpose); ``ca_net.fc.bias`` -> ``ca_net/fc/bias``.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_orthogonal
from t2igan_jax.models.layers import glu


class ConditioningAugmentation(nn.Module):
  """CA_NET: ``s [B, text_dim] -> (c, mu, logvar)``, each [B, condition_dim].

  Params: ``fc/kernel`` [text_dim, 4·ncf] (orthogonal), ``fc/bias`` [4·ncf] (zeros).
  Uses rng stream ``'noise'`` when ``sample`` and no ``eps`` is given.
  """
  condition_dim: int = 100

  @nn.compact
  def __call__(self, sent, *, sample: bool = True,
               eps: Optional[jnp.ndarray] = None):
    x = nn.Dense(4 * self.condition_dim, use_bias=True,
                 kernel_init=torch_orthogonal(),
                 bias_init=nn.initializers.zeros, name="fc")(sent)
    x = glu(x)
    mu = x[:, : self.condition_dim]
    logvar = x[:, self.condition_dim:]
    if not sample:
      return mu, mu, logvar
    if eps is None:
      eps = jax.random.normal(self.make_rng("noise"), mu.shape, mu.dtype)
    c = mu + eps * jnp.exp(0.5 * logvar)
    return c, mu, logvar

