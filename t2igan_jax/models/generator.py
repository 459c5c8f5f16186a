"""Generator G_NET of DM-GAN (SPEC-dmgan §3), FF-GAN (SPEC-ffgan §4) and
AttnGAN (SPEC-dmgan §3.5), NHWC: the three differ only in the refinement stage
(``refiner``: 'memory' | 'ffblock' | 'attention'; ``refiners.REFINERS``).

    c, mu, logvar = CA(sent)                                   [B, ncf] each
    h_1           = InitialStage(c, z)                         [B, s, s, ngf]   s = base_size
    h_k, α_k      = Refiner_k(h_{k-1}, words, mask, sent)      [B, s·2^(k-1), ., ngf]
    img_k         = tanh(conv3x3(h_k))                         [B, s·2^(k-1), ., 3]

Parameter tree (top level = reference module names, so a converter is a
mechanical rename; see the docstrings of ``layers``, ``memory``,
``initial_stage``, ``conditioning``, ``word_attention``, ``ffblock`` and ``gsr``
for the leaves; FF-GAN's dead memory keys are listed in
``refiners.FFRefinementStage``)::

    ca_net/fc                      CA_NET
    h_net1/{fc, fc_bn, upsample1..n}   INIT_STAGE_G
    h_net{k}/{memory_writer, key_addressing, value_reading, response_gate,
              residual_{r}, upsample}  NEXT_STAGE_G, 'memory' (k = 2..num_stages)
    h_net{k}/{ff_block/{w_att, affine}, s_att, residual_{r}, upsample}   'ffblock'
    h_net{k}/{att, residual_{r}, upsample}                               'attention'
    img_net{k}/conv                GET_IMAGE_G

Collections: 'params'; 'batch_stats' (BatchNorm running mean/var, mutable when
``train=True``). RNG streams: 'noise' (CA epsilon) whenever CA samples.

Word axis: ``words`` [B, T, text_dim] with T the static WORDS_NUM and exact zeros
past each caption's length; ``mask`` [B, T] True at padding. With
``word_axis_length='batch_max'`` (reference) the columns t >= max(cap_lens) of the
batch are masked, i.e. the model behaves as with T = batch max (SPEC §3.4); for
DM-GAN and AttnGAN that is identical to using T = batch max or to 'words_num',
because those columns are padding (masked) for every caption; FF-GAN's unmasked
attention (``ffgan_word_mask='none'``, reference) sees the difference. The rolled
mask (default ``attn_mask_mode='rolled'``) depends on the batch order and size,
and 'batch_max' on the batch's longest caption: pass the *global*, length-sorted
batch.

Mixed precision / memory (``models/precision.py``): ``dtype`` is the
computation dtype of the initial stage, the refiners and the image heads
(float32 default = reference; parameters always float32). CA runs in float32
(its mu/logvar feed the KL loss); images are returned in float32, attention
maps in float32. ``remat_stages`` lists the refinement stages k wrapped in
``nn.remat`` (default none = reference memory behaviour; same values).

``conv_weight_grad`` (config ``model.conv_weight_grad``): how every conv of G
computes its kernel gradient: 'xla' (default: XLA's own, = plain ``nn.Conv``) |
'per_tap' (one GEMM per kernel tap, ``conv_grad``; several times faster on
XLA:CPU, same values up to float summation order).
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.conditioning import ConditioningAugmentation
from t2igan_jax.models import conv_grad
from t2igan_jax.models import precision
from t2igan_jax.models.initial_stage import InitialStage
from t2igan_jax.models.layers import ImageHead
from t2igan_jax.models.refiners import make_refiner


class Generator(nn.Module):
  """G_NET: ``(z, sent, words, mask) -> dict(images, attention, mu, logvar)``."""
  ngf: int = 64
  z_dim: int = 100
  condition_dim: int = 100
  text_dim: int = 256
  r_num: int = 2
  memory_dim: int = 128
  num_stages: int = 3
  base_size: int = 64
  refiner: str = "memory"
  attn_mask_mode: str = "rolled"
  word_axis_length: str = "batch_max"
  ca_sample_at_eval: bool = True
  memory_gate_stop_grad: bool = True
  memory_self_concat: bool = True
  ffgan_word_mask: str = "none"
  bn_running_var: str = "unbiased"
  dtype: Any = jnp.float32
  remat_stages: tuple[int, ...] = ()
  conv_weight_grad: str = "xla"

  def _refiner_kwargs(self) -> dict:
    if self.refiner == "memory":
      return dict(ngf=self.ngf, memory_dim=self.memory_dim, r_num=self.r_num,
                  attn_mask_mode=self.attn_mask_mode,
                  word_axis_length=self.word_axis_length,
                  memory_gate_stop_grad=self.memory_gate_stop_grad,
                  memory_self_concat=self.memory_self_concat,
                  bn_running_var=self.bn_running_var)
    if self.refiner == "ffblock":
      return dict(ngf=self.ngf, r_num=self.r_num, word_mask=self.ffgan_word_mask,
                  word_axis_length=self.word_axis_length,
                  bn_running_var=self.bn_running_var)
    if self.refiner == "attention":
      return dict(ngf=self.ngf, r_num=self.r_num,
                  attn_mask_mode=self.attn_mask_mode,
                  word_axis_length=self.word_axis_length,
                  bn_running_var=self.bn_running_var)
    raise NotImplementedError(f"refiner {self.refiner!r} is not implemented")

  @nn.compact
  def __call__(self, z, sent, words, mask, *, train: bool,
               sample_ca: Optional[bool] = None):
    """Runs G.

    Args:
      z: [B, z_dim] noise.
      sent: [B, text_dim] DAMSM sentence embedding.
      words: [B, T, text_dim] word features (zeros past each length).
      mask: bool [B, T], True at padding.
      train: BatchNorm with batch statistics (apply with mutable=['batch_stats'])
        vs running statistics.
      sample_ca: sample the CA epsilon (rng 'noise') or use c = mu. None (default)
        = True in training and ``ca_sample_at_eval`` (reference True) otherwise.

    Returns:
      dict(images=[B, s_k, s_k, 3] per stage (tanh range),
           attention=[B, T, s_k, s_k] for each refiner input size s_k (k >= 1),
           mu=[B, ncf], logvar=[B, ncf]).
    """
    if z.shape[-1] != self.z_dim or sent.shape[-1] != self.text_dim:
      raise ValueError(f"z/sent widths {z.shape[-1]}/{sent.shape[-1]} != "
                       f"z_dim/text_dim {self.z_dim}/{self.text_dim}")
    if words.shape[:2] != mask.shape or words.shape[-1] != self.text_dim:
      raise ValueError(f"words {words.shape} and mask {mask.shape} do not match")
    if sample_ca is None:
      sample_ca = True if train else self.ca_sample_at_eval
    mask = mask.astype(jnp.bool_)
    c, mu, logvar = ConditioningAugmentation(self.condition_dim, name="ca_net")(
        sent, sample=sample_ca)
    wg = self.conv_weight_grad
    h = InitialStage(self.ngf, self.base_size, self.bn_running_var,
                     dtype=self.dtype, conv_weight_grad=wg, name="h_net1")(
                         c, z, train=train)
    images = [ImageHead(dtype=self.dtype, conv_weight_grad=wg, name="img_net1")(h)]
    attention = []
    for k in range(2, self.num_stages + 1):
      h, att = make_refiner(self.refiner, remat=k in self.remat_stages,
                            **self._refiner_kwargs(), dtype=self.dtype,
                            conv_weight_grad=wg, name=f"h_net{k}")(h, words, mask, sent, train)
      images.append(ImageHead(dtype=self.dtype, conv_weight_grad=wg,
                              name=f"img_net{k}")(h))
      attention.append(att)
    return dict(images=images, attention=attention, mu=mu, logvar=logvar)


def generator_from_config(config) -> Generator:
  """Generator from ``config.model`` + ``config.text_encoder.embedding_dim`` +
  ``config.data.{branch_num, base_size}`` + ``config.{dtype, remat}``."""
  m = config.model
  return Generator(
      ngf=m.ngf, z_dim=m.z_dim, condition_dim=m.condition_dim,
      text_dim=config.text_encoder.embedding_dim, r_num=m.r_num,
      memory_dim=m.memory_dim, num_stages=config.data.branch_num,
      base_size=config.data.base_size, refiner=m.refiner,
      attn_mask_mode=m.attn_mask_mode, word_axis_length=m.word_axis_length,
      ca_sample_at_eval=m.ca_sample_at_eval,
      memory_gate_stop_grad=m.memory_gate_stop_grad,
      memory_self_concat=m.memory_self_concat,
      ffgan_word_mask=m.ffgan_word_mask,
      bn_running_var=m.bn_running_var,
      dtype=precision.compute_dtype(config),
      remat_stages=precision.remat_stages(config.get("remat", "none"),
                                          config.data.branch_num),
      conv_weight_grad=conv_grad.resolve(m.get("conv_weight_grad", "xla")))
