"""DM-GAN generator: every part against NumPy written from SPEC-dmgan §3 equations.

Tiny shapes (ngf <= 8, B = 3, <= 64 px, T = 5); full-size models only through
``jax.eval_shape`` (parameter counts).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import caption_mask, rand, to_np, word_features
from np_reference import (np_bn_train, np_conv, np_glu, np_resblock,
                          np_sigmoid, np_upblock)

from configs import base as base_config
from t2igan_jax.losses.gan import kl_loss
from t2igan_jax.models import layers
from t2igan_jax.models.conditioning import ConditioningAugmentation
from t2igan_jax.models.generator import Generator, generator_from_config
from t2igan_jax.models.init_utils import kernel_as_torch_matrix
from t2igan_jax.models.initial_stage import InitialStage
from t2igan_jax.models.memory import (KeyAddressing, MemoryWriter, ResponseGate,
                                      ValueReading, expand_word_mask)
from t2igan_jax.models.refiners import MemoryRefinementStage

TOL = dict(rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ NumPy refs
def np_relu(x):
  return np.maximum(x, 0.0)


def np_memory_writer(h, words, p):
  b, _, _, c = h.shape
  r = h.reshape(b, -1, c).mean(1)
  a_vec, b_vec = p["A"]["kernel"][:, 0], p["B"]["kernel"][:, 0]
  t_len, nm = words.shape[1], p["M_w"]["kernel"].shape[1]
  mem = np.zeros((b, t_len, nm))
  for i in range(b):
    m_r = np_relu(r[i] @ p["M_r"]["kernel"] + p["M_r"]["bias"])
    for t in range(t_len):
      g = np_sigmoid(a_vec @ words[i, t] + b_vec @ r[i])
      m_w = np_relu(words[i, t] @ p["M_w"]["kernel"] + p["M_w"]["bias"])
      mem[i, t] = m_w * g + m_r * (1 - g)
  return mem


def np_key_addressing(h, mem, mask, p, mode):
  b, hh, ww, c = h.shape
  q_len = hh * ww
  keys = np_relu(mem @ p["key"]["kernel"] + p["key"]["bias"])       # [B, T, C]
  h_flat = h.reshape(b, q_len, c)
  # The reference literally: mask.repeat(Q, 1) -> (Q·B)×T, logits as (B·Q)×T rows.
  tiled = np.tile(mask, (q_len, 1))
  alpha = np.zeros((b, q_len, mask.shape[1]))
  for i in range(b):
    for q in range(q_len):
      row_mask = tiled[i * q_len + q] if mode == "rolled" else mask[i]
      logit = keys[i] @ h_flat[i, q]
      logit = np.where(row_mask, -np.inf, logit)
      e = np.exp(logit - logit.max())
      alpha[i, q] = e / e.sum()
  return alpha


def np_value_reading(mem, alpha, p):
  values = np_relu(mem @ p["value"]["kernel"] + p["value"]["bias"])
  return np.einsum("bqt,btc->bqc", alpha, values)


def np_response_gate(h, o, p):
  x = np.concatenate([h, o], -1)
  g = np_sigmoid(x @ p["conv"]["kernel"][0, 0, :, 0] + p["conv"]["bias"][0])[..., None]
  return h * (1 - g) + o * g


# ------------------------------------------------------------- basic layers
def test_glu():
  x = rand(0, 3, 4, 6)
  np.testing.assert_allclose(layers.glu(x), np_glu(np.asarray(x, np.float64)), **TOL)
  np.testing.assert_allclose(layers.glu(x), jax.nn.glu(x, axis=-1), **TOL)


@pytest.mark.parametrize("running_var", ["unbiased", "biased"])
def test_batch_norm_train_output_and_running_update(running_var):
  x = rand(1, 3, 4, 4, 6) * 2 + 0.5
  bn = layers.batch_norm(running_var)
  variables = bn.init(jax.random.key(2), x, use_running_average=False)
  assert np.allclose(variables["batch_stats"]["var"], 1.0)
  y, upd = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  xn = np.asarray(x, np.float64)
  p = to_np(variables["params"])
  np.testing.assert_allclose(y, np_bn_train(xn, p), **TOL)
  n = 3 * 4 * 4
  var_b = xn.var((0, 1, 2)) * (n / (n - 1) if running_var == "unbiased" else 1.0)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xn.mean((0, 1, 2)), **TOL)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var_b, **TOL)
  # Eval mode uses the running statistics and changes nothing.
  y_eval = bn.apply({"params": variables["params"], **upd}, x, use_running_average=True)
  stats = to_np(upd["batch_stats"])
  want = (xn - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * p["scale"] + p["bias"]
  np.testing.assert_allclose(y_eval, want, **TOL)


def test_upblock_resblock_imagehead_vs_numpy():
  x = rand(3, 3, 4, 4, 6)

  up = layers.UpBlock(5)
  v = up.init(jax.random.key(0), x, train=True)
  assert v["params"]["conv"]["kernel"].shape == (3, 3, 6, 10)
  y = jax.jit(lambda v, x: up.apply(v, x, train=True, mutable=["batch_stats"])[0])(v, x)
  np.testing.assert_allclose(y, np_upblock(np.asarray(x, np.float64), to_np(v["params"])),
                             rtol=1e-4, atol=1e-4)

  res = layers.ResBlock()
  v = res.init(jax.random.key(1), x, train=True)
  y = jax.jit(lambda v, x: res.apply(v, x, train=True, mutable=["batch_stats"])[0])(v, x)
  np.testing.assert_allclose(y, np_resblock(np.asarray(x, np.float64), to_np(v["params"])),
                             rtol=1e-4, atol=1e-4)

  head = layers.ImageHead()
  v = head.init(jax.random.key(2), x)
  y = head.apply(v, x)
  want = np.tanh(np_conv(np.asarray(x, np.float64), to_np(v["params"])["conv"]["kernel"], 1, 1))
  np.testing.assert_allclose(y, want, **TOL)


def test_initial_stage_channel_major_vs_numpy():
  b, ngf = 3, 4
  c, z = rand(4, b, 5), rand(5, b, 7)
  stage = InitialStage(ngf=ngf, out_size=8)          # one UpBlock, C0 = 8
  v = stage.init(jax.random.key(6), c, z, train=True)
  assert v["params"]["fc"]["kernel"].shape == (12, 8 * 4 * 4 * 2)
  y = jax.jit(lambda v, c, z: stage.apply(v, c, z, train=True, mutable=["batch_stats"])[0])(
      v, c, z)
  p = to_np(v["params"])
  x = np.concatenate([np.asarray(c), np.asarray(z)], -1).astype(np.float64)  # [c, z]
  g = np_glu(np_bn_train(x @ p["fc"]["kernel"], p["fc_bn"]))   # BN1d per feature
  h0 = np.zeros((b, 4, 4, 8))
  for ch in range(8):
    for yy in range(4):
      for xx in range(4):
        h0[:, yy, xx, ch] = g[:, ch * 16 + yy * 4 + xx]   # torch view(B, C, 4, 4)
  want = np_upblock(h0, p["upsample1"])
  assert y.shape == (b, 8, 8, ngf)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_conditioning_augmentation_and_kl():
  sent = rand(7, 3, 12)
  ca = ConditioningAugmentation(condition_dim=4)
  v = ca.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, sent)
  p = to_np(v["params"])
  assert p["fc"]["kernel"].shape == (12, 16) and np.all(p["fc"]["bias"] == 0)
  eps = rand(8, 3, 4)
  c, mu, logvar = ca.apply(v, sent, eps=eps)
  x = np_glu(np.asarray(sent, np.float64) @ p["fc"]["kernel"] + p["fc"]["bias"])
  np.testing.assert_allclose(mu, x[:, :4], **TOL)
  np.testing.assert_allclose(logvar, x[:, 4:], **TOL)
  np.testing.assert_allclose(c, x[:, :4] + np.asarray(eps) * np.exp(0.5 * x[:, 4:]), **TOL)
  c_mean, _, _ = ca.apply(v, sent, sample=False)
  np.testing.assert_allclose(c_mean, mu, **TOL)
  c_a, _, _ = ca.apply(v, sent, rngs={"noise": jax.random.key(3)})
  c_b, _, _ = ca.apply(v, sent, rngs={"noise": jax.random.key(4)})
  assert not np.allclose(c_a, c_b)

  mu_n, lv_n = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
  terms = 1 + lv_n - mu_n ** 2 - np.exp(lv_n)
  np.testing.assert_allclose(kl_loss(mu, logvar), -0.5 * terms.mean(), **TOL)
  np.testing.assert_allclose(kl_loss(mu, logvar, "sum"), -0.5 * terms.sum(), **TOL)
  with pytest.raises(ValueError):
    kl_loss(mu, logvar, "max")


# ------------------------------------------------------------------- memory
B, HW, C, E, NM, T = 3, 2, 4, 6, 8, 5          # Q = 4 pixels, as in SPEC §3.4's example
LENGTHS = [5, 3, 2]


@pytest.fixture(scope="module")
def mem_inputs():
  h = rand(10, B, HW, HW, C)
  words = word_features(11, LENGTHS, T, E)
  return h, words, jnp.asarray(caption_mask(LENGTHS, T))


def test_memory_writer_vs_numpy(mem_inputs):
  h, words, _ = mem_inputs
  mw = MemoryWriter(memory_dim=NM)
  v = mw.init(jax.random.key(0), h, words)
  p = to_np(v["params"])
  assert p["A"]["kernel"].shape == (E, 1) and "bias" not in p["A"]
  assert p["M_w"]["kernel"].shape == (E, NM) and p["M_r"]["kernel"].shape == (C, NM)
  mem = mw.apply(v, h, words)
  np.testing.assert_allclose(
      mem, np_memory_writer(np.asarray(h, np.float64), np.asarray(words, np.float64), p), **TOL)


def test_memory_writer_stop_gradient_flag(mem_inputs):
  h, words, _ = mem_inputs
  grads = {}
  for flag in (True, False):
    mw = MemoryWriter(memory_dim=NM, stop_grad=flag)
    v = mw.init(jax.random.key(0), h, words)
    grads[flag] = jax.grad(lambda hh: jnp.sum(mw.apply(v, hh, words) ** 2))(h)
    # A, B, M_r still receive gradients with the flag on.
    g_params = jax.grad(lambda p: jnp.sum(mw.apply({"params": p}, h, words) ** 2))(v["params"])
    for name in ("A", "B", "M_r", "M_w"):
      assert float(jnp.abs(g_params[name]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads[True]).max()) == 0.0
  assert float(jnp.abs(grads[False]).max()) > 1e-6


def test_key_addressing_rolled_vs_per_caption(mem_inputs):
  h, words, mask = mem_inputs
  mem = rand(12, B, T, NM)
  rolled, per_caption = KeyAddressing("rolled"), KeyAddressing("per_caption")
  v = rolled.init(jax.random.key(0), h, mem, mask)
  p = to_np(v["params"])
  assert p["key"]["kernel"].shape == (NM, C)
  f_rolled = jax.jit(functools.partial(rolled.apply, v))
  f_caption = jax.jit(functools.partial(per_caption.apply, v))
  hn, mn, maskn = (np.asarray(x, np.float64) for x in (h, mem, mask))

  a_rolled, a_caption = f_rolled(h, mem, mask), f_caption(h, mem, mask)
  np.testing.assert_allclose(a_rolled, np_key_addressing(hn, mn, maskn, p, "rolled"), **TOL)
  np.testing.assert_allclose(a_caption, np_key_addressing(hn, mn, maskn, p, "per_caption"),
                             **TOL)
  np.testing.assert_allclose(np.sum(a_rolled, -1), 1.0, rtol=1e-5)
  # Row (b, q) uses caption (b·Q + q) mod B: with Q = 4, B = 3, rows differ for b·4 + q ≢ b.
  rows = np.asarray(expand_word_mask(mask, 4, "rolled"))
  for b in range(B):
    for q in range(4):
      np.testing.assert_array_equal(rows[b, q], maskn[(b * 4 + q) % B].astype(bool))
  assert not np.allclose(a_rolled, a_caption)
  own = np.array([[(b * 4 + q) % B == b for q in range(4)] for b in range(B)])
  np.testing.assert_allclose(np.asarray(a_rolled)[own], np.asarray(a_caption)[own], **TOL)

  equal = jnp.asarray(caption_mask([3, 3, 3], T))
  np.testing.assert_allclose(f_rolled(h, mem, equal), f_caption(h, mem, equal), **TOL)


def test_value_reading_and_response_gate_vs_numpy(mem_inputs):
  h, _, _ = mem_inputs
  mem = rand(13, B, T, NM)
  alpha = jax.nn.softmax(rand(14, B, HW * HW, T), -1)
  vr = ValueReading(features=C)
  v = vr.init(jax.random.key(0), mem, alpha)
  o = vr.apply(v, mem, alpha)
  np.testing.assert_allclose(
      o, np_value_reading(np.asarray(mem, np.float64), np.asarray(alpha, np.float64),
                          to_np(v["params"])), **TOL)

  o = o.reshape(B, HW, HW, C)
  rg = ResponseGate()
  v = rg.init(jax.random.key(1), h, o)
  assert v["params"]["conv"]["kernel"].shape == (1, 1, 2 * C, 1)
  np.testing.assert_allclose(
      rg.apply(v, h, o),
      np_response_gate(np.asarray(h, np.float64), np.asarray(o, np.float64),
                       to_np(v["params"])), **TOL)


@pytest.mark.parametrize("self_concat", [True, False])
def test_memory_refinement_stage_vs_numpy(self_concat):
  b, hw, ngf, e, nm, t_len, lengths = 3, 4, 4, 6, 8, 5, [5, 4, 2]
  h = rand(20, b, hw, hw, ngf)
  words = word_features(21, lengths, t_len, e)
  mask = jnp.asarray(caption_mask(lengths, t_len))
  sent = rand(22, b, e)
  stage = MemoryRefinementStage(ngf=ngf, memory_dim=nm, r_num=1,
                                memory_self_concat=self_concat)
  v = stage.init(jax.random.key(23), h, words, mask, sent, train=True)
  fwd = jax.jit(lambda v, h, w, m: stage.apply(v, h, w, m, sent, train=True,
                                               mutable=["batch_stats"])[0])
  out, att = fwd(v, h, words, mask)
  p = to_np(v["params"])
  hn, wn, mn = (np.asarray(x, np.float64) for x in (h, words, mask))
  mem = np_memory_writer(hn, wn, p["memory_writer"])
  alpha = np_key_addressing(hn, mem, mn, p["key_addressing"], "rolled")
  o = np_value_reading(mem, alpha, p["value_reading"]).reshape(b, hw, hw, ngf)
  h_new = np_response_gate(hn, o, p["response_gate"])
  x = np.concatenate([h_new, h_new if self_concat else o], -1)
  x = np_resblock(x, p["residual_0"])
  want = np_upblock(x, p["upsample"])
  assert out.shape == (b, 2 * hw, 2 * hw, ngf) and att.shape == (b, t_len, hw, hw)
  np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(att, alpha.transpose(0, 2, 1).reshape(b, t_len, hw, hw), **TOL)

  if self_concat:
    # 'batch_max' == 'words_num' == truncating the word axis to max(lengths) (SPEC §3.4).
    lengths_short = [4, 4, 2]                      # column 4 is padding in every row
    words_s = word_features(24, lengths_short, t_len, e)
    mask_s = jnp.asarray(caption_mask(lengths_short, t_len))
    out_full, _ = fwd(v, h, words_s, mask_s)
    out_trunc, _ = fwd(v, h, words_s[:, :4], mask_s[:, :4])
    np.testing.assert_allclose(out_full, out_trunc, rtol=1e-5, atol=1e-6)
    stage_wn = stage.clone(word_axis_length="words_num")
    out_wn, _ = stage_wn.apply(v, h, words_s, mask_s, sent, train=True,
                               mutable=["batch_stats"])[0]
    np.testing.assert_allclose(out_wn, out_full, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- generator
def _full_config(r_num):
  cfg = base_config.get_config()
  cfg.model.r_num = r_num
  return cfg


@pytest.mark.parametrize("r_num,expected", [(2, 21_449_042), (3, 22_335_314)])
def test_generator_parameter_count(r_num, expected):
  g = generator_from_config(_full_config(r_num))
  b, t_len = 2, 18
  shapes = jax.eval_shape(lambda: g.init(
      {"params": jax.random.key(0), "noise": jax.random.key(1)},
      jnp.zeros((b, 100)), jnp.zeros((b, 256)), jnp.zeros((b, t_len, 256)),
      jnp.zeros((b, t_len), bool), train=False))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count == expected
  p = shapes["params"]
  assert p["h_net1"]["fc"]["kernel"].shape == (200, 32768)
  assert p["h_net1"]["upsample1"]["conv"]["kernel"].shape == (3, 3, 1024, 1024)
  assert p["h_net2"]["memory_writer"]["M_w"]["kernel"].shape == (256, 128)
  assert p["h_net3"][f"residual_{r_num - 1}"]["conv1"]["kernel"].shape == (3, 3, 128, 256)
  assert p["img_net3"]["conv"]["kernel"].shape == (3, 3, 64, 3)
  assert set(shapes["batch_stats"]) == {"h_net1", "h_net2", "h_net3"}


@pytest.fixture(scope="module")
def tiny_generator():
  cfg = base_config.tiny(base_config.get_config())
  g = generator_from_config(cfg)
  b, t_len, e = 3, 5, cfg.text_encoder.embedding_dim
  lengths = [5, 3, 2]
  inputs = dict(z=rand(30, b, cfg.model.z_dim), sent=rand(31, b, e),
                words=word_features(32, lengths, t_len, e),
                mask=jnp.asarray(caption_mask(lengths, t_len)))
  variables = jax.jit(functools.partial(g.init, train=False))(
      {"params": jax.random.key(33), "noise": jax.random.key(34)}, **inputs)
  return cfg, g, inputs, variables


def test_generator_init_orthogonal_and_bn_scale(tiny_generator):
  _, _, _, variables = tiny_generator
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  n_kernels, scales = 0, []
  for path, leaf in flat:
    name = path[-1].key
    if name == "kernel":
      w = np.asarray(kernel_as_torch_matrix(leaf), np.float64)   # out × in·kh·kw
      gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
      np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5,
                                 err_msg=jax.tree_util.keystr(path))
      n_kernels += 1
    elif name == "scale":
      scales.append(np.asarray(leaf))
  assert n_kernels == 17      # ca 1, h_net1 4, img_net 2, memory 7, residual 2, upsample 1
  scales = np.concatenate(scales)
  assert scales.size > 1000
  assert abs(scales.mean() - 1.0) < 0.003 and 0.017 < scales.std() < 0.023
  p = variables["params"]["h_net2"]
  # Reference default bias init U(±1/sqrt(fan_in)) on the memory convs.
  bound = 1 / np.sqrt(p["memory_writer"]["M_w"]["kernel"].shape[0])
  assert np.all(np.abs(p["memory_writer"]["M_w"]["bias"]) <= bound)
  assert np.abs(p["memory_writer"]["M_w"]["bias"]).max() > bound / 4
  stats = variables["batch_stats"]["h_net1"]["fc_bn"]
  assert np.all(stats["mean"] == 0) and np.all(stats["var"] == 1)


def test_generator_forward_train_and_eval(tiny_generator):
  cfg, g, inputs, variables = tiny_generator
  base, b, t_len = cfg.data.base_size, 3, 5
  rngs = {"noise": jax.random.key(40)}

  train_fn = jax.jit(lambda v, rngs, **kw: g.apply(v, **kw, train=True, rngs=rngs,
                                                    mutable=["batch_stats"]))
  out, upd = train_fn(variables, rngs, **inputs)
  assert [im.shape for im in out["images"]] == [(b, base, base, 3), (b, 2 * base, 2 * base, 3)]
  assert [a.shape for a in out["attention"]] == [(b, t_len, base, base)]
  assert out["mu"].shape == out["logvar"].shape == (b, cfg.model.condition_dim)
  for im in out["images"]:
    assert np.all(np.isfinite(im)) and np.abs(im).max() <= 1.0
  np.testing.assert_allclose(np.sum(out["attention"][0], axis=1), 1.0, rtol=1e-5)
  changed = jax.tree.map(lambda a, c: bool(np.any(np.asarray(a) != np.asarray(c))),
                         variables["batch_stats"], upd["batch_stats"])
  assert all(jax.tree.leaves(changed))

  eval_fn = jax.jit(lambda v, rngs, **kw: g.apply(v, **kw, train=False, rngs=rngs))
  new_vars = {"params": variables["params"], **upd}
  out_e1 = eval_fn(new_vars, rngs, **inputs)
  out_e2 = eval_fn(new_vars, {"noise": jax.random.key(41)}, **inputs)
  for im in out_e1["images"]:
    assert im.shape[0] == b and np.abs(im).max() <= 1.0
  # Eval samples the CA epsilon by default (ca_sample_at_eval=True) ...
  assert not np.allclose(out_e1["images"][0], out_e2["images"][0])
  # ... and is otherwise deterministic: same rng, same output.
  np.testing.assert_allclose(eval_fn(new_vars, rngs, **inputs)["images"][1],
                             out_e1["images"][1])
  # Eval with the stats still mutable changes nothing.
  _, upd_eval = g.apply(new_vars, **inputs, train=False, rngs=rngs, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, upd_eval["batch_stats"], upd["batch_stats"])
  # Train mode is batch-statistics BN: same z/eps -> same output whatever the running stats.
  out2, _ = train_fn(new_vars, rngs, **inputs)
  np.testing.assert_allclose(out2["images"][1], out["images"][1], rtol=1e-5, atol=1e-6)


def test_generator_rejects_unknown_flags():
  g = Generator(ngf=4, z_dim=3, condition_dim=2, text_dim=4, memory_dim=4, r_num=1,
                num_stages=2, base_size=8, attn_mask_mode="bogus")
  with pytest.raises(ValueError, match="attn_mask_mode"):
    jax.eval_shape(lambda: g.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
                                  jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 3, 4)),
                                  jnp.zeros((2, 3), bool), train=False))
  g = g.clone(attn_mask_mode="rolled", refiner="bogus")
  with pytest.raises(NotImplementedError):
    jax.eval_shape(lambda: g.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
                                  jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 3, 4)),
                                  jnp.zeros((2, 3), bool), train=False))
