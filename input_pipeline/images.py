"""Decoding photos as the reference does: PIL, then ``convert('RGB')``.

The reference opens every image with ``Image.open(path).convert('RGB')``, so
greyscale ('L'), palette, RGBA and CMYK JPEGs are all accepted and converted
by PIL's rules (CMYK: PIL's plain formula, no colour profile). A missing,
corrupt or truncated file raises an error that names the file and the example
(``errors.MissingExampleFileError`` / ``errors.BadExampleError``).

Where PIL's rules give garbage, the image is converted or refused instead:
16-bit greyscale (PNG/TIFF, PIL modes 'I;16*'), which ``convert('RGB')``
clips to white above 255, is scaled to 8 bits (``round(v / 257)``); 32-bit
integer and float greyscale (modes 'I', 'F'), whose range is unknown, are
refused naming the file. An image over PIL's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``, error at twice it) is refused naming the file
and the limit, not raised as PIL's own exception.
"""

import io
import logging
import os
from typing import Sequence

import numpy as np
from PIL import Image

from input_pipeline import errors
from input_pipeline.errors import BadExampleError, MissingExampleFileError


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_REFUSED_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def _to_rgb(img: Image.Image, where: str, what: str) -> Image.Image:
  """``img.convert('RGB')``, scaling 16-bit greyscale to 8 bits first."""
  if img.mode in _SIXTEEN_BIT_MODES:
    wide = np.asarray(img, dtype=np.uint32)
    grey = ((wide * 2 + 257) // 514).astype(np.uint8)  # round(v / 257)
    return Image.fromarray(grey).convert("RGB")
  if img.mode in _REFUSED_MODES:
    raise BadExampleError(
        f"{where}: {_REFUSED_MODES[img.mode]} greyscale {img.format} image "
        f"(PIL mode {img.mode!r}, value range unknown) ({what}); convert it "
        "to 8-bit (e.g. an RGB JPEG or PNG)")
  return img.convert("RGB")


def _decode(fp, where: str, what: str) -> Image.Image:
  try:
    with Image.open(fp) as img:
      fmt = img.format
      mode = img.mode
      # convert() loads the pixels: a truncated JPEG raises here ("image file
      # is truncated"), not at open().
      rgb = _to_rgb(img, where, what)
  except BadExampleError:
    raise
  except Image.DecompressionBombError as e:
    raise BadExampleError(
        f"{where}: image too large ({what}): {e} (PIL refuses images over "
        f"2 x Image.MAX_IMAGE_PIXELS = {2 * Image.MAX_IMAGE_PIXELS} pixels); "
        "resize it, or leave it out with config.data.on_bad_example=skip"
        ) from None
  except Image.UnidentifiedImageError as e:
    raise BadExampleError(
        f"{where}: not a readable image ({what}; corrupt file or not an "
        f"image format PIL knows): {e}") from e
  except (OSError, SyntaxError, ValueError) as e:
    raise BadExampleError(
        f"{where}: cannot decode the image ({what}; truncated or corrupt "
        f"file?): {type(e).__name__}: {e}") from e
  if rgb.size[0] < 1 or rgb.size[1] < 1:
    raise BadExampleError(f"{where}: empty {fmt} image ({mode}, size "
                          f"{rgb.size}) ({what})")
  return rgb


def read_rgb(path: str, what: str) -> np.ndarray:
  """uint8 [H, W, 3] of the image file at ``path``.

  Args:
    path: the image file.
    what: the example it belongs to, for messages (e.g. "birds train key
      '001.Black_footed_Albatross/...'").
  """
  if not os.path.isfile(path):
    raise MissingExampleFileError(f"image file {path} not found ({what})")
  return np.asarray(_decode(path, path, what), dtype=np.uint8)


def decode_rgb(data: bytes, where: str, what: str) -> np.ndarray:
  """uint8 [H, W, 3] of encoded image bytes (as stored by the tfds builders)."""
  if not data:
    raise BadExampleError(f"{where}: the stored image is empty ({what})")
  return np.asarray(_decode(io.BytesIO(data), where, what), dtype=np.uint8)


def existing_files(paths) -> set[str]:
  """The subset of ``paths`` that are files; one ``scandir`` per directory.

  Much faster than ``os.path.isfile`` per path for the 120k COCO images.
  """
  by_dir: dict[str, list[str]] = {}
  for p in paths:
    by_dir.setdefault(os.path.dirname(p), []).append(p)
  found = set()
  for directory, members in by_dir.items():
    try:
      with os.scandir(directory or ".") as it:
        names = {e.name for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
      continue
    found.update(p for p in members if os.path.basename(p) in names)
  return found


def keep_existing(keys: Sequence[str], paths: Sequence[str], *, listed_in: str,
                  on_bad_example: str, skipped: list, label: str) -> list[int]:
  """Indices of the examples whose image file ``paths[j]`` exists.

  A missing file stops with ``MissingExampleFileError`` naming ``listed_in``
  (the list that names the images), the count, the first keys and the first
  expected path ('error'), or is logged (debug level) as a ``label`` image and
  appended to ``skipped`` as ``(key, reason)`` ('skip'; the caller logs one
  summary line).
  """
  found = existing_files(paths)
  missing = [j for j, p in enumerate(paths) if p not in found]
  if missing and on_bad_example != "skip":
    j = missing[0]
    raise MissingExampleFileError(
        f"{len(missing)} of the {len(paths)} keys in {listed_in} have no image "
        f"file, e.g. {keys[j]!r} (expected {paths[j]}); keys: "
        f"{errors.first_few(keys[m] for m in missing)}; add the files, or set "
        "config.data.on_bad_example=skip to leave them out")
  for j in missing:
    msg = f"{keys[j]!r} of {listed_in} has no image {paths[j]}"
    logging.debug("skipping %s image: %s", label, msg)
    skipped.append((keys[j], msg))
  missing = set(missing)
  return [j for j in range(len(paths)) if j not in missing]
