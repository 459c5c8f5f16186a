"""Tokeniser, vocabulary and caption fitting (SPEC-dmgan §7.2, §7.3, §7.6)."""

import json
import re

import numpy as np
import pytest

from input_pipeline import errors
from input_pipeline import text


# ----------------------------------------------------------------- tokenize

@pytest.mark.parametrize("line, expected", [
    ("A small BIRD.", ["a", "small", "bird"]),
    ("this bird's wing,is red!", ["this", "bird", "s", "wing", "is", "red"]),
    ("red\ufffd\ufffdwings", ["red", "wings"]),       # the pair -> a space
    ("red\ufffdwings", ["red", "wings"]),             # a lone U+FFFD is no \w
    ("a café bird", ["a", "caf", "bird"]),            # ASCII encode drops é
    ("naïve  Ärger", ["nave", "rger"]),
    ("日本 bird", ["bird"]),                           # all-non-ASCII token gone
    ("3 toes, snake_case-ish", ["3", "toes", "snake_case", "ish"]),
    ("  \t ", []),
    ("", []),
])
def test_tokenize_cases(line, expected):
  assert text.tokenize(line) == expected


def test_read_caption_file_skips_and_limits(tmp_path):
  path = tmp_path / "caps.txt"
  path.write_text("first caption here.\n\n...!!!\nSecond one\nthird\nfourth\n",
                  encoding="utf-8")
  assert text.read_caption_file(path, 3) == [
      ["first", "caption", "here"], ["second", "one"], ["third"]]
  with pytest.raises(ValueError, match="caps.txt.*4 valid captions"):
    text.read_caption_file(path, 5)


def test_read_caption_file_stored_fffd_and_bad_bytes(tmp_path):
  path = tmp_path / "ok.txt"
  # U+FFFD U+FFFD stored in the file (as in the reference data) -> a space.
  path.write_text("red\ufffd\ufffdwing\n", encoding="utf-8")
  assert text.read_caption_file(path, 1) == [["red", "wing"]]
  # Bytes that are not UTF-8: refused naming the file (the reference's
  # strict decode fails too), not turned into words.
  path = tmp_path / "bad.txt"
  path.write_bytes(b"a red bird\nred\xff\xfewing\n")
  with pytest.raises(errors.BadExampleError,
                     match=re.escape(str(path)) + r" is not UTF-8 text: byte "
                     r"b'\\xff' at offset 14 \(line 2\)"):
    text.read_caption_file(path, 1)


# --------------------------------------------------------------- vocabulary

def test_vocabulary_basics():
  vocab = text.build_vocabulary([["a", "red", "bird"], ["a", "blue", "bird"]])
  assert vocab.ixtoword == {0: "<end>", 1: "a", 2: "red", 3: "bird",
                            4: "blue"}
  assert vocab.wordtoix == {w: i for i, w in vocab.ixtoword.items()}
  assert vocab.n_words == 5
  assert vocab.encode(["a", "blue", "bird"]) == [1, 4, 3]
  assert vocab.decode([1, 4, 3, 0, 2]) == "a blue bird"
  assert vocab.decode(np.array([2, 3, 0, 0], np.int32)) == "red bird"
  with pytest.raises(ValueError, match="'green'"):
    vocab.encode(["a", "green", "bird"])
  with pytest.raises(ValueError, match="'<end>'"):
    vocab.encode(["<end>"])


