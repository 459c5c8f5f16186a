"""DAMSM text encoder: word embedding -> dropout -> one bidirectional LSTM.

The port of AttnGAN's ``RNN_ENCODER(n_words, nhidden=256)`` (SPEC-dmgan §2, §11.1)::

    x_t   = Dropout_p(E[w_t])                       E: [n_words, word_dim], U(-0.1, 0.1)
    i,f,g,o = sigma, sigma, tanh, sigma (W_i* x_t + W_h* h_{t-1} + b_*)   (PyTorch gate order)
    c_t   = f * c_{t-1} + i * g ;  h_t = o * tanh(c_t)
    words[b, t] = [h^fwd_t, h^bwd_t]   for t < len_b,  exactly 0 for t >= len_b
    sent[b]     = [h^fwd_{len_b - 1}, h^bwd_0]

The backward direction reads each caption from its true last token ``len_b - 1``
down to token 0 (``nn.RNN(..., seq_lengths=lengths)`` reverses within the valid
prefix), which is what PyTorch's packed sequences do. Unlike the reference, the
batch need not be sorted by length, and the word axis keeps the input's length
T (the reference pads to ``max(lengths)``); the extra columns are exact zeros.

Parameter tree (``variables['params']``), with H = embedding_dim // 2::

    embedding/embedding          [n_words, word_dim]   <- encoder.weight
    forward_cell/i{i,f,g,o}/kernel  [word_dim, H]      <- weight_ih_l0[k*H:(k+1)*H].T
    forward_cell/h{i,f,g,o}/kernel  [H, H]             <- weight_hh_l0[k*H:(k+1)*H].T
    forward_cell/h{i,f,g,o}/bias    [H]                <- (bias_ih_l0 + bias_hh_l0)[k*H:(k+1)*H]
    backward_cell/...               the same from the ``*_l0_reverse`` tensors

where k = 0, 1, 2, 3 for the gates i, f, g, o (SPEC-dmgan §10.3, §10.5).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def symmetric_uniform(scale: float):
  """Initializer for U(-scale, scale) (PyTorch's ``uniform_(-scale, scale)``)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


class TextEncoder(nn.Module):
  """Bidirectional-LSTM caption encoder of DAMSM (``RNN_ENCODER``).

  Attributes:
    n_words: vocabulary size (index 0 = '<end>', used as padding).
    word_dim: word-embedding size (``ninput``, 300 in the reference).
    embedding_dim: output feature size, both directions together (``nhidden``,
      256); each direction has ``embedding_dim // 2`` hidden units.
    dropout: dropout rate on the embedded sequence (train mode only; the
      random stream is ``'dropout'``).
  """
  n_words: int
  word_dim: int = 300
  embedding_dim: int = 256
  dropout: float = 0.5

  @nn.compact
  def __call__(self, captions: jax.Array, lengths: jax.Array, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    """Encodes a batch of captions.

    Args:
      captions: int32[B, T] word indices (padding beyond ``lengths`` ignored).
      lengths: int32[B] true caption lengths, 1 <= lengths <= T.
      train: enables dropout on the embedded sequence.

    Returns:
      words: f32[B, T, embedding_dim], zero at t >= lengths[b].
      sent: f32[B, embedding_dim] = [forward h at len-1, backward h at 0].
    """
    if self.embedding_dim % 2:
      raise ValueError(f"embedding_dim must be even, got {self.embedding_dim}")
    hidden = self.embedding_dim // 2
    lengths = jnp.asarray(lengths, jnp.int32)

    x = nn.Embed(self.n_words, self.word_dim,
                 embedding_init=symmetric_uniform(0.1), name="embedding")(captions)
    x = nn.Dropout(rate=self.dropout, deterministic=not train)(x)

    # PyTorch's nn.LSTM initialises every weight and bias U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / float(hidden) ** 0.5
    cell_kwargs: dict[str, Any] = dict(
        kernel_init=symmetric_uniform(bound),
        recurrent_kernel_init=symmetric_uniform(bound),
        bias_init=symmetric_uniform(bound))
    forward_cell = nn.OptimizedLSTMCell(hidden, name="forward_cell", **cell_kwargs)
    backward_cell = nn.OptimizedLSTMCell(hidden, name="backward_cell", **cell_kwargs)

    (_, h_fwd), y_fwd = nn.RNN(forward_cell, return_carry=True)(
        x, seq_lengths=lengths)
    (_, h_bwd), y_bwd = nn.RNN(
        backward_cell, return_carry=True, reverse=True, keep_order=True)(
            x, seq_lengths=lengths)

    words = jnp.concatenate([y_fwd, y_bwd], axis=-1)
    valid = jnp.arange(captions.shape[1])[None, :] < lengths[:, None]
    words = jnp.where(valid[..., None], words, 0.0)
    sent = jnp.concatenate([h_fwd, h_bwd], axis=-1)
    return words, sent


def text_encoder_from_config(config, n_words: int) -> TextEncoder:
  """Builds the TextEncoder from ``config.text_encoder.*`` and a vocabulary size."""
  t = config.text_encoder
  return TextEncoder(n_words=int(n_words), word_dim=int(t.word_dim),
                     embedding_dim=int(t.embedding_dim), dropout=float(t.dropout))
