"""DF-GAN model, losses and training step against NumPy written from SPEC-dfgan.

Tiny shapes (nf 4, z 8, cond 6, B 3; 32 px for the blocks, 64 px for the whole
nets, so D has one fin == fout block with a dead ``conv_s``); full-size models
only through ``jax.eval_shape`` (parameter counts).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import rand, to_np
from np_reference import np_conv

from t2igan_jax import dfgan_lib
from t2igan_jax.losses import dfgan as losses
from t2igan_jax.models import dfgan

TOL = dict(rtol=1e-4, atol=1e-5)
B, Z, COND, NF = 3, 8, 6, 4
CFG = dfgan_lib.DfganConfig(nf=NF, z_dim=Z, cond_dim=COND, imsize=64)


def randomize(params, key, scale=0.3):
  """Every leaf replaced by ``scale · N(0, 1)`` (so identity inits do not hide bugs)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(key), len(leaves))
  return jax.tree.unflatten(tree, [
      scale * jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves)])


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------ NumPy refs
def np_lrelu(x):
  return np.where(x > 0, x, 0.2 * x)


def np_conv_b(x, p, stride=1, pad=0):
  out = np_conv(x, p["kernel"], stride, pad)
  return out + p["bias"] if "bias" in p else out


def np_mlp(y, p):
  h = np.maximum(y @ p["linear1"]["kernel"] + p["linear1"]["bias"], 0.0)
  return h @ p["linear2"]["kernel"] + p["linear2"]["bias"]


def np_affine(x, y, p):
  return (np_mlp(y, p["fc_gamma"])[:, None, None, :] * x
          + np_mlp(y, p["fc_beta"])[:, None, None, :])


def np_dfblock(x, y, p):
  return np_lrelu(np_affine(np_lrelu(np_affine(x, y, p["affine0"])), y, p["affine1"]))


def np_gblock(x, y, p):
  u = x.repeat(2, axis=1).repeat(2, axis=2)
  h = np_conv_b(np_dfblock(u, y, p["fuse1"]), p["c1"], pad=1)
  h = np_conv_b(np_dfblock(h, y, p["fuse2"]), p["c2"], pad=1)
  sc = np_conv_b(u, p["c_sc"]) if "c_sc" in p else u
  return sc + h


def np_generator(z, s, p, nf):
  """NetG: fc -> NCHW view -> NHWC, cond = [z, s], GBlocks, lrelu-conv-tanh."""
  h = z @ p["fc"]["kernel"] + p["fc"]["bias"]
  h = h.reshape(len(z), 8 * nf, 4, 4).transpose(0, 2, 3, 1)
  y = np.concatenate([z, s], 1)
  k = 0
  while f"GBlocks_{k}" in p:
    h = np_gblock(h, y, p[f"GBlocks_{k}"])
    k += 1
  return np.tanh(np_conv_b(np_lrelu(h), p["to_rgb_1"], pad=1))


def np_pool(x):
  return 0.25 * (x[:, ::2, ::2] + x[:, 1::2, ::2] + x[:, ::2, 1::2] + x[:, 1::2, 1::2])


def np_dblock(x, p):
  res = np_lrelu(np_conv(x, p["conv_r_0"]["kernel"], 2, 1))
  res = np_lrelu(np_conv(res, p["conv_r_2"]["kernel"], 1, 1))
  fout = p["conv_r_0"]["kernel"].shape[-1]
  sc = np_conv_b(x, p["conv_s"]) if x.shape[-1] != fout else x
  return np_pool(sc) + p["gamma"][0] * res


def np_netd(x, p):
  h = np_conv_b(x, p["conv_img"], pad=1)
  k = 0
  while f"DBlocks_{k}" in p:
    h = np_dblock(h, p[f"DBlocks_{k}"])
    k += 1
  return h


