"""Readers for the AttnGAN / DM-GAN data layout (CUB birds, MS-COCO).

The layout users already have (SPEC-dmgan §7.1)::

  <data_dir>/captions.pickle              [train_caps, test_caps, ixtoword, wordtoix]
  <data_dir>/{train,test}/filenames.pickle   image keys, e.g. '002.Laysan_Albatross/...'
  <data_dir>/{train,test}/class_info.pickle  birds: class id per key (same order)
  <data_dir>/text/<key>.txt               captions, one per line (only to build the pickle)
  birds: <data_dir>/CUB_200_2011/{images.txt, bounding_boxes.txt, images/<key>.jpg}
  coco:  <data_dir>/images/<key>.jpg

All pickles may be Python-2 pickles and are read with ``encoding='latin1'``.
``captions.pickle`` is built from ``text/`` when it is missing (SPEC §7.2/§7.3:
the first ``captions_per_image`` valid lines of each file, the vocabulary over
train then test captions) and written atomically with pickle protocol 2, so
the reference code can read it too. Captions of image ``k`` of a split are
elements ``k * CPI .. k * CPI + CPI - 1`` of that split's list.

``AttnGANSource(...)[i]`` is ``dict(image=uint8[H, W, 3], captions=list of id
lists, class_id=int, key=str)``: the full-resolution image (birds: cropped to
the reference's square around the bounding box, §7.4), converted to RGB; the
random resize/crop/flip/pyramid is ``transforms.random_crop_flip_pyramid``.

Bad input. Metadata problems (a missing or unreadable pickle, one from the
other data set, counts that disagree) always raise ValueError /
FileNotFoundError naming the file. Per-image problems raise
``errors.BadExampleError`` naming the file: a key without an image or with an
empty / short caption file at construction, a corrupt or truncated image when
read. With ``on_bad_example='skip'`` the construction-time ones are left out
of the split (logged, listed in ``skipped``; captions.pickle is then not
written) and the read-time ones are replaced by the batch iterator. Greyscale,
palette and CMYK images are converted to RGB like the reference does.
"""

import functools
import itertools
import logging
import os
import pickle
import re
import tempfile
from typing import Any, Sequence

import numpy as np

from input_pipeline import errors
from input_pipeline import images
from input_pipeline import source_items
from input_pipeline import text as text_lib
from input_pipeline import transforms

DATASETS = ("birds", "coco")
SPLITS = ("train", "test")
CAPTIONS_FILE = "captions.pickle"
FILENAMES_FILE = "filenames.pickle"
CLASS_INFO_FILE = "class_info.pickle"
CUB_DIR = "CUB_200_2011"


def _load_pickle(path: str, what: str) -> Any:
  try:
    with open(path, "rb") as f:
      return pickle.load(f, encoding="latin1")
  except FileNotFoundError:
    raise
  except Exception as e:  # corrupt / truncated / not a pickle
    raise ValueError(f"cannot read {path} ({what}): {type(e).__name__}: {e}"
                     ) from e


def _as_str(key: Any) -> str:
  if isinstance(key, bytes):
    return key.decode("latin1")
  return str(key)


_KEY_PATTERNS = {
    "birds": (re.compile(r"^\d{3}\.[^/]+/[^/]+$"),
              "'NNN.Class_Name/Image_Name' (CUB)"),
    "coco": (re.compile(r"^COCO_(train|val)2014_\d{12}$"),
             "'COCO_train2014_<12 digits>' / 'COCO_val2014_...' (MS-COCO)"),
}


def check_keys_dataset(keys: Sequence[str], dataset: str, path: str) -> None:
  """Raises ValueError if ``keys`` are the *other* data set's keys.

  Catches a filenames.pickle copied from the wrong data set (CUB keys for
  COCO or the reverse); keys of neither form (a custom data set in the same
  layout) are accepted.
  """
  for other, (pattern, form) in _KEY_PATTERNS.items():
    if other == dataset:
      continue
    own = _KEY_PATTERNS.get(dataset, (None, ""))[0]
    foreign = [k for k in keys[:100] if pattern.match(k)
               and not (own is not None and own.match(k))]
    if len(foreign) == len(keys[:100]):
      raise ValueError(
          f"{path} holds {other} keys such as {keys[0]!r} (form {form}) but "
          f"the data set is {dataset!r}: the pickle belongs to another data "
          "set (check config.data.name and config.data.data_dir)")


