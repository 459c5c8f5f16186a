"""The protocol of the random-access data sources, and shared item access.

Every source (``attngan.AttnGANSource``, ``coco_json.CocoJsonSource``,
``shapes.ShapesSource``, ``tfds_builders.TfdsSource``) is a ``Source``: one
split of a dataset, opened by the dataset's ``open_split`` (``datasets.py``).
It answers ``len(source)`` and ``source[i] -> dict(image=uint8[H, W, 3],
captions=list of id lists, class_id=int, key=str)``, the same three without
reading the image (``captions(i)``, ``class_id(i)``, ``key(i)``: the
evaluation and the data set check read every item's), and rejects an index
outside ``[0, len)`` with an IndexError naming the source and split
(``_index_label``).
"""

import abc
from typing import Any


class Source(abc.ABC):
  """One split of a dataset with random access (the protocol above).

  Attributes:
    split: 'train' | 'test' (or a test's own name).
    vocab: the ``text.Vocabulary`` of the captions' ids.
    on_bad_example: 'error' | 'skip': what the batch iterator does with an
      item whose read raises ``errors.BadExampleError``.
    mirror_word_pairs: word-id pairs swapped in the caption of a
      horizontally flipped image (() = none: the reference's sources).
  """

  split: str
  vocab: Any
  on_bad_example: str = "error"
  mirror_word_pairs: tuple[tuple[int, int], ...] = ()
  _index_label: str

  @abc.abstractmethod
  def __len__(self) -> int:
    """The number of items (images) of the split."""

  @abc.abstractmethod
  def __getitem__(self, i: int) -> dict[str, Any]:
    """Item ``i``: dict(image, captions, class_id, key)."""

  @abc.abstractmethod
  def captions(self, i: int) -> list[list[int]]:
    """The caption ids of item ``i`` (no image read)."""

  @abc.abstractmethod
  def class_id(self, i: int) -> int:
    """The class of item ``i`` (no image read)."""

  @abc.abstractmethod
  def key(self, i: int) -> str:
    """The key of item ``i`` (no image read)."""

  def _check(self, i: int) -> int:
    """``int(i)``; IndexError '<label> index i out of range [0, len)' otherwise."""
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"{self._index_label} index {i} out of range "
                       f"[0, {len(self)})")
    return i


class KeyedImageSource(Source):
  """Item access of a source over image files listed by key.

  A subclass sets ``keys`` (list of str), ``class_ids`` (int64[len]) and
  ``vocab`` and defines ``load_image(i)`` and ``captions(i)``.
  """

  keys: list[str]

  def __len__(self) -> int:
    return len(self.keys)

  def key(self, i: int) -> str:
    return self.keys[self._check(i)]

  def class_id(self, i: int) -> int:
    return int(self.class_ids[self._check(i)])

  def captions_text(self, i: int) -> list[str]:
    return [self.vocab.decode(c) for c in self.captions(i)]

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = self._check(i)
    return dict(image=self.load_image(i), captions=self.captions(i),
                class_id=int(self.class_ids[i]), key=self.keys[i])
