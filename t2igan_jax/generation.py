"""Public generation API: images from captions with given or drawn noise.

Usable from Python / Colab on a restored generator
(``gan_lib.restore_generator(config, workdir)``)::

    gen = gan_lib.restore_generator(config, workdir)
    out = generation.generate(gen, ["a red bird", "a blue bird"],
                              key=jax.random.key(0))
    out.images[-1]            # [2, S, S, 3] in [-1, 1], the last stage
    out.z, out.eps            # the noise used: replay with z=..., eps=...

    z, eps = generation.draw_noise(jax.random.key(1), 1, gen)
    row = generation.interpolate(gen, "a red bird", "a blue bird", 8, z=z, eps=eps)

Captions are strings (tokenised with the run's vocabulary, unknown words
dropped, no ``data.words_num`` truncation: as ``job=sample``) or token ids
(lists of ints, or an int array [N, T] with 0 = padding). The generator runs in
eval mode (BN running statistics) with

    c   = mu + eps ⊙ exp(logvar / 2)     eps [N, condition_dim]   (CA, SPEC-dmgan §3.2)
    img = G(z, c, words)                 z   [N, z_dim]

``eps`` is used only when the generator samples the CA at inference
(``config.model.ca_sample_at_eval``, reference True); otherwise c = mu.

Batch dependence (reference behaviour, SPEC §3.4): the rows of one call are
one generator batch. Under ``model.attn_mask_mode='rolled'`` a row's word
mask depends on the other rows' lengths, and FF-GAN's unmasked attention
(``ffgan_word_mask='none'``, ``word_axis_length='batch_max'``) on the batch's
longest caption. Rows of one repeated caption (what ``job=sample`` generates)
or ``attn_mask_mode='per_caption'`` DM-GAN/AttnGAN models are independent of
their batch; ``interpolate`` runs every step as its own batch.
"""

import dataclasses
import functools
from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline.text import Vocabulary, tokenize
from t2igan_jax import gan_lib
from t2igan_jax.models.model_config import ModelConfig

Captions = Union[Sequence[str], Sequence[Sequence[int]], np.ndarray]


@dataclasses.dataclass
class Generation:
  """What ``generate`` / ``interpolate`` return (device arrays).

  images: per stage, [N, s_k, s_k, 3] in [-1, 1] (float32).
  attention: per refinement stage, [N, T, s_k, s_k] word-attention maps.
  z: [N, z_dim] and eps: [N, condition_dim], the noise used.
  """
  images: list[Any]
  attention: list[Any]
  z: Any
  eps: Any


def model_config(restored) -> ModelConfig:
  """The restored generator's frozen ``ModelConfig``."""
  return restored.models.generator.config


def draw_noise(key, n: int, restored_or_config) -> tuple[Any, Any]:
  """``(z [n, z_dim], eps [n, condition_dim])`` ~ N(0, I) from ``key``.

  ``key`` is split in two, z from the first half and eps from the second.
  For a restored generator whose config sets ``sample.truncation`` > 0
  (DF-GAN), z is truncated noise (``gan_lib.draw_z``).
  """
  if isinstance(restored_or_config, ModelConfig):
    cfg, truncation = restored_or_config, 0.0
  else:
    cfg = model_config(restored_or_config)
    truncation = restored_or_config.models.config.sample.truncation
  k_z, k_eps = jax.random.split(key)
  return (gan_lib.draw_z(k_z, n, cfg.z_dim, truncation),
          jax.random.normal(k_eps, (n, cfg.condition_dim)))


def caption_ids(caption: str, vocab: Vocabulary) -> list[int]:
  """Token ids of the caption's words known to ``vocab`` (the others dropped);
  ValueError (one line) when none is known."""
  ids = [vocab.wordtoix[t] for t in tokenize(caption)
         if vocab.wordtoix.get(t, 0) > 0]
  if not ids:
    raise ValueError(f"caption {caption!r}: none of its words is in the "
                     f"vocabulary ({vocab.n_words} words)")
  return ids


