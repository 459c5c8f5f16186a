"""Inception-v3 (torchvision definition) in Flax, NHWC, plus an align-corners resize.

Used by the DAMSM image encoder (SPEC-dmgan §5.1) and, with other switches, by the
FID network (SPEC-eval §1, §3.2, §8): every pooling choice that differs between
the two is a module attribute.

| attribute                  | torchvision / DAMSM | FID Inception (pytorch-fid, TTUR) |
|----------------------------|---------------------|-----------------------------------|
| ``count_include_pad``      | True                | False (blocks A, C, E)            |
| ``mixed_7b_pool``          | 'avg'               | 'avg'                             |
| ``mixed_7c_pool``          | 'avg'               | 'max' (3x3, stride 1, pad 1)      |
| ``bn_use_scale``           | True                | False (no BN gamma)               |
| ``bn_epsilon``             | 1e-3                | 1e-3                              |

Every convolution is ``BasicConv2d`` = conv (no bias, explicit padding) ->
BatchNorm (eps 1e-3, Flax momentum 0.9 = PyTorch 0.1, PyTorch running-var
semantics) -> ReLU. Module names are torchvision's (``Conv2d_1a_3x3`` ...
``Mixed_7c``, ``branch1x1`` ..., and ``conv``/``bn`` inside ``BasicConv2d``), so a
state-dict key ``Mixed_5b.branch5x5_1.conv.weight`` is the Flax path
``params/Mixed_5b/branch5x5_1/conv/kernel`` (OIHW -> HWIO) and
``...bn.{weight,bias,running_mean,running_var}`` are
``params/.../bn/{scale,bias}`` and ``batch_stats/.../bn/{mean,var}``.

Resizing: :func:`resize_bilinear` implements the three bilinear pixel alignments
of SPEC-eval §3.5 (``'align_corners'`` for DAMSM, ``'half_pixel'`` for
pytorch-fid, ``'tf_legacy'`` for the TTUR TF graph) as exact interpolation
matrices (no antialiasing, like ``F.interpolate`` and TF1 ``ResizeBilinear``).

Shapes for a 299x299 input (SPEC-dmgan §5.1): stem 149 -> 147 -> 147 -> pool 73 ->
71 -> pool 35; Mixed_5b/c/d 35x35x{256,288,288}; Mixed_6a..6e 17x17x768;
Mixed_7a 8x8x1280; Mixed_7b/c 8x8x2048.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2igan_jax.models.batch_norm import BatchNorm

Padding = tuple[tuple[int, int], tuple[int, int]]


def _pad(p: int | tuple[int, int]) -> Padding:
  """PyTorch ``padding=p`` (int or (ph, pw)) as explicit Flax padding."""
  ph, pw = (p, p) if isinstance(p, int) else p
  return ((ph, ph), (pw, pw))


def avg_pool_3x3(x: jax.Array, count_include_pad: bool = True) -> jax.Array:
  """3x3, stride 1, padding 1 average pool (``F.avg_pool2d(x, 3, 1, 1)``).

  ``count_include_pad=True`` divides every window by 9 (torchvision); ``False``
  divides by the number of in-image pixels of the window (FID Inception).
  """
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=count_include_pad)


def max_pool_3x3(x: jax.Array, stride: int = 2) -> jax.Array:
  """3x3 max pool: stride 2 unpadded (VALID), or stride 1 with padding 1."""
  if stride == 2:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
  if stride == 1:
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
  raise ValueError(f"max_pool_3x3 supports stride 1 or 2, got {stride}")


def _pool_3x3_s1(x: jax.Array, kind: str, count_include_pad: bool) -> jax.Array:
  if kind == "avg":
    return avg_pool_3x3(x, count_include_pad)
  if kind == "max":
    return max_pool_3x3(x, stride=1)
  raise ValueError(f"pool must be 'avg' or 'max', got {kind!r}")


RESIZE_MODES = ("align_corners", "half_pixel", "tf_legacy")


def source_coordinates(in_size: int, out_size: int,
                       mode: str = "align_corners") -> np.ndarray:
  """Source coordinate (float64 [out]) of each destination pixel, SPEC-eval §3.5.

  'align_corners': src = dst*(in-1)/(out-1)  (PyTorch align_corners=True);
  'half_pixel':    src = max((dst+0.5)*in/out - 0.5, 0)  (PyTorch
                   align_corners=False, which clamps negative coordinates to 0);
  'tf_legacy':     src = dst*in/out  (TF1 ``ResizeBilinear``, align_corners=False).
  """
  dst = np.arange(out_size, dtype=np.float64)
  if mode == "align_corners":
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return dst * scale
  if mode == "half_pixel":
    return np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
  if mode == "tf_legacy":
    return dst * (in_size / out_size)
  raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def interpolation_matrix(in_size: int, out_size: int,
                         mode: str = "align_corners") -> np.ndarray:
  """[out, in] bilinear weights; ``mode`` picks the pixel alignment (default align_corners).

  Row ``y`` puts weight ``1 - f`` on ``floor(src)`` and ``f`` on the next pixel
  (clamped to the last one), with ``src`` from :func:`source_coordinates`.
  """
  src = source_coordinates(in_size, out_size, mode)
  lo = np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(m, (rows, lo), 1.0 - frac)
  np.add.at(m, (rows, hi), frac)
  return m.astype(np.float32)


def resize_bilinear(images: jax.Array, size: int | Sequence[int],
                    mode: str = "align_corners") -> jax.Array:
  """Bilinear resize of NHWC images with the pixel alignment ``mode`` (RESIZE_MODES).

  ``out[b, y, x, c] = sum_{h, w} Ry[y, h] Rx[x, w] images[b, h, w, c]`` with the
  interpolation matrices of :func:`interpolation_matrix`. No antialiasing (as
  ``F.interpolate`` and TF1 ``ResizeBilinear``). A no-op when the size matches.
  """
  out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
  in_h, in_w = images.shape[1], images.shape[2]
  if (in_h, in_w) == (out_h, out_w):
    return images
  ry = jnp.asarray(interpolation_matrix(in_h, out_h, mode))
  rx = jnp.asarray(interpolation_matrix(in_w, out_w, mode))
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum("yh,bhwc->bywc", ry, images, precision=hp)
  return jnp.einsum("xw,bywc->byxc", rx, y, precision=hp)


def resize_bilinear_align_corners(images: jax.Array,
                                  size: int | Sequence[int]) -> jax.Array:
  """Bilinear resize of NHWC images with PyTorch ``align_corners=True``.

  ``out[b, y, x, c] = sum_{h, w} Ry[y, h] Rx[x, w] images[b, h, w, c]`` with the
  interpolation matrices of :func:`interpolation_matrix` (``jax.image.resize``
  uses half-pixel centres and does not match, SPEC-dmgan §10.5). Corner pixels
  are preserved exactly. A no-op when the size already matches.
  """
  return resize_bilinear(images, size, "align_corners")


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; submodules ``conv``, ``bn``."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  bn_epsilon: float = 1e-3
  bn_use_scale: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=self.padding, use_bias=False,
                kernel_init=nn.initializers.truncated_normal(0.1), name="conv")(x)
    x = BatchNorm(momentum=0.9, epsilon=self.bn_epsilon,
                  use_scale=self.bn_use_scale, name="bn")(
                      x, use_running_average=use_running_average)
    return nn.relu(x)


class _InceptionBlock(nn.Module):
  """Shared BN switches and a ``BasicConv2d`` factory for the Inception blocks."""
  bn_epsilon: float = 1e-3
  bn_use_scale: bool = True

  def _conv(self, name: str, features: int, kernel: int | tuple[int, int],
            stride: int = 1, padding: int | tuple[int, int] = 0) -> BasicConv2d:
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return BasicConv2d(features, k, strides=(stride, stride), padding=_pad(padding),
                       bn_epsilon=self.bn_epsilon, bn_use_scale=self.bn_use_scale,
                       name=name)


class InceptionA(_InceptionBlock):
  """Mixed_5b/5c/5d: out = 64 + 64 + 96 + pool_features channels, same size."""
  pool_features: int = 32
  count_include_pad: bool = True

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    ura = dict(use_running_average=use_running_average)
    b1 = self._conv("branch1x1", 64, 1)(x, **ura)
    b5 = self._conv("branch5x5_1", 48, 1)(x, **ura)
    b5 = self._conv("branch5x5_2", 64, 5, padding=2)(b5, **ura)
    b3 = self._conv("branch3x3dbl_1", 64, 1)(x, **ura)
    b3 = self._conv("branch3x3dbl_2", 96, 3, padding=1)(b3, **ura)
    b3 = self._conv("branch3x3dbl_3", 96, 3, padding=1)(b3, **ura)
    bp = avg_pool_3x3(x, self.count_include_pad)
    bp = self._conv("branch_pool", self.pool_features, 1)(bp, **ura)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_InceptionBlock):
  """Mixed_6a: 35x35 -> 17x17; out = 384 + 96 + in channels."""

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    ura = dict(use_running_average=use_running_average)
    b3 = self._conv("branch3x3", 384, 3, stride=2)(x, **ura)
    bd = self._conv("branch3x3dbl_1", 64, 1)(x, **ura)
    bd = self._conv("branch3x3dbl_2", 96, 3, padding=1)(bd, **ura)
    bd = self._conv("branch3x3dbl_3", 96, 3, stride=2)(bd, **ura)
    bp = max_pool_3x3(x, stride=2)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(_InceptionBlock):
  """Mixed_6b..6e: 17x17x768 -> 17x17x768, factorised 7x7 branches of width c7."""
  channels_7x7: int = 128
  count_include_pad: bool = True

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    ura = dict(use_running_average=use_running_average)
    c7 = self.channels_7x7
    b1 = self._conv("branch1x1", 192, 1)(x, **ura)
    b7 = self._conv("branch7x7_1", c7, 1)(x, **ura)
    b7 = self._conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7, **ura)
    b7 = self._conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7, **ura)
    bd = self._conv("branch7x7dbl_1", c7, 1)(x, **ura)
    bd = self._conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd, **ura)
    bd = self._conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd, **ura)
    bd = self._conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd, **ura)
    bd = self._conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd, **ura)
    bp = avg_pool_3x3(x, self.count_include_pad)
    bp = self._conv("branch_pool", 192, 1)(bp, **ura)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_InceptionBlock):
  """Mixed_7a: 17x17x768 -> 8x8x1280 (320 + 192 + in channels)."""

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    ura = dict(use_running_average=use_running_average)
    b3 = self._conv("branch3x3_1", 192, 1)(x, **ura)
    b3 = self._conv("branch3x3_2", 320, 3, stride=2)(b3, **ura)
    b7 = self._conv("branch7x7x3_1", 192, 1)(x, **ura)
    b7 = self._conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7, **ura)
    b7 = self._conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7, **ura)
    b7 = self._conv("branch7x7x3_4", 192, 3, stride=2)(b7, **ura)
    bp = max_pool_3x3(x, stride=2)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(_InceptionBlock):
  """Mixed_7b/7c: 8x8 -> 8x8x2048 (320 + 768 + 768 + 192).

  ``pool``: 'avg' (torchvision, both blocks) or 'max' (3x3/1/1; the FID
  network's Mixed_7c).
  """
  pool: str = "avg"
  count_include_pad: bool = True

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    ura = dict(use_running_average=use_running_average)
    b1 = self._conv("branch1x1", 320, 1)(x, **ura)
    b3 = self._conv("branch3x3_1", 384, 1)(x, **ura)
    b3 = jnp.concatenate([
        self._conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3, **ura),
        self._conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3, **ura),
    ], axis=-1)
    bd = self._conv("branch3x3dbl_1", 448, 1)(x, **ura)
    bd = self._conv("branch3x3dbl_2", 384, 3, padding=1)(bd, **ura)
    bd = jnp.concatenate([
        self._conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd, **ura),
        self._conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd, **ura),
    ], axis=-1)
    bp = _pool_3x3_s1(x, self.pool, self.count_include_pad)
    bp = self._conv("branch_pool", 192, 1)(bp, **ura)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


# torchvision module names of the 16 trunk submodules, in forward order.
TRUNK_MODULES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionTrunk(nn.Module):
  """Inception-v3 from the input to Mixed_7c (no AuxLogits, no fc, no transform_input).

  ``__call__(x f32[B, H, W, 3], *, use_running_average) -> (mixed_6e, mixed_7c)``;
  for H = W = 299 these are [B, 17, 17, 768] and [B, 8, 8, 2048]. The input is used
  as given (the DAMSM encoder feeds [-1, 1] images resized to 299). Any size
  >= 75 works.
  """
  count_include_pad: bool = True
  mixed_7b_pool: str = "avg"
  mixed_7c_pool: str = "avg"
  bn_epsilon: float = 1e-3
  bn_use_scale: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *,
               use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    ura = dict(use_running_average=use_running_average)
    bn = dict(bn_epsilon=self.bn_epsilon, bn_use_scale=self.bn_use_scale)
    cip = self.count_include_pad

    def stem(name, features, kernel, stride=1, padding=0):
      return BasicConv2d(features, (kernel, kernel), strides=(stride, stride),
                         padding=_pad(padding), name=name, **bn)

    x = stem("Conv2d_1a_3x3", 32, 3, stride=2)(x, **ura)
    x = stem("Conv2d_2a_3x3", 32, 3)(x, **ura)
    x = stem("Conv2d_2b_3x3", 64, 3, padding=1)(x, **ura)
    x = max_pool_3x3(x, stride=2)
    x = stem("Conv2d_3b_1x1", 80, 1)(x, **ura)
    x = stem("Conv2d_4a_3x3", 192, 3)(x, **ura)
    x = max_pool_3x3(x, stride=2)
    x = InceptionA(pool_features=32, count_include_pad=cip, name="Mixed_5b", **bn)(x, **ura)
    x = InceptionA(pool_features=64, count_include_pad=cip, name="Mixed_5c", **bn)(x, **ura)
    x = InceptionA(pool_features=64, count_include_pad=cip, name="Mixed_5d", **bn)(x, **ura)
    x = InceptionB(name="Mixed_6a", **bn)(x, **ura)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                     ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7=c7, count_include_pad=cip, name=name, **bn)(x, **ura)
    mixed_6e = x
    x = InceptionD(name="Mixed_7a", **bn)(x, **ura)
    x = InceptionE(pool=self.mixed_7b_pool, count_include_pad=cip, name="Mixed_7b",
                   **bn)(x, **ura)
    x = InceptionE(pool=self.mixed_7c_pool, count_include_pad=cip, name="Mixed_7c",
                   **bn)(x, **ura)
    return mixed_6e, x
