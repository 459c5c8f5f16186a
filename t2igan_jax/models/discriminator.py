"""DM-GAN discriminators D_NET64/128/256 (SPEC-dmgan §4), NHWC.

Stage k (0, 1, 2 = 64, 128, 256 px in the reference) encodes an image to a code
with ``8·ndf`` channels:

    img_code_s16_{0..3}: 4 × [SN-conv 4×4/2 p1 + LReLU(0.2)]   3 -> ndf -> 2ndf -> 4ndf -> 8ndf
    k down blocks       : SN-conv 4×4/2 p1 + LReLU             8ndf -> 16ndf (-> 32ndf)
    k 3×3 blocks        : SN-conv 3×3/1 p1 + LReLU             back to 8ndf

so the trunk depth depends on the stage index, not on a fixed image size; the
code is ``image_size / 2^(4+k)`` pixels square: 4×4 at the reference sizes, 2×2
for the 32/64 px tiny configs. Heads (logits, pre-sigmoid; the loss applies the
sigmoid / BCE):

    uncond_logits(code)       = conv_{s×s / s}(code)                          [B]
    cond_logits(code, sent)   = conv_{s×s / s}(LReLU(SN-conv3×3([code, tile(sent)])))  [B]

The logits convs have no SN and have a bias; their kernel = stride = the code's
spatial size s (4×4/4 in the reference, which is then a single output pixel).
The sentence is the raw DAMSM embedding (never the CA code), tiled to s×s,
concatenated after the code.

Parameter tree / converter map (reference ``D_NETxx`` keys; SN convs:
``weight_bar`` -> ``kernel`` (OIHW -> HWIO), ``bias`` -> ``bias``, ``weight_u`` ->
'batch_stats' ``.../u``, ``weight_v`` dropped):

=========================================  ===============================================
``img_code_s16.{0,2,4,6}.module``          ``encoder/img_code_s16_{0,1,2,3}``
``img_code_s32.0.module``                  ``encoder/img_code_s32``
``img_code_s32_1.0.module`` (D128)         ``encoder/img_code_s32_1``
``img_code_s64.0.module`` (D256)           ``encoder/img_code_s64``
``img_code_s64_{1,2}.0.module`` (D256)     ``encoder/img_code_s64_{1,2}``
``UNCOND_DNET.outlogits.0``                ``uncond_dnet/outlogits`` (Conv, kernel + bias)
``COND_DNET.jointConv.0.module``           ``cond_dnet/joint_conv``
``COND_DNET.outlogits.0``                  ``cond_dnet/outlogits``
=========================================  ===============================================

Collections: 'params' (trainable) and 'batch_stats' (SN u vectors; no BN here).
Every SN conv call does one power iteration. ``update_stats=None`` (default):
the new u is stored iff 'batch_stats' is mutable in the ``apply`` — so
``mutable=['batch_stats']`` gives the reference (``sn_update='every_call'``) and
an immutable apply iterates from the stored u without storing
(``'d_step_only'`` G-step calls); ``True`` insists on storing (Flax raises if
the collection is immutable); ``False`` never stores. Successive calls inside
one ``apply`` see each other's u updates, so computing a whole D loss in one
``apply`` threads the SN state in call order.

Mixed precision: ``config.dtype`` (computation dtype, float32 default =
reference; ``model_config.ModelConfig``) applies to every conv; parameters and
SN state stay float32 and the logits are returned in float32 (the BCE losses
reduce in float32).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_default_bias, torch_orthogonal
from t2igan_jax.models.model_config import ModelConfig, keyword_fields
from t2igan_jax.models.spectral_norm import SpectralConv

LEAK = 0.2


def _lrelu(x):
  return nn.leaky_relu(x, LEAK)


def _logits_conv(code, name, dtype=jnp.float32):
  """Conv with kernel = stride = code spatial size, bias, no SN -> [B] float32 logits."""
  b, h, w, c = code.shape
  y = nn.Conv(1, (h, w), strides=(h, w), padding="VALID", use_bias=True,
              kernel_init=torch_orthogonal(),
              bias_init=torch_default_bias(c * h * w), name=name, dtype=dtype,
              param_dtype=jnp.float32)(code)
  return y.reshape(b).astype(jnp.float32)


def _sn_conv(config: ModelConfig, features: int, kernel: int, stride: int,
             name: str) -> SpectralConv:
  """SN conv (padding 1) in ``config.dtype`` with ``config.small_map_conv``."""
  return SpectralConv(features, kernel, stride, 1, dtype=config.dtype,
                      small_map_conv=config.small_map_conv, name=name)


class ImageEncoder(nn.Module):
  """D trunk of stage ``stage``: [B, S, S, 3] -> code [B, S/2^(4+stage), ., 8·ndf]."""
  stage: int = 0
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, x, *, update_stats: Optional[bool] = None):
    cfg = self.config
    for i in range(4):
      x = _lrelu(_sn_conv(cfg, cfg.ndf * 2 ** i, 4, 2, f"img_code_s16_{i}")(
          x, update_stats=update_stats))
    ch = 8 * cfg.ndf
    for j in range(self.stage):
      ch *= 2
      x = _lrelu(_sn_conv(cfg, ch, 4, 2, f"img_code_s{32 * 2 ** j}")(
          x, update_stats=update_stats))
    last = 16 * 2 ** self.stage
    for i in range(self.stage):
      ch //= 2
      x = _lrelu(_sn_conv(cfg, ch, 3, 1, f"img_code_s{last}_{i + 1}")(
          x, update_stats=update_stats))
    return x


class UncondHead(nn.Module):
  """UNCOND_DNET: ``code [B,s,s,8ndf] -> logits [B]`` (conv s×s/s, bias, no SN)."""
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, code):
    return _logits_conv(code, "outlogits", self.config.dtype)


class CondHead(nn.Module):
  """COND_DNET: ``(code [B,s,s,8ndf], sent [B,E]) -> logits [B]``.

      x = LReLU_0.2(SN-conv3×3_{8ndf+E -> 8ndf}([code, tile(sent)]) + b);  logits = conv_{s×s/s}(x)
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, code, sent, *, update_stats: Optional[bool] = None):
    cfg = self.config
    b, h, w, _ = code.shape
    code = code.astype(cfg.dtype)
    s = jnp.broadcast_to(sent[:, None, None, :], (b, h, w, sent.shape[-1]))
    x = jnp.concatenate([code, s.astype(cfg.dtype)], axis=-1)
    x = _lrelu(_sn_conv(cfg, 8 * cfg.ndf, 3, 1, "joint_conv")(
        x, update_stats=update_stats))
    return _logits_conv(x, "outlogits", cfg.dtype)


