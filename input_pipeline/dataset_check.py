"""One check of the whole data set before a job compiles anything.

``open_splits(config, image_size)`` opens the train and the test split and
checks what the job (``config.job``) will ask of them. Instead of stopping at
the first problem (one run per problem), it collects every problem of both
splits and of the job and raises them together (``errors.DatasetError``, one
numbered line each; a single problem keeps its own error type). Each problem
names the file or config field, the count, the first keys and the fix:

* files: keys without an image or a usable caption file, missing or bad
  ``images.txt`` / ``bounding_boxes.txt`` / pickles (``attngan.AttnGANSource``
  and the other sources collect them per split);
* sizes: a job's batch larger than the split it reads (``damsm.batch_size``
  for the DAMSM training and evaluation, ``gan.batch_size`` for the GAN);
* DAMSM retrieval: the evaluation ranks each test image's caption among
  ``damsm.retrieval_candidates`` captions, the others drawn from images of
  other classes among the images it encodes. When those images cannot supply
  them (e.g. a one-class test split) the job is refused before training,
  saying which ``damsm.retrieval_candidates`` / ``damsm.eval_batches`` would
  work, instead of failing in the evaluation after training.
"""

from typing import Any

import numpy as np

from input_pipeline import attngan
from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import source_items

# Source-construction errors that are problems of the data set, not bugs.
_DATA_ERRORS = (ValueError, FileNotFoundError)


def open_splits(config, image_size: int):
  """(train, test) sources of ``config``; raises once listing every problem."""
  sources: dict[str, Any] = {}
  problems = []
  for split in ("train", "test"):
    try:
      sources[split] = pipeline.get_source(config, split, image_size)
    except _DATA_ERRORS as e:
      problems.append(e)
  sizes = {s: _Listed.of(config, s) for s in ("train", "test")}
  problems.extend(job_problems(config, sources.get("train") or sizes["train"],
                               sources.get("test") or sizes["test"]))
  errors.raise_problems(datasets.describe(config.data), problems)
  return sources["train"], sources["test"]


class _Listed:
  """Size of a split that could not be opened: the keys its list names."""

  def __init__(self, split: str, n: int):
    self.split, self._n = split, n

  def __len__(self) -> int:
    return self._n

  @classmethod
  def of(cls, config, split: str):
    """From ``<split>/filenames.pickle`` of an AttnGAN layout, else None."""
    d = config.data
    try:
      if datasets.source(d) is not datasets.SOURCES["attngan"]:
        return None
      return cls(split, len(attngan.load_filenames(d.data_dir, split)))
    except _DATA_ERRORS:
      return None


def job_problems(config, train, test) -> list[Exception]:
  """What ``config.job`` needs of the splits that they cannot give.

  ``train`` / ``test`` are the sources, or for a split that could not be
  opened its key count (``_Listed``: only the batch sizes are checked) or
  None.
  """
  job = config.get("job", "")
  problems = []
  if job == "pretrain_damsm":
    bs = int(config.damsm.batch_size)
    problems += _batch_problems("damsm.batch_size", bs, train, "training")
    problems += _batch_problems("damsm.batch_size", bs, test, "evaluation")
    if test is not None and not isinstance(test, _Listed) and bs <= len(test):
      problem = retrieval_problem(config, test)
      if problem is not None:
        problems.append(problem)
  elif job == "train_gan":
    problems += _batch_problems("gan.batch_size", int(config.gan.batch_size),
                                train, "training")
  return problems


def _batch_problems(field: str, batch_size: int, source, use: str):
  if source is None or batch_size <= len(source):
    return []
  return [ValueError(
      f"config.{field}={batch_size} is larger than the {source.split} split "
      f"({len(source)} images): no {use} batch (batches drop the remainder); "
      f"set config.{field}={len(source)} or less, or use a larger split")]


def evaluated_items(num_items: int, batch_size: int, num_batches: int,
                    seed: int) -> np.ndarray:
  """Indices of the items a one-epoch, shuffled, drop-remainder stream reads.

  The first ``min(num_batches, num_items // batch_size)`` batches of
  ``pipeline.create_iterator(..., seed=seed, shuffle=True,
  drop_remainder=True)``; bad examples replaced under 'skip' aside.
  """
  n = min(int(num_batches), num_items // int(batch_size)) * int(batch_size)
  return pipeline.epoch_permutation(int(seed), 0, num_items)[:n]


def class_ids_of(source: source_items.Source, indices) -> np.ndarray:
  """int64 class ids of ``source`` items ``indices`` (no image decoded)."""
  return np.asarray([source.class_id(int(i)) for i in indices], np.int64)


def other_class_supply(class_ids: np.ndarray) -> int:
  """The fewest items of another class that any item of ``class_ids`` has."""
  if class_ids.size == 0:
    return 0
  _, counts = np.unique(class_ids, return_counts=True)
  return int(class_ids.size - counts.max())


def retrieval_problem(config, test) -> ValueError | None:
  """Whether the DAMSM evaluation can draw its retrieval candidates.

  Mirrors ``damsm_pretrain``: the evaluation encodes the first
  ``damsm.eval_batches`` batches of the test split shuffled with seed
  ``config.seed + 1``, and every image needs ``damsm.retrieval_candidates -
  1`` captions of images of other classes among them.
  """
  dm = config.damsm
  bs, wanted = int(dm.batch_size), int(dm.retrieval_candidates)
  seed = int(config.seed) + 1
  scored = evaluated_items(len(test), bs, dm.eval_batches, seed)
  classes = class_ids_of(test, scored)
  supply = other_class_supply(classes)
  if supply >= wanted - 1:
    return None
  all_batches = len(test) // bs
  fixes = [f"set config.damsm.retrieval_candidates={supply + 1}"
           + (" (1 scores every image as a hit: the metric is meaningless)"
              if supply == 0 else "")]
  if all_batches > dm.eval_batches:
    every = other_class_supply(class_ids_of(
        test, evaluated_items(len(test), bs, all_batches, seed)))
    if every > supply:
      fixes.append(f"set config.damsm.eval_batches={all_batches}" + (
          "" if every + 1 >= wanted else
          f" and config.damsm.retrieval_candidates={every + 1}")
                   + " (scoring the whole test split)")
  fixes.append("use a test split with more images of other classes")
  return ValueError(
      f"config.damsm.retrieval_candidates={wanted}: the DAMSM evaluation "
      f"ranks each test image's caption against {wanted - 1} captions of "
      f"images of other classes, but it encodes {scored.size} test images "
      f"({scored.size // bs} batch(es) of config.damsm.batch_size={bs}: "
      f"config.damsm.eval_batches={dm.eval_batches}, at most the "
      f"{len(test)}-image {test.split} split) of {np.unique(classes).size} class(es), which "
      f"leave some image only {supply} such captions. Refused before training "
      "so that the evaluation cannot fail after it: " + "; or ".join(fixes))
