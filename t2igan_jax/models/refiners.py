"""Refinement stages (NEXT_STAGE_G) of the generator, NHWC.

Every refiner family shares one constructor and one signature so the
generator can swap them (``config.model.refiner``: 'memory' = DM-GAN, 'ffblock'
= FF-GAN, 'attention' = AttnGAN; registered by name in ``families``)::

    stage = Stage(config: ModelConfig, name='h_netK')
    stage(h [B,H,W,ngf], words [B,T,text_dim], mask bool[B,T] (True = padding),
          sent [B,text_dim], train: bool)
      -> (h_out [B,2H,2W,ngf], attention [B,T,H,W])

A new family is a module with this interface plus one line in
``families.REFINER_FAMILIES``. The stages also accept their ``ModelConfig``
fields as keywords (``MemoryRefinementStage(ngf=8, r_num=1)``,
``model_config.keyword_fields``).

``train`` may be passed positionally (argument 5, counting ``self`` as 0) so
``nn.remat(stage, static_argnums=(5,))`` can keep it static (``make_refiner``
with ``remat=True``). ``config.dtype`` is the computation dtype (float32 default
= reference); parameters stay float32, softmaxes and BatchNorm statistics are
float32, ``h_out`` is in ``dtype`` and ``attention`` in float32.

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

Parameter paths keep the reference module names (``h_netK.<name>`` ->
``h_netK/<name>``; ``residual.{r}`` -> ``residual_{r}``; leaves in the docstrings
of ``layers``, ``memory``, ``word_attention``, ``ffblock`` and ``gsr``).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models import families
from t2igan_jax.models.ffblock import FFBlock
from t2igan_jax.models.gsr import GSR
from t2igan_jax.models.layers import ResBlock, UpBlock
from t2igan_jax.models.memory import (KeyAddressing, MemoryWriter, ResponseGate,
                                      ValueReading, expand_word_mask)
from t2igan_jax.models.model_config import ModelConfig, keyword_fields
from t2igan_jax.models.word_attention import WordContextAttention

WORD_AXIS_LENGTHS = ("batch_max", "words_num")
FFGAN_WORD_MASKS = ("none", "padding")


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


def ffgan_attention_mask(mask: jnp.ndarray, word_mask: str,
                         word_axis_length: str) -> jnp.ndarray:
  """FF-GAN's word-attention mask, bool broadcastable to [B, Q, T] (True = masked).

  ``word_mask='none'`` (reference, SPEC-ffgan §2): padded slots stay visible;
  only the columns t >= max(cap_lens) are hidden under 'batch_max' (= the
  reference's per-batch T) and nothing under 'words_num'.
  ``'padding'`` (deviation): each caption's own padding is hidden (per caption,
  not rolled), plus the 'batch_max' columns (padding anyway).
  """
  if word_mask == "padding":
    return apply_word_axis_length(mask, word_axis_length)[:, None, :]
  if word_mask == "none":
    if word_axis_length == "batch_max":
      return beyond_batch_max(mask)[None, None, :]
    if word_axis_length == "words_num":
      return jnp.zeros((1, 1, mask.shape[1]), jnp.bool_)
    raise ValueError(f"word_axis_length must be one of {WORD_AXIS_LENGTHS}, "
                     f"got {word_axis_length!r}")
  raise ValueError(
      f"ffgan_word_mask must be one of {FFGAN_WORD_MASKS}, got {word_mask!r}")


def _attention_map(alpha: jnp.ndarray, hh: int, ww: int) -> jnp.ndarray:
  """α [B, H·W, T] -> the reference's visualisation layout [B, T, H, W]."""
  b, _, t = alpha.shape
  return alpha.transpose(0, 2, 1).reshape(b, t, hh, ww)


def _check_inputs(h, ngf, train):
  """Shared argument checks of every refinement stage (BatchNorm mode, channels)."""
  if train is None:
    raise TypeError("a refinement stage needs train=True/False (BatchNorm mode)")
  if h.shape[-1] != ngf:
    raise ValueError(f"refiner expects {ngf} input channels, got {h.shape[-1]}")


