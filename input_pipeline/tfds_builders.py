"""tfds builders ``t2i_birds`` / ``t2i_coco`` and the source that reads them.

The builders prepare the raw files users have -- the AttnGAN layout (birds or
COCO, ``attngan.AttnGANSource``) or, for COCO, the official caption JSON files
(``coco_json.CocoJsonSource``) -- into ``array_record`` files, with no
TensorFlow involved in preparing or reading (tfds 4.9 writes and reads
array_record through NumPy/protobuf only; TensorFlow is not installed here).
The raw folder is tfds' *manual dir*::

  python -m input_pipeline.tfds_builders --dataset=t2i_birds \
      --manual_dir=/data/birds --data_dir=/data/tfds
  python -m input_pipeline.tfds_builders --dataset=t2i_coco \
      --manual_dir=/data/coco --data_dir=/data/tfds [--captions_per_image=5]

then train with ``--config.data.source=tfds --config.data.tfds_data_dir=
/data/tfds``. One record per image, in the source's order (tfds' shuffling is
disabled, so index ``i`` is the source's item ``i``)::

  image         bytes: the image file exactly as on disk (JPEG), not decoded
  key           str: the AttnGAN key
  class_id      int64: birds: the CUB class; COCO: the image's index
  bbox          int32[4]: CUB (x, y, w, h), or -1s (no crop)
  caption_ids   int32[sum of lengths]: the image's captions concatenated
  caption_lens  int32[captions_per_image]

The vocabulary (``words``, index 0 = '<end>') and how the data set was made
are in the data set's ``metadata.json``. ``TfdsSource`` decodes a record into
the same item as the raw source (PIL ``convert('RGB')``, then the bbox crop),
so both give identical batches.

Builder configs are named ``cpi<captions_per_image>`` (``cpi10`` birds,
``cpi5`` COCO by default; other counts are built on request).
"""

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any

from etils import epath
import numpy as np

try:
  import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - tfds is a pinned requirement
  raise ImportError("source 'tfds' needs tensorflow-datasets (see "
                    "requirements.txt); TensorFlow itself is not needed") from e

from input_pipeline import attngan
from input_pipeline import coco_json
from input_pipeline import errors
from input_pipeline import images
from input_pipeline import source_items
from input_pipeline import text as text_lib

FILE_FORMAT = "array_record"
DATASET_NAMES = {"birds": "t2i_birds", "coco": "t2i_coco"}
SPLITS = ("train", "test")
_NO_BBOX = (-1, -1, -1, -1)


@dataclasses.dataclass(eq=False)
class T2IConfig(tfds.core.BuilderConfig):
  """A builder config: how many captions per image to keep."""
  captions_per_image: int = 10


def detect_layout(manual_dir: str, dataset: str) -> str:
  """'attngan' or 'coco_json': which raw layout ``manual_dir`` holds."""
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"manual_dir {manual_dir!r}: no such directory (expected the raw "
        f"{dataset} files: the AttnGAN layout"
        + (" or COCO's caption JSON files)" if dataset == "coco" else ")"))
  has_attngan = (os.path.isfile(os.path.join(manual_dir,
                                             attngan.CAPTIONS_FILE))
                 or os.path.isdir(os.path.join(manual_dir, "text")))
  if dataset == "coco" and not has_attngan:
    try:
      coco_json.find_json(manual_dir, "train")
      return "coco_json"
    except FileNotFoundError:
      pass
  return "attngan"


def open_raw_source(manual_dir: str, dataset: str, split: str,
                    captions_per_image: int, on_bad_example: str = "error"):
  """The raw source a builder prepares from (layout detected)."""
  if detect_layout(manual_dir, dataset) == "coco_json":
    return coco_json.CocoJsonSource(manual_dir, split, captions_per_image,
                                    on_bad_example=on_bad_example)
  return attngan.AttnGANSource(manual_dir, split, dataset, captions_per_image,
                               on_bad_example=on_bad_example)


