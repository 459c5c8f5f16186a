"""DAMSM word/sentence losses against a NumPy loop written like AttnGAN's ``losses.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2igan_jax.losses.damsm import class_mask, sent_loss, words_loss

G1, G2, G3 = 4.0, 5.0, 10.0
B, H, W, T, D = 5, 2, 3, 6, 8
LENGTHS = np.array([6, 1, 3, 6, 2], np.int32)
CLASS_IDS = np.array([0, 1, 0, 2, 1], np.int32)   # masks the pairs (0, 2) and (1, 4)


# ------------------------------------------------------------ NumPy reference
def _softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  ex = np.exp(x)
  return ex / ex.sum(axis=axis, keepdims=True)


def _cos(x, y):
  """Row-wise cosine with the norm product clamped at 1e-8 (AttnGAN cosine_similarity)."""
  return (x * y).sum(-1) / np.maximum(np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1), 1e-8)


def _log_softmax(x):
  m = x.max(axis=1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _ce_both_ways(sim, class_ids):
  sim = sim.copy()
  if class_ids is not None:
    for i in range(len(class_ids)):
      m = class_ids == class_ids[i]
      m[i] = False
      sim[m, i] = -np.inf        # masks[i] is a row over images, filled into column i
  sim = sim * G3
  n = sim.shape[0]
  loss0 = -_log_softmax(sim)[np.arange(n), np.arange(n)].mean()
  loss1 = -_log_softmax(sim.T)[np.arange(n), np.arange(n)].mean()
  return loss0, loss1


def np_words_loss(img_features, words_emb, cap_lens, class_ids, word_score):
  """img_features [B, D, h*w] (PyTorch layout), words_emb [B, D, T]."""
  bsz = img_features.shape[0]
  sims, att_maps = [], []
  for i in range(bsz):
    n_w = cap_lens[i]
    word = np.repeat(words_emb[i:i + 1, :, :n_w], bsz, axis=0)        # B x D x L
    context = img_features                                            # B x D x R
    attn = np.einsum("bdr,bdl->brl", context, word)                   # B x R x L
    attn = _softmax(attn, axis=2)                                     # over words
    attn = np.transpose(attn, (0, 2, 1)) * G1                         # B x L x R
    attn = _softmax(attn, axis=2)                                     # over regions
    wei_context = np.einsum("bdr,blr->bdl", context, attn)            # B x D x L
    att_maps.append(attn[i])
    row_sim = _cos(word.transpose(0, 2, 1).reshape(bsz * n_w, -1),
                   wei_context.transpose(0, 2, 1).reshape(bsz * n_w, -1))
    row_sim = np.exp(row_sim.reshape(bsz, n_w) * G2).sum(axis=1)
    row_sim = np.log(row_sim)
    if word_score == "paper":
      row_sim = row_sim / G2
    sims.append(row_sim[:, None])
  sim = np.concatenate(sims, axis=1)                                  # images x captions
  loss0, loss1 = _ce_both_ways(sim, class_ids)
  return loss0, loss1, att_maps


def np_sent_loss(cnn_code, rnn_code, class_ids):
  num = cnn_code @ rnn_code.T
  norm = np.linalg.norm(cnn_code, axis=1)[:, None] * np.linalg.norm(rnn_code, axis=1)[None, :]
  return _ce_both_ways(num / np.maximum(norm, 1e-8), class_ids)


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  local = rng.normal(size=(B, H, W, D)).astype(np.float32)           # NHWC local features
  words = rng.normal(size=(B, T, D)).astype(np.float32)
  words[np.arange(T)[None, :] >= LENGTHS[:, None]] = 0.0             # as the encoder emits
  code = rng.normal(size=(B, D)).astype(np.float32)
  sent = rng.normal(size=(B, D)).astype(np.float32)
  return local, words, code, sent


@pytest.fixture(scope="module")
def jit_words_loss():
  return jax.jit(words_loss, static_argnames=("gamma1", "gamma2", "gamma3", "word_score"))


def _regions(local):
  return local.reshape(local.shape[0], -1, local.shape[-1])            # row-major (y, x)


# ---------------------------------------------------------------------- tests
def test_class_mask():
  m = np.asarray(class_mask(jnp.asarray(CLASS_IDS)))
  want = np.zeros((B, B), bool)
  for a, b in [(0, 2), (2, 0), (1, 4), (4, 1)]:
    want[a, b] = True
  np.testing.assert_array_equal(m, want)


@pytest.mark.parametrize("word_score", ["code", "paper"])
@pytest.mark.parametrize("use_classes", [True, False])
def test_words_loss_matches_reference_loop(data, jit_words_loss, word_score, use_classes):
  local, words, _, _ = data
  class_ids = CLASS_IDS if use_classes else None
  l0, l1, attn = jit_words_loss(
      jnp.asarray(_regions(local)), jnp.asarray(words), jnp.asarray(LENGTHS),
      None if class_ids is None else jnp.asarray(class_ids),
      gamma1=G1, gamma2=G2, gamma3=G3, word_score=word_score)
  # The reference's layout: img_features B x D x (h*w) (row-major regions), words B x D x T.
  img_features = local.reshape(B, H * W, D).transpose(0, 2, 1).astype(np.float64)
  r0, r1, r_att = np_words_loss(img_features, words.transpose(0, 2, 1).astype(np.float64),
                                LENGTHS, class_ids, word_score)
  np.testing.assert_allclose(float(l0), r0, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(l1), r1, rtol=1e-5, atol=1e-5)
  attn = np.asarray(attn)
  assert attn.shape == (B, T, H * W)
  for i in range(B):
    np.testing.assert_allclose(attn[i, :LENGTHS[i]], r_att[i], rtol=1e-5, atol=1e-6)
    assert np.all(attn[i, LENGTHS[i]:] == 0.0)
  if use_classes:   # the mask must change the result
    u0, _, _ = jit_words_loss(jnp.asarray(_regions(local)), jnp.asarray(words),
                              jnp.asarray(LENGTHS), None, gamma1=G1, gamma2=G2,
                              gamma3=G3, word_score=word_score)
    assert abs(float(u0) - float(l0)) > 1e-4


def test_words_loss_ignores_padded_words(data, jit_words_loss):
  local, words, _, _ = data
  garbage = words + (np.arange(T)[None, :, None] >= LENGTHS[:, None, None]) * 3.0
  args = dict(gamma1=G1, gamma2=G2, gamma3=G3)
  a = jit_words_loss(jnp.asarray(_regions(local)), jnp.asarray(words), jnp.asarray(LENGTHS),
                     jnp.asarray(CLASS_IDS), **args)
  b = jit_words_loss(jnp.asarray(_regions(local)), jnp.asarray(garbage.astype(np.float32)),
                     jnp.asarray(LENGTHS), jnp.asarray(CLASS_IDS), **args)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_words_loss_rejects_unknown_score(data):
  local, words, _, _ = data
  with pytest.raises(ValueError, match="word_score"):
    words_loss(_regions(local), words, LENGTHS, None, G1, G2, G3, word_score="bogus")


@pytest.mark.parametrize("use_classes", [True, False])
def test_sent_loss_matches_reference(data, use_classes):
  _, _, code, sent = data
  class_ids = CLASS_IDS if use_classes else None
  l0, l1 = jax.jit(sent_loss, static_argnames="gamma3")(
      jnp.asarray(code), jnp.asarray(sent),
      None if class_ids is None else jnp.asarray(class_ids), gamma3=G3)
  r0, r1 = np_sent_loss(code.astype(np.float64), sent.astype(np.float64), class_ids)
  np.testing.assert_allclose(float(l0), r0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(l1), r1, rtol=1e-5, atol=1e-6)


def test_gradients_are_finite(data):
  local, words, code, sent = data
  code = code.copy()
  code[3] = 0.0                       # a zero vector exercises the norm clamp

  def total(v, e, c, s):
    w0, w1, _ = words_loss(v, e, jnp.asarray(LENGTHS), jnp.asarray(CLASS_IDS), G1, G2, G3)
    s0, s1 = sent_loss(c, s, jnp.asarray(CLASS_IDS), G3)
    return w0 + w1 + s0 + s1

  grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(
      jnp.asarray(_regions(local)), jnp.asarray(words), jnp.asarray(code), jnp.asarray(sent))
  for g in grads:
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    assert np.any(g != 0.0)
