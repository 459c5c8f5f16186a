"""FF-GAN generator parts against NumPy written from SPEC-ffgan §2-§4.

Tiny shapes (ngf 4, B = 3, 4×4 features, T = 6 with the batch's longest caption
at 5, so one column is padding in every row); full-size models only through
``jax.eval_shape`` (parameter counts).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import (caption_mask, rand, tiny_generator_grads, to_np,
                            word_features)
from np_reference import np_conv, np_resblock, np_upblock

from configs import ffgan_bird, ffgan_coco, ffgan_shapes
from t2igan_jax.models.ffblock import AffineCombination, FFBlock
from t2igan_jax.models.generator import generator_from_config
from t2igan_jax.models.gsr import GSR
from t2igan_jax.models.init_utils import kernel_as_torch_matrix
from t2igan_jax.models.refiners import FFRefinementStage, ffgan_attention_mask

TOL = dict(rtol=1e-4, atol=1e-5)
B, HW, C, E, T = 3, 4, 4, 6, 6
LENGTHS = [5, 3, 2]          # batch max 5 < T: column 5 is padding everywhere
ACM = 8                      # small ACM width for the NumPy comparisons


# ------------------------------------------------------------------ NumPy refs
def np_softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def np_word_attention(h, words, kernel, visible):
  """SPEC-ffgan §2 (a)-(b), one pixel at a time.

  ``visible[b]``: the word slots of caption b's softmax (a list of indices).
  Returns ctx [B,H,W,C] and α [B,Q,T] (0 at excluded slots).
  """
  b_n, hh, ww, c = h.shape
  proj = words @ kernel                                   # e'[b,t,c]
  h_flat = h.reshape(b_n, hh * ww, c)
  ctx = np.zeros_like(h_flat)
  alpha = np.zeros((b_n, hh * ww, words.shape[1]))
  for b in range(b_n):
    cols = np.asarray(visible[b])
    for q in range(hh * ww):
      a = np_softmax(np.array([h_flat[b, q] @ proj[b, t] for t in cols]))
      alpha[b, q, cols] = a
      ctx[b, q] = sum(a[i] * proj[b, t] for i, t in enumerate(cols))
  return ctx.reshape(h.shape), alpha


def np_acm(h, ctx, p):
  u = np_conv(ctx, p["conv"]["kernel"], 1, 1)
  return h * np_conv(u, p["conv_weight"]["kernel"], 1, 1) + np_conv(
      u, p["conv_bias"]["kernel"], 1, 1)


def np_gsr(h, sent, kernel):
  """SPEC-ffgan §3: per (b, c) a softmax over the H·W positions."""
  b_n, hh, ww, c = h.shape
  s_proj = sent @ kernel                                  # [B, C]
  h_flat = h.reshape(b_n, hh * ww, c)
  g = np.zeros_like(h_flat)
  for b in range(b_n):
    for ch in range(c):
      g[b, :, ch] = s_proj[b, ch] * np_softmax(h_flat[b, :, ch] * s_proj[b, ch])
  return g.reshape(h.shape)


@pytest.fixture(scope="module")
def inputs():
  h = rand(1, B, HW, HW, C)
  words = word_features(2, LENGTHS, T, E)
  mask = jnp.asarray(caption_mask(LENGTHS, T))
  sent = rand(3, B, E)
  return h, words, mask, sent


# ------------------------------------------------------------------ FF-Block
@pytest.fixture(scope="module")
def ffblock(inputs):
  h, words, _, _ = inputs
  block = FFBlock(acm_dim=ACM)
  variables = jax.jit(block.init)(jax.random.key(4), h, words)
  return jax.jit(functools.partial(block.apply, variables)), to_np(variables["params"])


def test_ffblock_unmasked_vs_numpy(inputs, ffblock):
  """Reference: no mask; the zero padded slots take softmax mass exp(0)/Z."""
  h, words, _, _ = inputs
  fwd, p = ffblock
  assert p["w_att"]["conv_context"]["kernel"].shape == (E, C)
  assert p["affine"]["conv"]["kernel"].shape == (3, 3, C, ACM)
  assert p["affine"]["conv_weight"]["kernel"].shape == (3, 3, ACM, C)
  out, alpha = fwd(h, words, None)
  hn, wn = np.asarray(h, np.float64), np.asarray(words, np.float64)
  ctx, alpha_np = np_word_attention(hn, wn, p["w_att"]["conv_context"]["kernel"],
                                    [range(T)] * B)
  np.testing.assert_allclose(alpha, alpha_np, **TOL)
  np.testing.assert_allclose(out, np_acm(hn, ctx, p["affine"]), rtol=1e-4, atol=1e-4)
  # Padded slots keep weight 1/Z (logit 0) although they add nothing to ctx.
  pad = caption_mask(LENGTHS, T)
  assert np.all(np.asarray(alpha)[np.broadcast_to(pad[:, None, :], alpha.shape)] > 1e-4)


def test_ffblock_padding_mask_vs_numpy(inputs, ffblock):
  """Masked variant: each caption's padding excluded == that caption alone, truncated."""
  h, words, mask, _ = inputs
  fwd, p = ffblock
  out, alpha = fwd(h, words, mask[:, None, :])
  hn, wn = np.asarray(h, np.float64), np.asarray(words, np.float64)
  ctx, alpha_np = np_word_attention(hn, wn, p["w_att"]["conv_context"]["kernel"],
                                    [range(n) for n in LENGTHS])
  np.testing.assert_allclose(alpha, alpha_np, **TOL)
  np.testing.assert_allclose(out, np_acm(hn, ctx, p["affine"]), rtol=1e-4, atol=1e-4)
  out_unmasked, _ = fwd(h, words, None)
  for b, n in enumerate(LENGTHS):
    alone, _ = fwd(h[b:b + 1], words[b:b + 1, :n], None)
    np.testing.assert_allclose(out[b:b + 1], alone, rtol=1e-5, atol=1e-5)
    if n < T:   # padding changes the unmasked output of every shorter caption
      assert not np.allclose(out_unmasked[b], out[b], rtol=1e-4, atol=1e-4)