def np_netc(f, s, p):
  y = np.broadcast_to(s[:, None, None, :], f.shape[:3] + (s.shape[1],))
  h = np_lrelu(np_conv(np.concatenate([f, y], -1), p["joint_conv_0"]["kernel"], 1, 1))
  return np_conv(h, p["joint_conv_2"]["kernel"]).reshape(len(f))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def nets():
  g, d, c = dfgan_lib.models(CFG)
  g_params, d_params = dfgan_lib.init_params(CFG, jax.random.key(0))
  return dict(g=g, d=d, c=c, g_params=g_params, d_params=d_params,
              z=rand(1, B, Z), s=rand(2, B, COND),
              x=jax.random.uniform(jax.random.key(3), (B, 64, 64, 3), minval=-1, maxval=1))


# ------------------------------------------------------------------ blocks
@pytest.mark.parametrize("module,np_fn", [(dfgan.Affine(), np_affine),
                                          (dfgan.DFBlock(), np_dfblock)])
def test_affine_and_dfblock_match_numpy(module, np_fn):
  x, y = rand(4, B, 4, 4, 5), rand(5, B, COND)
  p = randomize(module.init(jax.random.key(0), x, y)["params"], 6)
  out = module.apply({"params": p}, x, y)
  np.testing.assert_allclose(out, np_fn(*to_np((x, y)), to_np(p)), **TOL)


@pytest.mark.parametrize("in_ch,out_ch", [(8, 8), (8, 4)])
def test_gblock_matches_numpy(in_ch, out_ch):
  x, y = rand(7, B, 4, 4, in_ch), rand(8, B, COND)
  block = dfgan.GBlock(out_ch)
  p = randomize(block.init(jax.random.key(0), x, y)["params"], 9)
  assert ("c_sc" in p) == (in_ch != out_ch)
  out = block.apply({"params": p}, x, y)
  assert out.shape == (B, 8, 8, out_ch)
  np.testing.assert_allclose(out, np_gblock(*to_np((x, y)), to_np(p)), **TOL)


@pytest.mark.parametrize("fin,fout", [(4, 8), (8, 8)])
def test_dblock_matches_numpy(fin, fout):
  x = rand(10, B, 8, 8, fin)
  block = dfgan.DBlock(fout)
  p = randomize(block.init(jax.random.key(0), x)["params"], 11)
  assert set(p) == {"conv_r_0", "conv_r_2", "conv_s", "gamma"}   # conv_s even if dead
  out = block.apply({"params": p}, x)
  np.testing.assert_allclose(out, np_dblock(to_np(x), to_np(p)), **TOL)
  if fin == fout:   # the dead conv_s has no influence
    p2 = dict(p, conv_s=jax.tree.map(lambda v: v + 1.0, p["conv_s"]))
    np.testing.assert_array_equal(block.apply({"params": p2}, x), out)


def test_conditional_head_matches_numpy():
  f, s = rand(12, B, 4, 4, 8 * NF), rand(13, B, COND)
  head = dfgan.DFConditionalHead(NF, COND)
  p = randomize(head.init(jax.random.key(0), f, s)["params"], 14)
  np.testing.assert_allclose(head.apply({"params": p}, f, s),
                             np_netc(*to_np((f, s)), to_np(p)), **TOL)


def test_whole_nets_match_numpy(nets):
  gp = randomize(nets["g_params"], 15, scale=0.1)
  dp = randomize(nets["d_params"], 16, scale=0.1)
  img = nets["g"].apply({"params": gp}, nets["z"], nets["s"])
  assert img.shape == (B, 64, 64, 3)
  np.testing.assert_allclose(img, np_generator(*to_np((nets["z"], nets["s"])),
                                               to_np(gp), NF), **TOL)
  feats = nets["d"].apply({"params": dp["netD"]}, nets["x"])
  assert feats.shape == (B, 4, 4, 8 * NF)
  np.testing.assert_allclose(feats, np_netd(to_np(nets["x"]), to_np(dp["netD"])), **TOL)


