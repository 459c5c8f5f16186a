"""Small random inputs and a tiny-generator run shared by the model tests (a
plain module, not a test file)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def to_np(tree):
  """Every leaf as a float64 numpy array (for the NumPy references)."""
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def rand(key, *shape):
  """Standard normal float32 of ``shape`` from ``jax.random.key(key)``."""
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def caption_mask(lengths, t_len):
  """[B, t_len] bool, True at the padding past each caption's length."""
  return np.arange(t_len)[None, :] >= np.asarray(lengths)[:, None]


def word_features(key, lengths, t_len, dim):
  """Word features with exact zeros past each caption's length (as the LSTM gives)."""
  w = np.asarray(rand(key, len(lengths), t_len, dim))
  return jnp.asarray(np.where(caption_mask(lengths, t_len)[..., None], 0.0, w))


def tiny_generator_grads(generator, config, lengths=(4, 3, 2), t_len=5):
  """``generator`` (built from ``config``) on random inputs, B = len(lengths).

  Initialises it (train=False), then takes the gradient of the summed mean
  square of its images (train=True, batch statistics) w.r.t. every parameter.
  Returns (variables, grads, out) with ``out`` the train-mode output.
  """
  b, e = len(lengths), config.text_encoder.embedding_dim
  kw = dict(z=rand(20, b, config.model.z_dim), sent=rand(21, b, e),
            words=word_features(22, lengths, t_len, e),
            mask=jnp.asarray(caption_mask(lengths, t_len)))
  rngs = {"params": jax.random.key(23), "noise": jax.random.key(24)}
  variables = jax.jit(functools.partial(generator.init, train=False))(rngs, **kw)

  def loss(params):
    out, _ = generator.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, **kw,
        train=True, rngs={"noise": jax.random.key(25)}, mutable=["batch_stats"])
    return sum(jnp.mean(im ** 2) for im in out["images"]), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  return variables, grads, out
