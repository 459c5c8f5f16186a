"""DAMSM word-level and sentence-level matching losses (AttnGAN; SPEC-dmgan §5.2, §5.3).

Notation: B images/captions (image b and caption b belong together), R regions
(the local image features [B, h, w, D] reshaped row-major to [B, h*w, D]), T word
positions, L_i the length of caption i, D the feature size.

Word level, for caption i against every image b (AttnGAN Eq. 7-11)::

    s[i,b,r,l]   = <v[b,r], e[i,l]>                               region-word similarity
    s_bar        = softmax_l(s)        over the L_i valid words only
    beta[i,b,l,r] = softmax_r(gamma1 * s_bar[i,b,r,l])            attention over regions
    c[i,b,l]     = sum_r beta[i,b,l,r] v[b,r]                      region context of word l
    R[i,b,l]     = cos(c[i,b,l], e[i,l])
    S[b,i]       = log sum_{l < L_i} exp(gamma2 * R[i,b,l])        ('code'; 'paper': / gamma2)

Sentence level: ``S[b,i] = cos(image_code[b], sent[i])``. Both scores are then
scaled by gamma3, same-class off-diagonal pairs are set to -inf, and
``loss0 = CE(S, arange(B))`` (each image picks its caption among the captions),
``loss1 = CE(S^T, arange(B))`` (each caption picks its image), means over the
batch. ``cos(x, y) = <x, y> / max(|x| |y|, 1e-8)``.
"""

import jax
import jax.numpy as jnp

_EPS = 1e-8


def class_mask(class_ids: jax.Array) -> jax.Array:
  """bool[B, B]: True where class_ids[b] == class_ids[i] and b != i (pairs to drop)."""
  class_ids = jnp.asarray(class_ids)
  same = class_ids[:, None] == class_ids[None, :]
  return same & ~jnp.eye(class_ids.shape[0], dtype=bool)


def _cosine(dot: jax.Array, sq_x: jax.Array, sq_y: jax.Array) -> jax.Array:
  """dot / max(|x||y|, eps) from squared norms; NaN-free gradient at x = 0 or y = 0."""
  return dot / jnp.sqrt(jnp.maximum(sq_x * sq_y, _EPS * _EPS))


def _matching_losses(scores: jax.Array, class_ids: jax.Array | None,
                     gamma3: float) -> tuple[jax.Array, jax.Array]:
  """gamma3-scaled, class-masked [B_images, B_captions] scores -> (CE rows, CE columns)."""
  scores = gamma3 * scores
  if class_ids is not None:
    scores = jnp.where(class_mask(class_ids), -jnp.inf, scores)
  diag = jnp.arange(scores.shape[0])
  loss0 = -jnp.mean(jax.nn.log_softmax(scores, axis=1)[diag, diag])
  loss1 = -jnp.mean(jax.nn.log_softmax(scores.T, axis=1)[diag, diag])
  return loss0, loss1


def words_loss(region_features: jax.Array, words: jax.Array, lengths: jax.Array,
               class_ids: jax.Array | None, gamma1: float, gamma2: float,
               gamma3: float, word_score: str = "code"
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """DAMSM word-level loss, all captions against all images at once.

  Args:
    region_features: f32[B, R, D] image region features v.
    words: f32[B, T, D] word features e; positions t >= lengths are ignored.
    lengths: int32[B] caption lengths (>= 1).
    class_ids: int32[B] or None; same-class pairs (b != i) are excluded.
    gamma1: attention sharpness over regions (4 in the YAMLs).
    gamma2: word-score sharpness (5).
    gamma3: score scale before the softmax over the batch (10).
    word_score: 'code' (reference, no 1/gamma2 power) or 'paper'.

  Returns:
    (loss0, loss1, attention): the two cross-entropies (scalars) and
    attention f32[B, T, R] = beta of each caption i over the regions of its own
    image i (rows t >= lengths[i] are zero).
  """
  if word_score not in ("code", "paper"):
    raise ValueError(f"word_score must be 'code' or 'paper', got {word_score!r}")
  v = region_features
  e = words
  valid = jnp.arange(e.shape[1])[None, :] < jnp.asarray(lengths)[:, None]   # [i, l]

  s = jnp.einsum("brd,ild->ibrl", v, e)
  s = jnp.where(valid[:, None, None, :], s, -jnp.inf)
  s_bar = jax.nn.softmax(s, axis=-1)                                   # over words
  beta = jax.nn.softmax(gamma1 * jnp.swapaxes(s_bar, 2, 3), axis=-1)   # [i,b,l,r] over regions
  context = jnp.einsum("iblr,brd->ibld", beta, v)

  dot = jnp.einsum("ibld,ild->ibl", context, e)
  rel = _cosine(dot, jnp.sum(context * context, -1),
                jnp.sum(e * e, -1)[:, None, :])                         # [i, b, l]
  logits = jnp.where(valid[:, None, :], gamma2 * rel, -jnp.inf)
  score = jax.nn.logsumexp(logits, axis=-1)                            # [i, b]
  if word_score == "paper":
    score = score / gamma2
  loss0, loss1 = _matching_losses(score.T, class_ids, gamma3)

  idx = jnp.arange(v.shape[0])
  attention = jnp.where(valid[:, :, None], beta[idx, idx], 0.0)
  return loss0, loss1, attention


def sent_loss(image_code: jax.Array, sent: jax.Array, class_ids: jax.Array | None,
              gamma3: float) -> tuple[jax.Array, jax.Array]:
  """DAMSM sentence-level loss on f32[B, D] image codes and sentence features."""
  dot = image_code @ sent.T                                           # [b, i]
  scores = _cosine(dot, jnp.sum(image_code ** 2, -1)[:, None],
                   jnp.sum(sent ** 2, -1)[None, :])
  return _matching_losses(scores, class_ids, gamma3)


def damsm_loss_terms(damsm, words, sent, local, glob, lengths, class_ids):
  """The four DAMSM losses (SPEC-dmgan §5.2-5.3) as a dict.

  ``damsm``: the ``config.damsm`` section (gamma1-3, word_score); ``local``
  [B, h, w, D] region features, ``glob`` [B, D] image code, ``words``
  [B, T, D], ``sent`` [B, D], ``lengths`` [B], ``class_ids`` [B].
  """
  region = local.reshape(local.shape[0], -1, local.shape[-1])
  w0, w1, _ = words_loss(region, words, lengths, class_ids, damsm.gamma1,
                         damsm.gamma2, damsm.gamma3,
                         word_score=damsm.word_score)
  s0, s1 = sent_loss(glob, sent, class_ids, damsm.gamma3)
  return {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
