"""The embedded procedural 'shapes' dataset."""

import collections

import numpy as np
import pytest

from input_pipeline import shapes
from input_pipeline import text


def _source(split="train", num_train=60, num_test=20, seed=3, cpi=5, size=32):
  return shapes.ShapesSource(split, num_train, num_test, seed, cpi, size)


def test_item_format():
  src = _source()
  assert len(src) == 60 and src.num_classes == 56
  ex = src[4]
  assert ex["image"].dtype == np.uint8 and ex["image"].shape == (32, 32, 3)
  assert len(ex["captions"]) == 5
  assert all(c and all(isinstance(i, int) and i > 0 for i in c)
             for c in ex["captions"])
  assert ex["class_id"] == src.scene(4).class_id
  assert ex["key"] == "shapes/train/000004"
  assert [src.vocab.decode(c) for c in ex["captions"]] == [
      " ".join(text.tokenize(s)) for s in src.captions_text(4)]
  with pytest.raises(IndexError):
    src[60]


def test_deterministic_per_index():
  a = _source()
  shapes._build.cache_clear()  # rebuild everything from scratch
  b = _source()
  assert a.vocab == b.vocab and a.vocab is not b.vocab
  for i in (0, 7, 59):
    assert a[i]["image"].tobytes() == b[i]["image"].tobytes()
    assert a[i]["captions"] == b[i]["captions"]
  assert a[0]["image"].tobytes() != a[1]["image"].tobytes()
  assert a.captions_text(0) != a.captions_text(1)
  # An item does not depend on the split sizes or on access order.
  c = _source(num_train=30, num_test=40)
  assert c.captions_text(12) == a.captions_text(12)
  assert c[12]["image"].tobytes() == a[12]["image"].tobytes()
  # Splits and seeds differ.
  assert _source("test")[0]["image"].tobytes() != a[0]["image"].tobytes()
  assert _source(seed=4).captions_text(0) != a.captions_text(0)


def test_vocab_shared_by_splits():
  train, test = _source("train"), _source("test")
  assert train.vocab == test.vocab
  assert train.vocab.fingerprint() == test.vocab.fingerprint()
  all_words = {w for src in (train, test) for i in range(len(src))
               for s in src.captions_text(i) for w in text.tokenize(s)}
  assert train.vocab.n_words == 1 + len(all_words)
  assert train.vocab.n_words < 200          # a small grammar
  left, right = train.vocab.wordtoix["left"], train.vocab.wordtoix["right"]
  assert train.mirror_word_pairs == ((left, right),)


@pytest.mark.parametrize("cpi", [5, 10])
def test_captions_name_main_colour_and_kind(cpi):
  src = _source(num_train=80, cpi=cpi)
  for i in range(len(src)):
    scene = src.scene(i)
    caps = src.captions_text(i)
    assert len(caps) == cpi and len(set(caps)) == cpi
    for cap in caps:
      words = text.tokenize(cap)
      assert scene.main.colour in words and scene.main.kind in words, cap
      for bad in (" a a", " a o", " a e", " a i", " a u"):
        assert bad not in " " + cap                  # 'an orange', not 'a o...'


def test_grammar_variety():
  templates, openings = set(), set()
  for i in range(50):
    rng = np.random.default_rng([9, 0, i])
    scene = shapes.sample_scene(rng)
    caps, used = shapes.make_captions(scene, rng, 5, return_templates=True)
    templates.update(used)
    openings.update(" ".join(c.split()[:2]) for c in caps)
  assert len(templates) >= 10
  assert len(openings) >= 15


def test_class_ids_and_balance():
  src = _source(num_train=400, num_test=10, cpi=5)
  ids = [src.scene(i).class_id for i in range(len(src))]
  assert all(0 <= c < src.num_classes for c in ids)
  assert len(set(ids)) > 45                         # 56 classes, 400 draws
  kinds = collections.Counter(src.scene(i).main.kind for i in range(len(src)))
  assert set(kinds) == set(shapes.KINDS)
  assert shapes.class_name(shapes.class_id("star", "blue")) == "blue star"
  two = sum(len(src.scene(i).objects) == 2 for i in range(len(src)))
  assert 0.25 < two / len(src) < 0.55