# ------------------------------------------------------------------ sizes
def test_channel_lists_follow_imsize():
  assert dfgan.g_channels(32, 256) == [(256, 256)] * 3 + [(256, 128), (128, 64), (64, 32)]
  assert dfgan.d_channels(32, 256) == [(32, 64), (64, 128), (128, 256)] + [(256, 256)] * 3
  assert dfgan.g_channels(4, 64) == [(32, 32), (32, 16), (16, 8), (8, 4)]
  assert dfgan.d_channels(4, 64) == [(4, 8), (8, 16), (16, 32), (32, 32)]
  for bad in (16, 48, 100):
    with pytest.raises(ValueError, match="imsize"):
      dfgan_lib.DfganConfig(imsize=bad)


def test_parameter_counts_bird():
  """Counts of the official modules built with bird.yml values (SPEC-dfgan,
  ``sum(p.numel())`` on NetG(32,100,256,256,3), NetD(32,256,3), NetC(32,256)),
  re-derived by hand per layer: G = fc 100·4096+4096 = 413,696, GBlocks
  3×2,437,632 + 1,353,088 + 475,840 + 187,744, to_rgb 32·3·9+3 = 867; a DFBLK on C
  channels has 4(C² + 358C); D = conv_img 896 + 71,745 + 286,849 + 1,147,137 +
  3×1,704,193 (each with a dead 256·256+256 = 65,792 conv_s); C = 512·64·9 + 64·16."""
  shapes = jax.eval_shape(functools.partial(dfgan_lib.init_params, dfgan_lib.BIRD),
                          jax.random.key(0))
  g, d = shapes
  assert count(g) == 9_744_131
  assert count(d["netD"]) == 6_619_206
  assert count(d["netC"]) == 295_936
  assert [count(g[f"GBlocks_{k}"]) for k in range(6)] == [2_437_632] * 3 + [
      1_353_088, 475_840, 187_744]
  assert count(g["GBlocks_0"]["fuse1"]) == 4 * (256 ** 2 + 358 * 256)
  assert [count(d["netD"][f"DBlocks_{k}"]) for k in range(6)] == [
      71_745, 286_849, 1_147_137] + [1_704_193] * 3
  assert sum(count(d["netD"][f"DBlocks_{k}"]["conv_s"]) for k in (3, 4, 5)) == 197_376


# ------------------------------------------------------------------ init
def test_init_identity_affines_and_zero_gamma(nets):
  g_params, d_params = nets["g_params"], nets["d_params"]
  aff = g_params["GBlocks_1"]["fuse2"]["affine1"]
  np.testing.assert_array_equal(aff["fc_gamma"]["linear2"]["kernel"], 0.0)
  np.testing.assert_array_equal(aff["fc_gamma"]["linear2"]["bias"], 1.0)
  np.testing.assert_array_equal(aff["fc_beta"]["linear2"]["bias"], 0.0)
  for k in range(4):
    np.testing.assert_array_equal(d_params["netD"][f"DBlocks_{k}"]["gamma"], [0.0])
  generate = lambda s: nets["g"].apply({"params": g_params}, nets["z"], s)
  a, b = generate(nets["s"]), generate(10.0 * rand(20, B, COND))
  np.testing.assert_array_equal(a, b)   # G ignores the sentence at init
  assert float(jnp.std(a)) > 1e-3


def test_init_is_torch_default_uniform(nets):
  """Weights and biases ~ U(±1/√fan_in): inside the bound and filling it."""
  for name, p, fan_in in [
      ("fc", nets["g_params"]["fc"], Z),
      ("c1", nets["g_params"]["GBlocks_0"]["c1"], 32 * 9),
      ("linear1", nets["g_params"]["GBlocks_0"]["fuse1"]["affine0"]["fc_beta"]["linear1"],
       Z + COND),
      ("conv_r_0", nets["d_params"]["netD"]["DBlocks_1"]["conv_r_0"], 8 * 16)]:
    bound = fan_in ** -0.5
    for leaf in p.values():
      v = np.abs(np.asarray(leaf))
      assert v.max() <= bound and v.max() > 0.7 * bound, name


