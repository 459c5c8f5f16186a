"""Frechet Inception Distance: statistics, the distance, and pytorch-fid ``.npz`` files.

SPEC-eval §3.4, with features f[N, D] (float64)::

    mu    = mean_n f[n]                          [D]
    sigma = cov(f, rowvar=False)  (unbiased)     [D, D]
    FID   = |mu1 - mu2|^2 + Tr(s1) + Tr(s2) - 2 Tr(sqrtm(s1 s2))

``sqrtm`` is ``scipy.linalg.sqrtm``; when the product's square root is not finite
(a singular product), ``eps * I`` is added to both covariances and it is
recomputed; the real part is kept, and an imaginary diagonal larger than 1e-3
raises (pytorch-fid / DM-GAN behaviour).

Statistics files use pytorch-fid's format: an ``.npz`` with ``mu`` [D] and
``sigma`` [D, D], so published files (DM-GAN's ``bird_val.npz`` ...) can be
used directly (mind which Inception weights produced them, SPEC-eval §0).

Image directories (:func:`statistics_of_directory`): every ``.jpg``/``.jpeg``/
``.png`` (any case) below the folder, recursively, in sorted path order; each is
converted to RGB by PIL (greyscale, CMYK, palette and RGBA images included) and
its uint8 pixels mapped to [-1, 1] as ``x / 127.5 - 1`` (pytorch-fid's
``2 * (x / 255) - 1``). Two routes to the network's 299 x 299 input:

* ``image_size=<int>`` (the project's route for real images compared with
  generated ones of that size): PIL bilinear to ``image_size x image_size``
  (PIL antialiases when shrinking), then ``feature_fn`` does the network's own
  half-pixel resize to 299 (:mod:`t2igan_jax.evaluation.fid_inception`).
* ``image_size=None`` (pytorch-fid's route): each image at its native size,
  which may differ between files, is resized on its own straight to
  ``network_size`` (299) with the network's half-pixel bilinear
  (``F.interpolate(align_corners=False)``, no antialiasing), as pytorch-fid does
  with batch size 1.

The route moves FID: between two disjoint sets of 147 real CUB-2010 photos
the same Inception gives 63.54 by the project's route and 58.25 by
pytorch-fid's, 9% apart (``python bench/fid_resize.py``); compare only
statistics made by the same route.
"""

import os
from typing import Callable, Iterator

import numpy as np
import scipy.linalg
from PIL import Image

from t2igan_jax.models import inception

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """features [N, D] -> (mu float64 [D], sigma float64 [D, D]); unbiased covariance."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"FID statistics need features [N >= 2, D], got shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _check_pair(mu1, sigma1, mu2, sigma2):
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"FID statistics do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                     f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
  return mu1, sigma1, mu2, sigma2


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """Tr sqrtm(sigma1 sigma2) for symmetric PSD inputs, via two eigh calls.

  sigma1 sigma2 is similar to S = sigma1^1/2 sigma2 sigma1^1/2 (symmetric PSD), so
  their square roots have the same trace: sum_i sqrt(lambda_i(S)). Tiny negative
  eigenvalues from round-off are clipped to 0.
  """
  w, v = np.linalg.eigh(sigma1)
  root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  s = root1 @ sigma2 @ root1
  lam = np.linalg.eigvalsh((s + s.T) / 2.0)
  return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps: float) -> float:
  """pytorch-fid's computation: scipy sqrtm of the (non-symmetric) product."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: sqrtm(sigma1 sigma2) has an imaginary component {imag:.3g}")
    covmean = covmean.real
  return float(np.trace(covmean))


FRECHET_METHODS = ("eigh", "sqrtm")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                     method: str = "eigh") -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2))``.

  ``method='eigh'`` (default) takes the trace term from the eigenvalues of the
  symmetric ``sigma1^1/2 sigma2 sigma1^1/2`` (seconds at D = 2048);
  ``method='sqrtm'`` is pytorch-fid's ``scipy.linalg.sqrtm`` of the product with
  its ``eps * I`` retry for a non-finite root (minutes at D = 2048 on 2 cores).
  Both give the same value for valid covariances (tested to 1e-7 relative).

  Raises:
    ValueError: shapes disagree, an unknown method, or (sqrtm) the square root has
      an imaginary diagonal component above 1e-3 (numerically broken covariances).
  """
  mu1, sigma1, mu2, sigma2 = _check_pair(mu1, sigma1, mu2, sigma2)
  if method == "eigh":
    trace_root = _trace_sqrt_product_eigh(sigma1, sigma2)
  elif method == "sqrtm":
    trace_root = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  else:
    raise ValueError(f"frechet_distance: method must be one of {FRECHET_METHODS}, "
                     f"got {method!r}")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes pytorch-fid's ``.npz`` (keys ``mu``, ``sigma``; float64)."""
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"save_statistics({path!r}): expected mu [D] and sigma [D, D], "
                     f"got {mu.shape} and {sigma.shape}")
  folder = os.path.dirname(os.fspath(path))
  if folder:
    os.makedirs(folder, exist_ok=True)
  with open(path, "wb") as f:  # an open file: np.savez would append '.npz' to a name
    np.savez(f, mu=mu, sigma=sigma)


