"""Garbage in the data is refused or converted, never trained on; a partial
data set fails with one report listing every problem and its fix."""

import logging
import pickle
import re
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

import attngan_layout
from configs import damsm_bird
from configs import dmgan_bird
from input_pipeline import attngan
from input_pipeline import dataset_check
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import source_items
from t2igan_jax import damsm_pretrain

CPI = attngan_layout.BIRDS_CAPTIONS_PER_IMAGE
ALBATROSS = attngan_layout.ALBATROSS
CORMORANT = attngan_layout.CORMORANT
_image = attngan_layout.image_path


def _train_keys(root):
  with open(root / "train" / "filenames.pickle", "rb") as f:
    return pickle.load(f)


# ------------------------------------------------------------------ images

def test_16_bit_greyscale_png_is_scaled_not_white(birds):
  src = attngan.AttnGANSource(birds, "test", "birds", CPI, use_bbox=False)
  i = src.keys.index(ALBATROSS)
  grey16 = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 32
            ).astype(np.uint16)
  Image.fromarray(grey16).save(_image(birds, ALBATROSS), format="PNG")
  with Image.open(_image(birds, ALBATROSS)) as img:
    assert img.mode == "I;16"
  got = src[i]["image"]
  expected = np.round(grey16 / 257.0).astype(np.uint8)
  assert got.shape == (40, 50, 3)
  np.testing.assert_array_equal(got[..., 0], expected)
  np.testing.assert_array_equal(got[..., 2], expected)
  # 32-bit integer greyscale: range unknown, refused naming the file.
  Image.fromarray(grey16.astype(np.int32)).save(_image(birds, ALBATROSS),
                                                format="TIFF")
  with pytest.raises(errors.BadExampleError,
                     match=re.escape(str(_image(birds, ALBATROSS)))
                     + r": 32-bit integer greyscale TIFF image"):
    src[i]


def _png_header_only(width, height):
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
          + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_decompression_bomb_names_file_and_limit(birds):
  src = attngan.AttnGANSource(birds, "test", "birds", CPI)
  path = _image(birds, ALBATROSS)
  path.write_bytes(_png_header_only(20000, 20000))
  with pytest.raises(errors.BadExampleError) as e:
    src[src.keys.index(ALBATROSS)]
  msg = str(e.value)
  assert str(path) in msg and repr(ALBATROSS) in msg
  assert "400000000 pixels" in msg and str(2 * Image.MAX_IMAGE_PIXELS) in msg
  assert "on_bad_example=skip" in msg and "\n" not in msg


# ---------------------------------------------------------- text, lists

def test_caption_file_of_random_bytes_is_refused(birds):
  txt = birds / "text" / f"{CORMORANT}.txt"
  txt.write_bytes(bytes(np.random.default_rng(0).integers(
      0, 256, 4000, dtype=np.uint8)))
  with pytest.raises(errors.BadExampleError) as e:
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  assert f"caption file {txt} is not UTF-8 text" in str(e.value)
  assert repr(CORMORANT) in str(e.value)
  # 'skip': left out, and none of its bytes become words.
  src = attngan.AttnGANSource(birds, "train", "birds", CPI,
                              on_bad_example="skip")
  assert CORMORANT not in src.keys and len(src) == 5
  txt.unlink()  # the same vocabulary as without the file
  assert src.vocab == attngan.AttnGANSource(
      birds, "train", "birds", CPI, on_bad_example="skip").vocab


def test_duplicate_keys_in_filenames_pickle(birds, shared_data):
  keys = _train_keys(birds)
  path = birds / "train" / "filenames.pickle"
  with open(path, "wb") as f:
    pickle.dump(keys + [keys[2]], f, protocol=2)
  with pytest.raises(ValueError, match=re.escape(str(path)) + r" lists 1 image "
                     r"key\(s\) more than once \(1 repeated entries\), e\.g\. "
                     + re.escape(repr(keys[2])) + " at positions 2 and 6"):
    attngan.load_filenames(birds, "train")
  # Why duplicates are an error: the real AttnGAN split has none.
  split_dir = shared_data / "cub" / "attngan_split"
  for split, n in (("train", 8855), ("test", 2933)):
    assert len(attngan.load_filenames(split_dir, split)) == n


