"""Refinement stages (NEXT_STAGE_G) of the generator, NHWC.

Every refiner family shares one signature so the generator can swap them
(``config.model.refiner``: 'memory' = DM-GAN here; 'ffblock' (FF-GAN) and
'attention' (AttnGAN) slot in later with the same interface)::

    stage(h [B,H,W,ngf], words [B,T,text_dim], mask bool[B,T] (True = padding),
          sent [B,text_dim], *, train: bool)
      -> (h_out [B,2H,2W,ngf], attention [B,T,H,W])

``attention`` is the word-attention map in the reference's own layout
(``α`` transposed to B×T×H×W, used only for visualisation); ``h_out`` feeds the
next stage and the image head. ``train`` selects BatchNorm batch statistics
(mutable 'batch_stats') vs running statistics.

Word axis (SPEC §4.1 ``word_axis_length``): the text encoder's word axis is the
static WORDS_NUM here. 'batch_max' (reference) masks the columns
t >= max(cap_lens) of the (global) batch, which reproduces T = batch max;
'words_num' leaves them visible. For DM-GAN the two are identical: those columns
are padding for every caption, so the caption mask already hides them in every
row, whichever caption's mask a row gets under the rolled mask (SPEC-dmgan §3.4).
They differ only for refiners that do not use the caption mask (FF-GAN).
"""

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.layers import ResBlock, UpBlock
from t2igan_jax.models.memory import (KeyAddressing, MemoryWriter, ResponseGate,
                                      ValueReading)

WORD_AXIS_LENGTHS = ("batch_max", "words_num")


def beyond_batch_max(mask: jnp.ndarray) -> jnp.ndarray:
  """bool[T]: True at word columns t >= max(cap_lens) of the batch (padding in every row)."""
  return jnp.all(mask, axis=0)


def apply_word_axis_length(mask: jnp.ndarray, word_axis_length: str) -> jnp.ndarray:
  """Adds the 'batch_max' column mask to a caption mask [B, T] (True = masked)."""
  if word_axis_length == "batch_max":
    return mask | beyond_batch_max(mask)[None, :]
  if word_axis_length == "words_num":
    return mask
  raise ValueError(
      f"word_axis_length must be one of {WORD_AXIS_LENGTHS}, got {word_axis_length!r}")


class MemoryRefinementStage(nn.Module):
  """DM-GAN NEXT_STAGE_G (SPEC-dmgan §3.4).

      M   = MemoryWriter(h, w)                    [B, T, N_m]
      α   = KeyAddressing(h, M, mask)             [B, H·W, T]
      o   = ValueReading(M, α)                    [B, H, W, ngf]
      h'  = ResponseGate(h, o)                    [B, H, W, ngf]
      x   = [h', h'] (self_concat, reference) or [h', o]          [B, H, W, 2·ngf]
      out = UpBlock_{2ngf->ngf}(ResBlock^r_num(x))                [B, 2H, 2W, ngf]

  ``sent`` is unused (kept for the shared refiner signature).
  Submodules: ``memory_writer, key_addressing, value_reading, response_gate,
  residual_{r}`` (reference ``residual.{r}``) and ``upsample``.
  """
  ngf: int = 64
  memory_dim: int = 128
  r_num: int = 2
  attn_mask_mode: str = "rolled"
  word_axis_length: str = "batch_max"
  memory_gate_stop_grad: bool = True
  memory_self_concat: bool = True
  bn_running_var: str = "unbiased"

  @nn.compact
  def __call__(self, h, words, mask, sent=None, *, train: bool):
    del sent
    b, hh, ww, c = h.shape
    if c != self.ngf:
      raise ValueError(f"refiner expects {self.ngf} input channels, got {c}")
    mask = apply_word_axis_length(mask, self.word_axis_length)
    memory = MemoryWriter(self.memory_dim, self.memory_gate_stop_grad,
                          name="memory_writer")(h, words)
    alpha = KeyAddressing(self.attn_mask_mode, name="key_addressing")(h, memory, mask)
    o = ValueReading(c, name="value_reading")(memory, alpha).reshape(b, hh, ww, c)
    h_new = ResponseGate(name="response_gate")(h, o)
    x = jnp.concatenate([h_new, h_new if self.memory_self_concat else o], axis=-1)
    for r in range(self.r_num):
      x = ResBlock(self.bn_running_var, name=f"residual_{r}")(x, train=train)
    out = UpBlock(self.ngf, self.bn_running_var, name="upsample")(x, train=train)
    attention = alpha.transpose(0, 2, 1).reshape(b, words.shape[1], hh, ww)
    return out, attention


REFINERS = {"memory": MemoryRefinementStage}


def make_refiner(kind: str, **kwargs) -> nn.Module:
  """Builds a refinement stage of family ``kind`` ('memory'; more in later issues)."""
  if kind not in REFINERS:
    raise NotImplementedError(
        f"refiner {kind!r} is not implemented (available: {sorted(REFINERS)})")
  return REFINERS[kind](**kwargs)