def stage_tail(parts, config: ModelConfig, *, train: bool) -> jnp.ndarray:
  """The tail every refinement stage shares (NEXT_STAGE_G after the text fusion).

      x   = concat(parts, axis=-1)                       [B, H, W, 2·ngf]
      out = UpBlock_{2ngf->ngf}(ResBlock^r_num(x))       [B, 2H, 2W, ngf]

  Call it inside the stage's ``nn.compact`` ``__call__``: the submodules are
  created in the calling stage's scope under the reference names
  ``residual_{r}`` (reference ``residual.{r}``) and ``upsample``, so parameter
  paths are those of the stage itself. ``config`` gives ``ngf``, ``r_num`` and
  the blocks' flags (``dtype``, ``bn_running_var``, ``conv_weight_grad``).
  """
  x = jnp.concatenate(parts, axis=-1)
  for r in range(config.r_num):
    x = ResBlock(config, name=f"residual_{r}")(x, train=train)
  return UpBlock(config.ngf, config, name="upsample")(x, train=train)


@keyword_fields()
class MemoryRefinementStage(nn.Module):
  """DM-GAN NEXT_STAGE_G (SPEC-dmgan §3.4).

      M   = MemoryWriter(h, w)                    [B, T, N_m]
      α   = KeyAddressing(h, M, mask)             [B, H·W, T]
      o   = ValueReading(M, α)                    [B, H, W, ngf]
      h'  = ResponseGate(h, o)                    [B, H, W, ngf]
      x   = [h', h'] (self_concat, reference) or [h', o]          [B, H, W, 2·ngf]
      out = UpBlock_{2ngf->ngf}(ResBlock^r_num(x))                [B, 2H, 2W, ngf]

  ``config`` fields used: ``ngf, memory_dim, r_num, attn_mask_mode,
  word_axis_length, memory_gate_stop_grad, memory_self_concat`` and the
  blocks' flags. ``sent`` is unused (kept for the shared refiner signature).
  Submodules: ``memory_writer, key_addressing, value_reading, response_gate,
  residual_{r}`` (reference ``residual.{r}``) and ``upsample``.
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, words, mask, sent=None, train: Optional[bool] = None):
    del sent
    cfg = self.config
    _check_inputs(h, cfg.ngf, train)
    b, hh, ww, c = h.shape
    dt = cfg.dtype
    h, words = h.astype(dt), words.astype(dt)
    mask = apply_word_axis_length(mask, cfg.word_axis_length)
    memory = MemoryWriter(cfg.memory_dim, cfg.memory_gate_stop_grad, dtype=dt,
                          name="memory_writer")(h, words)
    alpha = KeyAddressing(cfg.attn_mask_mode, dtype=dt,
                          name="key_addressing")(h, memory, mask)
    o = ValueReading(c, dtype=dt, name="value_reading")(memory, alpha).reshape(
        b, hh, ww, c)
    h_new = ResponseGate(cfg, name="response_gate")(h, o)
    out = stage_tail([h_new, h_new if cfg.memory_self_concat else o], cfg,
                     train=train)
    return out, _attention_map(alpha, hh, ww)


@keyword_fields(aliases={"word_mask": "ffgan_word_mask"})
class FFRefinementStage(nn.Module):
  """FF-GAN NEXT_STAGE_G (SPEC-ffgan §2-§3, "How FF-Block and GSR combine").

      h_w, α = FFBlock(h, w, mask per ``word_mask``/``word_axis_length``)  [B,H,W,ngf]
      g      = GSR(h, sent)               raw DAMSM sentence embedding     [B,H,W,ngf]
      x      = [h_w, g]                   FF output first                  [B,H,W,2ngf]
      out    = UpBlock_{2ngf->ngf}(ResBlock^r_num(x))                      [B,2H,2W,ngf]

  ``config`` fields used: ``ngf, r_num, ffgan_word_mask, word_axis_length`` and
  the blocks' flags. ``word_mask`` (``config.ffgan_word_mask``, config
  ``model.ffgan_word_mask``; also accepted as keyword ``word_mask``): 'none'
  (reference: the released code does not mask the word attention, so padded
  slots, exact zeros, take softmax mass exp(0)/Z) | 'padding' (deviation: each
  caption's padding is excluded). ``word_axis_length`` 'batch_max' (reference:
  T = the batch's longest caption) | 'words_num' (all WORDS_NUM slots take
  part); see ``ffgan_attention_mask``. The attention depends on the whole
  (global) batch only through max(cap_lens).

  Converter (reference ``h_netK.*`` -> ``h_netK/...``):

  =============================================  ==================================
  reference key                                  Flax path
  =============================================  ==================================
  ``w_att.conv_context.weight``                  ``ff_block/w_att/conv_context/kernel``
  ``affine.{conv,conv_weight,conv_bias}.weight``  ``ff_block/affine/{...}/kernel``
  ``s_att.conv_context.weight``                  ``s_att/conv_context/kernel``
  ``residual.{r}.block.{0,1,3,4}.*``             ``residual_{r}/{conv1,bn1,conv2,bn2}``
  ``upsample.{1,2}.*``                           ``upsample/{conv,bn}``
  =============================================  ==================================

  Dead reference keys, not created here (the leftover DM-GAN memory modules get
  no gradient and do not touch the output; SPEC-ffgan §1, §7): ``A.weight``,
  ``B.weight``, ``M_r.0.{weight,bias}``, ``M_w.0.{weight,bias}``,
  ``key.0.{weight,bias}``, ``value.0.{weight,bias}``,
  ``response_gate.0.{weight,bias}`` — 58,177 parameters per stage, 116,354 per
  bird/COCO G. A converter drops them.
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, words, mask, sent=None, train: Optional[bool] = None):
    cfg = self.config
    _check_inputs(h, cfg.ngf, train)
    if sent is None:
      raise TypeError("FFRefinementStage needs the sentence embedding (GSR)")
    _, hh, ww, _ = h.shape
    dt = cfg.dtype
    h, words, sent = h.astype(dt), words.astype(dt), sent.astype(dt)
    att_mask = ffgan_attention_mask(mask, cfg.ffgan_word_mask, cfg.word_axis_length)
    h_w, alpha = FFBlock(config=cfg, name="ff_block")(h, words, att_mask)
    g = GSR(dtype=dt, name="s_att")(h, sent)
    out = stage_tail([h_w, g], cfg, train=train)
    return out, _attention_map(alpha, hh, ww)


