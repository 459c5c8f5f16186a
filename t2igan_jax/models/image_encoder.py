"""DAMSM image encoder (AttnGAN's ``CNN_ENCODER``) and Inception-v3 weight conversion.

Forward (SPEC-dmgan §5.1), images f32[B, H, W, 3] in [-1, 1]::

    x          = resize_bilinear_align_corners(images, input_size)   (no-op if equal)
    f6e, f7c   = trunk(x)                     Inception: [B,17,17,768], [B,8,8,2048] at 299
    local      = emb_features(f6e)            1x1 conv, no bias       -> [B, h, w, D]
    global     = emb_cnn_code(mean_hw(f7c))   Dense with bias          -> [B, D]

No ImageNet mean/std normalisation: [-1, 1] is what the Google Inception weights
expect. The trunk's parameters live under ``params['trunk']`` (and its BN stats
under ``batch_stats['trunk']``) so that the optimiser can freeze them; the trunk
is *not* stop-gradient'ed, because in GAN training the DAMSM loss on generated
images back-propagates through the frozen encoder into G.

Parameter tree::

    trunk/...                      InceptionTrunk (torchvision names) or SmallTrunk
    emb_features/kernel            [1, 1, C_local, D]   <- emb_features.weight (D,C,1,1) HWIO
    emb_cnn_code/kernel, bias      [C_global, D], [D]   <- emb_cnn_code.weight.T, .bias

Backbones (``config.image_encoder.backbone``):
  'inception'  the reference Inception-v3 trunk (C_local 768, C_global 2048).
  'small'      a fast CNN for the embedded dataset: four conv3x3/2 (pad 1) -> BN ->
               ReLU layers with widths w, 2w, 4w, 8w (w = small_width); local
               features from layer 3 (input/8, C_local 4w), global from layer 4
               (input/16, C_global 8w) mean-pooled. Submodules ``layer1..layer4``
               with ``conv``/``bn`` inside, the same BasicConv2d as Inception.
"""

import functools
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2igan_jax import torch_io
from t2igan_jax.errors import CheckpointError
from t2igan_jax.models.inception import (BasicConv2d, InceptionTrunk,
                                         resize_bilinear_align_corners)
from t2igan_jax.models.text_encoder import symmetric_uniform

BACKBONES = ("inception", "small")


class SmallTrunk(nn.Module):
  """Four stride-2 conv-BN-ReLU layers; returns (layer3 [B,H/8,W/8,4w], layer4 [B,H/16,W/16,8w])."""
  width: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, *,
               use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    feats = []
    for i in range(4):
      x = BasicConv2d(self.width * 2 ** i, (3, 3), strides=(2, 2),
                      padding=((1, 1), (1, 1)), name=f"layer{i + 1}")(
                          x, use_running_average=use_running_average)
      feats.append(x)
    return feats[2], feats[3]


def _check_backbone(backbone: str) -> None:
  if backbone not in BACKBONES:
    raise ValueError(
        f"Unknown image encoder backbone {backbone!r} "
        f"(config.image_encoder.backbone); expected one of {BACKBONES}.")


class ImageEncoder(nn.Module):
  """DAMSM image encoder: trunk + ``emb_features`` (local) + ``emb_cnn_code`` (global).

  Attributes:
    embedding_dim: D, the common text/image feature size (nef = 256).
    backbone: 'inception' (reference) or 'small' (fast CNN).
    input_size: images are resized to input_size x input_size (align_corners).
    small_width: first-layer width of the 'small' backbone.
  """
  embedding_dim: int = 256
  backbone: str = "inception"
  input_size: int = 299
  small_width: int = 32

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train_trunk_bn: bool) -> tuple[jax.Array, jax.Array]:
    """Encodes images.

    Args:
      images: f32[B, H, W, 3] in [-1, 1].
      train_trunk_bn: trunk BN uses batch statistics and updates its running
        stats (call ``apply`` with ``mutable=['batch_stats']``); False uses the
        running stats (GAN training and evaluation).

    Returns:
      local: f32[B, h, w, D] region features (17x17 for Inception at 299).
      global: f32[B, D] image code.
    """
    _check_backbone(self.backbone)
    x = resize_bilinear_align_corners(images, self.input_size)
    ura = not train_trunk_bn
    if self.backbone == "inception":
      local, last = InceptionTrunk(name="trunk")(x, use_running_average=ura)
    else:
      local, last = SmallTrunk(width=self.small_width, name="trunk")(
          x, use_running_average=ura)

    local = nn.Conv(self.embedding_dim, (1, 1), use_bias=False,
                    kernel_init=symmetric_uniform(0.1), name="emb_features")(local)
    pooled = jnp.mean(last, axis=(1, 2))
    code = nn.Dense(self.embedding_dim, kernel_init=symmetric_uniform(0.1),
                    bias_init=symmetric_uniform(1.0 / float(pooled.shape[-1]) ** 0.5),
                    name="emb_cnn_code")(pooled)
    return local, code


