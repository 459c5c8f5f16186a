"""Kernel-gradient formulations of a 3x3 / stride-1 / pad-1 NHWC conv, timed on this host.

  python bench/conv_grad_bench.py                      # the three issue-8 shapes
  python bench/conv_grad_bench.py --shapes=10x64x128x256 --reps=3

Shapes are B x H(=W) x Cin x Cout. Every variant returns dL/dw [3,3,Cin,Cout]
for a random cotangent g; each is checked against XLA's (max |diff| / max |ref|)
and timed best-of-``--reps`` after one warm-up call (jitted, block_until_ready):

* xla          jax.vjp of lax.conv_general_dilated w.r.t. the kernel
* einsum_tap   one einsum 'bhwi,bhwo->io' per tap, Python-unrolled (profile_step.filter_grad_per_tap)
* gemm_tap     per tap a 2-D dot [B·H·W, Cin]ᵀ @ [B·H·W, Cout], unrolled
* scan_tap     the same dots in a lax.scan over the 9 taps (conv_grad.py's)
* row_concat   per kernel row one dot with the 3 horizontal taps concatenated
               along channels ([B·H·W, 3·Cin]ᵀ @ [B·H·W, Cout])
* flat_tap     x padded to [B, H+3, W+2] and flattened to 2-D, g zero-padded to
               the same grid: every tap is a contiguous row slice of one 2-D array
"""

import argparse
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # pylint: disable=g-import-not-at-top
from jax import lax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from bench import profile_step  # pylint: disable=g-import-not-at-top
from bench import timing  # pylint: disable=g-import-not-at-top
from t2igan_jax.models import conv_grad  # pylint: disable=g-import-not-at-top

PAD = ((1, 1), (1, 1))
DN = ("NHWC", "HWIO", "NHWC")


def conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=DN)


def xla(x, g, w):
  return jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0]


def einsum_tap(x, g, w):
  del w
  return profile_step.filter_grad_per_tap(x, g)


def gemm_tap(x, g, w):
  del w
  b, h, ww, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  g2 = g.reshape(-1, g.shape[-1])
  dn = (((0,), (0,)), ((), ()))
  return jnp.stack([jnp.stack([
      lax.dot_general(xp[:, ky:ky + h, kx:kx + ww].reshape(b * h * ww, cin), g2, dn)
      for kx in range(3)]) for ky in range(3)])


def scan_tap(x, g, w):
  return conv_grad.kernel_grad_per_tap(x, g, (3, 3), PAD, out_dtype=w.dtype)


def row_concat(x, g, w):
  del w
  b, h, ww, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  g2 = g.reshape(-1, g.shape[-1])
  dn = (((0,), (0,)), ((), ()))
  rows = []
  for ky in range(3):
    xr = jnp.concatenate([xp[:, ky:ky + h, kx:kx + ww] for kx in range(3)], axis=-1)
    rows.append(lax.dot_general(xr.reshape(b * h * ww, 3 * cin), g2, dn)
                .reshape(3, cin, -1))
  return jnp.stack(rows)


def flat_tap(x, g, w):
  del w
  b, h, ww, cin = x.shape
  hp, wp = h + 3, ww + 2     # one extra bottom row: the last tap's slice overruns
  xf = jnp.pad(x, ((0, 0), (1, 2), (1, 1), (0, 0))).reshape(b * hp * wp, cin)
  gf = jnp.pad(g, ((0, 0), (0, 3), (0, 2), (0, 0))).reshape(b * hp * wp, -1)
  n = b * hp * wp - (2 * wp + 2)          # rows every tap can read
  dn = (((0,), (0,)), ((), ()))
  return jnp.stack([jnp.stack([
      lax.dot_general(lax.slice_in_dim(xf, ky * wp + kx, ky * wp + kx + n), gf[:n], dn)
      for kx in range(3)]) for ky in range(3)])


VARIANTS = {"xla": xla, "einsum_tap": einsum_tap, "gemm_tap": gemm_tap,
            "scan_tap": scan_tap, "row_concat": row_concat, "flat_tap": flat_tap}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--shapes", default="10x256x128x128,10x128x128x256,10x64x128x256")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--reps", type=int, default=3)
  args = p.parse_args()
  for spec in args.shapes.split(","):
    b, h, cin, cout = (int(s) for s in spec.split("x"))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, h, h, cin), np.float32))
    g = jnp.asarray(rng.standard_normal((b, h, h, cout), np.float32))
    w = jnp.zeros((3, 3, cin, cout), jnp.float32)
    flops = 2.0 * b * h * h * cin * cout * 9
    ref = None
    for name in args.variants.split(","):
      f = jax.jit(VARIANTS[name])
      out, _, times = timing.time_calls(lambda f=f: f(x, g, w), args.reps)
      out = np.asarray(out)
      if ref is None:
        ref = out
      best = min(times)
      diff = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
      print(f"{spec:>16} {name:>11}: best {best:7.3f} s  {flops / best / 1e9:6.1f} GFLOP/s"
            f"  (all {' '.join(f'{t:.2f}' for t in times)})  rel.diff {diff:.1e}",
            flush=True)


if __name__ == "__main__":
  main()