@keyword_fields()
class AttentionRefinementStage(nn.Module):
  """AttnGAN NEXT_STAGE_G (SPEC-dmgan §3.5).

      ctx, α = WordContextAttention(h, w, mask)    [B,H,W,ngf]   (``att``)
      x      = [h, ctx]                            h first       [B,H,W,2ngf]
      out    = UpBlock_{2ngf->ngf}(ResBlock^r_num(x))            [B,2H,2W,ngf]

  ``config`` fields used: ``ngf, r_num, attn_mask_mode, word_axis_length`` and
  the blocks' flags. The mask is the caption padding mask with the same row
  alignment as DM-GAN's (``attn_mask_mode``: 'rolled' reference |
  'per_caption'; pass the global, length-sorted batch) and ``word_axis_length``
  ('batch_max' = 'words_num' here, the extra columns are padding in every
  row). ``sent`` is unused.

  Converter (reference ``h_netK.*`` -> ``h_netK/...``):

  =========================================  ======================================
  reference key                              Flax path
  =========================================  ======================================
  ``att.conv_context.weight`` (ngf,256,1,1)  ``att/conv_context/kernel`` (256, ngf)
  ``residual.{r}.block.{0,1,3,4}.*``         ``residual_{r}/{conv1,bn1,conv2,bn2}``
  ``upsample.{1,2}.*``                       ``upsample/{conv,bn}``
  =========================================  ======================================
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, words, mask, sent=None, train: Optional[bool] = None):
    del sent
    cfg = self.config
    _check_inputs(h, cfg.ngf, train)
    _, hh, ww, _ = h.shape
    dt = cfg.dtype
    h, words = h.astype(dt), words.astype(dt)
    mask = apply_word_axis_length(mask, cfg.word_axis_length)
    row_mask = expand_word_mask(mask, hh * ww, cfg.attn_mask_mode)
    ctx, alpha = WordContextAttention(dtype=dt, name="att")(h, words, row_mask)
    out = stage_tail([h, ctx], cfg, train=train)
    return out, _attention_map(alpha, hh, ww)


def make_refiner(config: ModelConfig, *, remat: bool = False,
                 name: Optional[str] = None) -> nn.Module:
  """The refinement stage of family ``config.refiner``
  (``families.REFINER_FAMILIES``), built as ``Class(config, name=name)``.

  ``remat=True`` wraps the stage in ``nn.remat`` (activation rematerialisation:
  its activations are recomputed in the backward pass instead of stored; same
  parameter paths, same values). Call it with ``train`` positionally:
  ``stage(h, words, mask, sent, train)``.
  """
  cls = families.resolve_refiner(config.refiner)
  if remat:
    cls = nn.remat(cls, static_argnums=(5,))
  return cls(config, name=name)