def test_vocabulary_json_round_trip_and_fingerprint():
  vocab = text.build_vocabulary([["x", "y"], ["z", "x"]])
  data = json.loads(json.dumps(vocab.to_json()))
  again = text.Vocabulary.from_json(data)
  assert again == vocab
  assert again.ixtoword == vocab.ixtoword
  assert again.fingerprint() == vocab.fingerprint()
  assert len(vocab.fingerprint()) == 16
  other = text.build_vocabulary([["y", "x", "z"]])  # same words, other order
  assert other != vocab and other.fingerprint() != vocab.fingerprint()
  data["words"] = data["words"][:-1]
  with pytest.raises(ValueError, match="fingerprint"):
    text.Vocabulary.from_json(data)
  assert text.Vocabulary.from_ixtoword({1: "x", 0: "<end>", 2: "y"}).words == [
      "<end>", "x", "y"]
  with pytest.raises(ValueError, match="contiguous"):
    text.Vocabulary.from_ixtoword({0: "<end>", 2: "y"})
  with pytest.raises(ValueError, match="<end>"):
    text.Vocabulary(["x"])


# --------------------------------------------------------------- real data

def test_cub_caption_files(shared_data):
  files = sorted((shared_data / "cub" / "text").glob("*/*.txt"))
  assert len(files) == 9
  captions = [text.read_caption_file(f, 10) for f in files]
  assert all(len(c) == 10 for c in captions)
  flat = [c for caps in captions for c in caps]
  vocab = text.build_vocabulary(flat)
  assert vocab.ixtoword[0] == "<end>"
  assert vocab.n_words == 1 + len({w for c in flat for w in c})
  for c in flat:
    ids = vocab.encode(c)
    assert 0 not in ids
    assert vocab.decode(ids) == " ".join(c)


def test_cub_test_captions_statistics(shared_data):
  lines = (shared_data / "cub" / "test_captions.txt").read_text(
      encoding="utf-8").split("\n")
  lines = [l for l in lines if l]
  assert len(lines) == 29330
  tokens = [text.tokenize(l) for l in lines]
  assert all(tokens)  # every real caption has words
  distinct = set()
  for t in tokens:
    distinct.update(t)
  vocab = text.build_vocabulary(tokens)
  assert vocab.n_words == 1 + len(distinct)
  # The test split's words are a subset of the full CUB vocabulary (5450
  # entries with '<end>'), and 29k captions use well over a thousand words.
  assert 1000 < len(distinct) < 5450
  lengths = np.array([len(t) for t in tokens])
  assert 10 < lengths.mean() < 25
  assert lengths.min() >= 1 and lengths.max() < 100
  # A meaningful fraction is longer than WORDS_NUM=18 (truncation matters).
  assert 0.05 < np.mean(lengths > 18) < 0.6


# -------------------------------------------------------------- fit_caption

def test_fit_caption_pads_short():
  rng = np.random.default_rng(0)
  out, n = text.fit_caption([5, 6, 7], 6, rng)
  assert out.dtype == np.int32 and out.shape == (6,)
  assert out.tolist() == [5, 6, 7, 0, 0, 0] and n == 3
  out, n = text.fit_caption([5, 6, 7], 3, rng, "prefix")
  assert out.tolist() == [5, 6, 7] and n == 3


def test_fit_caption_random_subset_keeps_order():
  ids = list(range(1, 31))
  seen = set()
  for seed in range(20):
    out, n = text.fit_caption(ids, 10, np.random.default_rng(seed))
    assert n == 10 and out.shape == (10,)
    assert np.all(np.diff(out) > 0)          # increasing = original order
    assert set(out.tolist()) <= set(ids)
    seen.add(tuple(out.tolist()))
  assert len(seen) > 15                      # actually random
  a, _ = text.fit_caption(ids, 10, np.random.default_rng(7))
  b, _ = text.fit_caption(ids, 10, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)        # deterministic for a seeded rng


def test_fit_caption_prefix_and_errors():
  out, n = text.fit_caption(list(range(1, 31)), 10, np.random.default_rng(0),
                            truncation="prefix")
  assert out.tolist() == list(range(1, 11)) and n == 10
  with pytest.raises(ValueError, match="config.data.caption_truncation"):
    text.fit_caption([1, 2], 4, np.random.default_rng(0), "suffix")
  with pytest.raises(ValueError, match="padding"):
    text.fit_caption([1, 0, 2], 4, np.random.default_rng(0))
