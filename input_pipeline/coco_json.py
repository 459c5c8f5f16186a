"""MS-COCO 2014 straight from the official caption JSON files.

For users who have only the COCO download, not AttnGAN's preprocessed
``coco/`` folder. Layout under ``data_dir`` (as the zips extract)::

  annotations/captions_train2014.json    (or captions_train2014.json at the top)
  annotations/captions_val2014.json
  train2014/COCO_train2014_<12 digits>.jpg
  val2014/COCO_val2014_<12 digits>.jpg
  (or one merged images/ folder holding both, as in the AttnGAN layout)
  train/filenames.pickle, test/filenames.pickle   optional, see below

Each JSON is COCO's annotation format: ``images`` = [{id, file_name, ...}],
``annotations`` = [{image_id, caption, ...}].

Split protocol (SPEC-dmgan §7.1, the AttnGAN COCO split): train = the images
of ``captions_train2014.json``, test = those of ``captions_val2014.json``.
Key = the file name without extension (``COCO_train2014_000000000009``, the
AttnGAN key). Images are ordered by key, unless ``<split>/filenames.pickle``
exists: then its keys, in its order, are the split (e.g. AttnGAN's own list,
which has 40,470 of val2014's images).

Captions follow the reference's text-file rules (SPEC-dmgan §7.2): each
image's annotations in the order they appear in the JSON file are its lines;
the first ``captions_per_image`` with at least one token are kept (a caption
of only punctuation or non-ASCII words is skipped, as an empty line is).

Vocabulary, and how it relates to AttnGAN's ``coco/captions.pickle``: built
exactly as ``attngan.build_captions`` builds it from ``text/`` -- every word of
the kept train captions then the kept test captions, no count threshold,
``0 = '<end>'``, ids 1..V in order of first appearance. AttnGAN's pickle has the
same structure but numbers its words in Python-2 dict order (not
reproducible), and it was made from AttnGAN's own ``text/`` files, whose
choice of 5 captions per image is not documented. So the ids (and possibly a
few words) differ from the AttnGAN pickle: DAMSM encoders trained on one
vocabulary cannot be used with the other (the jobs check the vocabulary
fingerprint). Users who need AttnGAN's released COCO encoders should use the
AttnGAN layout (source 'attngan') with its ``captions.pickle``.

Class ids are ``arange(len)`` (COCO: every image is its own class).
"""

import functools
import json
import logging
import os

import numpy as np

from input_pipeline import attngan
from input_pipeline import errors
from input_pipeline import images
from input_pipeline import source_items
from input_pipeline import text as text_lib

SPLITS = ("train", "test")
JSON_FILES = {"train": "captions_train2014.json",
              "test": "captions_val2014.json"}
IMAGE_DIRS = {"train": "train2014", "test": "val2014"}


def find_json(data_dir: str, split: str) -> str:
  """Path of the split's caption JSON (``annotations/`` or the top level)."""
  name = JSON_FILES[split]
  candidates = [os.path.join(data_dir, "annotations", name),
                os.path.join(data_dir, name)]
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"{candidates[0]} not found (nor {candidates[1]}): the {split} split "
      f"of source 'coco_json' is read from COCO's {name} (from "
      "annotations_trainval2014.zip)")