class _T2IBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder of t2i_birds / t2i_coco (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Image bytes, captions, class ids, CUB boxes."}
  DATASET = ""
  # 'skip' leaves out images without a file or usable captions (logged);
  # set by ``prepare``.
  on_bad_example = "error"

  # tfds 4.9.10 finds a builder's source file through the `importlib_resources`
  # backport, which it declares only for Python < 3.9; naming the file here
  # avoids that import (and so a dependency nothing else needs).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"{self.DATASET} text-to-image data (AttnGAN split and "
                     "captions) for t2igan-jax; images stored as their files' "
                     "bytes."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Scalar(
                dtype=np.object_, doc="the image file's bytes (JPEG)"),
            "key": tfds.features.Text(),
            "class_id": tfds.features.Scalar(dtype=np.int64),
            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.int32),
            "caption_ids": tfds.features.Tensor(shape=(None,),
                                                dtype=np.int32),
            "caption_lens": tfds.features.Tensor(shape=(None,),
                                                 dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    cpi = self.builder_config.captions_per_image
    sources = {s: open_raw_source(manual_dir, self.DATASET, s, cpi,
                                  self.on_bad_example) for s in SPLITS}
    if sources["train"].vocab != sources["test"].vocab:
      raise ValueError(f"{manual_dir}: the train and test splits have "
                       "different vocabularies")
    vocab = sources["train"].vocab
    self.info.metadata["words"] = vocab.words
    self.info.metadata["vocab_fingerprint"] = vocab.fingerprint()
    self.info.metadata["captions_per_image"] = cpi
    self.info.metadata["layout"] = detect_layout(manual_dir, self.DATASET)
    self.info.metadata["skipped"] = {
        s: [list(x) for x in sources[s].skipped] for s in SPLITS}
    return {s: self._generate_examples(sources[s]) for s in SPLITS}

  def _generate_examples(self, source):
    for i in range(len(source)):
      path = source.image_path(i)
      try:
        with open(path, "rb") as f:
          data = f.read()
      except FileNotFoundError:
        raise errors.MissingExampleFileError(
            f"image file {path} not found (key {source.key(i)!r})") from None
      caps = source.captions(i)
      box = source.bbox(i)
      yield source.key(i), {
          "image": data,
          "key": source.key(i),
          "class_id": int(source.class_ids[i]),
          "bbox": np.asarray(_NO_BBOX if box is None else box, np.int32),
          "caption_ids": np.asarray([t for c in caps for t in c], np.int32),
          "caption_lens": np.asarray([len(c) for c in caps], np.int32),
      }


class T2iBirds(_T2IBuilder):
  """CUB-200-2011 birds from the AttnGAN layout (manual_dir = data/birds)."""
  name = "t2i_birds"
  DATASET = "birds"
  BUILDER_CONFIGS = [T2IConfig(name="cpi10", captions_per_image=10)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir = the AttnGAN birds folder: captions.pickle (or text/), "
      "train/ and test/ filenames.pickle + class_info.pickle, CUB_200_2011/"
      "{images.txt, bounding_boxes.txt, images/}.")


class T2iCoco(_T2IBuilder):
  """MS-COCO 2014 from the AttnGAN layout or the caption JSON files."""
  name = "t2i_coco"
  DATASET = "coco"
  BUILDER_CONFIGS = [T2IConfig(name="cpi5", captions_per_image=5)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir = the AttnGAN coco folder (captions.pickle or text/, "
      "train/ and test/ filenames.pickle, images/), or the COCO 2014 "
      "download: annotations/captions_{train,val}2014.json with train2014/ "
      "and val2014/ (or a merged images/).")


BUILDERS = {"birds": T2iBirds, "coco": T2iCoco}


def get_builder(dataset: str, data_dir: str, captions_per_image: int):
  """The builder of ``dataset`` ('birds' | 'coco') for ``cpi<N>``."""
  if dataset not in BUILDERS:
    raise ValueError(f"tfds data sets exist for {tuple(BUILDERS)}, not "
                     f"{dataset!r} (config.data.name)")
  cls = BUILDERS[dataset]
  cpi = int(captions_per_image)
  name = f"cpi{cpi}"
  config = cls.builder_configs.get(name) or T2IConfig(
      name=name, captions_per_image=cpi)
  return cls(config=config, data_dir=data_dir or None,
             file_format=FILE_FORMAT)


def prepare(dataset: str, manual_dir: str, data_dir: str,
            captions_per_image: int, on_bad_example: str = "error"):
  """Prepares (if not yet) ``t2i_<dataset>`` from ``manual_dir``; the builder."""
  errors.check_on_bad_example(on_bad_example)
  builder = get_builder(dataset, data_dir, captions_per_image)
  builder.on_bad_example = on_bad_example
  detect_layout(manual_dir, dataset)  # a clear error before tfds starts
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir)))
  return builder


def prepare_command(dataset: str, data_dir: str, cpi: int) -> str:
  return (f"python -m input_pipeline.tfds_builders --dataset="
          f"{DATASET_NAMES.get(dataset, dataset)} --manual_dir=<raw {dataset} "
          f"folder> --data_dir={data_dir or '<tfds data_dir>'} "
          f"--captions_per_image={cpi}")