def image_encoder_from_config(config) -> ImageEncoder:
  """Builds the ImageEncoder from ``config.image_encoder.*`` and ``config.text_encoder.embedding_dim``."""
  im = config.image_encoder
  _check_backbone(im.backbone)
  return ImageEncoder(embedding_dim=int(config.text_encoder.embedding_dim),
                      backbone=str(im.backbone), input_size=int(im.input_size),
                      small_width=int(im.small_width))


# ------------------------------------------------------------------ conversion
# torchvision state-dict suffix <-> (Flax collection, leaf name).
_BN_KEYS = (("weight", "params", "scale"), ("bias", "params", "bias"),
            ("running_mean", "batch_stats", "mean"),
            ("running_var", "batch_stats", "var"))
DEFAULT_IGNORE_PREFIXES = ("AuxLogits.", "fc.", "emb_features.", "emb_cnn_code.")


@functools.lru_cache(maxsize=4)
def _trunk_shapes(fields: tuple) -> dict[str, Any]:
  trunk = InceptionTrunk(**dict(fields))
  x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda x: trunk.init(jax.random.key(0), x, use_running_average=True), x)
  return {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}


def inception_trunk_shapes(trunk: InceptionTrunk | None = None) -> dict[str, Any]:
  """Shape/dtype trees ``{'params': ..., 'batch_stats': ...}`` of a trunk (via eval_shape, cached)."""
  trunk = InceptionTrunk() if trunk is None else trunk
  fields = tuple((f, getattr(trunk, f)) for f in (
      "count_include_pad", "mixed_7b_pool", "mixed_7c_pool", "bn_epsilon", "bn_use_scale"))
  return _trunk_shapes(fields)


def _torch_names(shapes: Mapping[str, Any]) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """torch key -> (collection, Flax path, expected torch-layout shape)."""
  names = {}
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  for path, leaf in flat:
    keys = tuple(p.key for p in path)
    module, leaf_name = keys[:-1], keys[-1]
    prefix = ".".join(module)
    if module[-1] == "conv" and leaf_name == "kernel":
      kh, kw, ci, co = leaf.shape
      names[prefix + ".weight"] = ("params", keys, (co, ci, kh, kw))
  for path, leaf in flat + jax.tree_util.tree_flatten_with_path(shapes["batch_stats"])[0]:
    keys = tuple(p.key for p in path)
    module, leaf_name = keys[:-1], keys[-1]
    if module[-1] != "bn":
      continue
    for torch_leaf, coll, flax_leaf in _BN_KEYS:
      if flax_leaf == leaf_name:
        names[".".join(module) + "." + torch_leaf] = (coll, keys, tuple(leaf.shape))
  return names


def _set(tree: dict, keys: tuple[str, ...], value) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def load_inception_trunk(state: Any, *,
                         ignore_prefixes: tuple[str, ...] = DEFAULT_IGNORE_PREFIXES,
                         trunk: InceptionTrunk | None = None
                         ) -> tuple[dict, dict]:
  """Converts a torchvision Inception-v3 state dict into the trunk's Flax trees.

  Args:
    state: a mapping (dict, ``np.load`` result) or a path to an ``.npz`` whose
      keys are torchvision names (``Mixed_5b.branch1x1.conv.weight`` in OIHW,
      ``...bn.weight/bias/running_mean/running_var``). ``*.num_batches_tracked``
      keys and keys under ``ignore_prefixes`` (AuxLogits, fc, and the DAMSM heads
      of an ``image_encoder*.pth``) are skipped.
    ignore_prefixes: key prefixes to skip.
    trunk: the trunk whose structure is expected (default ``InceptionTrunk()``).

  Returns:
    ``(params, batch_stats)`` nested dicts of float32 NumPy arrays for the trunk
    (to be placed under ``params['trunk']`` / ``batch_stats['trunk']`` of an
    ImageEncoder).

  Raises:
    KeyError: listing every missing and every unexpected key.
    ValueError: listing every shape mismatch.
  """
  if isinstance(state, (str, bytes)) or hasattr(state, "__fspath__"):
    with np.load(state) as f:
      state = {k: f[k] for k in f.files}
  names = _torch_names(inception_trunk_shapes(trunk))
  given = {k for k in state.keys()
           if not k.endswith(".num_batches_tracked")
           and not any(k.startswith(p) for p in ignore_prefixes)}
  missing = sorted(set(names) - given)
  unexpected = sorted(given - set(names))
  if missing or unexpected:
    raise KeyError(f"Inception trunk state dict: missing keys {missing}; "
                   f"unexpected keys {unexpected}")
  bad = []
  out: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for key, (coll, path, shape) in names.items():
    value = np.asarray(state[key], np.float32)
    if value.shape != shape:
      bad.append(f"{key}: expected {shape}, got {value.shape}")
      continue
    if len(shape) == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    _set(out[coll], path, value)
  if bad:
    raise ValueError("Inception trunk state dict: shape mismatch for " + "; ".join(bad))
  return out["params"], out["batch_stats"]