# ------------------------------------------------------------------ losses
def test_ma_gp_analytic_bilinear_critic():
  """critic_i = (x_i·w)(s_i·v) + x_i·u: ∂x_i = (s_i·v)w + u, ∂s_i = (x_i·w)v."""
  rng = np.random.default_rng(0)
  x, s = rng.normal(size=(4, 2, 2, 3)), rng.normal(size=(4, 5))
  w, u, v = rng.normal(size=12) * 0.3, rng.normal(size=12) * 0.3, rng.normal(size=5) * 0.3
  xf = x.reshape(4, -1)
  g = np.concatenate([(s @ v)[:, None] * w + u, (xf @ w)[:, None] * v], 1)
  want = 2.0 * np.mean(np.sqrt((g ** 2).sum(1)) ** 6)
  critic = lambda xx, ss: (xx.reshape(4, -1) @ w) * (ss @ v) + xx.reshape(4, -1) @ u
  got = losses.ma_gp(critic, jnp.asarray(x, jnp.float32), jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # finite differences of the critic in float64 agree with the analytic gradient
  eps, i = 1e-6, 2
  dx = np.zeros_like(x)
  dx[1, 0, 1, i] = eps
  fd = (critic(x + dx, s) - critic(x - dx, s))[1] / (2 * eps)
  np.testing.assert_allclose(fd, g[1, 1 * 3 + i], rtol=1e-6)


def test_discriminator_loss_terms_match_numpy(nets):
  """Every (image, sentence) logit from the nets; the terms assembled in NumPy."""
  dp = randomize(nets["d_params"], 21, scale=0.2)
  _, features, logits = dfgan_lib.apply_fns(CFG)
  x, s = nets["x"], nets["s"]
  fake = jnp.tanh(rand(22, B, 64, 64, 3))
  f_real, f_fake = features(dp, x), features(dp, fake)
  pair = np.stack([np.asarray(logits(dp, jnp.roll(f_real, -j, 0), s)) for j in range(B)])
  # pair[j, i] = C(f(x_{(i+j) % B}), s_i)
  relu = lambda v: np.maximum(v, 0.0)
  fake_l = np.asarray(logits(dp, f_fake, s))
  per_sample = [jax.jacrev(lambda xi, si: logits(dp, features(dp, xi[None]), si[None])[0],
                           argnums=(0, 1))(x[i], s[i]) for i in range(B)]
  norms = np.array([np.sqrt(np.sum(np.square(gx)) + np.sum(np.square(gs)))
                    for gx, gs in per_sample], np.float64)
  want = dict(d_real=relu(1 - pair[0]).mean(), d_mis=relu(1 + pair[1]).mean(),
              d_fake=relu(1 + fake_l).mean(), ma_gp=2.0 * np.mean(norms ** 6))
  loss, terms = losses.discriminator_loss(dp, x, s, fake, features=features, logits=logits)
  for k, v in want.items():
    np.testing.assert_allclose(terms[k], v, rtol=1e-4, err_msg=k)
  assert want["ma_gp"] > 1e-3
  np.testing.assert_allclose(loss, want["d_real"] + (want["d_fake"] + want["d_mis"]) / 2
                             + want["ma_gp"], rtol=1e-4)
  # rolling the other way (+1) would be a different loss: the test can tell
  assert abs(relu(1 + pair[B - 1]).mean() - want["d_mis"]) > 1e-4
  np.testing.assert_allclose(
      losses.generator_loss(dp, fake, s, features=features, logits=logits),
      -fake_l.mean(), rtol=1e-5)


def test_mismatched_features_roll_minus_one():
  f = jnp.arange(4.0)[:, None]
  np.testing.assert_array_equal(losses.mismatched_features(f)[:, 0], [1.0, 2.0, 3.0, 0.0])


# ------------------------------------------------------------------ train step
@pytest.fixture(scope="module")
def stepped(nets):
  state = dfgan_lib.create_state(CFG, jax.random.key(30))
  step = jax.jit(functools.partial(dfgan_lib.train_step, config=CFG))
  key = jax.random.key(31)
  new_state, metrics = step(state, nets["x"], nets["s"], key)
  return state, new_state, metrics, key


def test_train_step_finite_and_updates(stepped):
  state, new, metrics, _ = stepped
  assert int(new.step) == 1
  for k, v in metrics.items():
    assert np.isfinite(float(v)), k
  changed = lambda a, b: any(not np.array_equal(x, y) for x, y in
                             zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(state.g_params, new.g_params)
  assert changed(state.d_params["netD"], new.d_params["netD"])
  assert changed(state.d_params["netC"], new.d_params["netC"])
  d_old, d_new = state.d_params["netD"], new.d_params["netD"]
  # γ = 0 at init: conv_r gets exactly zero gradient; the dead conv_s never moves
  for k in range(4):
    for name in ("conv_r_0", "conv_r_2"):
      np.testing.assert_array_equal(d_new[f"DBlocks_{k}"][name]["kernel"],
                                    d_old[f"DBlocks_{k}"][name]["kernel"])
  np.testing.assert_array_equal(d_new["DBlocks_3"]["conv_s"]["kernel"],
                                d_old["DBlocks_3"]["conv_s"]["kernel"])


def test_train_step_first_adam_updates(nets, stepped):
  """β1 = 0: the first update is lr·g/(|g| + eps), with g recomputed here: D on the
  step's noise; G through the *updated* D and C on the same fake."""
  state, new, metrics, key = stepped
  generate, features, logits = dfgan_lib.apply_fns(CFG)
  x, s = nets["x"], nets["s"]
  noise = jax.random.normal(key, (B, Z), jnp.float32)
  fake = generate(state.g_params, noise, s)
  d_grad = jax.jit(jax.grad(lambda p: losses.discriminator_loss(
      p, x, s, fake, features=features, logits=logits)[0]))(state.d_params)
  g_loss = jax.jit(lambda dp, gp: losses.generator_loss(
      dp, generate(gp, noise, s), s, features=features, logits=logits))
  g_grad = jax.jit(jax.grad(g_loss, argnums=1))(new.d_params, state.g_params)
  n_checked = 0
  for lr, grads, old, upd in [(CFG.lr_d, d_grad, state.d_params, new.d_params),
                              (CFG.lr_g, g_grad, state.g_params, new.g_params)]:
    for g, p0, p1 in zip(*(jax.tree.leaves(t) for t in (grads, old, upd))):
      g = np.asarray(g)
      big = np.abs(g) > 1e-5      # the sign-like update is unstable for tiny g
      want = -lr * g / (np.abs(g) + CFG.eps)
      n_checked += int(big.sum())
      np.testing.assert_allclose((np.asarray(p1) - np.asarray(p0))[big], want[big],
                                 rtol=1e-2, atol=lr * 1e-2)
  assert n_checked > 1000
  np.testing.assert_allclose(metrics["g_loss"], g_loss(new.d_params, state.g_params),
                             rtol=1e-5)
  assert abs(float(g_loss(state.d_params, state.g_params) - metrics["g_loss"])) > 1e-6


# ------------------------------------------------------------------ sampling
def test_truncated_noise():
  z = dfgan_lib.truncated_noise(jax.random.key(0), 4000, 100, 0.88)
  assert z.shape == (4000, 100)
  assert float(jnp.max(jnp.abs(z))) <= 2 * 0.88
  np.testing.assert_allclose(float(jnp.std(z)), 0.88 * 0.8796, rtol=0.02)
  np.testing.assert_array_equal(z, dfgan_lib.truncated_noise(jax.random.key(0), 4000, 100, 0.88))
  assert not np.array_equal(z, dfgan_lib.truncated_noise(jax.random.key(1), 4000, 100, 0.88))
