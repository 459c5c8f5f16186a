"""2-D convolution whose kernel gradient is computed as one dot per kernel tap.

Forward (identical to ``lax.conv_general_dilated``, the call ``nn.Conv`` makes)::

    y[b, y, x, o] = sum_{ky, kx, i} xpad[b, y + ky, x + kx, i] · w[ky, kx, i, o]

    x [B, H, W, Cin] (NHWC), w [kh, kw, Cin, Cout] (HWIO), explicit padding
    ((pt, pb), (pl, pr)), stride 1, no dilation, y [B, Ho, Wo, Cout] with
    Ho = H + pt + pb - kh + 1, Wo = W + pl + pr - kw + 1.

Backward, for the cotangent ``g = dL/dy`` [B, Ho, Wo, Cout]:

    dL/dx           = XLA's own transpose of the conv (``jax.vjp`` w.r.t. x only)
    dL/dw[ky,kx]    = sum_{b,y,x} xpad[b, y+ky, x+kx, :]ᵀ g[b, y, x, :]   [Cin, Cout]

i.e. ``kh·kw`` tall-skinny matmuls ``[B·Ho·Wo, Cin]ᵀ @ [B·Ho·Wo, Cout]`` over the
padded, shifted input. XLA's CPU backend lowers the kernel gradient of a
stride-1 conv to a convolution whose window is the whole image and whose
contraction is the batch (B = 10 in the bird config), which runs at ~10% of the
fp32 matmul rate; the per-tap dots run 1.6-2.7x faster on the same CPU
(bench/README.md, issue 8). The result is the same sum in another order
(relative difference ~1e-6 in float32).

The tap loop is a ``lax.scan`` over the kh·kw taps (slices by
``lax.dynamic_slice``) so only one shifted copy of the activation is alive at
a time, whatever order XLA would schedule unrolled dots in. (It was also the
fastest formulation measured: bench/conv_grad_bench.py. Caveat: XLA's
``cost_analysis`` counts a while-loop body once, so it under-reports these
kernel-gradient FLOPs by kh·kw; compare FLOP rates with the 'xla' count.)

``conv_general_dilated`` has ``lax.conv_general_dilated``'s signature and is
what ``nn.Conv(conv_general_dilated=...)`` takes (``layers.conv3x3`` /
``conv1x1`` with ``weight_grad='per_tap'``). Every other configuration
(strides, dilations, groups, string padding, other layouts, integer dtypes,
negative padding, ``preferred_element_type``) is passed to
``lax.conv_general_dilated`` unchanged, i.e. falls back to XLA's gradient.

Config ``model.conv_weight_grad``: 'auto' (default: 'per_tap' on a
single-process CPU job, else 'xla'; ``resolve``) | 'xla' (plain ``nn.Conv``, XLA's own kernel
gradient) | 'per_tap' (this module). Both compute the same sums; they differ
only in float summation order (~1e-6 relative in float32).
"""

import functools
from typing import Any, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp

WEIGHT_GRADS = ("auto", "xla", "per_tap")

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _is_nhwc_hwio(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  """True if ``dimension_numbers`` mean NHWC x HWIO -> NHWC for these shapes."""
  if len(lhs_shape) != 4 or len(rhs_shape) != 4:
    return False
  want = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC_HWIO)
  try:
    got = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return got == want


def _explicit_padding(padding) -> Optional[tuple[tuple[int, int], ...]]:
  """((pt, pb), (pl, pr)) as a hashable tuple of ints >= 0, or None if not that."""
  if isinstance(padding, str):
    return None
  try:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    return None
  if len(pads) != 2 or any(p < 0 for pair in pads for p in pair):
    return None
  return pads


def _all_ones(v) -> bool:
  return v is None or all(int(s) == 1 for s in v)


def per_tap_supported(lhs, rhs, window_strides, padding, lhs_dilation=None,
                      rhs_dilation=None, dimension_numbers=None,
                      feature_group_count=1, batch_group_count=1,
                      preferred_element_type=None) -> bool:
  """Whether ``conv_general_dilated`` uses the per-tap kernel gradient for this call."""
  return (_is_nhwc_hwio(jnp.shape(lhs), jnp.shape(rhs), dimension_numbers)
          and _explicit_padding(padding) is not None
          and _all_ones(window_strides) and _all_ones(lhs_dilation)
          and _all_ones(rhs_dilation)
          and feature_group_count == 1 and batch_group_count == 1
          and preferred_element_type is None
          and jnp.issubdtype(jnp.result_type(lhs), jnp.floating)
          and jnp.issubdtype(jnp.result_type(rhs), jnp.floating))


