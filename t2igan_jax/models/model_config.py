"""One frozen model configuration for the generator and the discriminators.

Built once from the run's config (``ModelConfig.from_config``) and handed to
every model-level module as its ``config`` attribute, instead of plumbing
``conv_weight_grad``, ``bn_running_var``, ``small_map_conv``, ``dtype`` and the
architecture sizes field by field (the wmt example's ``TransformerConfig``). It
is a frozen, hashable dataclass, so Flax modules can hold it as an attribute.

Who takes what:

* ``Generator``, the refinement stages (``refiners``), ``Discriminator`` and its
  ``ImageEncoder`` / ``UncondHead`` / ``CondHead``: only ``config`` (plus
  ``stage`` for the discriminator and its ``ImageEncoder`` trunk).
* Blocks that carry a cross-cutting flag take their own shape arguments and
  ``config`` for the flags (``dtype``, ``conv_weight_grad``,
  ``bn_running_var``): ``layers.UpBlock(features)``, ``layers.ResBlock``,
  ``layers.ImageHead``, ``memory.ResponseGate``, ``ffblock.FFBlock(acm_dim)``,
  ``ffblock.AffineCombination(acm_dim)``,
  ``initial_stage.InitialStage(ngf, out_size)``. ``config`` defaults to
  ``ModelConfig()`` (float32, XLA convs, unbiased BN running variance).
* Layers that are generic or reused outside G/D keep explicit fields:
  ``spectral_norm.SpectralConv`` (geometry per call; ``dtype``,
  ``small_map_conv``), ``layers.conv3x3`` / ``conv1x1`` / ``batch_norm``,
  ``batch_norm.BatchNorm`` (also in the DAMSM / Inception encoders), the
  blocks whose only flag is ``dtype`` (``memory.{MemoryWriter, KeyAddressing,
  ValueReading}``, ``word_attention.WordContextAttention``, ``gsr.GSR``) and
  ``conditioning.ConditioningAugmentation`` (always float32).

``keyword_fields`` lets the model-level modules still be built from a few
keyword fields (``Generator(ngf=4, r_num=1)``, ``stage.clone(dtype=...)``,
``generator.conv_weight_grad``): each ModelConfig field given as a keyword is
folded into ``config``, and each is readable as a module attribute.
"""

import dataclasses
import functools
from typing import Any, Optional

import jax.numpy as jnp

from t2igan_jax.models import conv_grad
from t2igan_jax.models import precision
from t2igan_jax.models import small_map_conv as small_map_conv_lib


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything G and D need (defaults = the reference at bird size, float32).

  Sizes: ``ngf``/``ndf`` (G/D widths), ``z_dim``, ``condition_dim`` (CA output),
  ``text_dim`` (DAMSM embedding), ``r_num`` (ResBlocks per stage),
  ``memory_dim`` (DM-GAN N_m), ``num_stages`` (= data.branch_num),
  ``base_size`` (first image size). Family and its flags: ``refiner``
  (``families.REFINER_FAMILIES``) and the ``config.model`` flags of the same
  names. Execution (resolved, no 'auto'): ``dtype`` (computation dtype),
  ``remat_stages`` (refinement stages k wrapped in ``nn.remat``),
  ``conv_weight_grad`` ('xla' | 'per_tap'), ``small_map_conv`` ('xla' |
  'matmul'); none of them changes the parameter tree.
  """
  ngf: int = 64
  ndf: int = 32
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
  small_map_conv: str = "xla"

  @classmethod
  def from_config(cls, config) -> "ModelConfig":
    """From ``config.model`` + ``config.text_encoder.embedding_dim`` +
    ``config.data.{branch_num, base_size}`` + ``config.{dtype, remat}``; the
    'auto' execution choices are resolved here (by backend)."""
    m = config.model
    branch_num = config.data.branch_num
    return cls(
        ngf=m.ngf, ndf=m.ndf, z_dim=m.z_dim, condition_dim=m.condition_dim,
        text_dim=config.text_encoder.embedding_dim, r_num=m.r_num,
        memory_dim=m.memory_dim, num_stages=branch_num,
        base_size=config.data.base_size, refiner=m.refiner,
        attn_mask_mode=m.attn_mask_mode, word_axis_length=m.word_axis_length,
        ca_sample_at_eval=m.ca_sample_at_eval,
        memory_gate_stop_grad=m.memory_gate_stop_grad,
        memory_self_concat=m.memory_self_concat,
        ffgan_word_mask=m.ffgan_word_mask, bn_running_var=m.bn_running_var,
        dtype=precision.compute_dtype(config),
        remat_stages=precision.remat_stages(config.get("remat", "none"), branch_num),
        conv_weight_grad=conv_grad.resolve(m.get("conv_weight_grad", "xla")),
        small_map_conv=small_map_conv_lib.resolve(m.small_map_conv))


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def keyword_fields(*, positional: tuple[str, ...] = (),
                   aliases: Optional[dict[str, str]] = None):
  """Class decorator for a Flax module with a ``config: ModelConfig`` field.

  Keyword arguments named like ModelConfig fields (at construction and in
  ``clone``) replace those fields of ``config``; so do the module's own
  ``aliases`` (old name -> ModelConfig field, e.g. FF-GAN's ``word_mask``).
  Every ModelConfig field and alias the module does not declare is readable
  as a module attribute. ``positional`` names the module's positional
  arguments when they are not its dataclass field order
  (``Discriminator(stage, ndf)``).
  """
  aliases = dict(aliases or {}, **{f: f for f in FIELDS})

  def wrap(cls):
    init = cls.__init__
    order = positional or tuple(f.name for f in dataclasses.fields(cls)
                                if f.name not in ("parent", "name"))

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
      if len(args) > len(order):
        raise TypeError(f"{cls.__name__} takes at most {len(order)} positional "
                        f"arguments ({', '.join(order)}), got {len(args)}")
      kwargs.update(zip(order, args))
      overrides = {aliases[k]: kwargs.pop(k) for k in list(kwargs) if k in aliases}
      if overrides:
        config = kwargs.get("config") or ModelConfig()
        kwargs["config"] = dataclasses.replace(config, **overrides)
      init(self, **kwargs)

    cls.__init__ = __init__
    for name, field in aliases.items():
      if name not in cls.__dataclass_fields__:
        setattr(cls, name, property(lambda self, f=field: getattr(self.config, f)))
    return cls
  return wrap
