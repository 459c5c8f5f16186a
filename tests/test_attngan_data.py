"""AttnGAN-layout readers (CUB birds, COCO) on tiny layouts of real files."""

import os
import pickle
import re
import shutil

import numpy as np
from PIL import Image
import pytest

import attngan_layout
from configs import dmgan_bird
from input_pipeline import attngan
from input_pipeline import pipeline
from input_pipeline import transforms

CPI = attngan_layout.BIRDS_CAPTIONS_PER_IMAGE


@pytest.fixture
def coco(shared_data, tmp_path):
  return attngan_layout.make_coco_layout(shared_data, tmp_path / "coco")


def _raw_captions(path, n):
  """First n non-empty lines, tokenised independently of text.tokenize."""
  lines = []
  with open(path, encoding="utf-8") as f:
    for line in f.read().split("\n"):
      words = re.findall(r"[a-z0-9_]+", line.lower())
      if words:
        lines.append(" ".join(words))
  return lines[:n]


# --------------------------------------------------------------------- birds

def test_birds_captions_pickle_built_and_reloaded(birds):
  pickle_path = birds / "captions.pickle"
  assert not pickle_path.exists()
  train = attngan.AttnGANSource(birds, "train", "birds", CPI)
  assert pickle_path.is_file()
  assert pickle_path.read_bytes()[:2] == b"\x80\x02"  # protocol 2
  assert not [p for p in os.listdir(birds) if p.endswith(".tmp")]
  with open(pickle_path, "rb") as f:
    data = pickle.load(f, encoding="latin1")
  assert isinstance(data, list) and len(data) == 4
  train_caps, test_caps, ixtoword, wordtoix = data
  assert len(train_caps) == 6 * CPI and len(test_caps) == 3 * CPI
  assert ixtoword[0] == "<end>" and wordtoix["<end>"] == 0
  assert sorted(ixtoword) == list(range(len(ixtoword)))
  assert {w: i for i, w in ixtoword.items()} == wordtoix
  assert all(isinstance(c, list) and c and all(type(i) is int and i > 0
                                               for i in c)
             for c in train_caps + test_caps)
  # Vocabulary over train then test captions, first appearance: train
  # caption 0's first word is id 1.
  assert train_caps[0][0] == 1
  assert train.vocab.n_words == len(ixtoword)

  # Tokens round-trip against the raw text; caption k*CPI+j is image k's j-th.
  test = attngan.AttnGANSource(birds, "test", "birds", CPI)
  for src, caps in ((train, train_caps), (test, test_caps)):
    for k, key in enumerate(src.keys):
      raw = _raw_captions(birds / "text" / f"{key}.txt", CPI)
      assert len(raw) == CPI
      assert [train.vocab.decode(c) for c in caps[k * CPI:(k + 1) * CPI]] == raw
      assert src.captions_text(k) == raw
      assert src[k]["captions"] == caps[k * CPI:(k + 1) * CPI]
  assert test.vocab == train.vocab

  # A second construction reads the pickle (text/ is no longer needed) and
  # gives identical data; the file is not rewritten.
  mtime = pickle_path.stat().st_mtime_ns
  shutil.rmtree(birds / "text")
  again = attngan.AttnGANSource(birds, "train", "birds", CPI)
  assert pickle_path.stat().st_mtime_ns == mtime
  assert again.vocab == train.vocab
  assert [again.captions(i) for i in range(6)] == [
      train.captions(i) for i in range(6)]


