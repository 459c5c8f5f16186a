"""Registry of the generator's refiner families (JAX-free).

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

REFINER_FAMILIES = {
    "memory": "t2igan_jax.models.refiners:MemoryRefinementStage",
    "ffblock": "t2igan_jax.models.refiners:FFRefinementStage",
    "attention": "t2igan_jax.models.refiners:AttentionRefinementStage",
}


def resolve_refiner(name: str):
  """The refinement-stage class registered as ``name`` (imported on first use)."""
  if name not in REFINER_FAMILIES:
    raise NotImplementedError(
        f"config.model.refiner: unknown refiner family {name!r} (registered: "
        f"{', '.join(REFINER_FAMILIES)}; add one in t2igan_jax/models/families.py)")
  module_name, class_name = REFINER_FAMILIES[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)
