"""Transforms, sources and the deterministic, resumable batch iterator."""

import json

import numpy as np
from PIL import Image
import pytest

from configs import base
from configs import damsm_bird
from input_pipeline import datasets
from input_pipeline import pipeline
from input_pipeline import shapes
from input_pipeline import source_items
from input_pipeline import transforms

SIZES = (16, 32)
WORDS = 6


@pytest.fixture(scope="module")
def source():
  # 48 images, rendered at int(32 * 76 / 64) = 38 px for the random crop.
  return shapes.ShapesSource("train", 48, 16, seed=5, captions_per_image=5,
                             render_size=38)


def _iter(src, **kw):
  args = dict(global_batch_size=8, image_sizes=SIZES, words_num=WORDS, seed=1,
              truncation="random_subset")
  args.update(kw)
  return pipeline.create_iterator(src, **args)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      if k == "images":
        for u, v in zip(x[k], y[k]):
          np.testing.assert_array_equal(u, v)
      else:
        np.testing.assert_array_equal(x[k], y[k])


# ---------------------------------------------------------------- transforms

def test_pyramid_crop_flip():
  rng0 = np.random.default_rng(0)
  image = rng0.integers(0, 256, (50, 40, 3), dtype=np.uint8)  # not square
  # Shorter side (width 40) -> 38, height int(38 * 50 / 40) = 47.
  resized = np.asarray(Image.fromarray(image).resize((38, 47), Image.BILINEAR))
  flips = set()
  for seed in range(12):
    (small, big), flipped = transforms.random_crop_flip_pyramid(
        image, SIZES, np.random.default_rng(seed), return_flipped=True)
    assert small.shape == (16, 16, 3) and big.shape == (32, 32, 3)
    assert small.dtype == big.dtype == np.float32
    assert -1 <= big.min() and big.max() <= 1
    u8 = np.rint((big + 1) * 127.5).astype(np.uint8)
    ref = resized[:, ::-1] if flipped else resized
    hits = [(i, j) for i in range(47 - 32 + 1) for j in range(38 - 32 + 1)
            if np.array_equal(ref[i:i + 32, j:j + 32], u8)]
    assert hits, "the big image is not a (flipped) crop of the resized image"
    expect_small = np.asarray(Image.fromarray(u8).resize((16, 16),
                                                         Image.BILINEAR))
    np.testing.assert_array_equal(np.rint((small + 1) * 127.5), expect_small)
    flips.add(flipped)
  assert flips == {True, False}
  # Already at the load size: no resize before the crop.
  square = rng0.integers(0, 256, (38, 38, 3), dtype=np.uint8)
  (big,) = transforms.random_crop_flip_pyramid(square, (32,),
                                               np.random.default_rng(3))
  assert big.shape == (32, 32, 3)


def test_pyramid_without_crop_flip():
  image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)
  a = transforms.random_crop_flip_pyramid(image, SIZES, None,
                                          random_crop_flip=False)
  expect = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
  np.testing.assert_array_equal(np.rint((a[1] + 1) * 127.5), expect)
  with pytest.raises(ValueError, match="ascending"):
    transforms.random_crop_flip_pyramid(image, (32, 16), None, False)


# ------------------------------------------------------------------- config

def test_get_source_and_stage_sizes():
  config = base.get_config()
  assert pipeline.stage_sizes(config) == (64, 128, 256)
  config = base.tiny(base.get_config())
  assert pipeline.stage_sizes(config) == (32, 64)
  src = pipeline.get_source(config, "train", 64)
  assert isinstance(src, shapes.ShapesSource)
  assert len(src) == config.data.shapes_num_train
  assert src[0]["image"].shape == (76, 76, 3)
  config.data.random_crop_flip = False
  test = pipeline.get_source(config, "test", 64)
  assert test[0]["image"].shape == (64, 64, 3) and test.vocab == src.vocab
  config.data.name = "birds"
  config.data.data_dir = "/no/such/birds_dir"
  with pytest.raises(FileNotFoundError, match="no/such/birds_dir"):
    pipeline.get_source(config, "train", 64)
  config.data.name = "flowers"
  with pytest.raises(ValueError, match="config.data.name"):
    pipeline.get_source(config, "train", 64)


# ---------------------------------------------------- the dataset registry

def test_every_registered_opener_and_protocol_resolves():
  """Each entry's openers import and are callables; 'auto' IS protocols."""
  for name, entry in datasets.DATASETS.items():
    paths = ([entry.generator] if entry.generator else
             [datasets.SOURCES[s].opener for s in entry.sources])
    for path in paths:
      assert callable(datasets._resolve(path)), (name, path)
    assert datasets.resolve_is_protocol(name, "auto") == entry.is_protocol
    assert datasets.resolve_is_protocol(name, "none") == "none"
  assert datasets.resolve_is_protocol("birds", "auto") == "cub"
  with pytest.raises(ValueError, match=r"config\.data\.name='flowers' is "
                     r"not one of \('shapes', 'birds', 'coco'\)"):
    datasets.resolve_is_protocol("flowers", "auto")


