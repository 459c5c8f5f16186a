"""The registry of datasets and their sources (JAX-free).

``DATASETS`` maps ``config.data.name`` to what the jobs need of a dataset:
where it can be read from (the names of its ``SOURCES``, chosen by
``config.data.source``) or, for a dataset generated in memory, its generator;
and the IS protocol that ``config.eval.is_protocol='auto'`` uses for it.
``SOURCES`` maps ``config.data.source`` to the function opening a split and
the config field naming its directory.

Every opener, of a source or a generator, is ``open_split(data, split,
image_size)`` -> a ``source_items.Source`` (``data`` = ``config.data``;
``image_size`` = the largest image size the caller will request). Openers are
named ``"module:function"`` and imported on first use, so reading the names
here (``config_validation``, ``python main.py --help``) imports no source
module, grain or JAX.

Adding a dataset: its source module (an ``open_split`` returning a
``source_items.Source``) or an existing source, one line in ``DATASETS``, and
its presets in ``configs/damsm.py`` and ``configs/gan.py``.
"""

import dataclasses
import importlib
import os
from typing import Any, Callable

# eval.is_protocol values naming an IS classifier ('none': no IS); see
# t2igan_jax/evaluation/inception_score.py and shapes_classifier.py.
IS_PROTOCOLS = ("shapes", "cub", "coco", "none")


@dataclasses.dataclass(frozen=True)
class Source:
  """A way to read datasets from files (a value of ``config.data.source``).

  Attributes:
    opener: ``"module:function"``, the ``open_split`` of the source.
    dir_field: the ``config.data`` field naming the directory it reads.
    reads: what it reads there, for messages.
    dir_required: an empty ``dir_field`` is an error (else a default).
  """
  opener: str
  dir_field: str
  reads: str
  dir_required: bool = True


SOURCES = {
    "attngan": Source(
        "input_pipeline.attngan:open_split", "data_dir",
        "the AttnGAN layout (captions.pickle, train/, test/, ...)"),
    "coco_json": Source(
        "input_pipeline.coco_json:open_split", "data_dir",
        "MS-COCO caption files (captions_train2014.json, "
        "captions_val2014.json or annotations/, train2014/, val2014/)"),
    "tfds": Source(
        "input_pipeline.tfds_builders:open_split", "tfds_data_dir",
        "a t2i_<dataset> tfds data set ('' = tfds' default data_dir)",
        dir_required=False),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What the jobs need of a dataset (a value of ``config.data.name``).

  Attributes:
    is_protocol: the IS classifier of its images (one of ``IS_PROTOCOLS``;
      'none' when there is none), used by ``eval.is_protocol='auto'``.
    sources: the ``SOURCES`` it can be read from, or () when generated.
    generator: ``"module:function"``, the ``open_split`` of a dataset
      generated in memory (it reads no ``config.data.source``).
  """
  is_protocol: str
  sources: tuple[str, ...] = ()
  generator: str = ""

  def __post_init__(self):
    if self.is_protocol not in IS_PROTOCOLS:
      raise ValueError(
          f"dataset entry {self}: is_protocol={self.is_protocol!r} is not "
          f"one of {IS_PROTOCOLS} (the IS classifier of its images; 'none' "
          "when it has none)")
    if bool(self.sources) == bool(self.generator):
      raise ValueError(f"dataset entry {self}: give its sources or its "
                       "generator (one of the two)")
    unknown = [s for s in self.sources if s not in SOURCES]
    if unknown:
      raise ValueError(f"dataset entry {self}: unknown sources {unknown} "
                       f"(the sources are {tuple(SOURCES)})")


DATASETS = {
    "shapes": Dataset("shapes", generator="input_pipeline.shapes:open_split"),
    "birds": Dataset("cub", sources=("attngan", "tfds")),
    "coco": Dataset("coco", sources=("attngan", "coco_json", "tfds")),
}


def dataset(name: str) -> Dataset:
  """The entry of ``config.data.name``; ValueError naming the field."""
  if name not in DATASETS:
    raise ValueError(f"config.data.name={name!r} is not one of "
                     f"{tuple(DATASETS)}")
  return DATASETS[name]


def source(data) -> Source | None:
  """The source ``config.data`` reads (None for a generated dataset)."""
  entry = dataset(data.name)
  if entry.generator:
    return None
  if data.source not in SOURCES:
    raise ValueError(f"config.data.source={data.source!r} is not one of "
                     f"{tuple(SOURCES)}")
  if data.source not in entry.sources:
    raise ValueError(
        f"config.data.source={data.source!r} reads "
        f"{SOURCES[data.source].reads}, not a source of dataset "
        f"{data.name!r} (its sources: {', '.join(map(repr, entry.sources))})")
  return SOURCES[data.source]


def _resolve(path: str) -> Callable[..., Any]:
  module, function = path.split(":")
  return getattr(importlib.import_module(module), function)


def open_split(data, split: str, image_size: int):
  """Split ``split`` of the dataset ``config.data`` describes."""
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  src = source(data)
  if src is None:
    return _resolve(dataset(data.name).generator)(data, split, image_size)
  directory = data[src.dir_field]
  if src.dir_required and not os.path.isdir(directory):
    raise FileNotFoundError(
        f"config.data.{src.dir_field}={directory!r}: no such directory "
        f"(expected {src.reads} of dataset {data.name!r}, source "
        f"{data.source!r})")
  return _resolve(src.opener)(data, split, image_size)


def describe(data) -> str:
  """``data set 'birds' (source 'attngan', /data/birds)``, for messages
  (also of a config naming an unknown dataset or source)."""
  entry = DATASETS.get(data.name)
  if entry is not None and entry.generator:
    return f"data set {data.name!r}"
  src = SOURCES.get(data.source)
  if src is None:
    return f"data set {data.name!r} (source {data.source!r})"
  where = data[src.dir_field] or (f"config.data.{src.dir_field}=''"
                                  if src.dir_required else "its default dir")
  return f"data set {data.name!r} (source {data.source!r}, {where})"


def resolve_is_protocol(data_name: str, is_protocol: str) -> str:
  """``config.eval.is_protocol``, with 'auto' replaced by the dataset's."""
  if is_protocol == "auto":
    return dataset(data_name).is_protocol
  return is_protocol