def _nearest_colour(rgb):
  names = shapes.OBJECT_COLOURS
  d = [np.linalg.norm(np.asarray(shapes.COLOURS[n], np.float32) - rgb)
       for n in names]
  return names[int(np.argmin(d))]


@pytest.mark.parametrize("size", [32, 64])
def test_rendered_colours_match_words(size):
  src = _source(num_train=40, size=size)
  for i in range(len(src)):
    scene = src.scene(i)
    img = src[i]["image"].astype(np.float32)
    alphas = [shapes.object_alpha(o, size) for o in scene.objects]
    inside = alphas[0] > 0.99
    assert inside.sum() >= (3 if size == 32 else 20), (i, inside.sum())
    mean_inside = img[inside].mean(axis=0)
    assert _nearest_colour(mean_inside) == scene.main.colour, (i, scene)
    outside = np.all([a == 0 for a in alphas], axis=0)
    bg = np.asarray(shapes.COLOURS[scene.background], np.float32)
    np.testing.assert_array_equal(img[outside], np.broadcast_to(
        bg, img[outside].shape))
    assert np.linalg.norm(mean_inside - bg) > 60


def test_render_any_size_and_antialiasing():
  scene = shapes.Scene("white", (shapes.ShapeObject(
      "circle", "black", "large", "center", "plain", 0.5, 0.5, 0.3),))
  for size in (16, 64, 300):
    img = shapes.render_scene(scene, size)
    assert img.shape == (size, size, 3)
  img = shapes.render_scene(scene, 64)[..., 0]
  # Soft edge: some pixels lie strictly between object and background.
  assert np.any((img > 40) & (img < 230))
  frac = np.mean(img < 135)
  assert abs(frac - np.pi * 0.3**2) < 0.02  # area of the circle


def test_single_scenes():
  full = _source()
  single = shapes.ShapesSource("train", 60, 20, 3, 5, 32, scenes="single")
  assert "scenes='single'" in repr(single)
  kinds, colours = set(), set()
  for i in range(len(single)):
    scene = single.scene(i)
    (obj,) = scene.objects
    assert (obj.size, obj.position, obj.texture) == ("large", "center",
                                                      "plain")
    assert abs(obj.cx - 0.5) <= 0.02 and abs(obj.cy - 0.5) <= 0.02
    assert scene.background != obj.colour
    kinds.add(obj.kind)
    colours.add(obj.colour)
    for caption in single.captions_text(i):  # named, and nothing else
      words = text.tokenize(caption)
      assert obj.colour in words and obj.kind in words, caption
      assert not {"left", "right", "top", "bottom", "small", "striped",
                  "dotted"} & set(words), caption
    # The object is the largest of any 'full' scene, around the centre.
    alpha = shapes.object_alpha(obj, 64)
    centre = alpha[30:34, 30:34]
    assert (centre.max() == 0.0) if obj.kind == "ring" else (
        centre.min() == 1.0), obj
    assert alpha.sum() > max(shapes.object_alpha(o, 64).sum()
                             for o in full.scene(i).objects)
  assert len(kinds) == len(shapes.KINDS) and len(colours) >= 7
  # Same per-index determinism; the vocabulary is the single grammar's own.
  shapes._build.cache_clear()
  again = shapes.ShapesSource("train", 30, 40, 3, 5, 32, scenes="single")
  assert again.captions_text(7) == single.captions_text(7)
  assert again[7]["image"].tobytes() == single[7]["image"].tobytes()
  assert single.vocab.n_words < full.vocab.n_words
  with pytest.raises(ValueError, match="config.data.shapes_scenes"):
    shapes.ShapesSource("train", 6, 2, 3, 5, 32, scenes="simple")


def test_source_from_config_reads_every_field():
  from configs import dmgan_shapes
  d = dmgan_shapes.get_config().data
  assert d.shapes_scenes == "single"
  d.shapes_num_train, d.shapes_num_test, d.captions_per_image = 12, 5, 3
  src = shapes.source_from_config(d, "test", 40)
  assert (len(src), src.scenes, src.seed, src.render_size) == (
      5, "single", d.shapes_seed, 40)
  assert len(src.captions_text(0)) == 3
  assert len(shapes.source_from_config(d, "train", 40, num_train=7)) == 7
