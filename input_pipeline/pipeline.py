"""Sources and the deterministic, checkpointable batch iterator.

``create_iterator`` yields host-local numpy batches::

  {'images': (float32[b, s, s, 3] in [-1, 1] for s in image_sizes),
   'captions': int32[b, words_num], 'caption_lens': int32[b],
   'class_ids': int32[b], 'keys': str[b]}

with rows sorted by caption length, descending and stable (the reference's
``prepare_data``). Each image visit draws one of its captions at random, fits
it to ``words_num`` (SPEC-dmgan §7.6) and augments the image (§7.5).

Determinism. Global batch ``k`` (counted from the first epoch) belongs to
epoch ``k // steps_per_epoch``; the epoch's order is a permutation drawn from
``default_rng([seed, 0, epoch])``; the item at position ``p`` of that order is
augmented with ``default_rng([seed, 1, epoch, p])``. Host ``h`` of ``P`` takes
positions ``h, h + P, ...`` of each global batch, so the hosts' rows together
are exactly the single-host batch (same images, same captions, same crops).
Nothing depends on worker scheduling: batch ``k`` is a pure function of ``k``.

Bad examples. With ``on_bad_example='skip'`` an item whose read raises
``errors.BadExampleError`` (missing, corrupt or truncated image, unusable
captions) is replaced by an item drawn from ``default_rng([seed, 2, epoch, p,
attempt])``, logged, and counted in ``BatchIterator.num_skipped`` (also in
``get_state()['num_skipped']``); with 'error' (default) the error stops the run.

State. ``get_state()`` is a small JSON dict (``next_batch`` plus the settings
that define the stream); ``set_state`` continues with exactly the batches an
uninterrupted iterator would have produced, for any ``num_workers`` and any
``process_count`` with the same global batch. Worker processes
(``num_workers > 0``) come from grain's ``mp_prefetch`` over a ``MapDataset``
of batch indices; the iterator is a ``grain.DatasetIterator``, so grain's
orbax ``CheckpointSave/Restore`` handle it as well as plain JSON does.
"""

import logging
import math
import sys
from typing import Any, Sequence

from absl import flags
import grain
import numpy as np

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import source_items
from input_pipeline import text as text_lib
from input_pipeline import transforms

_STATE_VERSION = 1
_SKIPPED = "skipped_examples"
# 'skip': how many other items are tried in place of a bad one before giving up.
_MAX_REPLACEMENTS = 16
# 'skip': bad examples logged as warnings before the log goes to debug level.
_WARNED_SKIPS = 20


def stage_sizes(config) -> tuple[int, ...]:
  """GAN stage image sizes: ``base_size * 2**i`` for ``i < branch_num``."""
  d = config.data
  if d.base_size < 1 or d.branch_num < 1:
    raise ValueError(
        f"config.data.base_size ({d.base_size}) and config.data.branch_num "
        f"({d.branch_num}) must be >= 1")
  return tuple(int(d.base_size) * 2**i for i in range(int(d.branch_num)))


def get_source(config, split: str, image_size: int):
  """The random-access source of ``split`` ('train' | 'test').

  Opened as the dataset registry says (``datasets.open_split``: by
  ``config.data.name`` and ``config.data.source``). ``image_size`` is the
  largest image size the caller will request; shapes images are rendered
  directly at the size the transform needs, birds/COCO sources return
  full-resolution photos (birds cropped to the bounding box) that the
  transform resizes.
  """
  return datasets.open_split(config.data, split, image_size)


def steps_per_epoch(num_items: int, global_batch_size: int,
                    drop_remainder: bool = True) -> int:
  """Batches per epoch: ``floor`` (dropping the remainder) or ``ceil``."""
  if global_batch_size < 1:
    raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
  if drop_remainder:
    return num_items // global_batch_size
  return math.ceil(num_items / global_batch_size)


def epoch_permutation(seed: int, epoch: int, num_items: int) -> np.ndarray:
  """The item order of ``epoch`` of a shuffled stream seeded with ``seed``."""
  return np.random.default_rng([seed, 0, epoch]).permutation(num_items)