@keyword_fields(positional=("stage", "ndf"))
class Discriminator(nn.Module):
  """D_NET{64,128,256} for ``stage`` 0/1/2 with both heads.

  ``config``: the frozen ``ModelConfig`` (``ndf``, ``dtype``,
  ``small_map_conv``); its fields are also accepted as keywords and read as
  attributes (``Discriminator(stage=0, ndf=8)``; positionally ``(stage, ndf)``).

  Methods (use with ``apply(..., method=...)``):
    encode(x [B,S,S,3], *, update_stats=None) -> code [B,s,s,8ndf]
    uncond_logits(code) -> [B]
    cond_logits(code, sent [B,text_dim], *, update_stats=None) -> [B]
    __call__(x, sent, *, update_stats=None) -> (code, uncond [B], cond [B])  (init)
  """
  stage: int = 0
  config: ModelConfig = ModelConfig()

  def setup(self):
    self.encoder = ImageEncoder(self.stage, self.config)
    self.uncond_dnet = UncondHead(self.config)
    self.cond_dnet = CondHead(self.config)

  def encode(self, x, *, update_stats: Optional[bool] = None):
    return self.encoder(x, update_stats=update_stats)

  def uncond_logits(self, code):
    return self.uncond_dnet(code)

  def cond_logits(self, code, sent, *, update_stats: Optional[bool] = None):
    return self.cond_dnet(code, sent, update_stats=update_stats)

  def __call__(self, x, sent, *, update_stats: Optional[bool] = None):
    code = self.encode(x, update_stats=update_stats)
    return (code, self.uncond_logits(code),
            self.cond_logits(code, sent, update_stats=update_stats))


def discriminators_from_config(config) -> list:
  """``[Discriminator(stage=k, config=ModelConfig.from_config(config)) for k <
  config.data.branch_num]``.

  The width is ``config.model.ndf``; the text width of the conditional head is
  taken from the sentence at init (``config.text_encoder.embedding_dim``); the
  computation dtype from ``config.dtype`` (``precision.compute_dtype``); how
  small-map convs run from ``config.model.small_map_conv`` (resolved: 'auto' ->
  by backend).
  """
  model_config = ModelConfig.from_config(config)
  return [Discriminator(stage=k, config=model_config)
          for k in range(config.data.branch_num)]
