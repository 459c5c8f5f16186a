"""t2igan_jax/models/small_map_conv.py: convs on small maps as one GEMM
(config ``model.small_map_conv``), used by the discriminators' SpectralConv.

* forward = an independent NumPy conv (float64) for strided/padded/non-square
  cases, and ``lax.conv_general_dilated``;
* input and kernel gradients = jax's gradients of ``lax.conv_general_dilated``;
* the path is taken exactly for output maps of at most 8x8 under 'matmul'
  (and 'auto' on CPU), never under 'xla';
* a discriminator gives the same code, logits, parameter gradients and
  spectral-norm vectors under 'matmul' and 'xla'. (The tiny train step under
  both is compared in tests/test_conv_grad.py.)
Tolerances: the same float32 sums in another order (~1e-6 relative measured).
"""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from np_reference import np_conv

from configs import dmgan_shapes
from t2igan_jax import config_validation
from t2igan_jax.errors import ConfigError
from t2igan_jax.models import small_map_conv
from t2igan_jax.models.discriminator import Discriminator

# (x shape, kernel, stride, padding): D trunk block, cond-head joint conv,
# a non-square map, and a conv whose window equals the map (logits-like).
CASES = [((2, 8, 8, 3), 4, 2, 1), ((3, 2, 2, 6), 3, 1, 1),
         ((2, 5, 3, 4), 3, 1, 1), ((2, 4, 4, 5), 4, 4, 0)]


def _lax_conv(x, w, stride, pad):
  return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("x_shape,k,stride,pad", CASES)
def test_forward_matches_numpy_and_gradients_match_lax(x_shape, k, stride, pad):
  rng = np.random.default_rng(sum(x_shape) + k)
  x = rng.normal(size=x_shape).astype(np.float32)
  w = rng.normal(size=(k, k, x_shape[-1], 7)).astype(np.float32)
  y = small_map_conv.conv_matmul(jnp.asarray(x), jnp.asarray(w), stride, pad)
  want = np_conv(x.astype(np.float64), w.astype(np.float64), stride, pad)
  assert y.shape == want.shape
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)

  g = jnp.asarray(rng.normal(size=want.shape).astype(np.float32))
  ours = jax.grad(lambda a, b: jnp.sum(
      small_map_conv.conv_matmul(a, b, stride, pad) * g), argnums=(0, 1))(x, w)
  ref = jax.grad(lambda a, b: jnp.sum(_lax_conv(a, b, stride, pad) * g),
                 argnums=(0, 1))(x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


def test_which_convs_take_the_matmul_path():
  assert small_map_conv.resolve("auto") == "matmul"   # the tests run on CPU
  assert small_map_conv.uses_matmul("matmul", (4, 16, 16, 8), 4, 2, 1)   # 8x8 out
  assert not small_map_conv.uses_matmul("matmul", (4, 18, 16, 8), 4, 2, 1)  # 9x8
  assert not small_map_conv.uses_matmul("xla", (4, 2, 2, 8), 3, 1, 1)
  with pytest.raises(ValueError, match="config.model.small_map_conv"):
    small_map_conv.resolve("im2col")
  c = dmgan_shapes.get_config("tiny")
  c.model.small_map_conv = "im2col"
  with pytest.raises(ConfigError, match="model.small_map_conv"):
    config_validation.validate(c)


def _count_convs(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  return str(jaxpr).count("conv_general_dilated")


@pytest.mark.parametrize("stage,size", [(0, 32), (1, 64)])
def test_discriminator_same_under_both(stage, size):
  rng = np.random.default_rng(stage)
  x = jnp.asarray(rng.normal(size=(4, size, size, 3)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(4, 16)), jnp.float32)
  out, n_convs = {}, {}
  for impl in ("xla", "matmul"):
    d = Discriminator(stage=stage, ndf=4, small_map_conv=impl)
    v = d.init(jax.random.key(0), x, s)

    def loss(params, x, d=d, v=v):
      (code, u, c), new = d.apply({"params": params, "batch_stats": v["batch_stats"]},
                                  x, s, mutable=["batch_stats"])
      return jnp.sum(u * 1.5) + jnp.sum(c * 0.5) + 0.1 * jnp.sum(code ** 2), (code, new)

    (_, (code, new)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        v["params"], x)
    out[impl] = (v, code, grads, new)
    n_convs[impl] = _count_convs(lambda p, x, f=loss: f(p, x)[0], v["params"], x)
  (v0, code0, g0, n0), (v1, code1, g1, n1) = out["xla"], out["matmul"]
  assert jax.tree.structure(v0) == jax.tree.structure(v1)
  np.testing.assert_allclose(code1, code0, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               g0, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               n0, n1)
  # Forward convs: the trunk's outputs (stage 0 at 32 px: 16, 8, 4, 2;
  # stage 1 at 64 px: 32, 16, 8, 4, 2 and a 2x2 3x3 conv), the cond head's
  # 2x2 joint conv and the two logits convs. Under 'matmul' only the maps
  # larger than 8x8 and the logits convs (plain nn.Conv) stay convolutions.
  assert n_convs == {"xla": (7, 9)[stage], "matmul": (3, 4)[stage]}, n_convs
