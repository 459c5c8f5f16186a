"""Computation dtype and activation rematerialisation from the config.

``config.dtype`` (SPEC: mixed precision; top-level field of configs/base.py):

* ``'float32'``: every computation in float32 (the reference).
* ``'bfloat16'``: G and the Ds compute convs, dense layers and attention
  einsums in bfloat16; parameters, optimiser state, EMA, BatchNorm statistics
  (reduced in float32), softmaxes over words / pixels, the discriminator logits,
  generated images and every loss term and reduction stay float32.
* ``'auto'`` (default): bfloat16 when ``jax.default_backend()`` is 'gpu'/'tpu'
  (tensor cores / MXU), float32 otherwise (CPU, where bfloat16 convs are not
  faster).

The frozen DAMSM encoders always run in float32.

``config.remat`` (activation rematerialisation in G's forward, traded for a
second forward of the wrapped part in the backward pass; values unchanged):

* ``'none'`` (default): store every activation.
* ``'last_stage'``: ``nn.remat`` around the last refinement stage (256 px in the
  bird/COCO configs), which holds most of G's activation memory.
* ``'refiners'``: ``nn.remat`` around every refinement stage (128 and 256 px).
"""

import jax
import jax.numpy as jnp

DTYPES = ("auto", "float32", "bfloat16")
REMAT_MODES = ("none", "last_stage", "refiners")


def compute_dtype(config) -> jnp.dtype:
  """The computation dtype named by ``config.dtype`` (see module docstring)."""
  name = config.get("dtype", "float32") if hasattr(config, "get") else "float32"
  if name == "auto":
    return (jnp.bfloat16 if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
            else jnp.float32)
  if name == "float32":
    return jnp.float32
  if name == "bfloat16":
    return jnp.bfloat16
  raise ValueError(f"config.dtype must be one of {DTYPES}, got {name!r}")


def remat_stages(mode: str, num_stages: int) -> tuple[int, ...]:
  """Generator stage indices k (2..num_stages, the refiners) to rematerialise."""
  if mode == "none":
    return ()
  if mode == "last_stage":
    return (num_stages,) if num_stages >= 2 else ()
  if mode == "refiners":
    return tuple(range(2, num_stages + 1))
  raise ValueError(f"config.remat must be one of {REMAT_MODES}, got {mode!r}")
