"""Caption text: AttnGAN tokenisation, the vocabulary and caption fitting.

Follows SPEC-dmgan §7.2 (tokenisation), §7.3 (vocabulary layout) and §7.6
(caption sampling and truncation):

* ``tokenize``: replace U+FFFD U+FFFD with a space, lowercase, ``\\w+`` runs,
  each token ASCII-encoded with errors ignored, empty tokens dropped.
* ``Vocabulary``: ``ixtoword`` / ``wordtoix`` with index 0 = ``'<end>'``, the
  padding id (captions themselves never contain 0).
* ``fit_caption``: a caption of ``n`` ids -> ``[words_num]`` int32 ids and a
  length; long captions lose random words (reference) or their tail ('prefix').
"""

import hashlib
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from input_pipeline.errors import BadExampleError
from input_pipeline.errors import MissingExampleFileError

END_TOKEN = "<end>"
TRUNCATIONS = ("random_subset", "prefix")

_WORD_RE = re.compile(r"\w+")  # str pattern: Unicode word characters.


def tokenize(line: str) -> list[str]:
  """Splits one caption line into AttnGAN tokens (SPEC-dmgan §7.2).

  ``nltk.tokenize.RegexpTokenizer(r'\\w+')`` is ``re.findall`` with the same
  pattern, so nltk is not needed. Non-ASCII letters are removed *inside* a
  token by the ASCII encode ('café' -> 'caf'); a token made only of them
  disappears.
  """
  line = line.replace("\ufffd\ufffd", " ").lower()
  tokens = []
  for token in _WORD_RE.findall(line):
    token = token.encode("ascii", "ignore").decode("ascii")
    if token:
      tokens.append(token)
  return tokens


def select_captions(lines: Iterable[str], captions_per_image: int,
                    where: str) -> list[list[str]]:
  """The first ``captions_per_image`` captions of ``lines`` with a token.

  Empty lines and lines without any token the reference keeps (only
  punctuation, or only non-ASCII words, which its ASCII encode removes: every
  word out of the vocabulary) are skipped, as the reference skips them.

  Args:
    lines: raw caption strings, in file order.
    captions_per_image: how many to keep.
    where: the file (and image) the lines come from, for messages.

  Raises:
    errors.BadExampleError naming ``where`` when there are fewer valid
    captions than requested (the reference only printed an error and went on
    with a short list, which misaligns caption ids).
  """
  if captions_per_image < 1:
    raise ValueError(
        f"captions_per_image must be >= 1, got {captions_per_image}")
  captions = []
  n_lines = 0
  no_words = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    n_lines += 1
    tokens = tokenize(line)
    if not tokens:
      no_words.append((n, line))
      continue
    captions.append(tokens)
    if len(captions) == captions_per_image:
      return captions
  if n_lines == 0:
    raise BadExampleError(
        f"{where} is empty: no caption at all (expected at least "
        f"captions_per_image={captions_per_image}, one per line)")
  detail = ""
  if no_words:
    shown = ", ".join(f"{n}: {line.strip()[:40]!r}" for n, line in no_words[:3])
    detail = (f"; {len(no_words)} caption(s) have no word the AttnGAN "
              f"tokenizer keeps (only punctuation or non-ASCII words, all out "
              f"of the vocabulary), e.g. {shown}")
  raise BadExampleError(
      f"{where} has {len(captions)} valid captions, fewer than "
      f"captions_per_image={captions_per_image}{detail}")


def read_caption_file(path: str | os.PathLike,
                      captions_per_image: int) -> list[list[str]]:
  """Reads the first ``captions_per_image`` valid captions of a text file.

  Lines are split on '\\n' and chosen by ``select_captions``. The file is
  decoded as strict UTF-8, as the reference decodes it (U+FFFD characters
  stored in the file, which the reference data has in pairs for a lost
  character, are text like any other). Raises
  ``errors.MissingExampleFileError`` if the file does not exist and
  ``errors.BadExampleError`` (a ValueError) naming it when it is not UTF-8
  text (e.g. random bytes, which would add gibberish words to the
  vocabulary) or has fewer valid captions than requested.
  """
  if captions_per_image < 1:
    raise ValueError(
        f"captions_per_image must be >= 1, got {captions_per_image}")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise MissingExampleFileError(
        f"caption file {os.fspath(path)} not found (expected one caption per "
        "line)") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise BadExampleError(
        f"caption file {os.fspath(path)} is not UTF-8 text: byte "
        f"{data[e.start:e.start + 1]!r} at offset {e.start} (line {line}) "
        "cannot be decoded (a binary or corrupt file, or another text "
        "encoding: convert it to UTF-8)") from None
  return select_captions(text.split("\n"), captions_per_image,
                         f"caption file {os.fspath(path)}")


