"""tfds builders t2i_birds / t2i_coco (array_record, no TensorFlow)."""

import json
import sys

import numpy as np
import pytest

import attngan_layout
from configs import damsm_coco
from input_pipeline import attngan
from input_pipeline import coco_json
from input_pipeline import pipeline
from input_pipeline import tfds_builders
from t2igan_jax import train

BIRDS_CPI = attngan_layout.BIRDS_CAPTIONS_PER_IMAGE
COCO_CPI = attngan_layout.COCO_CAPTIONS_PER_IMAGE


def _prepared(name, make_layout, cpi, shared_data, tmp_path_factory):
  """(raw layout from ``make_layout``, tfds data_dir with t2i_``name`` prepared)."""
  root = make_layout(shared_data, tmp_path_factory.mktemp("raw") / name)
  data_dir = tmp_path_factory.mktemp("tfds")
  tfds_builders.prepare(name, str(root), str(data_dir), cpi)
  return root, data_dir


@pytest.fixture(scope="module")
def birds(shared_data, tmp_path_factory):
  """(raw AttnGAN birds layout, tfds data_dir with t2i_birds prepared)."""
  return _prepared("birds", attngan_layout.make_birds_layout, BIRDS_CPI,
                   shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def coco(shared_data, tmp_path_factory):
  """(raw COCO JSON layout, tfds data_dir with t2i_coco/cpi1 prepared)."""
  return _prepared("coco", attngan_layout.make_coco_json_layout, COCO_CPI,
                   shared_data, tmp_path_factory)


def _assert_same_items(a, b):
  assert len(a) == len(b) and a.vocab == b.vocab
  for i in range(len(a)):
    x, y = a[i], b[i]
    assert (x["key"], x["class_id"], x["captions"]) == (
        y["key"], y["class_id"], y["captions"])
    np.testing.assert_array_equal(x["image"], y["image"])


def test_birds_prepared_without_tensorflow_items_equal(birds):
  root, data_dir = birds
  assert "tensorflow" not in sys.modules
  path = data_dir / "t2i_birds" / "cpi10" / "1.0.0"
  assert sorted(p.name for p in path.glob("*.array_record*")) == [
      "t2i_birds-test.array_record-00000-of-00001",
      "t2i_birds-train.array_record-00000-of-00001"]
  with open(path / "metadata.json") as f:
    meta = json.load(f)
  assert meta["captions_per_image"] == BIRDS_CPI and meta["layout"] == "attngan"
  for split, n in (("train", 6), ("test", 3)):
    src = tfds_builders.TfdsSource(str(data_dir), "birds", split, BIRDS_CPI)
    ref = attngan.AttnGANSource(root, split, "birds", BIRDS_CPI)
    assert len(src) == n
    # Same keys, class ids, caption ids, and bbox-cropped pixels, in order.
    _assert_same_items(src, ref)
    # The stored image is the JPEG file itself, not a re-encoding.
    rec = src.record(0)
    assert rec["image"] == open(ref.image_path(0), "rb").read()
    assert tuple(rec["bbox"]) == ref.bbox(0)
  assert "tensorflow" not in sys.modules


def test_birds_batches_equal_with_worker_processes(birds):
  """pipeline.get_source(source='tfds') through 2 grain workers gives the
  batches the raw AttnGAN source gives in-process."""
  root, data_dir = birds
  c = damsm_coco.get_config("tiny")
  c.data.name = "birds"
  c.data.captions_per_image = BIRDS_CPI
  c.data.source = "tfds"
  c.data.tfds_data_dir = str(data_dir)
  src = pipeline.get_source(c, "train", 32)
  assert isinstance(src, tfds_builders.TfdsSource)
  ref = attngan.AttnGANSource(root, "train", "birds", BIRDS_CPI)
  args = dict(global_batch_size=4, image_sizes=(16, 32), words_num=8, seed=3,
              truncation="random_subset")
  it = pipeline.create_iterator(src, num_workers=2, **args)
  try:
    got = [next(it) for _ in range(2)]
  finally:
    it.close()
  ref_it = pipeline.create_iterator(ref, **args)
  for a in got:
    b = next(ref_it)
    for k in ("captions", "caption_lens", "class_ids", "keys"):
      np.testing.assert_array_equal(a[k], b[k])
    for u, v in zip(a["images"], b["images"]):
      np.testing.assert_array_equal(u, v)


def test_coco_from_json_and_not_prepared_error(coco, tmp_path):
  root, data_dir = coco
  for split in ("train", "test"):
    src = tfds_builders.TfdsSource(str(data_dir), "coco", split, COCO_CPI)
    _assert_same_items(src, coco_json.CocoJsonSource(root, split, COCO_CPI))
  assert tfds_builders.detect_layout(str(root), "coco") == "coco_json"
  # Another captions_per_image is another (unprepared) builder config.
  with pytest.raises(FileNotFoundError, match=r"t2i_coco/cpi5 is not "
                     r"prepared.*python -m input_pipeline\.tfds_builders "
                     r"--dataset=t2i_coco"):
    tfds_builders.TfdsSource(str(data_dir), "coco", "train", 5)
  with pytest.raises(FileNotFoundError, match="t2i_birds/cpi10 is not prepared"):
    tfds_builders.TfdsSource(str(tmp_path), "birds", "train", BIRDS_CPI)


def test_prepare_command_line(birds, tmp_path, capsys):
  root, _ = birds
  assert tfds_builders.main([
      "--dataset=t2i_birds", f"--manual_dir={root}",
      f"--data_dir={tmp_path}"]) == 0
  out = capsys.readouterr().out
  assert "train: 6 examples" in out and "test: 3 examples" in out
  assert tfds_builders.main([
      "--dataset=t2i_birds", f"--manual_dir={tmp_path / 'none'}",
      f"--data_dir={tmp_path}", "--captions_per_image=3"]) == 1
  assert "manual_dir" in capsys.readouterr().err


def test_damsm_pretrain_end_to_end_coco_json_and_tfds(coco, tmp_path):
  """The DAMSM job runs 2 steps on source 'coco_json' and on 'tfds' (prepared
  from the same JSON) and gets identical results: same data, same stream."""
  root, data_dir = coco
  c = damsm_coco.get_config("tiny")
  c.data.name = "coco"
  c.data.captions_per_image = COCO_CPI
  c.num_devices = 2
  c.damsm.batch_size = 2
  c.damsm.eval_batches = 1
  c.damsm.retrieval_candidates = 2
  c.max_steps = 2
  c.checkpoint_every_steps = 2
  results = {}
  for source in ("coco_json", "tfds"):
    c.data.source = source
    c.data.data_dir = str(root) if source == "coco_json" else ""
    c.data.tfds_data_dir = str(data_dir)
    results[source] = train.run(c, str(tmp_path / source))
    assert results[source]["step"] == 2
    assert np.isfinite(results[source]["test_loss"])
  assert results["coco_json"] == results["tfds"]
