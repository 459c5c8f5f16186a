"""Spectral norm and DM-GAN discriminators against NumPy (SPEC-dmgan §4).

Tolerance: float32 JAX vs float64 NumPy, rtol 1e-5 / atol 1e-6 for the power
iteration (u, sigma) and rtol 1e-4 / atol 1e-5 for conv outputs and logits.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import rand, to_np
from np_reference import np_conv

from configs import base as base_config
from t2igan_jax.models.discriminator import Discriminator, discriminators_from_config
from t2igan_jax.models.init_utils import kernel_as_torch_matrix
from t2igan_jax.models.spectral_norm import SpectralConv

SN_TOL = dict(rtol=1e-5, atol=1e-6)
OUT_TOL = dict(rtol=1e-4, atol=1e-5)




def np_power_iteration(kernel, u, eps=1e-12):
  """Reference SpectralNorm._update_u_v: returns (sigma, new u)."""
  w = kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)    # torch O × I·kh·kw
  v = w.T @ u
  v = v / (np.linalg.norm(v) + eps)
  u = w @ v
  u = u / (np.linalg.norm(u) + eps)
  return u @ w @ v, u


def np_sn_conv(x, p, u, stride, pad):
  sigma, u_new = np_power_iteration(p["kernel"], u)
  return np_conv(x, p["kernel"] / sigma, stride, pad) + p["bias"], u_new


def np_lrelu(x):
  return np.where(x > 0, x, 0.2 * x)


# ------------------------------------------------------------ spectral norm
@pytest.fixture(scope="module")
def sn_setup():
  conv = SpectralConv(features=5, kernel_size=3, strides=1, padding=1)
  x = rand(0, 2, 6, 6, 4)
  variables = conv.init(jax.random.key(1), x, update_stats=True)
  return conv, x, variables


def test_sn_init(sn_setup):
  _, _, variables = sn_setup
  u = np.asarray(variables["batch_stats"]["u"])
  assert u.shape == (5,)
  np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-6)
  w = np.asarray(kernel_as_torch_matrix(variables["params"]["kernel"]), np.float64)
  np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-5)     # 5 <= 4·3·3 rows orthonormal
  bound = 1 / np.sqrt(4 * 9)
  assert np.all(np.abs(variables["params"]["bias"]) <= bound)


def test_sn_one_call_is_one_power_iteration(sn_setup):
  conv, x, variables = sn_setup
  p = to_np(variables["params"])
  xn = np.asarray(x, np.float64)
  u0 = np.asarray(variables["batch_stats"]["u"], np.float64)
  apply = jax.jit(functools.partial(conv.apply, update_stats=True, mutable=["batch_stats"]))

  y1, s1 = apply(variables, x)
  want1, u1 = np_sn_conv(xn, p, u0, 1, 1)
  np.testing.assert_allclose(s1["batch_stats"]["u"], u1, **SN_TOL)
  np.testing.assert_allclose(y1, want1, **OUT_TOL)

  # A second apply continues from the stored u: the second iteration.
  y2, s2 = apply({"params": variables["params"], **s1}, x)
  want2, u2 = np_sn_conv(xn, p, u1, 1, 1)
  np.testing.assert_allclose(s2["batch_stats"]["u"], u2, **SN_TOL)
  np.testing.assert_allclose(y2, want2, **OUT_TOL)

  # Two calls inside one apply thread the state: the same two iterations.
  (z1, z2), s_both = conv.apply(
      variables, x, method=lambda m, x: (m(x, update_stats=True), m(x, update_stats=True)),
      mutable=["batch_stats"])
  np.testing.assert_allclose(z1, want1, **OUT_TOL)
  np.testing.assert_allclose(z2, want2, **OUT_TOL)
  np.testing.assert_allclose(s_both["batch_stats"]["u"], u2, **SN_TOL)

  # update_stats=False: iterates from the stored u (same output) but stores nothing.
  y_ns, s_ns = conv.apply(variables, x, update_stats=False, mutable=["batch_stats"])
  np.testing.assert_allclose(y_ns, want1, **OUT_TOL)
  np.testing.assert_array_equal(s_ns["batch_stats"]["u"], variables["batch_stats"]["u"])
  # Applying with update_stats=True but an immutable collection fails loudly.
  with pytest.raises(Exception):
    conv.apply(variables, x, update_stats=True)
  # update_stats=None (default): store iff the collection is mutable.
  y_imm = conv.apply(variables, x)
  np.testing.assert_allclose(y_imm, want1, **OUT_TOL)
  _, s_mut = conv.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(s_mut["batch_stats"]["u"], u1, **SN_TOL)


def test_sn_gradient_flows_through_sigma_not_u_v(sn_setup):
  conv, x, variables = sn_setup
  u0 = np.asarray(variables["batch_stats"]["u"], np.float64)
  kernel = variables["params"]["kernel"]
  w = np.asarray(kernel_as_torch_matrix(kernel), np.float64)
  v = w.T @ u0
  v /= np.linalg.norm(v)
  u1 = w @ v
  u1 /= np.linalg.norm(u1)
  u1, v = jnp.asarray(u1, jnp.float32), jnp.asarray(v, jnp.float32)
  ct = rand(5, 2, 6, 6, 5)

  def module_loss(k):
    y = conv.apply({"params": {**variables["params"], "kernel": k},
                    "batch_stats": variables["batch_stats"]}, x, update_stats=False)
    return jnp.sum(y * ct)

  def manual_loss(k):   # u1, v constants; sigma = u1ᵀ W(k) v differentiable
    sigma = u1 @ kernel_as_torch_matrix(k) @ v
    y = jax.lax.conv_general_dilated(x, k / sigma, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum((y + variables["params"]["bias"]) * ct)

  g_mod, g_man = jax.grad(module_loss)(kernel), jax.grad(manual_loss)(kernel)
  np.testing.assert_allclose(g_mod, g_man, rtol=1e-4, atol=1e-5)
  # sigma's gradient matters: it differs from treating sigma as a constant.
  sigma = float(u1 @ jnp.asarray(w, jnp.float32) @ v)
  g_const = jax.grad(lambda k: jnp.sum(jax.lax.conv_general_dilated(
      x, k / sigma, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC")) * ct))(kernel)
  assert not np.allclose(g_mod, g_const, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------- discriminators
def np_encode(x, p, u, stage):
  new_u = {}
  names = [f"img_code_s16_{i}" for i in range(4)]
  specs = [(2, 1)] * 4
  for j in range(stage):
    names.append(f"img_code_s{32 * 2 ** j}")
    specs.append((2, 1))
  for i in range(stage):
    names.append(f"img_code_s{16 * 2 ** stage}_{i + 1}")
    specs.append((1, 1))
  for name, (stride, pad) in zip(names, specs):
    y, new_u[name] = np_sn_conv(x, p[name], u[name]["u"], stride, pad)
    x = np_lrelu(y)
  return x, new_u


def np_logits_conv(x, p):
  return np_conv(x, p["kernel"], stride=x.shape[1]).reshape(x.shape[0]) + p["bias"][0]


def np_cond(code, sent, p, u):
  b, h, w, _ = code.shape
  x = np.concatenate([code, np.broadcast_to(sent[:, None, None], (b, h, w, sent.shape[-1]))],
                     -1)
  y, u_new = np_sn_conv(x, p["joint_conv"], u, 1, 1)
  return np_logits_conv(np_lrelu(y), p["outlogits"]), u_new


@pytest.fixture(scope="module")
def tiny_d():
  d = Discriminator(stage=0, ndf=2)
  x = jnp.tanh(rand(10, 3, 32, 32, 3))          # 32 px stage 0 -> 2×2 code
  sent = rand(11, 3, 6)
  variables = jax.jit(d.init)(jax.random.key(12), x, sent)
  return d, x, sent, variables


def test_discriminator_forward_vs_numpy(tiny_d):
  d, x, sent, variables = tiny_d
  (code, uncond, cond), state = jax.jit(
      functools.partial(d.apply, mutable=["batch_stats"]))(variables, x, sent)
  p, u = to_np(variables["params"]), to_np(variables["batch_stats"])
  code_np, u_enc = np_encode(np.asarray(x, np.float64), p["encoder"], u["encoder"], 0)
  assert code.shape == (3, 2, 2, 16)
  assert p["uncond_dnet"]["outlogits"]["kernel"].shape == (2, 2, 16, 1)   # kernel = code size
  np.testing.assert_allclose(code, code_np, **OUT_TOL)
  np.testing.assert_allclose(uncond, np_logits_conv(code_np, p["uncond_dnet"]["outlogits"]),
                             **OUT_TOL)
  cond_np, u_joint = np_cond(code_np, np.asarray(sent, np.float64), p["cond_dnet"],
                             u["cond_dnet"]["joint_conv"]["u"])
  np.testing.assert_allclose(cond, cond_np, **OUT_TOL)
  for name, want in u_enc.items():
    np.testing.assert_allclose(state["batch_stats"]["encoder"][name]["u"], want, **SN_TOL)
  np.testing.assert_allclose(state["batch_stats"]["cond_dnet"]["joint_conv"]["u"], u_joint,
                             **SN_TOL)


def test_discriminator_loss_style_calls_thread_sn_state(tiny_d):
  """Reference D step: trunk on real and fake, COND head on real, fake, wrong."""
  d, x, sent, variables = tiny_d
  fake = jnp.tanh(rand(13, 3, 32, 32, 3))

  def d_step_logits(m, real, fake, sent):
    real_code = m.encode(real)
    fake_code = m.encode(fake)
    return (m.cond_logits(real_code, sent), m.cond_logits(fake_code, sent),
            m.cond_logits(real_code[:-1], sent[1:]),
            m.uncond_logits(real_code), m.uncond_logits(fake_code))

  (c_real, c_fake, c_wrong, u_real, u_fake), state = jax.jit(functools.partial(
      d.apply, method=d_step_logits, mutable=["batch_stats"]))(variables, x, fake, sent)
  assert c_wrong.shape == (2,) and u_fake.shape == (3,)
  p, u = to_np(variables["params"]), to_np(variables["batch_stats"])
  sn = np.asarray(sent, np.float64)
  real_np, u1 = np_encode(np.asarray(x, np.float64), p["encoder"], u["encoder"], 0)
  fake_np, u2 = np_encode(np.asarray(fake, np.float64), p["encoder"],
                          {k: {"u": v} for k, v in u1.items()}, 0)
  uj = u["cond_dnet"]["joint_conv"]["u"]
  want_real, uj = np_cond(real_np, sn, p["cond_dnet"], uj)
  want_fake, uj = np_cond(fake_np, sn, p["cond_dnet"], uj)
  want_wrong, uj = np_cond(real_np[:-1], sn[1:], p["cond_dnet"], uj)
  np.testing.assert_allclose(c_real, want_real, **OUT_TOL)
  np.testing.assert_allclose(c_fake, want_fake, **OUT_TOL)
  np.testing.assert_allclose(c_wrong, want_wrong, **OUT_TOL)
  np.testing.assert_allclose(u_fake, np_logits_conv(fake_np, p["uncond_dnet"]["outlogits"]),
                             **OUT_TOL)
  for name, want in u2.items():       # two trunk iterations
    np.testing.assert_allclose(state["batch_stats"]["encoder"][name]["u"], want, **SN_TOL)
  np.testing.assert_allclose(state["batch_stats"]["cond_dnet"]["joint_conv"]["u"], uj,
                             **SN_TOL)   # three jointConv iterations


@pytest.mark.parametrize("stage,size,expected", [
    (0, 64, 1_878_242), (1, 128, 5_155_810), (2, 256, 18_264_546)])
def test_discriminator_parameter_counts(stage, size, expected):
  cfg = base_config.get_config()
  d = discriminators_from_config(cfg)[stage]
  shapes = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros((2, size, size, 3)),
                                         jnp.zeros((2, 256))))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count == expected          # trainable only: u lives in 'batch_stats'
  code = jax.eval_shape(lambda: d.apply(
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
      jnp.zeros((2, size, size, 3)), method="encode", update_stats=False))
  assert code.shape == (2, 4, 4, 256)
  n_sn = len(jax.tree.leaves(shapes["batch_stats"]))
  assert n_sn == 5 + 2 * stage      # 4 trunk + jointConv + 2 per extra stage


def test_discriminators_from_tiny_config_shapes():
  cfg = base_config.tiny(base_config.get_config())
  ds = discriminators_from_config(cfg)
  assert len(ds) == cfg.data.branch_num == 2
  e = cfg.text_encoder.embedding_dim
  for k, d in enumerate(ds):
    size = cfg.data.base_size * 2 ** k
    out = jax.eval_shape(lambda d=d, size=size: d.init_with_output(
        jax.random.key(0), jnp.zeros((3, size, size, 3)), jnp.zeros((3, e))))
    (code, uncond, cond), _ = out
    assert code.shape == (3, 2, 2, 8 * cfg.model.ndf)       # 32/64 px -> 2×2 code
    assert uncond.shape == cond.shape == (3,)