def token_batch(captions_or_ids: Captions, vocab: Vocabulary,
                pad_to: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``(captions int32 [N, T], lengths int32 [N])`` zero-padded to
  T = max(longest caption, ``pad_to``)."""
  if isinstance(captions_or_ids, str):
    raise TypeError("pass a list of captions, not one string")
  if isinstance(captions_or_ids, np.ndarray) and captions_or_ids.ndim == 2:
    rows = [[int(i) for i in row if i > 0] for row in captions_or_ids]
  else:
    rows = [caption_ids(c, vocab) if isinstance(c, str) else [int(i) for i in c]
            for c in captions_or_ids]
  if not rows or not all(rows):
    raise ValueError("every caption needs at least one known word "
                     f"(got {len(rows)} captions, lengths {[len(r) for r in rows]})")
  t = max(max(len(r) for r in rows), pad_to)
  out = np.zeros((len(rows), t), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out, np.array([len(r) for r in rows], np.int32)


@functools.partial(jax.jit, static_argnames=("models",))
def _encode(enc, captions, lengths, *, models):
  """DAMSM text encoder: (words [N, T, E], sent [N, E], mask bool [N, T])."""
  words, sent = models.encode_text(enc, captions, lengths)
  return words, sent, gan_lib.word_mask(captions)


@functools.partial(jax.jit, static_argnames=("models",))
def _generate(g_params, g_stats, sent, words, mask, z, eps, noise_key, *, models):
  """G in eval mode; ``eps`` None = drawn from the 'noise' stream (noise_key)."""
  rngs = {} if noise_key is None else {"noise": noise_key}
  out = models.generator.apply({"params": g_params, "batch_stats": g_stats},
                               z, sent, words, mask, train=False, eps=eps,
                               rngs=rngs)
  return out["images"], out["attention"]


@functools.partial(jax.jit, static_argnames=("models",))
def _forward(g_params, g_stats, enc, captions, lengths, z, eps, noise_key, *,
             models):
  """Text encoder + G in one jit (= ``gan_lib.sample_step`` when eps is None)."""
  words, sent = models.encode_text(enc, captions, lengths)
  rngs = {} if noise_key is None else {"noise": noise_key}
  out = models.generator.apply({"params": g_params, "batch_stats": g_stats},
                               z, sent, words, gan_lib.word_mask(captions),
                               train=False, eps=eps, rngs=rngs)
  return out["images"], out["attention"]


def generate_ids(restored, captions, lengths, z, *, eps=None,
                 noise_key=None) -> tuple[list[Any], list[Any]]:
  """``(images, attention)`` for token ids [N, T] (0-padded) and z [N, z_dim].

  ``eps`` [N, condition_dim], or None: the CA draws it from the rng stream
  'noise' seeded with ``noise_key`` (what ``job=sample`` does per caption
  line without ``sample.fixed_noise``; the numbers of ``gan_lib.sample_step``).
  """
  return _forward(restored.g_params, restored.g_stats, restored.enc,
                  jnp.asarray(captions), jnp.asarray(lengths), z, eps,
                  noise_key, models=restored.models)


def _noise(restored, n: int, z, eps, key) -> tuple[Any, Any]:
  """The given z / eps, the missing ones drawn from ``key`` (``draw_noise``)."""
  if z is None or eps is None:
    if key is None:
      raise ValueError("pass z and eps, or a key to draw the missing ones from")
    z_drawn, eps_drawn = draw_noise(key, n, restored)
    z = z_drawn if z is None else z
    eps = eps_drawn if eps is None else eps
  cfg = model_config(restored)
  z, eps = jnp.asarray(z, jnp.float32), jnp.asarray(eps, jnp.float32)
  if z.shape != (n, cfg.z_dim) or eps.shape != (n, cfg.condition_dim):
    raise ValueError(f"z {z.shape} / eps {eps.shape} must be [{n}, {cfg.z_dim}] / "
                     f"[{n}, {cfg.condition_dim}] for {n} captions")
  return z, eps


def generate(restored, captions_or_ids: Captions, *, z=None, eps=None,
             key=None) -> Generation:
  """Images for N captions (strings or token ids) with the given noise.

  Args:
    restored: a restored generator (``gan_lib.restore_generator``).
    captions_or_ids: N caption strings, N lists of token ids, or ids [N, T].
    z: [N, z_dim] or None (drawn from ``key``).
    eps: [N, condition_dim] CA epsilon or None (drawn from ``key``).
    key: PRNG key for what is not given (``draw_noise(key, N, restored)``:
      one split, z from the first half, eps from the second).

  Returns:
    ``Generation(images, attention, z, eps)``: one batch (see the module
    docstring on batch dependence). The same z and eps with the same
    captions give the same images.
  """
  captions, lengths = token_batch(captions_or_ids, restored.vocab)
  z, eps = _noise(restored, len(lengths), z, eps, key)
  images, attention = generate_ids(restored, captions, lengths, z, eps=eps)
  return Generation(list(images), list(attention), z, eps)


def interpolate(restored, caption_a: Union[str, Sequence[int]],
                caption_b: Union[str, Sequence[int]], steps: int, *, z=None,
                eps=None, key=None) -> Generation:
  """A row of ``steps`` images from caption a to caption b with fixed noise.

  Step i uses t = i / (steps - 1) and (StackGAN's and DF-GAN's
  interpolation figures: text embeddings interpolated, noise fixed)

      sent_t  = (1 - t)·sent_a + t·sent_b                    [1, E]
      words_t = (1 - t)·words_a + t·words_b                  [1, T, E]

  with both captions padded to their common length T. Word features are
  interpolated slot by slot (word i of a blends into word i of b): the
  attention/memory refiners then see a continuous path between the two
  captions' word contexts. The word mask is caption a's at t = 0, caption b's
  at t = 1, and in between the union of both (a slot is visible when it is a
  word of either caption). So the endpoints are exactly the two captions'
  own generations (``generate`` of each with the same z and eps, up to float
  summation order), and every step is its own batch of one (no rolled-mask
  mixing between steps). Captions of equal length keep one mask and give a
  continuous path; when the lengths differ, the longer caption's extra slots
  become visible as soon as t > 0 (their words scaled by t), so the first step
  away from the shorter caption jumps.

  Args:
    restored: a restored generator.
    caption_a, caption_b: caption strings or token-id lists.
    steps: images in the row, >= 2 (both endpoints included).
    z: [z_dim] or [1, z_dim], shared by every step; eps: [condition_dim] or
      [1, condition_dim]; the missing ones drawn from ``key``
      (``draw_noise(key, 1, restored)``).

  Returns:
    ``Generation`` with images [steps, s_k, s_k, 3] per stage, attention
    [steps, T, s_k, s_k], and z / eps [1, .].
  """
  if steps < 2:
    raise ValueError(f"interpolate needs steps >= 2 (both endpoints), got {steps}")
  z = None if z is None else jnp.reshape(jnp.asarray(z), (1, -1))
  eps = None if eps is None else jnp.reshape(jnp.asarray(eps), (1, -1))
  z, eps = _noise(restored, 1, z, eps, key)
  captions, lengths = token_batch([caption_a, caption_b], restored.vocab)
  words, sent, mask = _encode(restored.enc, jnp.asarray(captions),
                              jnp.asarray(lengths), models=restored.models)
  union = mask[0] & mask[1]
  rows = []
  for i in range(steps):
    t = i / (steps - 1)
    m = mask[0] if i == 0 else mask[1] if i == steps - 1 else union
    rows.append(_generate(
        restored.g_params, restored.g_stats, (1 - t) * sent[:1] + t * sent[1:],
        (1 - t) * words[:1] + t * words[1:], m[None], z, eps, None,
        models=restored.models))
  images = [jnp.concatenate([r[0][k] for r in rows]) for k in range(len(rows[0][0]))]
  attention = [jnp.concatenate([r[1][k] for r in rows])
               for k in range(len(rows[0][1]))]
  return Generation(images, attention, z, eps)
