"""Image transforms: random crop, flip and the multi-scale pyramid (SPEC-dmgan §7.5).

The reference composes ``Resize(int(imsize * 76 / 64))`` (shorter side, PIL
bilinear) -> ``RandomCrop(imsize)`` -> ``RandomHorizontalFlip()``, then resizes
the crop to each smaller stage size (PIL bilinear, antialiased when shrinking)
and maps every image to [-1, 1]. All randomness comes from the ``rng`` passed
in, so a caller that derives it from (seed, epoch, position) gets reproducible
augmentations regardless of worker scheduling.
"""

from typing import Sequence

import numpy as np
from PIL import Image


def load_size(image_size: int) -> int:
  """Shorter side before the random crop: ``int(image_size * 76 / 64)``."""
  return int(image_size * 76 / 64)


def _as_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image


def _resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
  """torchvision ``Resize(int)``: the shorter side becomes ``size``, aspect kept."""
  w, h = img.size
  if (w <= h and w == size) or (h <= w and h == size):
    return img
  if w < h:
    ow, oh = size, int(size * h / w)
  else:
    oh, ow = size, int(size * w / h)
  return img.resize((ow, oh), Image.BILINEAR)


def _to_float(img: Image.Image) -> np.ndarray:
  return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def random_crop_flip_pyramid(
    image: np.ndarray, sizes: Sequence[int], rng: np.random.Generator,
    random_crop_flip: bool = True, *, return_flipped: bool = False):
  """One image -> one float32 [s, s, 3] image in [-1, 1] per size in ``sizes``.

  Args:
    image: uint8 [H, W, 3] (or [H, W] / [H, W, 1], repeated to RGB).
    sizes: stage sizes, strictly ascending (e.g. (64, 128, 256)).
    rng: the source of the crop offsets and the flip.
    random_crop_flip: True: shorter side -> ``int(max(sizes) * 76 / 64)``
      (skipped if already so), random ``max(sizes)`` square crop, horizontal
      flip with p = 0.5. False: resize straight to ``max(sizes)`` square (the
      aspect ratio is not kept), no crop, no flip, ``rng`` unused.
    return_flipped: also return whether the image was mirrored (so a caller
      can mirror 'left'/'right' in the caption).

  Returns:
    A tuple of arrays, ascending like ``sizes``; with ``return_flipped``,
    ``(images, flipped)``.
  """
  sizes = tuple(int(s) for s in sizes)
  if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
    raise ValueError(
        f"image sizes must be positive and strictly ascending, got {sizes}")
  top = sizes[-1]
  img = Image.fromarray(_as_rgb(image))
  flipped = False
  if random_crop_flip:
    img = _resize_shorter_side(img, load_size(top))
    w, h = img.size
    i = int(rng.integers(0, h - top + 1))
    j = int(rng.integers(0, w - top + 1))
    img = img.crop((j, i, j + top, i + top))
    flipped = bool(rng.random() < 0.5)
    if flipped:
      img = img.transpose(Image.FLIP_LEFT_RIGHT)
  elif img.size != (top, top):
    img = img.resize((top, top), Image.BILINEAR)
  out = [_to_float(img.resize((s, s), Image.BILINEAR)) for s in sizes[:-1]]
  out.append(_to_float(img))
  if return_flipped:
    return tuple(out), flipped
  return tuple(out)


def bbox_crop_box(bbox: Sequence[float], width: int,
                  height: int) -> tuple[int, int, int, int]:
  """CUB bounding box -> the reference's square crop box (SPEC-dmgan §7.4).

  Args:
    bbox: (x, y, w, h) from ``bounding_boxes.txt`` (floats are truncated to
      int, as the reference's ``astype(int)``).
    width, height: the image size.

  Returns:
    (x1, y1, x2, y2), PIL ``crop`` order: a square of side 2 * int(0.75 *
    max(w, h)) around the box centre, clipped to the image (so it may be
    non-square at a border).
  """
  x, y, w, h = (int(v) for v in bbox)
  r = int(max(w, h) * 0.75)
  cx = int((2 * x + w) / 2)
  cy = int((2 * y + h) / 2)
  return (max(0, cx - r), max(0, cy - r), min(int(width), cx + r),
          min(int(height), cy + r))


def bbox_crop(image: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
  """Crops an [H, W, ...] image to ``bbox_crop_box`` (a view, no resampling)."""
  height, width = image.shape[:2]
  x1, y1, x2, y2 = bbox_crop_box(bbox, width, height)
  if x2 <= x1 or y2 <= y1:
    raise ValueError(
        f"bounding box {tuple(bbox)} gives an empty crop {(x1, y1, x2, y2)} "
        f"of a {width}x{height} image")
  return image[y1:y2, x1:x2]