def test_a_dataset_entry_without_an_is_protocol_is_refused():
  with pytest.raises(TypeError, match="is_protocol"):
    datasets.Dataset(sources=("attngan",))  # pylint: disable=no-value-for-parameter
  for protocol in ("", "inception"):
    with pytest.raises(ValueError, match=rf"is_protocol={protocol!r} is not "
                       r"one of \('shapes', 'cub', 'coco', 'none'\) \(the IS "
                       r"classifier of its images; 'none' when it has none\)"):
      datasets.Dataset(protocol, sources=("attngan",))
  with pytest.raises(ValueError, match="give its sources or its generator"):
    datasets.Dataset("none")
  with pytest.raises(ValueError, match=r"unknown sources \['hdf5'\]"):
    datasets.Dataset("none", sources=("attngan", "hdf5"))
  assert datasets.Dataset("none", sources=("tfds",)).is_protocol == "none"


def test_a_source_must_answer_the_whole_protocol():
  class _NoClasses(source_items.Source):
    split = "train"

    def __len__(self):
      return 1

    def __getitem__(self, i):
      return {}

    def captions(self, i):
      return [[1]]

    def key(self, i):
      return "k"

  with pytest.raises(TypeError, match="class_id"):
    _NoClasses()  # pylint: disable=abstract-class-instantiated


def test_tiny_reads_its_own_dataset_and_source(tmp_path):
  """``configs/damsm_bird.py:tiny --config.data.source=tfds`` reads t2i_birds
  (it trained on the generated shapes data before)."""
  c = damsm_bird.get_config("tiny")
  c.data.source = "tfds"
  c.data.tfds_data_dir = str(tmp_path)
  assert datasets.describe(c.data) == (
      f"data set 'birds' (source 'tfds', {tmp_path})")
  with pytest.raises(FileNotFoundError, match=r"t2i_birds/cpi10 is not "
                     r"prepared.*--dataset=t2i_birds"):
    pipeline.get_source(c, "train", 64)
  c.data.source = "attngan"
  with pytest.raises(FileNotFoundError, match=r"config\.data\.data_dir='': no "
                     r"such directory \(expected the AttnGAN layout"):
    pipeline.get_source(c, "train", 64)


# ----------------------------------------------------------------- iterator

def test_batch_format(source):
  it = _iter(source)
  assert it.steps_per_epoch == 6
  for batch in _take(it, 3):
    small, big = batch["images"]
    assert small.shape == (8, 16, 16, 3) and big.shape == (8, 32, 32, 3)
    assert small.dtype == big.dtype == np.float32
    assert -1 <= big.min() < 0 < big.max() <= 1
    caps, lens = batch["captions"], batch["caption_lens"]
    assert caps.shape == (8, WORDS) and caps.dtype == np.int32
    assert lens.shape == (8,) and lens.dtype == np.int32
    assert np.all(np.diff(lens) <= 0)                    # sorted, descending
    assert np.all((lens >= 1) & (lens <= WORDS))
    positions = np.arange(WORDS)[None, :]
    assert np.all((caps > 0) == (positions < lens[:, None]))
    assert batch["class_ids"].dtype == np.int32
    assert batch["keys"].shape == (8,) and batch["keys"].dtype.kind == "U"
    for key, cid, cap, n in zip(batch["keys"], batch["class_ids"], caps, lens):
      i = int(key.rsplit("/", 1)[1])
      assert source.scene(i).class_id == cid
      words = source.vocab.decode(cap[:n]).split()
      # With fewer than WORDS words the caption is whole (up to the
      # left/right swap of a flipped image); longer ones lose random words.
      swap = {"left": "right", "right": "left"}
      originals = [source.vocab.decode(c).split()
                   for c in source[i]["captions"]]
      originals += [[swap.get(w, w) for w in o] for o in originals]
      if n < WORDS:
        assert words in originals
      else:
        assert any(set(words) <= set(o) for o in originals)


def test_epochs_shuffle_and_cover(source):
  it = _iter(source, num_epochs=2)
  batches = list(it)
  assert len(batches) == 12
  epochs = [np.concatenate([b["keys"] for b in batches[e * 6:(e + 1) * 6]])
            for e in range(2)]
  for keys in epochs:
    assert len(set(keys)) == 48                     # each item once per epoch
  assert list(epochs[0]) != list(epochs[1])         # a fresh shuffle
  # drop_remainder=False keeps the last partial batch; shuffle=False keeps
  # the source order.
  it = _iter(source, global_batch_size=10, drop_remainder=False,
             num_epochs=1, shuffle=False, random_crop_flip=False)
  batches = list(it)
  assert [len(b["keys"]) for b in batches] == [10, 10, 10, 10, 8]
  assert sorted(np.concatenate([b["keys"] for b in batches])) == [
      source.key(i) for i in range(48)]


