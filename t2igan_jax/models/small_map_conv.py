"""2-D convolution on small feature maps as one matrix product (im2col).

For ``x`` [B, H, W, Cin] (NHWC), ``w`` [kh, kw, Cin, Cout] (HWIO), stride s and
symmetric zero padding p (Ho = (H + 2p - kh) // s + 1, likewise Wo)::

    P[b, y, x, (ky, kx, i)] = xpad[b, s·y + ky, s·x + kx, i]      [B·Ho·Wo, kh·kw·Cin]
    y[b, y, x, o]           = (P @ w.reshape(kh·kw·Cin, Cout))[b, y, x, o]

which is the same sum as ``lax.conv_general_dilated`` in another order
(float32 differences ~1e-6 relative). Its gradients are plain autodiff: one
GEMM ``Pᵀ g`` for the kernel and, for the input, ``g wᵀ`` scattered back
through the tap slices.

Why: XLA:CPU runs the discriminators' convs whose output maps are only 2×2 to
4×4 (the last blocks of each D at the shapes config's 32/64 px, and every
cond head) and their gradients as generic convolutions at 1-10% of the matmul
rate; in the shapes training step they took 35% of the op time
(``python bench/profile_step.py --config=shapes``). As one GEMM over the tiny
patch matrix they run at matmul speed. Large maps keep XLA's conv (a patch
matrix of kh·kw copies of a large activation would cost memory).

Config ``model.small_map_conv`` (used by the discriminators'
``SpectralConv``): 'auto' (default: 'matmul' on the CPU backend, else 'xla',
whose GPU/TPU conv libraries need no help) | 'xla' (always
``lax.conv_general_dilated``, the reference's computation) | 'matmul' (this
module for every conv whose output map has at most ``MAX_OUTPUT_PIXELS``
pixels). An execution choice: it does not change the model or its checkpoints.
"""

import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "matmul")
# Output maps up to 8×8 go through the patch matrix (at the bird config's
# batch 10 and 512 input channels: 10·64 × 16·512 floats = 21 MB).
MAX_OUTPUT_PIXELS = 64


def resolve(impl: str) -> str:
  """'auto' -> 'matmul' on the CPU backend, else 'xla'; others unchanged."""
  if impl not in IMPLS:
    raise ValueError(f"config.model.small_map_conv must be one of {IMPLS}, "
                     f"got {impl!r}")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
  return (size + 2 * padding - kernel) // stride + 1


def uses_matmul(impl: str, x_shape, kernel: int, stride: int,
                padding: int) -> bool:
  """Whether a conv of this geometry takes the patch-matrix path under ``impl``."""
  if resolve(impl) != "matmul":
    return False
  _, h, w, _ = x_shape
  ho, wo = (output_size(n, kernel, stride, padding) for n in (h, w))
  return 0 < ho * wo <= MAX_OUTPUT_PIXELS


def conv_matmul(x: jnp.ndarray, w: jnp.ndarray, stride: int,
                padding: int) -> jnp.ndarray:
  """``x`` [B,H,W,Cin] ⊛ ``w`` [kh,kw,Cin,Cout] (stride, symmetric padding) -> [B,Ho,Wo,Cout]."""
  kh, kw, cin, cout = w.shape
  b, h, wd, _ = x.shape
  ho = output_size(h, kh, stride, padding)
  wo = output_size(wd, kw, stride, padding)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  taps = [xp[:, ky:ky + stride * (ho - 1) + 1:stride,
             kx:kx + stride * (wo - 1) + 1:stride, :]
          for ky in range(kh) for kx in range(kw)]
  patches = jnp.stack(taps, axis=3).reshape(b * ho * wo, kh * kw * cin)
  y = jnp.dot(patches, w.reshape(kh * kw * cin, cout).astype(x.dtype),
              preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  return y.astype(x.dtype).reshape(b, ho, wo, cout)
