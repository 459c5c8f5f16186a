"""Registries of the generator architectures and refiner families (JAX-free).

An architecture (``config.model.architecture``) is the whole GAN a
``train_gan`` job trains, samples and evaluates: ``ARCHITECTURES`` maps its
name to the object (``"module:NAME"``, a ``gan_lib.Architecture``) holding
its state creation, jitted step, log line, loss-term names, sampling and
parameter table; ``resolve_architecture`` imports it lazily::

    'stacked'  AttnGAN-style multi-stage G + one D per stage, with the
               refinement stage ``config.model.refiner`` (below)
    'dfgan'    DF-GAN: one-stage G with deep fusion blocks, one D + C
               (SPEC-dfgan; ``model.refiner`` and the stacked-only fields
               are ignored)

A refiner family is one refinement-stage module (NEXT_STAGE_G: ``refiners``'
shared signature) plus one line here: ``name -> "module:Class"``. The names are
read by ``t2igan_jax/config_validation.py`` (``config.model.refiner``) without
importing JAX; ``resolve_refiner`` imports the module lazily when a generator
is built. A refinement-stage class builds itself from the frozen
``ModelConfig`` (``models/model_config.py``) and has the shared refiner
signature (``models/refiners.py``)::

    Class(config, name='h_netK')(h, words, mask, sent, train) -> (h_out, attention)

    'memory'    DM-GAN  dynamic memory       (SPEC-dmgan §3.4)
    'ffblock'   FF-GAN  FF-Block + GSR       (SPEC-ffgan §2-§3)
    'attention' AttnGAN word attention       (SPEC-dmgan §3.5)
"""

import importlib

ARCHITECTURES = {
    "stacked": "t2igan_jax.gan_lib:STACKED",
    "dfgan": "t2igan_jax.dfgan_job:ARCHITECTURE",
}

REFINER_FAMILIES = {
    "memory": "t2igan_jax.models.refiners:MemoryRefinementStage",
    "ffblock": "t2igan_jax.models.refiners:FFRefinementStage",
    "attention": "t2igan_jax.models.refiners:AttentionRefinementStage",
}


def _resolve(registry: dict[str, str], name: str, field: str, what: str):
  """``registry[name]`` ('module:attribute') imported, or one line naming
  ``field`` and the registered names."""
  if name not in registry:
    raise NotImplementedError(
        f"config.{field}: unknown {what} {name!r} (registered: "
        f"{', '.join(registry)}; add one in t2igan_jax/models/families.py)")
  module_name, attr = registry[name].split(":")
  return getattr(importlib.import_module(module_name), attr)


def resolve_refiner(name: str):
  """The refinement-stage class registered as ``name`` (imported on first use)."""
  return _resolve(REFINER_FAMILIES, name, "model.refiner", "refiner family")


def resolve_architecture(name: str):
  """The ``gan_lib.Architecture`` registered as ``name`` (imported on first use)."""
  return _resolve(ARCHITECTURES, name, "model.architecture", "architecture")
