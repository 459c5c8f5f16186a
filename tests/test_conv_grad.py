"""t2igan_jax/models/conv_grad.py: the conv with per-tap kernel gradients
(config ``model.conv_weight_grad='per_tap'``).

* forward = ``lax.conv_general_dilated`` (the same op, bit-identical);
* kernel and input gradients = an independent NumPy computation (direct sums
  over taps, float64) and jax's own gradient of the plain conv, for 3x3 pad 1,
  1x1 pad 0, an asymmetric 2x3 kernel/padding, and the stride-2 fallback;
* the per-tap path is really taken where supported (and not elsewhere), and is
  plumbed through every conv of G (all three refiner families, traced only);
* the tiny DM-GAN train step gives the same losses and parameters with
  'per_tap' as with 'xla'. Tolerances: the per-tap kernel gradient is the same
  float32 sum in another order; the measured differences are ~1e-7 relative
  on these sizes, bounds 1e-5.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_fixtures import host_batch, untrained_gan
from np_reference import np_conv

from configs import attngan_shapes, dmgan_shapes, ffgan_shapes
from t2igan_jax import config_validation
from t2igan_jax import gan_lib
from t2igan_jax.errors import ConfigError
from t2igan_jax.models import conv_grad
from t2igan_jax.models import generator as generator_lib
from t2igan_jax.models import layers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DN = ("NHWC", "HWIO", "NHWC")

# (name, x shape, kernel shape, strides, padding, per-tap path expected)
CASES = [
    ("3x3_pad1", (2, 6, 5, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1)), True),
    ("1x1_pad0", (2, 5, 4, 6), (1, 1, 6, 3), (1, 1), ((0, 0), (0, 0)), True),
    ("2x3_asym", (3, 5, 6, 2), (2, 3, 2, 5), (1, 1), ((0, 1), (2, 0)), True),
    ("3x3_stride2", (2, 7, 6, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1)), False),
]


def np_conv_grads(x, w, g, strides, padding):
  """(dL/dx, dL/dw) of y = conv(x, w) with dL/dy = g, by direct sums over taps.

      dw[ky, kx] = sum_{b,y,x} xpad[b, s·y+ky, s·x+kx, :]ᵀ g[b, y, x, :]
      dxpad[b, s·y+ky, s·x+kx, :] += g[b, y, x, :] w[ky, kx]ᵀ
  """
  (pt, pb), (pl, pr) = padding
  sh, sw = strides
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  kh, kw = w.shape[:2]
  _, ho, wo, _ = g.shape
  dw = np.zeros(w.shape)
  dxp = np.zeros(xp.shape)
  for ky in range(kh):
    for kx in range(kw):
      ys = slice(ky, ky + sh * (ho - 1) + 1, sh)
      xs = slice(kx, kx + sw * (wo - 1) + 1, sw)
      dw[ky, kx] = np.einsum("bhwi,bhwo->io", xp[:, ys, xs], g)
      dxp[:, ys, xs] += np.einsum("bhwo,io->bhwi", g, w[ky, kx])
  h, wd = x.shape[1:3]
  return dxp[:, pt:pt + h, pl:pl + wd], dw


def _inputs(x_shape, w_shape, strides, padding, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(x_shape).astype(np.float32)
  w = rng.standard_normal(w_shape).astype(np.float32)
  y_shape = jax.eval_shape(
      lambda a, b: lax.conv_general_dilated(a, b, strides, padding,
                                            dimension_numbers=DN), x, w).shape
  g = rng.standard_normal(y_shape).astype(np.float32)
  return x, w, g


def _custom(strides, padding):
  return lambda x, w: conv_grad.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=DN)


def _plain(strides, padding):
  return lambda x, w: lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=DN)


@pytest.mark.parametrize("name,x_shape,w_shape,strides,padding,per_tap", CASES,
                         ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_numpy_and_xla(name, x_shape, w_shape,
                                                   strides, padding, per_tap):
  del name
  x, w, g = _inputs(x_shape, w_shape, strides, padding)
  custom, plain = _custom(strides, padding), _plain(strides, padding)
  assert conv_grad.per_tap_supported(x, w, strides, padding,
                                     dimension_numbers=DN) == per_tap
  # Forward: the same lax op, bit-identical; and = the NumPy conv.
  y = np.asarray(custom(x, w))
  np.testing.assert_array_equal(y, np.asarray(plain(x, w)))
  if padding[0][0] == padding[0][1] and padding[1][0] == padding[1][1]:
    np.testing.assert_allclose(
        y, np_conv(x.astype(np.float64), w.astype(np.float64), strides[0],
                   (padding[0][0], padding[1][0])), rtol=1e-5, atol=1e-5)
  # Gradients: NumPy (float64) and jax's own.
  dx, dw = jax.vjp(custom, x, w)[1](jnp.asarray(g))
  dx_ref, dw_ref = jax.vjp(plain, x, w)[1](jnp.asarray(g))
  dx_np, dw_np = np_conv_grads(x.astype(np.float64), w.astype(np.float64),
                               g.astype(np.float64), strides, padding)
  assert dw.shape == w.shape and dx.shape == x.shape
  assert dw.dtype == jnp.float32 and dx.dtype == jnp.float32
  np.testing.assert_allclose(dw, dw_np, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_np, rtol=1e-5, atol=1e-5)
  # float32 against float32 in another summation order: an entry that is a
  # sum cancelling down to far less than the largest ones may differ by a few
  # ulps of those (one was 1.9e-6 off at 0.08 beside entries of 24), so the
  # absolute tolerance is relative to the largest entry.
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-5,
                             atol=1e-6 * float(np.abs(dw_ref).max()))
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5,
                             atol=1e-6 * float(np.abs(dx_ref).max()))
  # The per-tap VJP is used exactly where supported (the fallback is plain lax).
  jaxpr = str(jax.make_jaxpr(custom)(x, w))
  assert ("custom_vjp_call" in jaxpr) == per_tap, jaxpr
  grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda w_: jnp.sum(custom(x, w_))))(w))
  assert ("scan" in grad_jaxpr) == per_tap


def test_kernel_grad_per_tap_alone_matches_numpy():
  x, w, g = _inputs((2, 4, 5, 3), (3, 2, 3, 2), (1, 1), ((1, 1), (0, 1)), seed=1)
  dw = conv_grad.kernel_grad_per_tap(x, g, (3, 2), ((1, 1), (0, 1)))
  _, dw_np = np_conv_grads(x.astype(np.float64), w.astype(np.float64),
                           g.astype(np.float64), (1, 1), ((1, 1), (0, 1)))
  np.testing.assert_allclose(dw, dw_np, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_give_bfloat16_grads_close_to_xla():
  x, w, g = _inputs((2, 6, 6, 4), (3, 3, 4, 8), (1, 1), ((1, 1), (1, 1)), seed=2)
  x, w, g = (jnp.asarray(a, jnp.bfloat16) for a in (x, w, g))
  pad = ((1, 1), (1, 1))
  dx, dw = jax.vjp(_custom((1, 1), pad), x, w)[1](g)
  dx_ref, dw_ref = jax.vjp(_plain((1, 1), pad), x, w)[1](g)
  assert dw.dtype == jnp.bfloat16 and dx.dtype == jnp.bfloat16
  # float32-accumulated dots rounded once to bf16 (2^-8 relative) vs XLA's.
  np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(dw_ref, np.float32),
                             rtol=2e-2, atol=2e-2)
  np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32))


def test_unsupported_configurations_fall_back():
  x = jnp.zeros((1, 5, 5, 2))
  w = jnp.zeros((3, 3, 2, 4))
  pad = ((1, 1), (1, 1))
  ok = functools.partial(conv_grad.per_tap_supported, x, w, (1, 1))
  assert ok(pad, dimension_numbers=DN)
  assert not ok("SAME", dimension_numbers=DN)
  assert not ok(((-1, 1), (1, 1)), dimension_numbers=DN)
  assert not ok(pad, rhs_dilation=(2, 2), dimension_numbers=DN)
  assert not ok(pad, lhs_dilation=(2, 2), dimension_numbers=DN)
  assert not ok(pad, dimension_numbers=("NCHW", "OIHW", "NCHW"))
  assert not ok(pad, dimension_numbers=DN, preferred_element_type=jnp.float32)
  assert not conv_grad.per_tap_supported(
      jnp.zeros((1, 5, 5, 4)), jnp.zeros((3, 3, 2, 4)), (1, 1), pad,
      dimension_numbers=DN, feature_group_count=2)
  assert conv_grad.conv_fn("xla") is None
  assert conv_grad.conv_fn("per_tap") is conv_grad.conv_general_dilated
  with pytest.raises(ValueError, match="conv_weight_grad"):
    conv_grad.conv_fn("fast")


def test_config_flag_is_validated():
  c = dmgan_shapes.get_config("tiny")
  assert c.model.conv_weight_grad == "auto"
  assert conv_grad.resolve("auto") == "per_tap"       # this suite runs on CPU
  assert conv_grad.conv_fn("auto") is conv_grad.conv_general_dilated
  assert generator_lib.generator_from_config(c).conv_weight_grad == "per_tap"
  c.model.conv_weight_grad = "per_tap"
  config_validation.validate(c)
  c.model.conv_weight_grad = "fast"
  with pytest.raises(ConfigError, match="model.conv_weight_grad"):
    config_validation.validate(c)


def test_flax_conv_with_per_tap_matches_plain_conv():
  """layers.conv3x3 through nn.Conv: same params, output and gradients."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  convs = {wg: layers.conv3x3(5, dtype=jnp.float32, weight_grad=wg)
           for wg in conv_grad.WEIGHT_GRADS}
  params = convs["xla"].init(jax.random.key(1), x)
  grads = {}
  for wg, conv in convs.items():
    loss = lambda p, c=conv: jnp.sum(jnp.sin(c.apply(p, x)))
    grads[wg] = jax.grad(loss)(params)["params"]["kernel"]
  np.testing.assert_allclose(grads["per_tap"], grads["xla"], rtol=1e-5, atol=1e-6)
  assert "custom_vjp_call" in str(jax.make_jaxpr(convs["per_tap"].apply)(params, x))
  assert "custom_vjp_call" not in str(jax.make_jaxpr(convs["xla"].apply)(params, x))