class _BatchBuilder:
  """Batch index -> host-local batch dict; a pure function of the index.

  Picklable (sent to grain worker processes); the epoch permutation is cached
  per process.
  """

  def __init__(self, source, *, num_items, global_batch_size, image_sizes,
               words_num, seed, truncation, random_crop_flip, shuffle,
               drop_remainder, process_index, process_count, mirror_pairs,
               on_bad_example="error"):
    self.source = source
    self.on_bad_example = on_bad_example
    self.num_items = num_items
    self.global_batch_size = global_batch_size
    self.image_sizes = image_sizes
    self.words_num = words_num
    self.seed = seed
    self.truncation = truncation
    self.random_crop_flip = random_crop_flip
    self.shuffle = shuffle
    self.process_index = process_index
    self.process_count = process_count
    self.mirror_pairs = mirror_pairs
    self.steps_per_epoch = steps_per_epoch(num_items, global_batch_size,
                                           drop_remainder)
    self._order_epoch = None
    self._order = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_order_epoch"] = state["_order"] = None
    return state

  def epoch_order(self, epoch: int) -> np.ndarray:
    if self._order_epoch != epoch:
      if self.shuffle:
        self._order = epoch_permutation(self.seed, epoch, self.num_items)
      else:
        self._order = np.arange(self.num_items)
      self._order_epoch = epoch
    return self._order

  def positions(self, k: int) -> tuple[int, range]:
    """(epoch, this host's positions in the epoch order) of global batch k."""
    epoch, step = divmod(int(k), self.steps_per_epoch)
    start = step * self.global_batch_size
    stop = min(start + self.global_batch_size, self.num_items)
    return epoch, range(start + self.process_index, stop, self.process_count)

  def _read_checked(self, index: int) -> dict[str, Any]:
    """``source[index]``; BadExampleError if it has no captions."""
    ex = self.source[index]
    if not ex["captions"]:
      raise errors.BadExampleError(f"item {ex['key']!r} has no captions")
    return ex

  def read(self, index: int, epoch: int, position: int, skipped: list):
    """``source[index]``; with 'skip', a bad item is replaced by another.

    The replacement is drawn from ``default_rng([seed, 2, epoch, position,
    attempt])``, so batches stay a pure function of their index. Each bad
    item's message is appended to ``skipped``.
    """
    try:
      return self._read_checked(index)
    except errors.BadExampleError as e:
      if self.on_bad_example != "skip":
        raise
      skipped.append(str(e))
    for attempt in range(1, _MAX_REPLACEMENTS + 1):
      other = int(np.random.default_rng(
          [self.seed, 2, epoch, position, attempt]).integers(self.num_items))
      try:
        return self._read_checked(other)
      except errors.BadExampleError as e:
        skipped.append(str(e))
    raise errors.BadExampleError(
        f"{_MAX_REPLACEMENTS + 1} bad examples in a row while filling one "
        f"batch position (on_bad_example='skip'); is the data set readable? "
        f"Last: {skipped[-1]}")

  def item(self, ex: dict[str, Any], rng: np.random.Generator):
    captions = ex["captions"]
    ids = list(captions[int(rng.integers(len(captions)))])
    images, flipped = transforms.random_crop_flip_pyramid(
        ex["image"], self.image_sizes, rng, self.random_crop_flip,
        return_flipped=True)
    if flipped and self.mirror_pairs:
      swap = {}
      for a, b in self.mirror_pairs:
        swap[a], swap[b] = b, a
      ids = [swap.get(i, i) for i in ids]
    caption, length = text_lib.fit_caption(ids, self.words_num, rng,
                                           self.truncation)
    return images, caption, length, int(ex["class_id"]), str(ex["key"])

  def __call__(self, k: int) -> dict[str, Any]:
    epoch, positions = self.positions(k)
    order = self.epoch_order(epoch)
    skipped = []
    rows = [self.item(self.read(int(order[p]), epoch, p, skipped),
                      np.random.default_rng([self.seed, 1, epoch, p]))
            for p in positions]
    lens = np.asarray([r[2] for r in rows], np.int32)
    perm = np.argsort(-lens, kind="stable")
    rows = [rows[i] for i in perm]
    b = len(rows)
    if b:
      images = tuple(np.stack([r[0][j] for r in rows])
                     for j in range(len(self.image_sizes)))
      captions = np.stack([r[1] for r in rows]).astype(np.int32)
    else:  # a host's share of a short last batch can be empty
      images = tuple(np.zeros((0, s, s, 3), np.float32)
                     for s in self.image_sizes)
      captions = np.zeros((0, self.words_num), np.int32)
    return {
        "images": images,
        "captions": captions,
        "caption_lens": lens[perm],
        "class_ids": np.asarray([r[3] for r in rows], np.int32).reshape(b),
        "keys": np.asarray([r[4] for r in rows], dtype=np.str_).reshape(b),
        # Popped by BatchIterator (counted and logged in the main process).
        _SKIPPED: np.asarray(skipped, dtype=np.str_).reshape(len(skipped)),
    }


def _plain_copy(batch: dict[str, Any]) -> dict[str, Any]:
  return {k: (tuple(np.array(a) for a in v) if isinstance(v, tuple)
              else np.array(v)) for k, v in batch.items()}