def test_acm_is_affine_in_h():
  h, ctx = rand(5, 2, 3, 3, C), rand(6, 2, 3, 3, C)
  acm = AffineCombination(acm_dim=ACM)
  v = jax.jit(acm.init)(jax.random.key(7), h, ctx)
  fwd = jax.jit(functools.partial(acm.apply, v))
  zero = fwd(jnp.zeros_like(h), ctx)               # β
  gamma = fwd(jnp.ones_like(h), ctx) - zero        # γ
  np.testing.assert_allclose(fwd(h, ctx), h * gamma + zero, rtol=1e-5, atol=1e-5)
  assert set(v["params"]) == {"conv", "conv_weight", "conv_bias"}
  assert all(set(x) == {"kernel"} for x in v["params"].values())     # bias-free


# ----------------------------------------------------------------------- GSR
def test_gsr_vs_numpy(inputs):
  h, _, _, sent = inputs
  gsr = GSR()
  v = gsr.init(jax.random.key(8), h, sent)
  kernel = np.asarray(v["params"]["conv_context"]["kernel"], np.float64)
  assert kernel.shape == (E, C) and set(v["params"]["conv_context"]) == {"kernel"}
  g = gsr.apply(v, h, sent)
  np.testing.assert_allclose(
      g, np_gsr(np.asarray(h, np.float64), np.asarray(sent, np.float64), kernel), **TOL)
  # Every channel sums over space to the projected sentence s'[b, c].
  np.testing.assert_allclose(np.sum(g, axis=(1, 2)), np.asarray(sent) @ kernel,
                             rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ refinement stage
@pytest.fixture(scope="module")
def stage(inputs):
  h, words, mask, sent = inputs
  module = FFRefinementStage(ngf=C, r_num=1)
  variables = jax.jit(functools.partial(module.init, train=True))(
      jax.random.key(9), h, words, mask, sent)

  def make(word_mask, word_axis_length):
    m = module.clone(word_mask=word_mask, word_axis_length=word_axis_length)
    return jax.jit(lambda h, w, msk, s: m.apply(
        variables, h, w, msk, s, train=True, mutable=["batch_stats"])[0])

  return make, to_np(variables["params"])


def np_ff_stage(h, words, sent, p, visible):
  h_w_ctx, alpha = np_word_attention(
      h, words, p["ff_block"]["w_att"]["conv_context"]["kernel"], visible)
  h_w = np_acm(h, h_w_ctx, p["ff_block"]["affine"])
  g = np_gsr(h, sent, p["s_att"]["conv_context"]["kernel"])
  x = np_resblock(np.concatenate([h_w, g], -1), p["residual_0"])   # FF output first
  return np_upblock(x, p["upsample"]), alpha


def test_ff_stage_reference_flags_vs_numpy(inputs, stage):
  """'none' + 'batch_max': T = the batch's longest caption, no other mask (SPEC-ffgan §2)."""
  h, words, mask, sent = inputs
  make, p = stage
  assert set(p) == {"ff_block", "s_att", "residual_0", "upsample"}
  fwd = make("none", "batch_max")
  out, att = fwd(h, words, mask, sent)
  t_max = max(LENGTHS)
  hn, wn, sn = (np.asarray(x, np.float64) for x in (h, words, sent))
  want, alpha = np_ff_stage(hn, wn[:, :t_max], sn, p, [range(t_max)] * B)
  assert out.shape == (B, 2 * HW, 2 * HW, C) and att.shape == (B, T, HW, HW)
  np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(att[:, :t_max], alpha.transpose(0, 2, 1).reshape(
      B, t_max, HW, HW), **TOL)
  assert np.all(np.asarray(att[:, t_max:]) == 0.0)
  # Same as handing the model the word axis cut to the batch maximum ...
  out_cut, _ = fwd(h, words[:, :t_max], mask[:, :t_max], sent)
  np.testing.assert_allclose(out, out_cut, rtol=1e-5, atol=1e-5)
  # ... while 'words_num' lets the extra all-padding column dilute the softmax.
  out_wn, att_wn = make("none", "words_num")(h, words, mask, sent)
  want_wn, _ = np_ff_stage(hn, wn, sn, p, [range(T)] * B)
  np.testing.assert_allclose(out_wn, want_wn, rtol=2e-4, atol=2e-4)
  assert np.all(np.asarray(att_wn[:, t_max:]) > 0)
  assert not np.allclose(out_wn, out, rtol=1e-4, atol=1e-4)


def test_ff_stage_padding_variant_vs_numpy(inputs, stage):
  h, words, mask, sent = inputs
  make, p = stage
  hn, wn, sn = (np.asarray(x, np.float64) for x in (h, words, sent))
  want, alpha = np_ff_stage(hn, wn, sn, p, [range(n) for n in LENGTHS])
  for axis_length in ("batch_max", "words_num"):     # identical once padding is masked
    out, att = make("padding", axis_length)(h, words, mask, sent)
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(att, alpha.transpose(0, 2, 1).reshape(B, T, HW, HW), **TOL)


def test_ffgan_attention_mask_flags():
  mask = jnp.asarray(caption_mask(LENGTHS, T))
  none_bm = np.asarray(ffgan_attention_mask(mask, "none", "batch_max"))
  assert none_bm.shape == (1, 1, T) and none_bm[0, 0].tolist() == [False] * 5 + [True]
  assert not np.any(ffgan_attention_mask(mask, "none", "words_num"))
  np.testing.assert_array_equal(ffgan_attention_mask(mask, "padding", "words_num")[:, 0],
                                caption_mask(LENGTHS, T))
  with pytest.raises(ValueError, match="ffgan_word_mask"):
    ffgan_attention_mask(mask, "rolled", "batch_max")
  with pytest.raises(ValueError, match="word_axis_length"):
    ffgan_attention_mask(mask, "none", "bogus")


# ---------------------------------------------------------------- generator
def _abstract_init(config, t_len=18):
  g = generator_from_config(config)
  e, z = config.text_encoder.embedding_dim, config.model.z_dim
  return jax.eval_shape(lambda: g.init(
      {"params": jax.random.key(0), "noise": jax.random.key(1)},
      jnp.zeros((2, z)), jnp.zeros((2, e)), jnp.zeros((2, t_len, e)),
      jnp.zeros((2, t_len), bool), train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("config_module,expected", [(ffgan_bird, 21_840_592),
                                                    (ffgan_coco, 22_726_864)])
def test_generator_live_parameter_count(config_module, expected):
  """SPEC-ffgan §4.5/§10: live G parameters (the dead memory modules are not created)."""
  config = config_module.get_config()
  shapes = _abstract_init(config)
  p = shapes["params"]
  assert _count(p) == expected
  for k in (2, 3):
    stage = p[f"h_net{k}"]
    assert set(stage) == {"ff_block", "s_att", "upsample"} | {
        f"residual_{r}" for r in range(config.model.r_num)}
    assert _count(stage["ff_block"]) == 237_568 and _count(stage["s_att"]) == 16_384
    ff = stage["ff_block"]
    assert ff["w_att"]["conv_context"]["kernel"].shape == (256, 64)
    assert ff["affine"]["conv"]["kernel"].shape == (3, 3, 64, 128)
    assert ff["affine"]["conv_weight"]["kernel"].shape == (3, 3, 128, 64)
    assert ff["affine"]["conv_bias"]["kernel"].shape == (3, 3, 128, 64)
  assert set(shapes["batch_stats"]) == {"h_net1", "h_net2", "h_net3"}


def test_tiny_generator_forward_and_every_param_is_live():
  config = ffgan_shapes.get_config("tiny")
  t_len = 5
  variables, grads, out = tiny_generator_grads(
      generator_from_config(config), config, lengths=(4, 3, 2), t_len=t_len)
  base = config.data.base_size
  assert [im.shape for im in out["images"]] == [(B, base, base, 3), (B, 2 * base, 2 * base, 3)]
  assert [a.shape for a in out["attention"]] == [(B, t_len, base, base)]
  # Reference flags: column 4 is past the batch maximum (hidden); padding slots of
  # shorter captions are visible, and each pixel's weights sum to 1.
  att = np.asarray(out["attention"][0])
  np.testing.assert_allclose(att.sum(1), 1.0, rtol=1e-5)
  assert np.all(att[:, 4] == 0) and np.all(att[2, 2:4] > 0)
  for path, gr in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert float(jnp.abs(gr).max()) > 0, jax.tree_util.keystr(path)
  # The new kernels are orthogonal in torch's out × in·kh·kw view (weights_init).
  stage = variables["params"]["h_net2"]
  for kernel in (stage["ff_block"]["w_att"]["conv_context"]["kernel"],
                 stage["ff_block"]["affine"]["conv"]["kernel"],
                 stage["ff_block"]["affine"]["conv_weight"]["kernel"],
                 stage["s_att"]["conv_context"]["kernel"]):
    w = np.asarray(kernel_as_torch_matrix(kernel), np.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