@pytest.mark.parametrize("config_module", [dmgan_shapes, ffgan_shapes, attngan_shapes],
                         ids=["memory", "ffblock", "attention"])
def test_every_generator_conv_uses_the_flag(config_module):
  """Every 4-D kernel of G goes through the per-tap VJP with 'per_tap', none with
  'xla' (traced abstractly: no compile; the values are checked by the unit
  tests above and the train-step test below)."""
  c = config_module.get_config("tiny")
  b, e, t = 3, c.text_encoder.embedding_dim, 5
  args = (jax.ShapeDtypeStruct((b, c.model.z_dim), jnp.float32),
          jax.ShapeDtypeStruct((b, e), jnp.float32),
          jax.ShapeDtypeStruct((b, t, e), jnp.float32),
          jax.ShapeDtypeStruct((b, t), jnp.bool_))
  counts = {}
  for wg in ("xla", "per_tap"):
    c.model.conv_weight_grad = wg
    g = generator_lib.generator_from_config(c)
    assert g.conv_weight_grad == wg
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    variables = jax.eval_shape(functools.partial(g.init, train=False), rngs, *args)
    n_convs = sum(1 for x in jax.tree.leaves(variables["params"]) if x.ndim == 4)
    jaxpr = str(jax.make_jaxpr(functools.partial(
        g.apply, train=True, mutable=["batch_stats"],
        rngs={"noise": jax.random.key(0)}))(variables, *args))
    counts[wg] = jaxpr.count("custom_vjp_call")
  assert n_convs >= 8
  assert counts == {"xla": 0, "per_tap": n_convs}, (counts, n_convs)