def load_filenames(data_dir: str, split: str) -> list[str]:
  """``<data_dir>/<split>/filenames.pickle``: the split's image keys, in order."""
  path = os.path.join(data_dir, split, FILENAMES_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: expected a pickled list of the {split} split's "
        "image keys (AttnGAN layout, e.g. '002.Laysan_Albatross/"
        "Laysan_Albatross_0002_1027' or 'COCO_train2014_000000000009')")
  keys = _load_pickle(path, "a list of image keys")
  if isinstance(keys, np.ndarray):
    keys = keys.tolist()
  if not isinstance(keys, (list, tuple)) or not keys:
    raise ValueError(f"{path} must hold a non-empty list of image keys, got "
                     f"{type(keys).__name__}"
                     + (f" of length {len(keys)}" if hasattr(keys, "__len__")
                        else ""))
  keys = [_as_str(k) for k in keys]
  check_unique_keys(keys, path)
  return keys


def check_unique_keys(keys: Sequence[str], path: str) -> None:
  """Raises ValueError naming ``path`` if a key appears more than once.

  The real AttnGAN split files (CUB 8,855 / 2,933 keys) have no duplicates;
  a repeated key would silently weight its image twice.
  """
  first = {}
  repeats = []
  for j, key in enumerate(keys):
    if key in first:
      repeats.append((key, first[key], j))
    else:
      first[key] = j
  if repeats:
    key, a, b = repeats[0]
    names = sorted({k for k, _, _ in repeats})
    raise ValueError(
        f"{path} lists {len(names)} image key(s) more than once "
        f"({len(repeats)} repeated entries), e.g. {key!r} at positions {a} "
        f"and {b}; keys: {errors.first_few(names)}: each image must be listed "
        "once (remove the repeats, and delete captions.pickle if it was built "
        "from this list)")


def load_class_ids(data_dir: str, split: str, num_images: int,
                   dataset: str) -> np.ndarray:
  """Birds: ``<split>/class_info.pickle``; COCO or no such file: ``arange``."""
  path = os.path.join(data_dir, split, CLASS_INFO_FILE)
  if dataset != "birds" or not os.path.isfile(path):
    return np.arange(num_images, dtype=np.int64)
  ids = _load_pickle(path, "a list of class ids")
  try:
    ids = np.asarray([int(i) for i in ids], dtype=np.int64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path} must hold a list of integer class ids: {e}"
                     ) from e
  if ids.shape != (num_images,):
    raise ValueError(
        f"{path} holds {ids.size} class ids but {split}/{FILENAMES_FILE} "
        f"lists {num_images} images (one id per key, same order expected)")
  return ids


