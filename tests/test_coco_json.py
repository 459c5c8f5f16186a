"""Raw MS-COCO caption JSON source, on real COCO captions and photos."""

import json
import os
import pickle
import re
import shutil

import numpy as np
from PIL import Image
import pytest

import attngan_layout
from configs import damsm_coco
from input_pipeline import attngan
from input_pipeline import coco_json
from input_pipeline import errors
from input_pipeline import pipeline

CPI = attngan_layout.COCO_CAPTIONS_PER_IMAGE


@pytest.fixture
def root(shared_data, tmp_path):
  return attngan_layout.make_coco_json_layout(shared_data, tmp_path / "coco")


def _json(root, folder):
  with open(root / "annotations" / f"captions_{folder}.json") as f:
    return json.load(f)


def test_split_order_captions_images(root, shared_data):
  train = coco_json.CocoJsonSource(root, "train", CPI)
  test = coco_json.CocoJsonSource(root, "test", CPI)
  real = attngan_layout.coco_captions(shared_data)
  digits = sorted(k.rsplit("_", 1)[1] for k in real)
  # train2014 JSON -> train, val2014 JSON -> test; keys are file stems, sorted.
  assert train.keys == [f"COCO_train2014_{d}" for d in digits[:8]]
  assert test.keys == [f"COCO_val2014_{d}" for d in digits[8:]]
  assert train.class_ids.tolist() == list(range(8))
  assert test.class_ids.tolist() == [0, 1, 2]
  assert test.vocab == train.vocab
  for src, folder in ((train, "train2014"), (test, "val2014")):
    for i, key in enumerate(src.keys):
      original = real["COCO_val2014_" + key.rsplit("_", 1)[1]]
      # The first caption of the image in file order, tokenised as \w+.
      assert src.captions_text(i) == [
          " ".join(re.findall(r"[a-z0-9_]+", original[0].lower()))]
      ex = src[i]
      assert ex["key"] == key and ex["class_id"] == i
      np.testing.assert_array_equal(
          ex["image"], np.asarray(Image.open(root / folder / f"{key}.jpg")))
  # With more captions per image: an image short of them is named.
  with pytest.raises(errors.BadExampleError, match=r"captions_train2014\.json:"
                     r" the captions of COCO_train2014_\d+\.jpg has [1-4] "
                     r"valid captions, fewer than captions_per_image=5"):
    coco_json.CocoJsonSource(root, "train", 5)


def test_vocabulary_equals_attngan_build_from_text(root, tmp_path):
  """JSON captions give what the reference builds from text/ files holding
  them (one per line, file order): same words, ids and captions."""
  json_src = {s: coco_json.CocoJsonSource(root, s, CPI)
              for s in ("train", "test")}
  layout = tmp_path / "attngan"
  (layout / "images").mkdir(parents=True)
  (layout / "text").mkdir()
  for split, folder in (("train", "train2014"), ("test", "val2014")):
    data = _json(root, folder)
    by_id = {im["id"]: os.path.splitext(im["file_name"])[0]
             for im in data["images"]}
    lines = {k: [] for k in by_id.values()}
    for ann in data["annotations"]:
      lines[by_id[ann["image_id"]]].append(ann["caption"])
    keys = json_src[split].keys
    for key in keys:
      shutil.copyfile(root / folder / f"{key}.jpg",
                      layout / "images" / f"{key}.jpg")
      (layout / "text" / f"{key}.txt").write_text("\n".join(lines[key]) + "\n")
    (layout / split).mkdir()
    with open(layout / split / "filenames.pickle", "wb") as f:
      pickle.dump(keys, f, protocol=2)
  # cpi 3 drops the images with fewer captions ('skip') the same way on both.
  for s in ("train", "test"):
    ref = attngan.AttnGANSource(layout, s, "coco", 3, on_bad_example="skip")
    src = coco_json.CocoJsonSource(root, s, 3, on_bad_example="skip")
    assert ref.vocab == src.vocab and ref.vocab.n_words > 40
    assert ref.keys == src.keys and len(src) >= 1
    assert [k for k, _ in ref.skipped] == [k for k, _ in src.skipped]
    assert [ref.captions(i) for i in range(len(ref))] == [
        src.captions(i) for i in range(len(src))]


def test_filenames_pickle_selects_and_orders(root):
  keys = coco_json.CocoJsonSource(root, "test", CPI).keys
  (root / "test").mkdir()
  with open(root / "test" / "filenames.pickle", "wb") as f:
    pickle.dump([keys[2], keys[0]], f, protocol=2)
  assert coco_json.CocoJsonSource(root, "test", CPI).keys == [keys[2], keys[0]]
  with open(root / "test" / "filenames.pickle", "wb") as f:
    pickle.dump(["COCO_val2014_000000999999"], f, protocol=2)
  with pytest.raises(ValueError, match=r"1 keys of .*test/filenames\.pickle "
                     r"are not images of .*captions_val2014\.json"):
    coco_json.CocoJsonSource(root, "test", CPI)


def test_images_folder_variants_and_missing_json(root):
  # One merged images/ folder (the AttnGAN layout) works too.
  os.rename(root / "train2014", root / "images")
  for p in (root / "val2014").iterdir():
    os.rename(p, root / "images" / p.name)
  src = coco_json.CocoJsonSource(root, "test", CPI)
  assert src.image_dir == str(root / "images") and src[0]["image"].ndim == 3
  # JSON files at the top level are found as well.
  os.rename(root / "annotations", root / "a")
  for p in (root / "a").iterdir():
    os.rename(p, root / p.name)
  assert len(coco_json.CocoJsonSource(root, "train", CPI)) == 8
  os.remove(root / "captions_val2014.json")
  with pytest.raises(FileNotFoundError, match=r"annotations/captions_val2014"
                     r"\.json not found.*annotations_trainval2014\.zip"):
    coco_json.CocoJsonSource(root, "train", CPI)


def test_get_source_and_config_field(root):
  c = damsm_coco.get_config("tiny")
  c.data.name = "coco"
  c.data.source = "coco_json"
  c.data.data_dir = str(root)
  c.data.captions_per_image = CPI
  src = pipeline.get_source(c, "train", 32)
  assert isinstance(src, coco_json.CocoJsonSource) and len(src) == 8
  batch = next(pipeline.create_iterator(
      src, global_batch_size=4, image_sizes=(16, 32), words_num=6, seed=0,
      truncation="random_subset"))
  assert batch["images"][1].shape == (4, 32, 32, 3)
  assert set(batch["keys"].tolist()) <= set(src.keys)
  c.data.name = "birds"
  with pytest.raises(ValueError, match="source='coco_json' reads MS-COCO"):
    pipeline.get_source(c, "train", 32)
