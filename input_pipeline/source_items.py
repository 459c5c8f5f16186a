"""Item access shared by the random-access data sources.

Every source (``attngan.AttnGANSource``, ``coco_json.CocoJsonSource``,
``shapes.ShapesSource``, ``tfds_builders.TfdsSource``) answers ``len(source)``
and ``source[i] -> dict(image=uint8[H, W, 3], captions=list of id lists,
class_id=int, key=str)``, and rejects an index outside ``[0, len)`` with an
IndexError naming the source and split (``_index_label``).
"""

from typing import Any


class IndexedSource:
  """Index checking of a source; a subclass defines ``_index_label`` (str)."""

  _index_label: str

  def _check(self, i: int) -> int:
    """``int(i)``; IndexError '<label> index i out of range [0, len)' otherwise."""
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"{self._index_label} index {i} out of range "
                       f"[0, {len(self)})")
    return i


class KeyedImageSource(IndexedSource):
  """Item access of a source over image files listed by key.

  A subclass sets ``keys`` (list of str), ``class_ids`` (int64[len]) and
  ``vocab`` and defines ``load_image(i)`` and ``captions(i)``.
  """

  keys: list[str]

  def __len__(self) -> int:
    return len(self.keys)

  def key(self, i: int) -> str:
    return self.keys[self._check(i)]

  def captions_text(self, i: int) -> list[str]:
    return [self.vocab.decode(c) for c in self.captions(i)]

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = self._check(i)
    return dict(image=self.load_image(i), captions=self.captions(i),
                class_id=int(self.class_ids[i]), key=self.keys[i])