class TfdsSource(source_items.Source):
  """Random-access source over a prepared ``t2i_birds`` / ``t2i_coco`` split.

  Same interface as ``attngan.AttnGANSource`` (``source_items.Source``);
  reads through ``builder.as_data_source(split)`` (array_record, no
  TensorFlow). Picklable: a worker process reopens the files.
  """

  def __init__(self, data_dir: str, dataset: str, split: str,
               captions_per_image: int, on_bad_example: str = "error"):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    self.on_bad_example = errors.check_on_bad_example(on_bad_example)
    self.dataset, self.split = dataset, split
    self.captions_per_image = int(captions_per_image)
    self.tfds_data_dir = os.fspath(data_dir or "")
    builder = get_builder(dataset, self.tfds_data_dir, captions_per_image)
    self.data_path = os.fspath(builder.data_path)
    if not builder.is_prepared():
      raise FileNotFoundError(
          f"{self.data_path}: tfds data set {builder.name}/"
          f"{builder.builder_config.name} is not prepared (config.data."
          f"tfds_data_dir={self.tfds_data_dir!r}); prepare it with: "
          + prepare_command(dataset, self.tfds_data_dir,
                            self.captions_per_image))
    meta = builder.info.metadata or {}
    if "words" not in meta:
      raise ValueError(f"{self.data_path}/metadata.json has no vocabulary "
                       "('words'): not a t2igan-jax t2i data set, or an "
                       "incomplete one (prepare it again)")
    self.vocab = text_lib.Vocabulary(list(meta["words"]))
    if meta.get("vocab_fingerprint") not in (None, self.vocab.fingerprint()):
      raise ValueError(f"{self.data_path}/metadata.json: the vocabulary does "
                       "not match its fingerprint (edited or corrupt file)")
    self.skipped = [tuple(x) for x in meta.get("skipped", {}).get(split, [])]
    self._ds = None
    self._len = len(self._data_source())

  def _data_source(self):
    if self._ds is None:
      builder = get_builder(self.dataset, self.tfds_data_dir,
                            self.captions_per_image)
      self._ds = builder.as_data_source(self.split)
    return self._ds

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_ds"] = None
    return state

  def __len__(self) -> int:
    return self._len

  @property
  def _index_label(self) -> str:
    return f"tfds {self.dataset} {self.split}"

  def record(self, i: int) -> dict[str, Any]:
    """The raw stored record ``i`` (image still encoded)."""
    return self._data_source()[self._check(i)]

  def key(self, i: int) -> str:
    return _record_key(self.record(i))

  def class_id(self, i: int) -> int:
    return int(self.record(i)["class_id"])

  def captions(self, i: int) -> list[list[int]]:
    return self._record_captions(self.record(i), i)

  def _where(self, rec: dict[str, Any], i: int) -> str:
    return (f"{self.data_path} ({self.split} record {i}, key "
            f"{_record_key(rec)!r})")

  def _record_captions(self, rec: dict[str, Any], i: int) -> list[list[int]]:
    lens = np.asarray(rec["caption_lens"]).reshape(-1)
    ids = np.asarray(rec["caption_ids"]).reshape(-1)
    if int(lens.sum()) != ids.size:
      raise errors.BadExampleError(
          f"{self._where(rec, i)}: caption_lens sum to {int(lens.sum())} but "
          f"caption_ids has {ids.size} ids (corrupt record)")
    ends = np.cumsum(lens)
    return [ids[e - n:e].astype(int).tolist() for n, e in zip(lens, ends)]

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = self._check(i)
    rec = self.record(i)
    where = self._where(rec, i)
    image = images.decode_rgb(rec["image"], where,
                              f"tfds {self.dataset} {self.split}")
    box = tuple(int(v) for v in np.asarray(rec["bbox"]).reshape(-1))
    if box != _NO_BBOX:
      image = attngan.crop_to_bbox(image, box, where)
    return dict(image=image, captions=self._record_captions(rec, i),
                class_id=int(rec["class_id"]), key=_record_key(rec))

  def __repr__(self) -> str:
    return (f"TfdsSource(dataset={self.dataset!r}, split={self.split!r}, "
            f"n={len(self)}, path={self.data_path!r})")


def _record_key(rec: dict[str, Any]) -> str:
  key = rec["key"]
  return key.decode("utf-8") if isinstance(key, bytes) else str(key)


def open_split(data, split: str, image_size: int) -> TfdsSource:
  """Source 'tfds' (``datasets.SOURCES``): ``split`` of ``t2i_<data.name>``
  prepared into ``data.tfds_data_dir`` ('' = tfds' default)."""
  del image_size
  return TfdsSource(data.tfds_data_dir, data.name, split,
                    captions_per_image=data.captions_per_image,
                    on_bad_example=data.on_bad_example)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Prepare t2i_birds / t2i_coco (tfds, array_record) from the "
      "raw files (AttnGAN layout or COCO caption JSON). No TensorFlow needed.")
  parser.add_argument("--dataset", required=True,
                      choices=sorted(DATASET_NAMES.values()))
  parser.add_argument("--manual_dir", required=True,
                      help="the raw data folder (see the README)")
  parser.add_argument("--data_dir", default="",
                      help="tfds data_dir to write to ('' = tfds' default)")
  parser.add_argument("--captions_per_image", type=int, default=0,
                      help="0 = the reference's (birds 10, COCO 5)")
  parser.add_argument("--on_bad_example", default="error",
                      choices=errors.ON_BAD_EXAMPLE)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  dataset = {v: k for k, v in DATASET_NAMES.items()}[args.dataset]
  cpi = args.captions_per_image or (10 if dataset == "birds" else 5)
  try:
    builder = prepare(dataset, args.manual_dir, args.data_dir, cpi,
                      args.on_bad_example)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for split in SPLITS:
    print(f"{builder.name}/{builder.builder_config.name} {split}: "
          f"{builder.info.splits[split].num_examples} examples")
  print(f"prepared in {builder.data_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
