"""Generator G_NET of DM-GAN (SPEC-dmgan §3), FF-GAN (SPEC-ffgan §4) and
AttnGAN (SPEC-dmgan §3.5), NHWC: the three differ only in the refinement stage
(``refiner``: 'memory' | 'ffblock' | 'attention'; ``families.REFINER_FAMILIES``).

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
``train=True``). RNG streams: 'noise' (CA epsilon) whenever CA samples and no
``eps`` is given (``__call__(..., eps=[B, ncf])`` replays a given epsilon).

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

All of these are fields of the one frozen ``ModelConfig`` (``model_config``)
that G hands to its submodules; the refinement stage is looked up by name in
``families.REFINER_FAMILIES``.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from t2igan_jax.models.conditioning import ConditioningAugmentation
from t2igan_jax.models.initial_stage import InitialStage
from t2igan_jax.models.layers import ImageHead
from t2igan_jax.models.model_config import ModelConfig, keyword_fields
from t2igan_jax.models.refiners import make_refiner


@keyword_fields()
class Generator(nn.Module):
  """G_NET: ``(z, sent, words, mask) -> dict(images, attention, mu, logvar)``.

  ``config``: the frozen ``ModelConfig`` (sizes, ``refiner`` family and its
  flags, execution choices). Its fields are also accepted as keywords and read
  as attributes (``Generator(ngf=4, r_num=1)``, ``g.conv_weight_grad``).
  """
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, z, sent, words, mask, *, train: bool,
               sample_ca: Optional[bool] = None,
               eps: Optional[jnp.ndarray] = None):
    """Runs G.

    Args:
      z: [B, z_dim] noise.
      sent: [B, text_dim] DAMSM sentence embedding.
      words: [B, T, text_dim] word features (zeros past each length).
      mask: bool [B, T], True at padding.
      train: BatchNorm with batch statistics (apply with mutable=['batch_stats'])
        vs running statistics.
      sample_ca: sample the CA epsilon or use c = mu. None (default) = True in
        training and ``ca_sample_at_eval`` (reference True) otherwise.
      eps: [B, condition_dim] the CA epsilon to use when sampling; None
        (default) = drawn from the rng stream 'noise'.

    Returns:
      dict(images=[B, s_k, s_k, 3] per stage (tanh range),
           attention=[B, T, s_k, s_k] for each refiner input size s_k (k >= 1),
           mu=[B, ncf], logvar=[B, ncf]).
    """
    cfg = self.config
    _check_inputs(cfg, z, sent, words, mask, eps)
    if sample_ca is None:
      sample_ca = True if train else cfg.ca_sample_at_eval
    mask = mask.astype(jnp.bool_)
    c, mu, logvar = ConditioningAugmentation(cfg.condition_dim, name="ca_net")(
        sent, sample=sample_ca, eps=eps)
    h = InitialStage(cfg.ngf, cfg.base_size, cfg, name="h_net1")(c, z, train=train)
    images = [ImageHead(cfg, name="img_net1")(h)]
    attention = []
    for k in range(2, cfg.num_stages + 1):
      stage = make_refiner(cfg, remat=k in cfg.remat_stages, name=f"h_net{k}")
      h, att = stage(h, words, mask, sent, train)
      images.append(ImageHead(cfg, name=f"img_net{k}")(h))
      attention.append(att)
    return dict(images=images, attention=attention, mu=mu, logvar=logvar)


def _check_inputs(cfg: ModelConfig, z, sent, words, mask, eps) -> None:
  """Shape checks of G's inputs against ``cfg`` (one line naming the mismatch)."""
  if z.shape[-1] != cfg.z_dim or sent.shape[-1] != cfg.text_dim:
    raise ValueError(f"z/sent widths {z.shape[-1]}/{sent.shape[-1]} != "
                     f"z_dim/text_dim {cfg.z_dim}/{cfg.text_dim}")
  if words.shape[:2] != mask.shape or words.shape[-1] != cfg.text_dim:
    raise ValueError(f"words {words.shape} and mask {mask.shape} do not match")
  if eps is not None and eps.shape != (sent.shape[0], cfg.condition_dim):
    raise ValueError(f"eps shape {eps.shape} != (batch, condition_dim) "
                     f"{(sent.shape[0], cfg.condition_dim)}")


def generator_from_config(config) -> Generator:
  """Generator from the run's config (``ModelConfig.from_config``: ``config.model``
  + ``config.text_encoder.embedding_dim`` + ``config.data.{branch_num,
  base_size}`` + ``config.{dtype, remat}``)."""
  return Generator(ModelConfig.from_config(config))