@pytest.fixture(scope="module")
def train_steps():
  """One tiny DM-GAN train_step (float32) from the same state, batch and DAMSM
  encoders per flag: 'xla' = XLA's convs everywhere, 'per_tap' = G's per-tap
  kernel gradients and D's small-map GEMMs."""
  c = dmgan_shapes.get_config("tiny")
  c.num_devices = 1
  c.dtype = "float32"
  base, enc = untrained_gan(c)
  state = jax.jit(functools.partial(gan_lib.create_state, base))(jax.random.key(0))
  out = {"initial": jax.device_get(state)}
  for wg in ("xla", "per_tap"):
    c = c.copy_and_resolve_references()
    c.model.conv_weight_grad = wg
    # 'per_tap' runs with the other CPU execution choice too (D's small maps
    # as GEMMs, tests/test_small_map_conv.py); 'xla' is XLA's convs throughout.
    c.model.small_map_conv = "matmul" if wg == "per_tap" else "xla"
    config_validation.validate(c)
    models = gan_lib.GanModels(c, base.text_model, base.image_model)
    step = jax.jit(functools.partial(gan_lib.train_step, models=models))
    new_state, metrics = step(state, host_batch(c), enc)
    out[wg] = (jax.device_get(new_state), jax.device_get(metrics))
  return out


def test_train_step_cpu_paths_equal_xla(train_steps):
  (s_xla, m_xla), (s_tap, m_tap) = train_steps["xla"], train_steps["per_tap"]
  terms = [k for k in m_xla if k.startswith(("d_loss", "g_loss", "g_adv", "kl_loss",
                                             "g_w_loss", "g_s_loss"))]
  assert len(terms) >= 6
  for k in terms:
    np.testing.assert_allclose(m_tap[k], m_xla[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # Adam's first step moves every parameter by ~lr·g/(|g| + eps), so it
  # amplifies summation-order noise where the gradient is ~0 in exact
  # arithmetic. One such parameter: the key bias of KeyAddressing (the softmax
  # over words is invariant to the per-pixel constant h·b it adds); it is
  # is left out of the comparison (raw parameters; its EMA moves 1000x less).
  skipped = []
  for tree in ("g_params", "d_params", "g_ema", "g_stats"):
    flat_x = jax.tree_util.tree_flatten_with_path(getattr(s_xla, tree))[0]
    for (path, a), b in zip(flat_x, jax.tree.leaves(getattr(s_tap, tree))):
      name = tree + jax.tree_util.keystr(path)
      if name == "g_params['h_net2']['key_addressing']['key']['bias']":
        skipped.append(name)
        continue
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-6, err_msg=name)
  assert len(skipped) == 1, skipped
  # The step did move G (a comparison of two unchanged states proves nothing).
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(s_tap.g_params), jax.tree.leaves(train_steps["initial"].g_params)))
  assert moved > 1e-5, moved
