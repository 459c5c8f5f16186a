"""Decoding photos as the reference does: PIL, then ``convert('RGB')``.

The reference opens every image with ``Image.open(path).convert('RGB')``, so
greyscale ('L'), palette, RGBA and CMYK JPEGs are all accepted and converted
by PIL's rules (CMYK: PIL's plain formula, no colour profile). A missing,
corrupt or truncated file raises an error that names the file and the example
(``errors.MissingExampleFileError`` / ``errors.BadExampleError``).
"""

import io
import logging
import os
from typing import Sequence

import numpy as np
from PIL import Image

from input_pipeline.errors import BadExampleError, MissingExampleFileError


def _decode(fp, where: str, what: str) -> Image.Image:
  try:
    with Image.open(fp) as img:
      fmt = img.format
      mode = img.mode
      # convert() loads the pixels: a truncated JPEG raises here ("image file
      # is truncated"), not at open().
      rgb = img.convert("RGB")
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
  (the list that names the images), the count, the first key and its expected
  path ('error'), or is logged as a ``label`` image and appended to ``skipped``
  as ``(key, reason)`` ('skip').
  """
  found = existing_files(paths)
  missing = [j for j, p in enumerate(paths) if p not in found]
  if missing and on_bad_example != "skip":
    j = missing[0]
    raise MissingExampleFileError(
        f"{len(missing)} of the {len(paths)} keys in {listed_in} have no image "
        f"file, e.g. {keys[j]!r} (expected {paths[j]}); set "
        "config.data.on_bad_example=skip to leave them out")
  for j in missing:
    msg = f"{keys[j]!r} of {listed_in} has no image {paths[j]}"
    logging.warning("skipping %s image: %s", label, msg)
    skipped.append((keys[j], msg))
  missing = set(missing)
  return [j for j in range(len(paths)) if j not in missing]