def load_bboxes(cub_dir: str, keys: Sequence[str]) -> dict[str, tuple]:
  """(x, y, w, h) ints of each key from CUB's images.txt + bounding_boxes.txt.

  ``images.txt`` lines are ``<id> <key>.jpg``; ``bounding_boxes.txt`` lines
  ``<id> x y w h`` (floats, truncated to int as the reference's
  ``astype(int)``). The lookup is by key, so ``images.txt`` must list every
  key of the split.
  """
  images_txt = os.path.join(cub_dir, "images.txt")
  boxes_txt = os.path.join(cub_dir, "bounding_boxes.txt")
  for path, what in ((images_txt, "'<id> <key>.jpg' lines"),
                     (boxes_txt, "'<id> x y w h' lines")):
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{path} not found: the CUB bounding-box crop needs it ({what}; "
          "it ships with CUB_200_2011.tgz)")
  key_to_id = {}
  with open(images_txt, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2:
        raise ValueError(f"{images_txt} line {n}: expected '<id> <key>.jpg', "
                         f"got {line.strip()!r}")
      image_id, name = parts
      key_to_id[os.path.splitext(name)[0]] = image_id
  id_to_box = {}
  with open(boxes_txt, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      id_to_box[parts[0]] = _parse_box(parts, f"{boxes_txt} line {n}", line)
  out = {}
  no_line, no_box = [], []
  for key in keys:
    image_id = key_to_id.get(key)
    if image_id is None:
      no_line.append(key)
    elif image_id not in id_to_box:
      no_box.append((key, image_id))
    else:
      out[key] = id_to_box[image_id]
  problems = []
  if no_line:
    which = (f"image key {no_line[0]!r}" if len(no_line) == 1 else
             f"{len(no_line)} image keys: {errors.first_few(no_line)}")
    problems.append(ValueError(
        f"{images_txt} has no line for {which} (expected e.g. "
        f"'<id> {no_line[0]}.jpg'; the bounding-box lookup is by key, so "
        "images.txt must list every image of the split): use the images.txt "
        "of CUB_200_2011.tgz"))
  if no_box:
    which = (f"image id {no_box[0][1]} (key {no_box[0][0]!r} in images.txt)"
             if len(no_box) == 1 else
             f"{len(no_box)} image ids of images.txt, e.g. id {no_box[0][1]}; "
             f"keys: {errors.first_few(k for k, _ in no_box)}")
    problems.append(ValueError(
        f"{boxes_txt} has no box for {which}: use the bounding_boxes.txt of "
        "CUB_200_2011.tgz"))
  errors.raise_problems(f"the CUB boxes in {cub_dir}", problems)
  return out


def _parse_box(parts: Sequence[str], where: str, line: str) -> tuple:
  """(x, y, w, h) ints of a '<id> x y w h' line; ValueError naming ``where``."""
  expected = (f"{where}: expected '<id> x y w h' (finite numbers, x, y >= 0, "
              f"w, h > 0), got {line.strip()!r}")
  if len(parts) != 5:
    raise ValueError(f"{expected}: {len(parts)} fields")
  try:
    values = [float(v) for v in parts[1:]]
  except ValueError:
    raise ValueError(f"{expected}: not a number") from None
  if not all(np.isfinite(values)):
    raise ValueError(f"{expected}: not finite")
  x, y, w, h = values
  if x < 0 or y < 0 or w <= 0 or h <= 0:
    raise ValueError(f"{expected}: out of range")
  return tuple(int(v) for v in values)


# ------------------------------------------------------------------ captions

def _check_caption_list(caps: Any, name: str, n_words: int,
                        path: str) -> list:
  if not isinstance(caps, (list, tuple)):
    raise ValueError(f"{path}: {name} must be a list of captions (lists of "
                     f"word ids), got {type(caps).__name__}")
  caps = list(caps)
  bad = next((j for j, c in enumerate(caps)
              if not isinstance(c, (list, tuple, np.ndarray)) or len(c) == 0),
             None)
  if bad is not None:
    raise ValueError(f"{path}: {name}[{bad}] must be a non-empty list of word "
                     f"ids, got {caps[bad]!r}")
  try:
    flat = np.fromiter(itertools.chain.from_iterable(caps), dtype=np.int64,
                       count=sum(map(len, caps)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {name} must hold integer word ids: {e}") from e
  if flat.size and (flat.min() < 1 or flat.max() >= n_words):
    j = next(j for j, c in enumerate(caps)
             if min(c) < 1 or max(c) >= n_words)
    raise ValueError(
        f"{path}: {name}[{j}] = {list(caps[j])} has word ids outside "
        f"1..{n_words - 1} (0 is '<end>', never stored in a caption)")
  return caps


def read_captions_pickle(path: str):
  """(train_captions, test_captions, Vocabulary) from a reference pickle."""
  data = _load_pickle(path, "[train_captions, test_captions, ixtoword, "
                      "wordtoix]")
  expected = ("must be a list [train_captions, test_captions, ixtoword, "
              "wordtoix] (the AttnGAN structure)")
  if not isinstance(data, (list, tuple)) or len(data) != 4:
    got = (f"a {type(data).__name__} of length {len(data)}"
           if isinstance(data, (list, tuple)) else type(data).__name__)
    raise ValueError(f"{path} {expected}, got {got}")
  train, test, ixtoword, wordtoix = data
  if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict):
    raise ValueError(f"{path} {expected}: elements 2 and 3 must be dicts, got "
                     f"{type(ixtoword).__name__} and {type(wordtoix).__name__}")
  try:
    vocab = text_lib.Vocabulary.from_ixtoword(
        {int(i): _as_str(w) for i, w in ixtoword.items()})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: bad ixtoword (element 2): {e}") from e
  mismatch = [w for i, w in vocab.ixtoword.items() if wordtoix.get(w) != i]
  if mismatch or len(wordtoix) != vocab.n_words:
    raise ValueError(
        f"{path}: wordtoix (element 3, {len(wordtoix)} words) is not the "
        f"inverse of ixtoword (element 2, {vocab.n_words} words); e.g. "
        f"{mismatch[:3]}")
  train = _check_caption_list(train, "train_captions (element 0)",
                              vocab.n_words, path)
  test = _check_caption_list(test, "test_captions (element 1)",
                             vocab.n_words, path)
  return train, test, vocab


def write_captions_pickle(path: str, train: Sequence[Sequence[int]],
                          test: Sequence[Sequence[int]],
                          vocab: text_lib.Vocabulary) -> None:
  """Writes the reference structure, protocol 2, atomically (temp + replace)."""
  data = [[[int(i) for i in c] for c in train],
          [[int(i) for i in c] for c in test],
          dict(vocab.ixtoword), dict(vocab.wordtoix)]
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      pickle.dump(data, f, protocol=2)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def caption_file(data_dir: str, key: str) -> str:
  return os.path.join(data_dir, "text", key + ".txt")


def build_captions(data_dir: str, captions_per_image: int,
                   on_bad_example: str = "error"):
  """Tokenised captions of both splits from ``text/`` and their vocabulary.

  Returns (train_ids, test_ids, Vocabulary, dropped); ids follow the
  vocabulary built over the train then the test captions (first appearance
  order). ``dropped`` maps each split to ``{image index: reason}`` of images
  whose caption file is missing, not UTF-8, empty or short of valid captions:
  with ``on_bad_example='error'`` every file is read and then one error names
  them all (count, first files; the file itself when there is one); with
  'skip' their caption slots hold empty lists and their words are not in the
  vocabulary (each logged at debug level).
  """
  errors.check_on_bad_example(on_bad_example)
  tokens = {}
  dropped = {}
  failures = []
  for split in SPLITS:
    tokens[split] = []
    dropped[split] = {}
    for k, key in enumerate(load_filenames(data_dir, split)):
      path = caption_file(data_dir, key)
      try:
        caps = text_lib.read_caption_file(path, captions_per_image)
      except errors.BadExampleError as e:
        msg = (f"{e} ({split} image key {key!r}; the captions of every "
               f"image are needed to build {CAPTIONS_FILE})")
        failures.append((type(e), msg, key))
        logging.debug("bad caption file of %s image %r: %s", split, key, msg)
        dropped[split][k] = msg
        caps = [[] for _ in range(captions_per_image)]
      tokens[split].extend(caps)
  if failures and on_bad_example != "skip":
    _raise_caption_failures(data_dir, failures)
  vocab = text_lib.build_vocabulary(
      itertools.chain(tokens["train"], tokens["test"]))
  ids = {s: [vocab.encode(c) for c in tokens[s]] for s in SPLITS}
  return ids["train"], ids["test"], vocab, dropped


def _raise_caption_failures(data_dir: str, failures) -> None:
  """One error for every unusable caption file (``(type, message, key)``)."""
  fix = ("; or set config.data.on_bad_example=skip to leave out the images "
         "whose caption file is unusable")
  if len(failures) == 1:
    cls, msg, _ = failures[0]
    raise cls(msg + fix)
  missing = [key for cls, _, key in failures
             if issubclass(cls, errors.MissingExampleFileError)]
  bad = [(msg, key) for cls, msg, key in failures
         if not issubclass(cls, errors.MissingExampleFileError)]
  parts = []
  if missing:
    parts.append(f"{len(missing)} without a caption file (expected "
                 f"{caption_file(data_dir, missing[0])}), keys "
                 f"{errors.first_few(missing)}")
  if bad:
    parts.append(f"{len(bad)} with an unusable one, keys "
                 f"{errors.first_few(k for _, k in bad)}; first: {bad[0][0]}")
  cls = errors.MissingExampleFileError if not bad else errors.BadExampleError
  raise cls(f"{len(failures)} images have no usable caption file in "
            f"{os.path.join(data_dir, 'text')}: " + "; ".join(parts) + fix)


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime_ns: int, size: int):
  del mtime_ns, size  # Cache keys only: a rewritten file is read again.
  return read_captions_pickle(path)


def load_captions(data_dir: str, captions_per_image: int,
                  on_bad_example: str = "error"):
  """(train_ids, test_ids, Vocabulary, dropped): reads or builds captions.pickle.

  ``dropped`` is ``build_captions``'s (empty when the pickle exists). The
  pickle is written only when no image was dropped: it must list the captions
  of every key of filenames.pickle for the reference (and this reader) to use
  it. The returned lists are shared between callers (cached); do not mutate.
  """
  path = os.path.join(data_dir, CAPTIONS_FILE)
  if not os.path.isfile(path):
    train, test, vocab, dropped = build_captions(
        data_dir, captions_per_image, on_bad_example)
    n_dropped = sum(len(d) for d in dropped.values())
    if n_dropped:
      logging.warning(
          "not writing %s: %d image(s) were skipped for bad caption files, so "
          "it would not match filenames.pickle; using the captions in memory",
          path, n_dropped)
      return train, test, vocab, dropped
    try:
      write_captions_pickle(path, train, test, vocab)
      logging.info("wrote %s: %d train / %d test captions, %d words", path,
                   len(train), len(test), vocab.n_words)
    except OSError as e:  # e.g. a read-only dataset mount: go on in memory
      logging.warning("could not write %s (%s); using the captions built "
                      "from text/ in memory", path, e)
    return train, test, vocab, dropped
  st = os.stat(path)
  train, test, vocab = _read_cached(os.path.abspath(path), st.st_mtime_ns,
                                    st.st_size)
  return train, test, vocab, {s: {} for s in SPLITS}


# -------------------------------------------------------------------- source

def crop_to_bbox(image: np.ndarray, box, where: str) -> np.ndarray:
  """``transforms.bbox_crop`` raising BadExampleError naming ``where``."""
  height, width = image.shape[:2]
  x1, y1, x2, y2 = transforms.bbox_crop_box(box, width, height)
  if x2 <= x1 or y2 <= y1:
    raise errors.BadExampleError(
        f"bounding box {tuple(box)} of {where} gives an empty crop "
        f"{(x1, y1, x2, y2)} of its {width}x{height} image")
  return image[y1:y2, x1:x2]


def _check_arguments(data_dir, split: str, dataset: str,
                     captions_per_image: int) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if int(captions_per_image) < 1:
    raise ValueError("config.data.captions_per_image must be >= 1, got "
                     f"{captions_per_image}")
  if not os.path.isdir(os.fspath(data_dir)):
    raise FileNotFoundError(
        f"data_dir {os.fspath(data_dir)!r}: no such directory (expected the "
        f"AttnGAN {dataset} layout)")


class AttnGANSource(source_items.KeyedImageSource):
  """Random-access source of one split of an AttnGAN-layout dataset.

  Attributes:
    split, dataset, data_dir, captions_per_image: as given.
    keys: the split's image keys (filenames.pickle order).
    class_ids: int64[len] (birds: class_info.pickle; COCO: arange).
    vocab: ``text.Vocabulary`` of captions.pickle (both splits).
    mirror_word_pairs: () -- the reference never edits captions of flipped
      images.
  """

  mirror_word_pairs: tuple[tuple[int, int], ...] = ()

  def __init__(self, data_dir: str, split: str, dataset: str = "birds",
               captions_per_image: int = 10, use_bbox: bool | None = None,
               on_bad_example: str = "error"):
    """Reads the split's metadata and captions (building captions.pickle).

    Args:
      data_dir: root of the layout (e.g. ``data/birds``).
      split: 'train' | 'test'.
      dataset: 'birds' (CUB_200_2011 images, bbox crop) | 'coco'.
      captions_per_image: CUB 10, COCO 5; must match captions.pickle.
      use_bbox: crop birds to the bounding box (default: True for birds,
        False for COCO).
      on_bad_example: 'error' (default): a key without an image file or with
        a bad caption file stops with an error naming the file; 'skip': such
        images are left out of the split, logged and listed in ``skipped``.
    """
    _check_arguments(data_dir, split, dataset, captions_per_image)
    self.on_bad_example = errors.check_on_bad_example(on_bad_example)
    self.data_dir = os.fspath(data_dir)
    self.split = split
    self.dataset = dataset
    self.captions_per_image = cpi = int(captions_per_image)
    self.use_bbox = (dataset == "birds") if use_bbox is None else bool(use_bbox)
    keys = load_filenames(self.data_dir, split)
    filenames_path = os.path.join(self.data_dir, split, FILENAMES_FILE)
    check_keys_dataset(keys, dataset, filenames_path)
    n = len(keys)
    # Every later check runs even when one fails: one error lists them all.
    problems = []
    class_ids, dropped = self._read_metadata(n, cpi, problems)
    if dataset == "birds":
      self.image_dir = os.path.join(self.data_dir, CUB_DIR, "images")
    else:
      self.image_dir = os.path.join(self.data_dir, "images")
    # (key, reason) of every image of filenames.pickle left out ('skip').
    self.skipped: list[tuple[str, str]] = [
        (keys[k], msg) for k, msg in sorted(dropped.items())]
    kept = [k for k in range(n) if k not in dropped]
    self._bboxes = self._read_bboxes([keys[k] for k in kept], problems)
    try:
      kept = [kept[j] for j in images.keep_existing(
          [keys[k] for k in kept],
          [os.path.join(self.image_dir, keys[k] + ".jpg") for k in kept],
          listed_in=filenames_path, on_bad_example=on_bad_example,
          skipped=self.skipped, label=split)]
    except errors.MissingExampleFileError as e:
      problems.append(e)
    errors.raise_problems(f"{dataset} {split} split of {self.data_dir}",
                          problems)
    if not kept:
      raise ValueError(f"every image of {filenames_path} was skipped as bad "
                       f"(e.g. {self.skipped[0][1]})")
    if self.skipped:
      logging.warning("%s", errors.skipped_summary(
          f"{dataset} {split} split", self.skipped, n))
    self._index = np.asarray(kept, dtype=np.int64)
    self.keys = [keys[k] for k in kept]
    self.class_ids = class_ids[self._index]

  def _read_metadata(self, n: int, cpi: int, problems: list):
    """Class ids [n] and this split's captions (``self._captions``); returns
    (class_ids, {index: reason} of images whose captions were dropped).
    Problems are appended to ``problems``, not raised."""
    split = self.split
    try:
      class_ids = load_class_ids(self.data_dir, split, n, self.dataset)
    except ValueError as e:
      problems.append(e)
      class_ids = np.arange(n, dtype=np.int64)
    try:
      train, test, self.vocab, dropped = load_captions(self.data_dir, cpi,
                                                       self.on_bad_example)
    except (ValueError, FileNotFoundError) as e:
      problems.append(e)
      train = test = None
      dropped = {s: {} for s in SPLITS}
    caps = train if split == "train" else test
    if caps is not None and len(caps) != n * cpi:
      problems.append(ValueError(
          f"{os.path.join(self.data_dir, CAPTIONS_FILE)} holds {len(caps)} "
          f"{split} captions but {split}/{FILENAMES_FILE} lists {n} images x "
          f"captions_per_image={cpi} = {n * cpi}: the pickle belongs to "
          "another file list, data set or captions_per_image (fix "
          "config.data.captions_per_image, or delete the pickle to rebuild it "
          "from text/)"))
    self._captions = caps
    return class_ids, dropped[split]

  def _read_bboxes(self, keys: list[str], problems: list):
    """{key: (x, y, w, h)} of ``keys`` with the bbox crop, else None."""
    if not self.use_bbox:
      return None
    try:
      return load_bboxes(os.path.join(self.data_dir, CUB_DIR), keys)
    except (ValueError, FileNotFoundError) as e:
      problems.append(e)
      return None

  @property
  def _index_label(self) -> str:
    return f"{self.dataset} {self.split}"

  def image_path(self, i: int) -> str:
    return os.path.join(self.image_dir, self.key(i) + ".jpg")

  def bbox(self, i: int) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of image i, or None without the bbox crop."""
    return None if self._bboxes is None else self._bboxes[self.key(i)]

  def captions(self, i: int) -> list[list[int]]:
    k = int(self._index[self._check(i)])
    cpi = self.captions_per_image
    return [[int(t) for t in c]
            for c in self._captions[k * cpi:(k + 1) * cpi]]

  def load_image(self, i: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB image of item i (birds: bbox-cropped).

    Raises ``errors.BadExampleError`` (``MissingExampleFileError`` for a
    missing file) naming the file and the key.
    """
    key, path = self.key(i), self.image_path(i)
    image = images.read_rgb(
        path, f"{self.dataset} {self.split} image key {key!r}")
    box = self.bbox(i)
    if box is not None:
      return crop_to_bbox(image, box, f"{path} (key {key!r})")
    return image

  def __repr__(self) -> str:
    return (f"AttnGANSource(dataset={self.dataset!r}, split={self.split!r}, "
            f"n={len(self)}, data_dir={self.data_dir!r})")


def open_split(data: Any, split: str, image_size: int) -> AttnGANSource:
  """Source 'attngan' (``datasets.SOURCES``): ``split`` of dataset
  ``data.name`` in the AttnGAN layout of ``data.data_dir`` (full-resolution
  photos, birds cropped to the bounding box; the transform resizes them)."""
  del image_size
  return AttnGANSource(data.data_dir, split, dataset=data.name,
                       captions_per_image=data.captions_per_image,
                       on_bad_example=data.on_bad_example)