@pytest.mark.parametrize("values, why", [
    ("inf 80.0 201.0 240.0", "not finite"),
    ("67.0 nan 201.0 240.0", "not finite"),
    ("-3.0 80.0 201.0 240.0", "out of range"),
    ("67.0 80.0 0.0 240.0", "out of range"),
    ("67.0 80.0 two 240.0", "not a number"),
])
def test_bad_bounding_box_line_is_named(birds, values, why):
  boxes = birds / "CUB_200_2011" / "bounding_boxes.txt"
  lines = boxes.read_text().splitlines()
  lines[4] = "5 " + values
  boxes.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError) as e:
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  msg = str(e.value)
  assert f"{boxes} line 5: expected '<id> x y w h'" in msg
  assert msg.endswith(why) and "\n" not in msg


# ------------------------------------------------------------ log floods

def test_skip_logs_one_line_per_split(birds, caplog):
  for key in _train_keys(birds)[:4]:
    _image(birds, key).unlink()
  caplog.set_level(logging.DEBUG)
  src = attngan.AttnGANSource(birds, "train", "birds", CPI,
                              on_bad_example="skip")
  assert len(src) == 2
  warnings = [r.message for r in caplog.records
              if r.levelno == logging.WARNING]
  assert len(warnings) == 1, warnings
  assert "birds train split: 4 of 6 images skipped" in warnings[0]
  assert " and 1 more" in warnings[0]  # the first 3 keys, then the count
  debug = [r.message for r in caplog.records if r.levelno == logging.DEBUG
           and "has no image" in r.message]
  assert len(debug) == 4


class _HalfBad(source_items.Source):
  """8x8 items; odd indices are unreadable."""
  split = "train"
  on_bad_example = "skip"

  def __len__(self):
    return 40

  def captions(self, i):
    return [[1, 2]]

  def class_id(self, i):
    return 0

  def key(self, i):
    return str(i)

  def __getitem__(self, i):
    if i % 2:
      raise errors.BadExampleError(f"item {i} is bad")
    return dict(image=np.zeros((8, 8, 3), np.uint8), captions=[[1, 2]],
                class_id=0, key=str(i))


def test_skip_in_batches_stops_warning_after_a_while(caplog):
  it = pipeline.create_iterator(
      _HalfBad(), global_batch_size=4, image_sizes=(8,), words_num=4, seed=0,
      truncation="prefix", random_crop_flip=False)
  caplog.set_level(logging.WARNING)
  for _ in range(30):
    next(it)
  assert it.num_skipped > 40
  warned = [r for r in caplog.records if "bad example" in r.message]
  assert 0 < len(warned) <= pipeline._WARNED_SKIPS
  assert "further skips are logged at debug level" in warned[-1].message


# --------------------------------------------------- whole data set check

def _config(module, root, **damsm):
  c = module.get_config("tiny")
  c.data.name, c.data.data_dir = "birds", str(root)
  c.data.captions_per_image = CPI
  for k, v in damsm.items():
    c.damsm[k] = v
  return c