def test_birds_items_class_ids_and_bbox_crop(birds, shared_data):
  train = attngan.AttnGANSource(birds, "train", "birds", CPI)
  test = attngan.AttnGANSource(birds, "test", "birds", CPI)
  assert len(train) == 6 and len(test) == 3
  assert [k[:3] for k in train.keys] == ["024"] * 3 + ["191"] * 3
  assert train.class_ids.tolist() == [24, 24, 24, 191, 191, 191]
  assert test.class_ids.tolist() == [1, 1, 1]
  for src in (train, test):
    for i in range(len(src)):
      ex = src[i]
      assert set(ex) == {"image", "captions", "class_id", "key"}
      assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
      assert ex["image"].shape[2] == 3
      assert type(ex["class_id"]) is int and ex["key"] == src.keys[i]
      assert len(ex["captions"]) == CPI

  # SPEC §7.4 by hand for one image: the 216x136 albatross (0090) with the
  # made-up box (43, 27, 129, 81).
  i = test.keys.index(
      "001.Black_footed_Albatross/Black_Footed_Albatross_0090_796077")
  assert test.bbox(i) == (43, 27, 129, 81)
  # r = int(129 * 0.75) = 96; cx = int((86 + 129) / 2) = 107;
  # cy = int((54 + 81) / 2) = 67 -> (max(0, 11), max(0, -29),
  # min(216, 203), min(136, 163)) = (11, 0, 203, 136).
  assert transforms.bbox_crop_box(test.bbox(i), 216, 136) == (11, 0, 203, 136)
  original = np.asarray(Image.open(
      shared_data / "cub" / "images" / f"{test.keys[i]}.jpg").convert("RGB"))
  assert original.shape == (136, 216, 3)
  np.testing.assert_array_equal(test[i]["image"], original[0:136, 11:203])
  np.testing.assert_array_equal(
      transforms.bbox_crop(original, (43.9, 27.2, 129.5, 81.0)),
      original[0:136, 11:203])  # floats truncate like astype(int)
  # An interior box stays square: side 2 * int(0.75 * max(w, h)).
  assert transforms.bbox_crop_box((100, 100, 40, 20), 500, 500) == (
      90, 80, 150, 140)

  # Without the crop: the full photo.
  plain = attngan.AttnGANSource(birds, "test", "birds", CPI, use_bbox=False)
  np.testing.assert_array_equal(plain[i]["image"], original)


def test_birds_errors(birds):
  # Missing filenames.pickle (named, with what was expected).
  os.rename(birds / "test" / "filenames.pickle", birds / "f.bak")
  with pytest.raises(FileNotFoundError,
                     match=r"test/filenames\.pickle not found.*image keys"):
    attngan.AttnGANSource(birds, "test", "birds", CPI)
  # Building captions.pickle needs both splits' keys.
  with pytest.raises(FileNotFoundError, match=r"test/filenames\.pickle"):
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  os.rename(birds / "f.bak", birds / "test" / "filenames.pickle")

  # Caption file with too few captions (while building captions.pickle).
  txt = birds / "text" / "024.Red_faced_Cormorant" / (
      "Red_Faced_Cormorant_0042_796277.txt")
  full = txt.read_text(encoding="utf-8")
  txt.write_text("\n".join(full.split("\n")[:3]) + "\n\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"Red_Faced_Cormorant_0042_796277\.txt"
                     r" has 3 valid captions, fewer than captions_per_image=10"):
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  assert not (birds / "captions.pickle").exists()
  txt.write_text(full, encoding="utf-8")

  src = attngan.AttnGANSource(birds, "train", "birds", CPI)
  # captions.pickle built for another captions_per_image.
  with pytest.raises(ValueError, match=r"holds 60 train captions.*"
                     r"6 images x captions_per_image=5"):
    attngan.AttnGANSource(birds, "train", "birds", 5)

  # Missing image file: the key and the path are named.
  key = src.keys[1]
  path = birds / "CUB_200_2011" / "images" / f"{key}.jpg"
  os.remove(path)
  with pytest.raises(FileNotFoundError) as e:
    src[1]
  assert repr(key) in str(e.value) and str(path) in str(e.value)

  # images.txt without a key of the split.
  images_txt = birds / "CUB_200_2011" / "images.txt"
  lines = images_txt.read_text().splitlines(keepends=True)
  images_txt.write_text("".join(l for l in lines if key not in l))
  with pytest.raises(ValueError, match=r"images\.txt has no line for image "
                     f"key {re.escape(repr(key))}"):
    attngan.AttnGANSource(birds, "train", "birds", CPI)

  # Wrong captions.pickle structure.
  for bad, what in (({"train": []}, "got dict"),
                    ([[], [], {0: "<end>"}], "of length 3"),
                    ([[[1, 2]], [], {0: "<end>", 1: "a"},
                      {"<end>": 0, "a": 1}], r"word ids outside 1\.\.1")):
    with open(birds / "captions.pickle", "wb") as f:
      pickle.dump(bad, f, protocol=2)
    with pytest.raises(ValueError, match=r"captions\.pickle.*" + what):
      attngan.AttnGANSource(birds, "test", "birds", CPI)


