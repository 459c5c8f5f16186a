"""Generator building blocks of DM-GAN / AttnGAN (SPEC-dmgan §3.1), NHWC.

Reference (PyTorch, NCHW) -> port (Flax, NHWC) name map, for the converter
(SPEC-dmgan §10.1, §10.5):

==========================================  ==========================================
reference key                               Flax path
==========================================  ==========================================
``<up>.1.weight`` (upBlock conv)            ``<up>/conv/kernel``  (OIHW -> HWIO)
``<up>.2.{weight,bias}`` (BN)               ``<up>/bn/{scale,bias}`` (params)
``<up>.2.{running_mean,running_var}``       ``<up>/bn/{mean,var}`` (batch_stats)
``<res>.block.0.weight`` / ``.block.1.*``   ``<res>/conv1/kernel`` / ``<res>/bn1/*``
``<res>.block.3.weight`` / ``.block.4.*``   ``<res>/conv2/kernel`` / ``<res>/bn2/*``
``img_netK.img.0.weight``                   ``img_netK/conv/kernel``
==========================================  ==========================================

All convs here are bias-free with explicit padding; kernels are orthogonal
(gain 1) in PyTorch's ``out x in·kh·kw`` view; BatchNorm uses PyTorch's
semantics (eps 1e-5, Flax momentum 0.9 = torch 0.1, unbiased running variance by
default, scale ``~ N(1, 0.02)``, bias 0).

The modules take the frozen ``ModelConfig`` (``model_config``; default
``ModelConfig()``) for three flags:

* ``config.dtype``: the computation dtype (float32 = the reference); convs run
  in it with float32 parameters (``param_dtype``), BatchNorm reduces its
  statistics in float32 and returns ``dtype`` (``batch_norm.BatchNorm``).
* ``config.conv_weight_grad`` (config ``model.conv_weight_grad``): 'xla' (plain
  ``nn.Conv``, XLA's own gradient) | 'per_tap' (``conv_grad.conv_general_dilated``:
  the same forward, the kernel gradient as one GEMM per kernel tap, faster on
  XLA:CPU; same values up to float summation order).
* ``config.bn_running_var``: 'unbiased' (reference) | 'biased'.

The functions ``conv3x3`` / ``conv1x1`` / ``batch_norm`` keep explicit arguments.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models import conv_grad
from t2igan_jax.models.batch_norm import BatchNorm
from t2igan_jax.models.init_utils import bn_scale_init, torch_orthogonal
from t2igan_jax.models.model_config import ModelConfig

BN_MOMENTUM = 0.9   # Flax convention = PyTorch momentum 0.1
BN_EPSILON = 1e-5


def glu(x: jnp.ndarray) -> jnp.ndarray:
  """Gated linear unit over the last axis: ``x[..., :C/2] * sigmoid(x[..., C/2:])``.

  First half = value, second half = gate (torch ``GLU`` on the channel axis).
  """
  c = x.shape[-1]
  if c % 2:
    raise ValueError(f"GLU needs an even number of channels, got {c}")
  return x[..., : c // 2] * jax.nn.sigmoid(x[..., c // 2:])


def upsample_nearest2x(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour x2 on H and W of [B, H, W, C] (torch ``Upsample(2, 'nearest')``)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def conv3x3(features: int, name=None, dtype: Any = jnp.float32,
            weight_grad: str = "xla") -> nn.Conv:
  """3x3 conv, stride 1, padding 1 (explicit), no bias, orthogonal kernel.

  Computes in ``dtype``; the kernel is stored in float32. ``weight_grad``:
  kernel-gradient implementation ('xla' | 'per_tap', ``conv_grad.conv_fn``).
  """
  return nn.Conv(features, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                 use_bias=False, kernel_init=torch_orthogonal(), name=name,
                 dtype=dtype, param_dtype=jnp.float32,
                 conv_general_dilated=conv_grad.conv_fn(weight_grad))


def conv1x1(features: int, name=None, dtype: Any = jnp.float32,
            weight_grad: str = "xla") -> nn.Conv:
  """1x1 conv, no bias, orthogonal kernel (computes in ``dtype``, float32 kernel;
  ``weight_grad`` as in ``conv3x3``)."""
  return nn.Conv(features, (1, 1), strides=(1, 1), padding=((0, 0), (0, 0)),
                 use_bias=False, kernel_init=torch_orthogonal(), name=name,
                 dtype=dtype, param_dtype=jnp.float32,
                 conv_general_dilated=conv_grad.conv_fn(weight_grad))


def batch_norm(running_var: str = "unbiased", name=None) -> BatchNorm:
  """G's BatchNorm: eps 1e-5, momentum 0.9 (torch 0.1), scale ~ N(1, 0.02), bias 0."""
  return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, running_var=running_var,
                   scale_init=bn_scale_init, bias_init=nn.initializers.zeros,
                   name=name)


class UpBlock(nn.Module):
  """upBlock(in, out): ``GLU(BN(conv3x3_{in->2out}(nearest_x2(x))))``.

  [B, H, W, in] -> [B, 2H, 2W, out]. Params: ``conv/kernel`` [3,3,in,2out],
  ``bn/{scale,bias}`` [2out]; batch_stats ``bn/{mean,var}``.
  """
  features: int
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, x, *, train: bool):
    cfg = self.config
    x = upsample_nearest2x(x.astype(cfg.dtype))
    x = conv3x3(2 * self.features, name="conv", dtype=cfg.dtype,
                weight_grad=cfg.conv_weight_grad)(x)
    x = batch_norm(cfg.bn_running_var, name="bn")(x, use_running_average=not train)
    return glu(x)


class ResBlock(nn.Module):
  """ResBlock(C): ``x + BN_C(conv3x3_{C->C}(GLU(BN_2C(conv3x3_{C->2C}(x)))))``.

  No activation after the addition. [B, H, W, C] -> [B, H, W, C].
  Params: ``conv1`` [3,3,C,2C], ``bn1`` [2C], ``conv2`` [3,3,C,C], ``bn2`` [C].
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, x, *, train: bool):
    cfg = self.config
    c = x.shape[-1]
    x = x.astype(cfg.dtype)
    conv = functools.partial(conv3x3, dtype=cfg.dtype, weight_grad=cfg.conv_weight_grad)
    y = conv(2 * c, name="conv1")(x)
    y = batch_norm(cfg.bn_running_var, name="bn1")(y, use_running_average=not train)
    y = glu(y)
    y = conv(c, name="conv2")(y)
    y = batch_norm(cfg.bn_running_var, name="bn2")(y, use_running_average=not train)
    return y + x


class ImageHead(nn.Module):
  """GET_IMAGE_G: ``tanh(conv3x3_{ngf->3}(h))``, no bias. [B,H,W,ngf] -> [B,H,W,3] in (-1, 1).

  Computes in ``dtype``; the image is returned in float32 (what D and the
  DAMSM image encoder consume).
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h):
    dt = self.config.dtype
    y = conv3x3(3, name="conv", dtype=dt,
                weight_grad=self.config.conv_weight_grad)(h.astype(dt))
    return jnp.tanh(y.astype(jnp.float32))