def test_partial_dataset_lists_every_problem_once(birds):
  (birds / "text" / f"{CORMORANT}.txt").unlink()
  (birds / "text" / f"{ALBATROSS}.txt").write_text("a bird\n")
  (birds / "CUB_200_2011" / "bounding_boxes.txt").unlink()
  _image(birds, _train_keys(birds)[5]).unlink()
  c = _config(dmgan_bird, birds)
  c.gan.batch_size = 8
  with pytest.raises(errors.DatasetError) as e:
    dataset_check.open_splits(c, 64)
  msg = str(e.value)
  assert msg.startswith(f"data set 'birds' (source 'attngan', {birds}): 4 "
                        "problems")
  # Both bad caption files in one line, with the fix.
  assert "2 images have no usable caption file" in msg
  assert "1 without a caption file" in msg and repr(CORMORANT) in msg
  assert "1 with an unusable one" in msg and repr(ALBATROSS) in msg
  assert msg.count("config.data.on_bad_example=skip") == 2
  assert msg.count("bounding_boxes.txt not found") == 1
  assert "1 of the 6 keys in" in msg
  assert ("config.gan.batch_size=8 is larger than the train split (6 images)"
          in msg)
  assert len(e.value.problems) == 4


def test_retrieval_candidates_the_test_split_cannot_supply(birds, tmp_path):
  """The real split's 3 test images are of one class: the DAMSM evaluation
  cannot draw other-class captions. Refused before training, with a fix."""
  c = _config(damsm_bird, birds, batch_size=3, eval_batches=1)
  c.num_devices = 1
  c.damsm.retrieval_candidates = 100
  with pytest.raises(ValueError) as e:
    damsm_pretrain.pretrain(c, str(tmp_path / "w"))
  msg = str(e.value)
  assert msg.startswith("config.damsm.retrieval_candidates=100: ")
  assert "encodes 3 test images" in msg and "of 1 class(es)" in msg
  assert "Refused before training" in msg
  assert not (tmp_path / "w" / "checkpoints").exists()
  fix = re.search(r"set config\.damsm\.retrieval_candidates=(\d+)", msg)
  c.damsm.retrieval_candidates = int(fix.group(1))
  train, test = dataset_check.open_splits(c, c.damsm.image_size)
  assert (len(train), len(test)) == (6, 3)
  # A batch larger than the test split leaves no evaluation batch.
  c.damsm.batch_size = 4
  with pytest.raises(ValueError, match=r"config\.damsm\.batch_size=4 is "
                     r"larger than the test split \(3 images\): no evaluation"):
    dataset_check.open_splits(c, c.damsm.image_size)


class _Classes(source_items.Source):
  """A test split of these classes (no images: the check reads none)."""
  split = "test"

  def __init__(self, class_ids):
    self.class_ids = np.asarray(class_ids)

  def __len__(self):
    return len(self.class_ids)

  def class_id(self, i):
    return int(self.class_ids[i])

  def captions(self, i):
    raise AssertionError("the retrieval check reads no captions")

  def key(self, i):
    return str(i)

  def __getitem__(self, i):
    raise AssertionError("the retrieval check reads no images")


@pytest.mark.parametrize("class_ids, batch_size, eval_batches", [
    ([0] * 6 + [1] * 2, 2, 1),
    ([0] * 20 + [1, 2, 3, 4], 4, 2),
    ([0] * 30 + list(range(1, 9)), 2, 3),
])
def test_retrieval_advice_fixes_it(class_ids, batch_size, eval_batches):
  c = damsm_bird.get_config("tiny")
  c.damsm.batch_size, c.damsm.eval_batches = batch_size, eval_batches
  c.damsm.retrieval_candidates = 50
  test = _Classes(class_ids)
  problem = dataset_check.retrieval_problem(c, test)
  msg = str(problem)
  fixes = re.findall(r"set (config\.damsm\.\w+=\d+(?: and config\.damsm\.\w+=\d+)?)", msg)
  assert fixes, msg
  for fix in fixes:
    fixed = damsm_bird.get_config("tiny")
    fixed.damsm.batch_size, fixed.damsm.eval_batches = batch_size, eval_batches
    fixed.damsm.retrieval_candidates = 50
    for assignment in fix.split(" and "):
      field, value = assignment.rsplit("=", 1)
      fixed.damsm[field.rsplit(".", 1)[-1]] = int(value)
    assert dataset_check.retrieval_problem(fixed, test) is None, fix