class BatchIterator(grain.DatasetIterator):
  """Iterator over host-local batches with exact ``get_state``/``set_state``.

  Attributes:
    steps_per_epoch: global batches per epoch.
    num_batches: total batches (``sys.maxsize`` when repeating forever).
  """

  def __init__(self, builder: _BatchBuilder, *, num_batches: int,
               num_workers: int, stream: dict[str, Any]):
    super().__init__()
    self._builder = builder
    self.num_batches = num_batches
    self.steps_per_epoch = builder.steps_per_epoch
    self._num_workers = num_workers
    self._stream = stream
    self._next = 0
    self._num_skipped = 0
    self._grain_iter = None

  @property
  def num_skipped(self) -> int:
    """Bad examples skipped (``on_bad_example='skip'``) by the batches so far.

    Counts replacements made while reading; it is part of ``get_state`` so a
    resumed run continues the count. Examples left out when the source was
    built are in ``source.skipped`` instead.
    """
    return self._num_skipped

  @property
  def next_batch(self) -> int:
    """Index (from the first epoch) of the batch ``next()`` returns."""
    return self._next

  @property
  def epoch(self) -> int:
    """Epoch of the batch ``next()`` returns."""
    return self._next // self.steps_per_epoch

  def _start_workers(self):
    # grain reads absl flags (--grain_*) while starting workers; outside an
    # absl app (tests, notebooks) they are unparsed, so take the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = grain.MapDataset.range(self._next, self.num_batches).map(
        self._builder)
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=self._num_workers, per_worker_buffer_size=2))
    self._grain_iter = iter(ds)

  def __next__(self) -> dict[str, Any]:
    self._assert_not_closed()
    if self._next >= self.num_batches:
      raise StopIteration
    if self._num_workers > 0:
      if self._grain_iter is None:
        self._start_workers()
      # Worker outputs are views of grain shared memory; own plain copies so
      # the memory is released as soon as grain's arrays are dropped.
      batch = _plain_copy(next(self._grain_iter))
    else:
      batch = self._builder(self._next)
    self._log_skipped(batch.pop(_SKIPPED).tolist())
    self._next += 1
    return batch

  def _log_skipped(self, skipped: list[str]) -> None:
    """Counts a batch's bad examples; one log line for the batch.

    The first ``_WARNED_SKIPS`` skips are warnings, later batches are logged
    at debug level (the count stays in ``num_skipped``).
    """
    if not skipped:
      return
    before = self._num_skipped
    self._num_skipped += len(skipped)
    for msg in skipped[1:]:
      logging.debug("skipped a bad example: %s", msg)
    what = ("a bad example" if len(skipped) == 1
            else f"{len(skipped)} bad examples")
    quiet = ""
    if before < _WARNED_SKIPS <= self._num_skipped:
      quiet = (f"; further skips are logged at debug level (the count is "
               f"the data/skipped_examples metric)")
    logging.log(logging.WARNING if before < _WARNED_SKIPS else logging.DEBUG,
                "skipped %s in batch %d (%d so far; on_bad_example=skip): "
                "%s%s", what, self._next, self._num_skipped, skipped[0], quiet)

  def get_state(self) -> dict[str, Any]:
    return {"version": _STATE_VERSION, "next_batch": self._next,
            "num_skipped": self._num_skipped, **self._stream}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != _STATE_VERSION:
      raise ValueError(f"data iterator state version {state.get('version')!r} "
                       f"is not {_STATE_VERSION}: {state}")
    for key, value in self._stream.items():
      if state.get(key) != value:
        raise ValueError(
            f"data iterator state was saved with {key}={state.get(key)!r} but "
            f"this iterator has {key}={value!r}; the saved position does not "
            "apply to this data stream")
    next_batch = int(state["next_batch"])
    if next_batch < 0:
      raise ValueError(f"data iterator state has next_batch={next_batch}")
    self._stop_workers()
    self._next = next_batch
    self._num_skipped = int(state.get("num_skipped", 0))

  def _stop_workers(self):
    it = getattr(self, "_grain_iter", None)
    if it is not None:
      self._grain_iter = None
      it.close()

  def close(self) -> None:
    self._stop_workers()
    super().close()

  def __repr__(self) -> str:
    return (f"BatchIterator(next_batch={self._next}, "
            f"steps_per_epoch={self.steps_per_epoch}, {self._stream})")


def _check_batching(split: str, num_items: int, global_batch_size: int,
                    drop_remainder: bool, process_index: int,
                    process_count: int) -> None:
  """ValueError unless the split yields global batches shared by the hosts."""
  if global_batch_size < 1:
    raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in "
                     f"[0, process_count={process_count})")
  if global_batch_size % process_count:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the "
        f"process count {process_count}")
  if num_items < 1:
    raise ValueError(f"the {split} split is empty")
  if drop_remainder and global_batch_size > num_items:
    raise ValueError(
        f"global batch size {global_batch_size} is larger than the {split} "
        f"split ({num_items} items): with drop_remainder no batch is left")


