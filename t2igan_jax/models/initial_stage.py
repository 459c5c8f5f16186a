"""Initial stage INIT_STAGE_G (SPEC-dmgan §3.3), NHWC.

    x  = GLU(BN1d(fc([c, z])))              fc: Dense(ncf + nz -> C0·4·4·2), no bias
    h0 = reshape(x, [B, C0, 4, 4]) -> NHWC  channel-major: flat index = ch·16 + y·4 + x
    h  = UpBlock^n(h0)                      C0 -> C0/2 -> ... -> ngf, 4 -> 4·2^n px

Concatenation order is ``[c, z]`` (c first). BN1d normalises each of the
``C0·32`` fc features separately (over the batch only).

Number of upsampling blocks ``n = log2(out_size / 4)`` and ``C0 = ngf·2^n``.
At the reference size (out_size 64) this is ``n = 4`` and ``C0 = ngf·16 = 1024``,
i.e. exactly the reference (``upsample1..4``: 1024->512->256->128->64). Smaller
``out_size`` (tiny test configs) drop leading blocks so the output still has
``ngf`` channels.

Converter: ``h_net1.fc.0.weight`` (32768, 200) -> ``h_net1/fc/kernel`` (200, 32768);
``h_net1.fc.1.*`` -> ``h_net1/fc_bn/*``; ``h_net1.upsampleK.{1,2}`` ->
``h_net1/upsampleK/{conv,bn}``.
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_orthogonal
from t2igan_jax.models.layers import UpBlock, batch_norm, glu
from t2igan_jax.models.model_config import ModelConfig


class InitialStage(nn.Module):
  """INIT_STAGE_G: ``(c [B, ncf], z [B, nz]) -> h [B, out_size, out_size, ngf]``."""
  ngf: int = 64
  out_size: int = 64
  config: ModelConfig = ModelConfig()   # dtype, bn_running_var, conv_weight_grad

  @property
  def num_upsamples(self) -> int:
    n = int(round(math.log2(self.out_size / 4)))
    if n < 1 or 4 * 2 ** n != self.out_size:
      raise ValueError(f"initial-stage size must be 4·2^n (n >= 1), got {self.out_size}")
    return n

  @nn.compact
  def __call__(self, c, z, *, train: bool):
    n = self.num_upsamples
    c0 = self.ngf * 2 ** n
    cfg = self.config
    x = jnp.concatenate([c, z], axis=-1).astype(cfg.dtype)
    x = nn.Dense(c0 * 4 * 4 * 2, use_bias=False, kernel_init=torch_orthogonal(),
                 name="fc", dtype=cfg.dtype, param_dtype=jnp.float32)(x)
    x = batch_norm(cfg.bn_running_var, name="fc_bn")(x, use_running_average=not train)
    x = glu(x)                                        # [B, c0·16]
    h = x.reshape(x.shape[0], c0, 4, 4).transpose(0, 2, 3, 1)   # channel-major -> NHWC
    for i in range(n):
      h = UpBlock(c0 // 2 ** (i + 1), cfg, name=f"upsample{i + 1}")(h, train=train)
    return h