# ---------------------------------------------------------------------- coco

def test_coco_layout(coco, shared_data):
  # The shared captions have 1..5 captions per photo: 5 per image fails on
  # the first short file, naming it.
  with pytest.raises(ValueError, match=r"text/COCO_val2014_\d+\.txt has [1-4] "
                     r"valid captions, fewer than captions_per_image=5"):
    attngan.AttnGANSource(coco, "train", "coco", 5)

  cpi = attngan_layout.COCO_CAPTIONS_PER_IMAGE
  train = attngan.AttnGANSource(coco, "train", "coco", cpi)
  test = attngan.AttnGANSource(coco, "test", "coco", cpi)
  assert (len(train), len(test)) == (8, 3)
  assert train.class_ids.tolist() == list(range(8))
  assert test.class_ids.tolist() == [0, 1, 2]
  captions = attngan_layout.coco_captions(shared_data)
  for src in (train, test):
    for i, key in enumerate(src.keys):
      ex = src[i]
      assert ex["class_id"] == i and ex["key"] == key
      original = np.asarray(Image.open(coco / "images" / f"{key}.jpg"))
      np.testing.assert_array_equal(ex["image"], original)  # no crop
      assert src.captions_text(i) == [
          " ".join(re.findall(r"[a-z0-9_]+", captions[key][0].lower()))]

  # Grayscale photos (COCO has some) come back as RGB uint8.
  key = train.keys[2]
  path = coco / "images" / f"{key}.jpg"
  Image.open(path).convert("L").save(path)
  image = train[2]["image"]
  assert image.dtype == np.uint8 and image.shape[2] == 3
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


# ---------------------------------------------------------------- end to end

def test_get_source_and_iterator_birds(birds):
  config = dmgan_bird.get_config("tiny")
  config.data.name = "birds"
  config.data.data_dir = str(birds)
  config.data.captions_per_image = CPI
  src = pipeline.get_source(config, "train", 64)
  assert isinstance(src, attngan.AttnGANSource) and len(src) == 6
  it = pipeline.create_iterator(
      src, global_batch_size=4, image_sizes=(32, 64),
      words_num=config.data.words_num, seed=0,
      truncation=config.data.caption_truncation)
  batch = next(it)
  small, big = batch["images"]
  assert small.shape == (4, 32, 32, 3) and big.shape == (4, 64, 64, 3)
  for im in (small, big):
    assert im.dtype == np.float32 and -1 <= im.min() and im.max() <= 1
    assert im.std() > 0.05  # real photos, not a constant
  lens = batch["caption_lens"]
  assert batch["captions"].shape == (4, config.data.words_num)
  assert list(lens) == sorted(lens, reverse=True) and lens.min() > 0
  assert set(batch["class_ids"].tolist()) <= {24, 191}
  assert set(batch["keys"].tolist()) <= set(src.keys)
  test = pipeline.get_source(config, "test", 64)
  assert len(test) == 3 and test.vocab == src.vocab

  config.data.data_dir = str(birds / "nowhere")
  with pytest.raises(FileNotFoundError, match="config.data.data_dir"):
    pipeline.get_source(config, "train", 64)


def test_real_split_pickles(shared_data):
  """The real (Python 2) AttnGAN split files read as users have them."""
  split_dir = shared_data / "cub" / "attngan_split"
  keys, ids = {}, {}
  for split, n in (("train", 8855), ("test", 2933)):
    keys[split] = attngan.load_filenames(split_dir, split)
    ids[split] = attngan.load_class_ids(split_dir, split, n, "birds")
    assert len(keys[split]) == n and all(type(k) is str for k in keys[split])
    assert ids[split].dtype == np.int64
    assert ids[split].tolist() == [int(k[:3]) for k in keys[split]]
  assert not set(keys["train"]) & set(keys["test"])
  assert set(attngan_layout.birds_keys(shared_data)) <= (
      set(keys["train"]) | set(keys["test"]))
  test_keys = [k for k in attngan_layout.birds_keys(shared_data)
               if k.startswith("001.")]
  assert set(test_keys) <= set(keys["test"])
  # COCO ignores class_info.pickle: every image is its own class.
  assert attngan.load_class_ids(split_dir, "test", 2933, "coco").tolist() == (
      list(range(2933)))