# torchvision's ImageNet Inception-v3 weights (what AttnGAN's CNN_ENCODER
# loads; torchvision's Inception_V3_Weights.IMAGENET1K_V1 downloads the same
# layout as inception_v3_google-0cc3c7bd.pth).
TORCHVISION_INCEPTION_URL = (
    "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth")


def read_trunk_weights(path: str) -> tuple[dict, dict]:
  """``(params, batch_stats)`` of the Inception trunk from a weights file.

  ``path``: torchvision's state dict as downloaded
  (``inception_v3_google-*.pth``, read without torch by
  ``t2igan_jax.torch_io``; its ``AuxLogits.*`` and ``fc.*`` are skipped), or
  an ``.npz`` of arrays under the same torchvision names.

  Raises:
    FileNotFoundError: no file at ``path``.
    CheckpointError: the file is not such a state dict (names the file and
      the first missing/unexpected keys or shape mismatches).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"config.image_encoder.trunk_weights={path!r}: no such file (download "
        f"{TORCHVISION_INCEPTION_URL})")
  if path.endswith(".npz"):
    try:
      with np.load(path) as f:
        state = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      raise CheckpointError(f"{path} is not a readable .npz: {e}") from e
  else:
    state = torch_io.load(path)
  state = {k[len("module."):] if k.startswith("module.") else k: v
           for k, v in state.items()}
  try:
    return load_inception_trunk(state)
  except (KeyError, ValueError) as e:
    msg = str(e.args[0]) if e.args else str(e)
    if len(msg) > 600:
      msg = msg[:600] + " ..."
    raise CheckpointError(
        f"{path} is not torchvision's Inception-v3 state dict "
        f"({TORCHVISION_INCEPTION_URL}): {msg}") from e


def export_inception_trunk(params: Mapping, batch_stats: Mapping) -> dict[str, np.ndarray]:
  """Inverse of :func:`load_inception_trunk`: Flax trunk trees -> torchvision-named arrays."""
  out = {}
  for coll, tree in (("params", params), ("batch_stats", batch_stats)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(p.key for p in path)
      module, leaf_name = ".".join(keys[:-1]), keys[-1]
      value = np.asarray(leaf, np.float32)
      if keys[-2] == "conv" and leaf_name == "kernel":
        out[module + ".weight"] = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        continue
      for torch_leaf, c, flax_leaf in _BN_KEYS:
        if c == coll and flax_leaf == leaf_name:
          out[module + "." + torch_leaf] = value
          break
      else:
        raise KeyError(f"export_inception_trunk: unknown leaf {'/'.join(keys)} in {coll}")
  return out


def load_image_encoder(state: Any) -> dict[str, dict]:
  """Converts a full ``image_encoder*.pth`` state dict (as arrays) into ImageEncoder variables.

  Returns ``{'params': {'trunk', 'emb_features', 'emb_cnn_code'}, 'batch_stats':
  {'trunk'}}`` for ``ImageEncoder(backbone='inception', embedding_dim=D)``.
  """
  if isinstance(state, (str, bytes)) or hasattr(state, "__fspath__"):
    with np.load(state) as f:
      state = {k: f[k] for k in f.files}
  head_keys = ("emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias")
  missing = [k for k in head_keys if k not in state]
  if missing:
    raise KeyError(f"image encoder state dict: missing keys {missing}")
  trunk_params, trunk_stats = load_inception_trunk(
      state, ignore_prefixes=("emb_features.", "emb_cnn_code."))
  w = np.asarray(state["emb_features.weight"], np.float32)
  if w.ndim != 4 or w.shape[1:] != (768, 1, 1):
    raise ValueError(f"emb_features.weight: expected (D, 768, 1, 1), got {w.shape}")
  d = w.shape[0]
  lw = np.asarray(state["emb_cnn_code.weight"], np.float32)
  lb = np.asarray(state["emb_cnn_code.bias"], np.float32)
  if lw.shape != (d, 2048) or lb.shape != (d,):
    raise ValueError(f"emb_cnn_code: expected weight ({d}, 2048) and bias ({d},), "
                     f"got {lw.shape} and {lb.shape}")
  return {
      "params": {"trunk": trunk_params,
                 "emb_features": {"kernel": w.transpose(2, 3, 1, 0)},
                 "emb_cnn_code": {"kernel": lw.T.copy(), "bias": lb}},
      "batch_stats": {"trunk": trunk_stats},
  }