def _conv(x, w, padding, precision):
  """The forward conv, exactly as ``nn.Conv`` calls ``lax.conv_general_dilated``."""
  return lax.conv_general_dilated(
      x, w, (1, 1), padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1),
      dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, _NHWC_HWIO),
      feature_group_count=1, precision=precision)


def kernel_grad_per_tap(x, g, kernel_hw: Sequence[int], padding,
                        precision=None, out_dtype=None):
  """dL/dw [kh, kw, Cin, Cout] of the stride-1 NHWC/HWIO conv, one dot per tap.

      dw[ky, kx] = sum_{b,y,x} xpad[b, y+ky, x+kx, :]ᵀ g[b, y, x, :]

  x: [B, H, W, Cin]; g: [B, Ho, Wo, Cout]; padding ((pt, pb), (pl, pr)).
  Each dot contracts over B·Ho·Wo as a plain 2-D GEMM ([N, Cin]ᵀ @ [N, Cout],
  accumulated in float32 at least) and is cast to ``out_dtype`` (default x's).
  The taps run in a ``lax.scan`` (one shifted copy of x alive at a time).
  """
  kh, kw = kernel_hw
  (pt, pb), (pl, pr) = padding
  b, _, _, cin = x.shape
  _, ho, wo, cout = g.shape
  out_dtype = out_dtype or x.dtype
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  g2 = g.reshape(b * ho * wo, cout)

  def tap(_, t):
    ky, kx = t // kw, t % kw
    xs = lax.dynamic_slice(xp, (0, ky, kx, 0), (b, ho, wo, cin))
    dw = lax.dot_general(xs.reshape(b * ho * wo, cin), g2,
                         (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=acc_dtype)
    return None, dw.astype(out_dtype)

  _, dws = lax.scan(tap, None, jnp.arange(kh * kw))
  return dws.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _per_tap_conv(x, w, padding, precision):
  return _conv(x, w, padding, precision)


def _per_tap_conv_fwd(x, w, padding, precision):
  return _conv(x, w, padding, precision), (x, w)


def _per_tap_conv_bwd(padding, precision, res, g):
  x, w = res
  _, x_vjp = jax.vjp(lambda x_: _conv(x_, w, padding, precision), x)
  (dx,) = x_vjp(g)
  dw = kernel_grad_per_tap(x, g, w.shape[:2], padding, precision, out_dtype=w.dtype)
  return dx, dw


_per_tap_conv.defvjp(_per_tap_conv_fwd, _per_tap_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated`` with the per-tap kernel gradient where supported.

  Same signature and forward values as ``lax.conv_general_dilated``. For a
  2-D NHWC/HWIO, stride-1, undilated, ungrouped conv with explicit non-negative
  padding on floating inputs the kernel gradient is ``kernel_grad_per_tap`` and
  the input gradient XLA's; any other call is ``lax.conv_general_dilated``
  itself (XLA's gradient).
  """
  if per_tap_supported(lhs, rhs, window_strides, padding, lhs_dilation,
                       rhs_dilation, dimension_numbers, feature_group_count,
                       batch_group_count, preferred_element_type):
    return _per_tap_conv(lhs, rhs, _explicit_padding(padding), precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


def resolve(weight_grad: str) -> str:
  """'auto' -> 'per_tap' on the CPU backend in a single process, else 'xla'
  (GPU/TPU conv libraries compute kernel gradients at full speed); the other
  values unchanged.

  Multi-process CPU jobs get 'xla': there the batch-sharded per-tap dots put
  cross-process all-reduces inside the tap loop, and XLA:CPU's gloo
  collectives were seen to mismatch between the processes (an abort in
  tests/test_multihost.py with 1 device per process).
  """
  if weight_grad == "auto":
    single_cpu = jax.default_backend() == "cpu" and jax.process_count() == 1
    return "per_tap" if single_cpu else "xla"
  return weight_grad


def conv_fn(weight_grad: str) -> Optional[Any]:
  """The ``conv_general_dilated`` to give ``nn.Conv`` for ``model.conv_weight_grad``.

  'xla' -> None (nn.Conv's default ``lax.conv_general_dilated``, unchanged);
  'per_tap' -> ``conv_general_dilated`` above; 'auto' -> by backend (``resolve``).
  """
  weight_grad = resolve(weight_grad)
  if weight_grad == "xla":
    return None
  if weight_grad == "per_tap":
    return conv_general_dilated
  raise ValueError(
      f"conv_weight_grad must be one of {WEIGHT_GRADS}, got {weight_grad!r}")
