"""AttnGAN refinement stage against NumPy written from SPEC-dmgan §3.5.

Tiny shapes (ngf 4, B = 3, 2×2 and 4×4 features, T = 6 with the batch's
longest caption at 5); full-size models only through ``jax.eval_shape``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import (caption_mask, rand, tiny_generator_grads, to_np,
                            word_features)
from np_reference import np_resblock, np_upblock

from configs import attngan_bird, attngan_coco, attngan_shapes
from t2igan_jax.models.generator import generator_from_config
from t2igan_jax.models.memory import expand_word_mask
from t2igan_jax.models.refiners import AttentionRefinementStage
from t2igan_jax.models.word_attention import WordContextAttention

TOL = dict(rtol=1e-4, atol=1e-5)
B, C, E, T = 3, 4, 6, 6
LENGTHS = [5, 3, 2]


def np_global_attention(h, words, mask, kernel, mode):
  """GlobalAttentionGeneral, literally: logits as (B·Q)×T rows, mask.repeat(Q, 1).

  Returns ctx [B,H,W,C] and α [B,Q,T].
  """
  b_n, hh, ww, c = h.shape
  q_n = hh * ww
  proj = words @ kernel                                   # W'[b,t,c]
  h_flat = h.reshape(b_n, q_n, c)
  tiled = np.tile(mask, (q_n, 1))                         # (Q·B)×T
  ctx = np.zeros_like(h_flat)
  alpha = np.zeros((b_n, q_n, words.shape[1]))
  for b in range(b_n):
    for q in range(q_n):
      row_mask = tiled[b * q_n + q] if mode == "rolled" else mask[b]
      logit = np.where(row_mask, -np.inf, proj[b] @ h_flat[b, q])
      e = np.exp(logit - logit.max())
      alpha[b, q] = e / e.sum()
      ctx[b, q] = alpha[b, q] @ proj[b]
  return ctx.reshape(h.shape), alpha


@pytest.fixture(scope="module")
def inputs():
  words = word_features(2, LENGTHS, T, E)
  return words, jnp.asarray(caption_mask(LENGTHS, T)), rand(3, B, E)


@pytest.mark.parametrize("mode", ["rolled", "per_caption"])
def test_word_context_attention_vs_numpy(inputs, mode):
  words, mask, _ = inputs
  h = rand(1, B, 2, 2, C)                                 # Q = 4, B = 3: rows roll
  att = WordContextAttention()
  v = jax.jit(att.init)(jax.random.key(4), h, words)
  kernel = np.asarray(v["params"]["conv_context"]["kernel"], np.float64)
  assert kernel.shape == (E, C) and set(v["params"]["conv_context"]) == {"kernel"}
  ctx, alpha = jax.jit(att.apply)(v, h, words, expand_word_mask(mask, 4, mode))
  ctx_np, alpha_np = np_global_attention(np.asarray(h, np.float64),
                                         np.asarray(words, np.float64),
                                         np.asarray(mask), kernel, mode)
  np.testing.assert_allclose(alpha, alpha_np, **TOL)
  np.testing.assert_allclose(ctx, ctx_np, **TOL)


@pytest.fixture(scope="module")
def stage(inputs):
  words, mask, sent = inputs
  h = rand(5, B, 4, 4, C)
  module = AttentionRefinementStage(ngf=C, r_num=1)
  variables = jax.jit(functools.partial(module.init, train=True))(
      jax.random.key(6), h, words, mask, sent)

  def make(**flags):
    m = module.clone(**flags)
    return jax.jit(lambda h, w, msk: m.apply(variables, h, w, msk, sent, train=True,
                                             mutable=["batch_stats"])[0])

  return h, make, to_np(variables["params"])


def test_attention_stage_vs_numpy(inputs, stage):
  words, mask, _ = inputs
  h, make, p = stage
  assert set(p) == {"att", "residual_0", "upsample"}
  assert p["residual_0"]["conv1"]["kernel"].shape == (3, 3, 2 * C, 4 * C)
  hn, wn, mn = np.asarray(h, np.float64), np.asarray(words, np.float64), np.asarray(mask)
  for mode in ("rolled", "per_caption"):
    out, att = make(attn_mask_mode=mode)(h, words, mask)
    ctx, alpha = np_global_attention(hn, wn, mn, p["att"]["conv_context"]["kernel"], mode)
    x = np_resblock(np.concatenate([hn, ctx], -1), p["residual_0"])     # [h, ctx]
    assert out.shape == (B, 8, 8, C) and att.shape == (B, T, 4, 4)
    np.testing.assert_allclose(out, np_upblock(x, p["upsample"]), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(att, alpha.transpose(0, 2, 1).reshape(B, T, 4, 4), **TOL)
  # The columns past the batch maximum are padding in every row: 'batch_max',
  # 'words_num' and cutting the word axis all agree.
  ref = make()
  out = ref(h, words, mask)[0]
  np.testing.assert_allclose(ref(h, words[:, :5], mask[:, :5])[0], out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(make(word_axis_length="words_num")(h, words, mask)[0], out,
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- generator
def _expected_param_count(r_num, ngf=64, nef=256, ncf=100, z_dim=100):
  """From the layer list of SPEC-dmgan §3.2-3.5 / §10.1 (convs bias-free, BN = 2·C)."""
  conv3 = lambda cin, cout: 9 * cin * cout
  bn = lambda ch: 2 * ch
  ca = nef * 4 * ncf + 4 * ncf                                   # Linear with bias
  fc = (ncf + z_dim) * ngf * 16 * 4 * 4 * 2 + bn(ngf * 16 * 4 * 4 * 2)
  init = fc + sum(conv3(ch, ch) + bn(ch)                          # upBlock(ch -> ch/2)
                  for ch in (ngf * 16, ngf * 8, ngf * 4, ngf * 2))
  res = conv3(2 * ngf, 4 * ngf) + bn(4 * ngf) + conv3(2 * ngf, 2 * ngf) + bn(2 * ngf)
  up = conv3(2 * ngf, 2 * ngf) + bn(2 * ngf)
  stage = nef * ngf + r_num * res + up                           # att.conv_context
  return ca + init + 2 * stage + 3 * conv3(ngf, 3)


@pytest.mark.parametrize("config_module", [attngan_bird, attngan_coco])
def test_generator_parameter_count(config_module):
  config = config_module.get_config()
  g = generator_from_config(config)
  shapes = jax.eval_shape(lambda: g.init(
      {"params": jax.random.key(0), "noise": jax.random.key(1)},
      jnp.zeros((2, 100)), jnp.zeros((2, 256)), jnp.zeros((2, 18, 256)),
      jnp.zeros((2, 18), bool), train=False))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  r_num = config.model.r_num
  assert count == _expected_param_count(r_num)
  # = DM-GAN's count (SPEC-dmgan §3.4) minus its memory modules (58,177 per stage)
  # plus the word projection (16,384 per stage).
  dmgan = {2: 21_449_042, 3: 22_335_314}[r_num]
  assert count == dmgan - 2 * 58_177 + 2 * 16_384
  assert shapes["params"]["h_net2"]["att"]["conv_context"]["kernel"].shape == (256, 64)


def test_tiny_generator_forward_and_every_param_is_live():
  config = attngan_shapes.get_config("tiny")
  t_len = 5
  _, grads, out = tiny_generator_grads(generator_from_config(config), config,
                                       lengths=(4, 3, 2), t_len=t_len)
  base = config.data.base_size
  assert [im.shape for im in out["images"]] == [(B, base, base, 3), (B, 2 * base, 2 * base, 3)]
  att = np.asarray(out["attention"][0])
  assert att.shape == (B, t_len, base, base)
  np.testing.assert_allclose(att.sum(1), 1.0, rtol=1e-5)
  assert np.all(att[:, 4] == 0)                 # padding in every caption
  for path, gr in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert float(jnp.abs(gr).max()) > 0, jax.tree_util.keystr(path)