def read_caption_json(path: str) -> tuple[dict[str, str], dict[str, list]]:
  """({key: file_name}, {key: [caption, ...] in file order}) of one JSON.

  Raises ValueError naming the file when it is not a COCO captions file (for
  example an ``instances_*.json``, whose annotations have no 'caption').
  """
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON (truncated download?): {e}"
                     ) from e
  expected = ("a COCO captions file: {'images': [{'id', 'file_name'}, ...], "
              "'annotations': [{'image_id', 'caption'}, ...]}")
  if (not isinstance(data, dict) or not isinstance(data.get("images"), list)
      or not isinstance(data.get("annotations"), list)):
    got = (f"keys {sorted(data)[:6]}" if isinstance(data, dict)
           else type(data).__name__)
    raise ValueError(f"{path} must be {expected}; got {got}")
  id_to_key = {}
  files = {}
  for n, im in enumerate(data["images"]):
    if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
      raise ValueError(f"{path}: images[{n}] = {str(im)[:80]} has no 'id' and "
                       f"'file_name' ({expected})")
    name = str(im["file_name"])
    key = os.path.splitext(os.path.basename(name))[0]
    if key in files:
      raise ValueError(f"{path}: images[{n}] repeats the file {name!r}")
    id_to_key[im["id"]] = key
    files[key] = name
  captions = {k: [] for k in files}
  for n, ann in enumerate(data["annotations"]):
    if not isinstance(ann, dict) or "caption" not in ann:
      raise ValueError(
          f"{path}: annotations[{n}] has no 'caption' (keys "
          f"{sorted(ann)[:6] if isinstance(ann, dict) else type(ann)}): this "
          f"is not a captions_*.json ({expected})")
    key = id_to_key.get(ann.get("image_id"))
    if key is None:
      raise ValueError(f"{path}: annotations[{n}] refers to image_id "
                       f"{ann.get('image_id')!r}, which is not in its images")
    if not isinstance(ann["caption"], str):
      raise ValueError(f"{path}: annotations[{n}]['caption'] is not a string: "
                       f"{ann['caption']!r}")
    captions[key].append(ann["caption"])
  return files, captions


def _split_keys(data_dir: str, split: str, files: dict[str, str],
                json_path: str) -> list[str]:
  pickle_path = os.path.join(data_dir, split, attngan.FILENAMES_FILE)
  if not os.path.isfile(pickle_path):
    return sorted(files)
  keys = attngan.load_filenames(data_dir, split)
  attngan.check_keys_dataset(keys, "coco", pickle_path)
  missing = [k for k in keys if k not in files]
  if missing:
    raise ValueError(
        f"{len(missing)} keys of {pickle_path} are not images of {json_path}, "
        f"e.g. {missing[0]!r}: the file list belongs to another split or "
        "data set (remove it to use every image of the JSON)")
  return keys


@functools.lru_cache(maxsize=2)
def _load_cached(data_dir: str, captions_per_image: int, on_bad_example: str,
                 stamp: tuple):
  del stamp  # cache key only: the JSON files' (path, mtime, size)
  splits = {}
  tokens = []
  for split in SPLITS:
    json_path = find_json(data_dir, split)
    files, raw = read_caption_json(json_path)
    keys = _split_keys(data_dir, split, files, json_path)
    kept, caps, skipped = [], [], []
    for key in keys:
      try:
        c = text_lib.select_captions(
            raw[key], captions_per_image,
            f"{json_path}: the captions of {files[key]}")
      except errors.BadExampleError as e:
        if on_bad_example != "skip":
          raise
        logging.debug("skipping COCO %s image %r: %s", split, key, e)
        skipped.append((key, str(e)))
        continue
      kept.append(key)
      caps.append(c)
      tokens.extend(c)
    splits[split] = (kept, [files[k] for k in kept], caps, skipped, json_path)
  vocab = text_lib.build_vocabulary(tokens)
  out = {}
  for split, (kept, names, caps, skipped, json_path) in splits.items():
    ids = [[vocab.encode(c) for c in per_image] for per_image in caps]
    out[split] = (kept, names, ids, skipped, json_path)
  return out, vocab


def load(data_dir: str, captions_per_image: int, on_bad_example: str = "error"):
  """({split: (keys, file_names, caption ids, skipped, json)}, Vocabulary)."""
  stamp = []
  for split in SPLITS:
    path = find_json(data_dir, split)
    st = os.stat(path)
    stamp.append((path, st.st_mtime_ns, st.st_size))
  for split in SPLITS:
    p = os.path.join(data_dir, split, attngan.FILENAMES_FILE)
    if os.path.isfile(p):
      st = os.stat(p)
      stamp.append((p, st.st_mtime_ns, st.st_size))
  return _load_cached(os.path.abspath(data_dir), int(captions_per_image),
                      on_bad_example, tuple(stamp))