def load_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a pytorch-fid ``.npz`` -> (mu float64 [D], sigma float64 [D, D]).

  Raises:
    FileNotFoundError: no file at ``path``.
    ValueError: not an ``.npz``/``.npy`` archive, keys ``mu``/``sigma`` missing, or
      shapes inconsistent (the message names the file).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FID statistics file not found: {path!r} (expected a "
                            "pytorch-fid .npz with keys 'mu' and 'sigma')")
  try:
    data = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"FID statistics file {path!r} is not an .npz archive: {e}") from e
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise ValueError(f"FID statistics file {path!r} holds a single array; expected an "
                     ".npz with keys 'mu' and 'sigma'")
  with data:
    missing = [k for k in ("mu", "sigma") if k not in data.files]
    if missing:
      raise ValueError(f"FID statistics file {path!r} lacks keys {missing} (has "
                       f"{data.files}); expected pytorch-fid's 'mu' and 'sigma'")
    mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"FID statistics file {path!r}: expected mu [D] and sigma [D, D], "
                     f"got {mu.shape} and {sigma.shape}")
  return mu, sigma


def list_images(directory: str) -> list[str]:
  """Sorted paths of every .jpg/.jpeg/.png (any case) below ``directory``, recursively."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"image directory not found: {directory!r}")
  paths = []
  for root, _, files in os.walk(directory):
    paths.extend(os.path.join(root, f) for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(paths)


def read_image(path: str, image_size: int | None = None) -> np.ndarray:
  """One image file -> uint8 [H, W, 3] RGB (optionally PIL-bilinear resized to a square)."""
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      if image_size is not None and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BILINEAR)
      return np.asarray(im, np.uint8)
  except OSError as e:
    raise ValueError(f"cannot read image {path!r}: {e}") from e


def resize_half_pixel(image: np.ndarray, size: int) -> np.ndarray:
  """[H, W, C] -> float32 [size, size, C], half-pixel bilinear without antialiasing.

  PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)``, the resize
  inside the FID network (``inception.resize_bilinear(..., 'half_pixel')``),
  done on the host so that images of any size cost no compilation.
  """
  x = np.asarray(image, np.float32)
  ry = inception.interpolation_matrix(x.shape[0], size, "half_pixel")
  rx = inception.interpolation_matrix(x.shape[1], size, "half_pixel")
  return np.einsum("xw,ywc->yxc", rx, np.einsum("yh,hwc->ywc", ry, x))


def iter_image_batches(directory: str, batch_size: int = 50,
                       image_size: int | None = None,
                       native_resize: int | None = None
                       ) -> Iterator[tuple[np.ndarray, list[str]]]:
  """Yields (images f32[b, H, W, 3] in [-1, 1], paths) batches of the sorted files.

  The last batch may be smaller. ``image_size``: PIL bilinear to that square
  size. Else, with ``native_resize``, each image is resized on its own from its
  native size to ``native_resize`` squared (:func:`resize_half_pixel`); without
  either, every image of the folder must have the first image's size (else a
  ValueError names the file).
  """
  paths = list_images(directory)
  if not paths:
    raise ValueError(f"no .jpg/.jpeg/.png images found under {directory!r}")
  expected = None
  for start in range(0, len(paths), batch_size):
    chunk = paths[start:start + batch_size]
    arrays = []
    for p in chunk:
      a = read_image(p, image_size)
      if image_size is None and native_resize is not None:
        arrays.append(resize_half_pixel(a / 127.5 - 1.0, native_resize))
        continue
      expected = a.shape if expected is None else expected
      if a.shape != expected:
        raise ValueError(f"image {p!r} has size {a.shape[:2]} but earlier images have "
                         f"{expected[:2]}; pass image_size to resize them all")
      arrays.append(a.astype(np.float32) / 127.5 - 1.0)
    yield np.stack(arrays).astype(np.float32), chunk


def features_of_directory(directory: str, feature_fn: Callable, batch_size: int = 50,
                          image_size: int | None = None,
                          network_size: int = 299) -> np.ndarray:
  """f32[N, D] features of every image below ``directory`` (sorted order).

  ``image_size=None`` takes pytorch-fid's route (each image from its native
  size to ``network_size``), an int the project's (PIL bilinear to that size
  first); see the module docstring. The last partial batch is padded to
  ``batch_size`` (so ``feature_fn`` compiles once) and the padding rows are
  dropped.
  """
  out = []
  for images, _ in iter_image_batches(directory, batch_size, image_size,
                                      native_resize=network_size):
    n = images.shape[0]
    if n < batch_size:
      images = np.concatenate(
          [images, np.zeros((batch_size - n,) + images.shape[1:], images.dtype)])
    out.append(np.asarray(feature_fn(images), np.float32)[:n])
  return np.concatenate(out)


def statistics_of_directory(directory: str, feature_fn: Callable, batch_size: int = 50,
                            image_size: int | None = None, network_size: int = 299
                            ) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of the features of every image below ``directory``.

  Args:
    directory: a folder of .jpg/.jpeg/.png files (searched recursively).
    feature_fn: e.g. ``fid_feature_fn(*load_fid_inception())``; takes
      f32[B, H, W, 3] in [-1, 1].
    batch_size: images per call (pytorch-fid uses 50).
    image_size: None (pytorch-fid's route): every image, whatever its size,
      is resized on its own from its native size to ``network_size`` with the
      network's half-pixel bilinear. An int (the project's route): each image
      is resized to that square with PIL bilinear first (e.g. 256 for real
      images compared with 256x256 generated ones); the network then resizes
      to 299.
    network_size: the FID network's input size (299).
  """
  return statistics(features_of_directory(directory, feature_fn, batch_size,
                                          image_size, network_size))