def test_deterministic_across_constructions(source):
  _assert_batches_equal(_take(_iter(source), 4), _take(_iter(source), 4))
  other = _take(_iter(source, seed=2), 1)[0]
  assert list(other["keys"]) != list(_take(_iter(source), 1)[0]["keys"])


def test_resume_across_epoch_boundary(source):
  it = _iter(source)
  _take(it, 4)
  state = json.loads(json.dumps(it.get_state()))   # JSON-serialisable
  assert state["next_batch"] == 4
  expected = _take(it, 5)                          # batches 4..8: epoch 0 -> 1
  fresh = _iter(source)
  fresh.set_state(state)
  assert fresh.epoch == 0 and fresh.next_batch == 4
  _assert_batches_equal(_take(fresh, 5), expected)
  # Rewinding a used iterator works too.
  it.set_state(state)
  _assert_batches_equal(_take(it, 5), expected)
  # A state from another stream is refused.
  with pytest.raises(ValueError, match="global_batch_size"):
    _iter(source, global_batch_size=16).set_state(state)


def test_grain_checkpoint_handler(source, tmp_path):
  grain = pytest.importorskip("grain")
  it = _iter(source)
  _take(it, 3)
  grain.checkpoint.CheckpointHandler().save(tmp_path, item=it)
  expected = _take(it, 2)
  fresh = grain.checkpoint.CheckpointHandler().restore(tmp_path,
                                                       item=_iter(source))
  _assert_batches_equal(_take(fresh, 2), expected)


def test_two_hosts_make_the_global_batch(source):
  single = _take(_iter(source), 7)  # crosses into the second epoch
  hosts = [_take(_iter(source, process_index=h, process_count=2), 7)
           for h in range(2)]
  for step, full in enumerate(single):
    parts = [hosts[h][step] for h in range(2)]
    assert all(len(p["keys"]) == 4 for p in parts)
    keys = np.concatenate([p["keys"] for p in parts])
    assert sorted(keys) == sorted(full["keys"])
    # Same rows, not just the same keys: identical crops and captions.
    rows = {k: i for i, k in enumerate(full["keys"])}
    for p in parts:
      for j, k in enumerate(p["keys"]):
        i = rows[k]
        np.testing.assert_array_equal(p["captions"][j], full["captions"][i])
        np.testing.assert_array_equal(p["images"][1][j], full["images"][1][i])
  with pytest.raises(ValueError, match="divisible"):
    _iter(source, global_batch_size=9, process_count=2, process_index=1)


def test_workers_give_the_same_stream(source):
  expected = _take(_iter(source), 8)
  it = _iter(source, num_workers=2)
  try:
    got = _take(it, 5)
    state = it.get_state()
    _assert_batches_equal(got, expected[:5])
    # A state taken with workers resumes without them, and vice versa.
    plain = _iter(source)
    plain.set_state(state)
    _assert_batches_equal(_take(plain, 3), expected[5:])
    it.set_state({**state, "next_batch": 6})
    _assert_batches_equal(_take(it, 2), expected[6:])
  finally:
    it.close()


class _MirrorSource(source_items.Source):
  """Left half dark, right half light; the only caption says 'left' (id 1)."""
  split = "mirror"
  mirror_word_pairs = ((1, 2),)

  def __len__(self):
    return 16

  def captions(self, i):
    return [[1, 3]]

  def class_id(self, i):
    return 0

  def key(self, i):
    return f"m{i}"

  def __getitem__(self, i):
    image = np.zeros((38, 38, 3), np.uint8)
    image[:, 19:] = 255
    return dict(image=image, captions=self.captions(i), class_id=0,
                key=self.key(i))


def test_flip_mirrors_left_right_words():
  batch = _take(_iter(_MirrorSource(), global_batch_size=16), 1)[0]
  big = batch["images"][1]
  flipped = big[:, :, :8].mean(axis=(1, 2, 3)) > big[:, :, -8:].mean(
      axis=(1, 2, 3))
  assert 0 < flipped.sum() < 16
  np.testing.assert_array_equal(batch["captions"][:, 0],
                                np.where(flipped, 2, 1))
  batch = _take(_iter(_MirrorSource(), global_batch_size=16,
                      mirror_captions=False), 1)[0]
  assert np.all(batch["captions"][:, 0] == 1)


def test_bad_arguments(source):
  with pytest.raises(ValueError, match="larger than the train split.*48"):
    _iter(source, global_batch_size=64)
  with pytest.raises(ValueError, match="config.data.caption_truncation"):
    _iter(source, truncation="middle")
  with pytest.raises(ValueError, match="ascending"):
    _iter(source, image_sizes=(32, 16))
  assert pipeline.steps_per_epoch(48, 10) == 4
  assert pipeline.steps_per_epoch(48, 10, drop_remainder=False) == 5