def create_iterator(source: source_items.Source, *, global_batch_size: int,
                    image_sizes: Sequence[int], words_num: int, seed: int,
                    truncation: str, random_crop_flip: bool = True,
                    shuffle: bool = True, drop_remainder: bool = True,
                    num_epochs: int | None = None, process_index: int = 0,
                    process_count: int = 1, num_workers: int = 0,
                    mirror_captions: bool = True,
                    on_bad_example: str | None = None) -> BatchIterator:
  """A deterministic, resumable iterator of host-local batches.

  Args:
    source: a ``source_items.Source`` (``len``, ``[i]`` -> dict(image uint8
      [H, W, 3], captions list of id lists, class_id, key)), e.g.
      ``get_source(...)``.
    global_batch_size: rows per step over all hosts.
    image_sizes: strictly ascending output sizes (one image array per size).
    words_num: caption length after padding/truncation.
    seed: >= 0; the shuffle, caption choice and augmentation derive from it.
    truncation: 'random_subset' | 'prefix' (config.data.caption_truncation).
    random_crop_flip: SPEC §7.5 augmentation; False resizes to the top size.
    shuffle: a fresh permutation per epoch; False keeps source order.
    drop_remainder: drop each epoch's last partial global batch.
    num_epochs: None repeats forever.
    process_index, process_count: this host and the number of hosts; each
      host gets ``global_batch_size // process_count`` rows per step.
    num_workers: 0 builds batches in this process; > 0 uses grain worker
      processes (same stream).
    mirror_captions: when an image is flipped, swap the source's
      ``mirror_word_pairs`` ('left' <-> 'right' for shapes) in its caption.
    on_bad_example: 'error' | 'skip' (an item whose read raises
      ``errors.BadExampleError`` is replaced, logged and counted in
      ``num_skipped``); None: the source's ``on_bad_example``.
  """
  num_items = len(source)
  _check_batching(source.split, num_items, global_batch_size, drop_remainder,
                  process_index, process_count)
  image_sizes = tuple(int(s) for s in image_sizes)
  if (not image_sizes or any(s < 1 for s in image_sizes)
      or list(image_sizes) != sorted(set(image_sizes))):
    raise ValueError(
        f"image_sizes must be positive and strictly ascending, got "
        f"{image_sizes}")
  if words_num < 1:
    raise ValueError(f"words_num must be >= 1, got {words_num}")
  text_lib.check_truncation(truncation)
  if int(seed) < 0:
    raise ValueError(f"the data seed must be >= 0, got {seed}")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
  if on_bad_example is None:
    on_bad_example = source.on_bad_example
  errors.check_on_bad_example(on_bad_example)
  if num_workers < 0:
    raise ValueError(
        f"config.data.num_workers must be >= 0, got {num_workers}")
  mirror_pairs = (tuple(tuple(int(i) for i in pair) for pair in
                        source.mirror_word_pairs)
                  if mirror_captions and random_crop_flip else ())
  builder = _BatchBuilder(
      source, num_items=num_items, global_batch_size=int(global_batch_size),
      image_sizes=image_sizes, words_num=int(words_num), seed=int(seed),
      truncation=truncation, random_crop_flip=bool(random_crop_flip),
      shuffle=bool(shuffle), drop_remainder=bool(drop_remainder),
      process_index=int(process_index), process_count=int(process_count),
      mirror_pairs=mirror_pairs, on_bad_example=on_bad_example)
  spe = builder.steps_per_epoch
  num_batches = sys.maxsize if num_epochs is None else spe * int(num_epochs)
  stream = {"seed": int(seed), "num_items": num_items,
            "global_batch_size": int(global_batch_size),
            "shuffle": bool(shuffle), "drop_remainder": bool(drop_remainder)}
  return BatchIterator(builder, num_batches=num_batches,
                       num_workers=int(num_workers), stream=stream)


def create_train_iterator(config, source, *, global_batch_size: int,
                          image_sizes, words_num: int) -> "BatchIterator":
  """The endless, shuffled training stream of a job, as its config sets it.

  Host-local: each process reads its shard of every global batch.
  """
  import jax  # pylint: disable=g-import-not-at-top
  return create_iterator(
      source, global_batch_size=global_batch_size, image_sizes=image_sizes,
      words_num=words_num, seed=config.seed,
      truncation=config.data.caption_truncation,
      random_crop_flip=config.data.random_crop_flip, shuffle=True,
      drop_remainder=True, num_epochs=None,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data.num_workers,
      on_bad_example=config.data.on_bad_example)
