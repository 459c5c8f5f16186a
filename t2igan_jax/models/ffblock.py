"""FF-GAN's FF-Block (fine-grained text-image fusion, SPEC-ffgan §2), NHWC.

One FF-Block opens each FF-GAN refinement stage: word-context attention
(AttnGAN's ``GlobalAttentionGeneral``, here ``WordContextAttention``) followed
by ManiGAN's affine combination module (ACM)::

    ctx, α = WordContextAttention(h, w, mask)            [B,H,W,C], [B,H·W,T]
    u      = conv3x3_{C->128}(ctx)                       ACM ``conv``
    γ      = conv3x3_{128->C}(u)                         ACM ``conv_weight``
    β      = conv3x3_{128->C}(u)                         ACM ``conv_bias``
    h_w    = h ⊙ γ + β                                   [B,H,W,C]

All convs are 3×3, stride 1, padding 1, bias-free and orthogonally initialised
(the reference ``weights_init``); no normalisation and no activation anywhere.
The ACM's hidden width is 128 in the reference whatever ngf is (``acm_dim``).

Reference mask behaviour (SPEC-ffgan §2, §9.2): the reference does not mask the
word attention (its ``applyMask`` call is commented out), so padded slots take
softmax mass; the mask passed here is built by the refinement stage from
``model.ffgan_word_mask`` and ``model.word_axis_length``.

Converter (Conv2d OIHW -> HWIO, transpose (2, 3, 1, 0); paths relative to
``h_netK`` = ``FFRefinementStage``):

=======================================  ================================================
reference key                            Flax path
=======================================  ================================================
``w_att.conv_context.weight`` (64,256,1,1)  ``ff_block/w_att/conv_context/kernel`` (256, 64)
``affine.conv.weight`` (128,64,3,3)      ``ff_block/affine/conv/kernel`` (3,3,64,128)
``affine.conv_weight.weight`` (64,128,3,3)  ``ff_block/affine/conv_weight/kernel`` (3,3,128,64)
``affine.conv_bias.weight`` (64,128,3,3)    ``ff_block/affine/conv_bias/kernel`` (3,3,128,64)
=======================================  ================================================

Parameters per block at ngf=64, text_dim=256: 16,384 + 3·73,728 = 237,568.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.layers import conv3x3
from t2igan_jax.models.model_config import ModelConfig
from t2igan_jax.models.word_attention import WordContextAttention

ACM_DIM = 128   # hard-coded hidden width of ManiGAN's / FF-GAN's ACM


class AffineCombination(nn.Module):
  """ACM: ``(h, ctx) [B,H,W,C] -> h ⊙ γ(ctx) + β(ctx)`` [B,H,W,C].

      u = conv3x3_{C->acm_dim}(ctx);  γ = conv3x3_{acm_dim->C}(u);  β = conv3x3_{acm_dim->C}(u)

  Params: ``conv`` [3,3,C,acm_dim], ``conv_weight`` [3,3,acm_dim,C],
  ``conv_bias`` [3,3,acm_dim,C] (kernels only). ``config``: ``dtype`` and
  ``conv_weight_grad`` ('xla' | 'per_tap', ``layers.conv3x3``).
  """
  acm_dim: int = ACM_DIM
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, ctx):
    c, dt = h.shape[-1], self.config.dtype
    conv = functools.partial(conv3x3, dtype=dt, weight_grad=self.config.conv_weight_grad)
    u = conv(self.acm_dim, name="conv")(ctx)
    gamma = conv(c, name="conv_weight")(u)
    beta = conv(c, name="conv_bias")(u)
    return h.astype(dt) * gamma + beta


class FFBlock(nn.Module):
  """FF-Block: ``(h [B,H,W,C], words [B,T,E], mask) -> (h_w [B,H,W,C], α [B,H·W,T])``.

  ``mask`` (True = excluded from the word softmax) broadcasts to [B, H·W, T];
  None = no mask (every slot, padding included, takes part).
  Submodules: ``w_att`` (WordContextAttention), ``affine`` (AffineCombination).
  """
  acm_dim: int = ACM_DIM
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, words, mask: Optional[jnp.ndarray] = None):
    ctx, alpha = WordContextAttention(dtype=self.config.dtype, name="w_att")(
        h, words, mask)
    return AffineCombination(self.acm_dim, self.config, name="affine")(h, ctx), alpha