class Vocabulary:
  """Word <-> id maps; id 0 is ``'<end>'`` (padding), words are ids 1..V.

  Attributes:
    ixtoword: dict id -> word (ids 0..n_words-1, contiguous).
    wordtoix: the inverse dict word -> id.
  """

  def __init__(self, words: Sequence[str]):
    """Builds the vocabulary from its words in id order (``words[0]`` is '<end>')."""
    words = list(words)
    if not words or words[0] != END_TOKEN:
      raise ValueError(
          f"a vocabulary's word 0 must be {END_TOKEN!r}, got "
          f"{words[0] if words else 'an empty word list'!r}")
    wordtoix = {}
    for i, w in enumerate(words):
      if not isinstance(w, str) or not w:
        raise ValueError(f"vocabulary word {i} is not a non-empty string: {w!r}")
      if w in wordtoix:
        raise ValueError(
            f"vocabulary word {w!r} appears twice (ids {wordtoix[w]} and {i})")
      wordtoix[w] = i
    self.ixtoword: dict[int, str] = dict(enumerate(words))
    self.wordtoix: dict[str, int] = wordtoix

  @classmethod
  def from_ixtoword(cls, ixtoword: dict[int, str]) -> "Vocabulary":
    """From the reference ``captions.pickle`` dict (ids must be 0..V contiguous)."""
    ids = sorted(int(i) for i in ixtoword)
    if ids != list(range(len(ids))):
      raise ValueError("ixtoword ids are not contiguous from 0 "
                       f"({len(ids)} ids, max {ids[-1] if ids else None})")
    return cls([ixtoword[i] for i in ids])

  @property
  def n_words(self) -> int:
    """Number of ids including '<end>' (the embedding table size)."""
    return len(self.ixtoword)

  @property
  def words(self) -> list[str]:
    """All words in id order (index 0 is '<end>')."""
    return [self.ixtoword[i] for i in range(self.n_words)]

  def encode(self, tokens: Iterable[str]) -> list[int]:
    """Token strings -> ids; raises ValueError naming an unknown word."""
    ids = []
    for t in tokens:
      i = self.wordtoix.get(t)
      if i is None or i == 0:
        raise ValueError(f"word {t!r} is not in the vocabulary "
                         f"({self.n_words} words)")
      ids.append(i)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Ids -> space-joined words, stopping at the first 0 ('<end>')."""
    words = []
    for i in ids:
      i = int(i)
      if i == 0:
        break
      if i not in self.ixtoword:
        raise ValueError(f"word id {i} is outside the vocabulary "
                         f"(0..{self.n_words - 1})")
      words.append(self.ixtoword[i])
    return " ".join(words)

  def to_json(self) -> dict[str, Any]:
    """JSON-serialisable form: ``{'words': [...], 'fingerprint': ...}``."""
    return {"words": self.words, "fingerprint": self.fingerprint()}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "Vocabulary":
    """Inverse of ``to_json``; checks the stored fingerprint when present."""
    if "words" not in data:
      raise ValueError("vocabulary JSON has no 'words' list")
    vocab = cls(data["words"])
    stored = data.get("fingerprint")
    if stored is not None and stored != vocab.fingerprint():
      raise ValueError(
          f"vocabulary JSON fingerprint {stored!r} does not match its words "
          f"({vocab.fingerprint()!r}): the file was edited or corrupted")
    return vocab

  def fingerprint(self) -> str:
    """A short stable hash (16 hex digits) of the ordered word list."""
    h = hashlib.sha256("\n".join(self.words).encode("utf-8"))
    return h.hexdigest()[:16]

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Vocabulary):
      return NotImplemented
    return self.words == other.words

  __hash__ = None  # Mutable dict attributes: not hashable.

  def __len__(self) -> int:
    return self.n_words

  def __repr__(self) -> str:
    return f"Vocabulary(n_words={self.n_words}, fingerprint={self.fingerprint()})"


def build_vocabulary(tokenized_captions: Iterable[list[str]]) -> Vocabulary:
  """Every word of the captions, ids 1..V in order of first appearance.

  Pass the train captions then the test captions (SPEC-dmgan §7.3: no count
  threshold). The reference numbered words in Python-2 dict iteration order,
  which depends on string hashing and is not reproducible, so its ids cannot
  be recreated: a dataset that ships a ``captions.pickle`` must reuse it
  (``Vocabulary.from_ixtoword``). First-appearance order is deterministic.
  """
  words = [END_TOKEN]
  seen = {END_TOKEN}
  for caption in tokenized_captions:
    for w in caption:
      if w not in seen:
        seen.add(w)
        words.append(w)
  return Vocabulary(words)


def check_truncation(truncation: str) -> None:
  """Raises ValueError naming ``config.data.caption_truncation`` if unknown."""
  if truncation not in TRUNCATIONS:
    raise ValueError(
        f"config.data.caption_truncation must be one of {TRUNCATIONS}, got "
        f"{truncation!r}")


def fit_caption(ids: Sequence[int], words_num: int, rng: np.random.Generator,
                truncation: str = "random_subset") -> tuple[np.ndarray, int]:
  """Pads or truncates one caption to ``words_num`` ids (SPEC-dmgan §7.6).

  Args:
    ids: the caption's word ids (no 0).
    words_num: output length (WORDS_NUM).
    rng: used only when the caption is longer than ``words_num`` with
      'random_subset'.
    truncation: 'random_subset' (reference: ``words_num`` positions drawn
      uniformly without replacement, sorted so the word order is kept) or
      'prefix' (the first ``words_num`` words).

  Returns:
    (np.int32[words_num] zero-padded ids, length = min(len(ids), words_num)).
  """
  check_truncation(truncation)
  if words_num < 1:
    raise ValueError(f"words_num must be >= 1, got {words_num}")
  ids = np.asarray(ids, dtype=np.int64).reshape(-1)
  if np.any(ids <= 0):
    raise ValueError(f"caption ids must be > 0 (0 is '<end>' padding): "
                     f"{ids.tolist()}")
  n = ids.shape[0]
  out = np.zeros((words_num,), np.int32)
  if n <= words_num:
    out[:n] = ids
    return out, n
  if truncation == "random_subset":
    keep = np.sort(rng.choice(n, size=words_num, replace=False))
    out[:] = ids[keep]
  else:
    out[:] = ids[:words_num]
  return out, words_num