class CocoJsonSource(source_items.KeyedImageSource):
  """Random-access source of one split of MS-COCO 2014 from the JSON files.

  The same interface as ``attngan.AttnGANSource``: ``[i]`` is ``dict(image=
  uint8[H, W, 3] RGB, captions=list of id lists, class_id=int, key=str)``.

  Attributes:
    split, data_dir, captions_per_image, on_bad_example: as given.
    keys: the split's image keys; class_ids: int64 arange.
    vocab: ``text.Vocabulary`` over both splits (see the module docstring).
    json_path: the split's caption file.
    skipped: (key, reason) of images left out ('skip'): too few captions or
      no image file.
  """

  mirror_word_pairs: tuple[tuple[int, int], ...] = ()
  dataset = "coco"

  def __init__(self, data_dir: str, split: str, captions_per_image: int = 5,
               on_bad_example: str = "error"):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if int(captions_per_image) < 1:
      raise ValueError("config.data.captions_per_image must be >= 1, got "
                       f"{captions_per_image}")
    self.on_bad_example = errors.check_on_bad_example(on_bad_example)
    self.data_dir = os.fspath(data_dir)
    if not os.path.isdir(self.data_dir):
      raise FileNotFoundError(
          f"data_dir {self.data_dir!r}: no such directory (expected the COCO "
          "2014 caption JSON files and images)")
    self.split = split
    self.captions_per_image = int(captions_per_image)
    per_split, self.vocab = load(self.data_dir, self.captions_per_image,
                                 on_bad_example)
    keys, names, ids, skipped, self.json_path = per_split[split]
    self.skipped = list(skipped)
    total = len(keys) + len(self.skipped)  # before images are checked
    merged = os.path.join(self.data_dir, "images")
    image_dir = (merged if os.path.isdir(merged)
                 else os.path.join(self.data_dir, IMAGE_DIRS[split]))
    if not os.path.isdir(image_dir):
      raise FileNotFoundError(
          f"{image_dir} not found: the {split} images of source 'coco_json' "
          f"are read from {os.path.join(self.data_dir, IMAGE_DIRS[split])}/ "
          f"(or a merged {merged}/)")
    self.image_dir = image_dir
    paths = [os.path.join(image_dir, n) for n in names]
    keep = images.keep_existing(keys, paths, listed_in=self.json_path,
                                on_bad_example=on_bad_example,
                                skipped=self.skipped, label=f"COCO {split}")
    if not keep:
      raise ValueError(f"no usable image in the {split} split of "
                       f"{self.json_path}"
                       + (f" (e.g. {self.skipped[0][1]})" if self.skipped
                          else ""))
    if self.skipped:
      logging.warning("%s", errors.skipped_summary(
          f"COCO {split} split", self.skipped, total))
    self.keys = [keys[j] for j in keep]
    self._paths = [paths[j] for j in keep]
    self._captions = [ids[j] for j in keep]
    self.class_ids = np.arange(len(self.keys), dtype=np.int64)

  @property
  def _index_label(self) -> str:
    return f"coco_json {self.split}"

  def image_path(self, i: int) -> str:
    return self._paths[self._check(i)]

  def bbox(self, i: int) -> None:
    del i
    return None

  def captions(self, i: int) -> list[list[int]]:
    return [list(c) for c in self._captions[self._check(i)]]

  def load_image(self, i: int) -> np.ndarray:
    return images.read_rgb(self.image_path(i),
                           f"COCO {self.split} image key {self.key(i)!r}")

  def __repr__(self) -> str:
    return (f"CocoJsonSource(split={self.split!r}, n={len(self)}, "
            f"data_dir={self.data_dir!r})")


def open_split(data, split: str, image_size: int) -> CocoJsonSource:
  """Source 'coco_json' (``datasets.SOURCES``): ``split`` of MS-COCO 2014
  from the caption JSON files and image folders in ``data.data_dir``."""
  del image_size
  return CocoJsonSource(data.data_dir, split,
                        captions_per_image=data.captions_per_image,
                        on_bad_example=data.on_bad_example)
