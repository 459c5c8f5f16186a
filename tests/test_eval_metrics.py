"""Inception Score (formula, drop_last, the COCO/CUB classifier heads and their errors) and
DAMSM R-precision (cosine ranks, class-aware mismatches, fold slicing) on hand-made cases."""

import jax
import numpy as np
import pytest
import scipy.stats

from t2igan_jax import damsm_lib
from t2igan_jax.evaluation import fid_inception as fi
from t2igan_jax.evaluation import inception_score as isc
from t2igan_jax.evaluation import r_precision as rp
from t2igan_jax.models.image_encoder import inception_trunk_shapes


# ===================================================================== IS formula
def _np_is(p, splits):
  """Per-split exp(mean KL(p(y|x) || p(y))) with scipy's KL, then mean and std."""
  n = len(p)
  scores = []
  for k in range(splits):
    part = p[k * n // splits:(k + 1) * n // splits]
    marginal = part.mean(axis=0)
    scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in part])))
  return np.mean(scores), np.std(scores)


def test_is_uniform_is_one():
  mean, std = isc.inception_score(np.full((40, 7), 1 / 7), splits=10, from_logits=False)
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
  mean, _ = isc.inception_score(np.zeros((40, 7)), splits=4, from_logits=True)
  assert mean == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 5, 13])
def test_is_one_hot_permutation_is_k(k):
  rng = np.random.default_rng(k)
  p = np.concatenate([np.eye(k)[rng.permutation(k)] for _ in range(10)])  # each split a permutation
  mean, std = isc.inception_score(p, splits=10, from_logits=False)
  assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
  mean1, _ = isc.inception_score(np.eye(k)[rng.permutation(k)], splits=1, from_logits=False)
  assert mean1 == pytest.approx(k, rel=1e-12)


def test_is_matches_scipy_and_logits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(103, 9)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  want = _np_is(p, 10)
  np.testing.assert_allclose(isc.inception_score(p, 10, from_logits=False), want, rtol=1e-10)
  np.testing.assert_allclose(isc.inception_score(logits.astype(np.float32), 10,
                                                 from_logits=True), want, rtol=1e-6)


def test_is_drop_last_and_shuffle():
  rng = np.random.default_rng(1)
  p = rng.dirichlet(np.ones(6) * 0.3, size=130)
  got = isc.inception_score(p, 10, from_logits=False, drop_last=True, batch_size=64)
  np.testing.assert_allclose(got, _np_is(p[:128], 10), rtol=1e-10)
  assert not np.allclose(got, _np_is(p, 10))
  perm = np.random.default_rng(7).permutation(130)
  got = isc.inception_score(p, 10, from_logits=False, drop_last=True,
                            rng=np.random.default_rng(7))
  np.testing.assert_allclose(got, _np_is(p[perm][:128], 10), rtol=1e-10)
  with pytest.raises(ValueError, match="cannot make 10 splits"):
    isc.inception_score(p[:63], 10, from_logits=False, drop_last=True)
  with pytest.raises(ValueError, match="not probability vectors"):
    isc.inception_score(np.log(p), 10, from_logits=False)


# ===================================================================== IS classifiers
def test_is_classifier_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"\(coco\).*empty path.*pt_inception"):
    isc.load_is_classifier("coco", "")
  with pytest.raises(FileNotFoundError, match=r"\(cub\).*not found at .*nope.npz.*StackGAN"):
    isc.load_is_classifier("cub", str(tmp_path / "nope.npz"))
  with pytest.raises(ValueError, match="IS protocol must be one of"):
    isc.load_is_classifier("imagenet", str(tmp_path / "x.npz"))
  if fi.package_weights_path() is not None:   # default_1.pt has no output layer
    with pytest.raises(ValueError, match=r"lack \['fc.weight', 'fc.bias'\]"):
      isc.load_is_classifier("coco", fi.package_weights_path())


def _constant_trunk_state(rng, mixed_7c_pool, with_gamma):
  """Zero conv kernels, BN mean 0 / var 1-eps: every BasicConv2d outputs relu(beta).

  Returns the torchvision-named state and the pool3 vector this gives (the
  Mixed_7c branch betas, concatenated in torchvision order).
  """
  shapes = inception_trunk_shapes(fi.fid_trunk(mixed_7c_pool, bn_use_scale=with_gamma))
  state = {}
  for coll in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[coll])[0]:
      keys = [p.key for p in path]
      prefix = ".".join(keys[:-1])
      if keys[-1] == "kernel":
        kh, kw, ci, co = leaf.shape
        state[prefix + ".weight"] = np.zeros((co, ci, kh, kw), np.float32)
      elif keys[-1] == "scale":
        state[prefix + ".weight"] = rng.uniform(0.5, 2, leaf.shape).astype(np.float32)
      elif keys[-1] == "bias":
        state[prefix + ".bias"] = rng.uniform(-1, 1, leaf.shape).astype(np.float32)
      elif keys[-1] == "mean":
        state[prefix + ".running_mean"] = np.zeros(leaf.shape, np.float32)
      else:
        state[prefix + ".running_var"] = np.full(leaf.shape, 1 - 1e-3, np.float32)
  branches = ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a",
              "branch3x3dbl_3b", "branch_pool")
  pool3 = np.concatenate([np.maximum(state[f"Mixed_7c.{b}.bn.bias"], 0) for b in branches])
  assert pool3.shape == (2048,)
  return state, pool3


def test_is_classifier_coco_head_and_bias(tmp_path):
  """COCO: logits = pool3 @ W (no bias by default; + b with logit_bias=True)."""
  rng = np.random.default_rng(2)
  state, pool3 = _constant_trunk_state(rng, "max", with_gamma=False)
  for k in [k for k in state if k.endswith(".bn.bias")]:     # pytorch-fid has gamma = 1
    state[k[:-4] + "weight"] = np.ones_like(state[k])
  w = rng.normal(size=(1008, 2048)).astype(np.float32) * 0.05
  b = rng.normal(size=(1008,)).astype(np.float32)
  path = tmp_path / "pt_inception.npz"
  np.savez(path, **state, **{"fc.weight": w, "fc.bias": b})
  images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  no_bias = np.asarray(isc.load_is_classifier("coco", str(path))(images))
  with_bias = np.asarray(isc.load_is_classifier("coco", str(path), logit_bias=True)(images))
  want = pool3.astype(np.float64) @ w.T.astype(np.float64)
  assert no_bias.shape == (2, 1008)
  np.testing.assert_allclose(no_bias, np.stack([want] * 2), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(with_bias - no_bias, np.stack([b] * 2), atol=1e-4)


def test_is_classifier_cub_drops_background(tmp_path):
  rng = np.random.default_rng(3)
  state, pool3 = _constant_trunk_state(rng, "avg", with_gamma=True)
  w = rng.normal(size=(51, 2048)).astype(np.float32) * 0.05
  b = rng.normal(size=(51,)).astype(np.float32)
  path = tmp_path / "cub_inception.npz"
  np.savez(path, **state, **{"fc.weight": w, "fc.bias": b})
  logits = np.asarray(isc.load_is_classifier("cub", str(path))(np.zeros((1, 40, 40, 3))))
  want = (pool3.astype(np.float64) @ w.T.astype(np.float64) + b)[1:]
  assert logits.shape == (1, 50)
  np.testing.assert_allclose(logits[0], want, rtol=1e-4, atol=1e-4)
  np.savez(path, **state, **{"fc.weight": w[:, :100], "fc.bias": b})
  with pytest.raises(ValueError, match=r"expected fc.weight \[50 or 51, 2048\]"):
    isc.load_is_classifier("cub", str(path))


# ===================================================================== R-precision
def test_retrieval_hits_known_ranks():
  """Candidate 0 is the own caption; ranks are set by hand."""
  e = np.eye(3)
  images = np.stack([e[0], e[1], e[2] * 5, e[0] + e[1]])
  candidates = np.stack([
      [e[0] * 7, e[1], e[2]],              # own caption identical direction: rank 1
      [e[0], e[1] + e[0], e[1] * 3],       # a mismatch is exactly aligned: rank 2
      [e[2] + e[0], e[2] + e[1], e[0]],    # tie between own and candidate 1: counts as hit
      [e[2], e[0] + e[1], e[0]],           # own caption orthogonal: last
  ])
  np.testing.assert_array_equal(rp.retrieval_hits(images, candidates), [1, 0, 1, 0])
  scores = rp.cosine_scores(images, candidates)
  np.testing.assert_allclose(scores[1], [0.0, 1 / np.sqrt(2), 1.0])
  zero = rp.cosine_scores(np.zeros((1, 3)), candidates[:1])   # norm clamp: no NaN
  np.testing.assert_array_equal(zero, np.zeros((1, 3)))


def test_retrieval_hits_match_argmax_loop():
  rng = np.random.default_rng(4)
  images = rng.normal(size=(50, 8))
  candidates = rng.normal(size=(50, 10, 8))
  candidates[:10, 0] = images[:10] * 2            # some certain hits
  want = []
  for v, c in zip(images, candidates):
    cos = [v @ u / (np.linalg.norm(v) * np.linalg.norm(u)) for u in c]
    want.append(int(np.argmax(cos)) == 0)
  np.testing.assert_array_equal(rp.retrieval_hits(images, candidates), want)


def test_fold_statistics_slicing():
  hits = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5, bool)
  mean, std, per_fold = rp.fold_statistics(hits, folds=2, fold_slicing="full")
  np.testing.assert_allclose(per_fold, [0.9, 0.5])
  assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
  mean, std, per_fold = rp.fold_statistics(hits, folds=2, fold_slicing="reference")
  np.testing.assert_allclose(per_fold, [1.0, 5 / 9])      # each fold loses its last entry
  assert mean == pytest.approx((1 + 5 / 9) / 2) and std == pytest.approx((1 - 5 / 9) / 2)
  _, _, shuffled = rp.fold_statistics(hits, 2, "full", rng=np.random.default_rng(0))
  perm = np.random.default_rng(0).permutation(20)
  np.testing.assert_allclose(shuffled, [hits[perm][:10].mean(), hits[perm][10:].mean()])
  with pytest.raises(ValueError, match="fold_slicing"):
    rp.fold_statistics(hits, 2, "off_by_one")


def test_draw_mismatched_other_classes():
  cand_cls = np.array([0, 0, 1, 1, 2, 2, 2])
  img_cls = np.array([0, 1, 2, 0])
  idx = rp.draw_mismatched(img_cls, cand_cls, 3, np.random.default_rng(0))
  assert idx.shape == (4, 3)
  for i, row in enumerate(idx):
    assert len(set(row.tolist())) == 3 and np.all(cand_cls[row] != img_cls[i])
  with pytest.raises(ValueError, match="needs 5 candidate captions.*has 4"):
    rp.draw_mismatched(np.array([2]), cand_cls, 5, np.random.default_rng(0))


def test_r_precision_hand_made_pool():
  """Class-0 images rank their own caption first (others orthogonal); class-1 images
  always lose to a drawn class-2 caption (3 draws from 2+2 other-class captions)."""
  e = np.eye(3)
  pool = np.stack([e[0], e[0], e[1], e[1], e[2], e[2]])
  pool_cls = np.array([0, 0, 1, 1, 2, 2])
  images = np.concatenate([np.tile(e[0], (10, 1)), np.tile(e[1] + e[2], (10, 1))])
  own = np.concatenate([np.tile(e[0], (10, 1)), np.tile(e[0], (10, 1))])
  img_cls = np.array([0] * 10 + [1] * 10)
  out = rp.r_precision(images, own, pool, pool_cls, img_cls, num_candidates=4, folds=2,
                       fold_slicing="full", rng=np.random.default_rng(0))
  assert out["top1"] == 0.5 and out["mean"] == pytest.approx(0.5)
  assert out["num_images"] == 20 and out["fold_size"] == 10 and out["fold_slicing"] == "full"
  assert "full slicing" in out["description"]
  ref = rp.r_precision(images, own, pool, pool_cls, img_cls, num_candidates=4, folds=1,
                       fold_slicing="reference", rng=np.random.default_rng(0))
  assert ref["fold_size"] == 19 and "off-by-one" in ref["description"]
  with pytest.raises(ValueError, match="do not agree"):
    rp.r_precision(images, own[:5], pool, pool_cls, img_cls, rng=np.random.default_rng(0))


def _pool_case(n, m, d, classes, seed=0):
  rng = np.random.default_rng(seed)
  img_cls = rng.integers(0, classes, n)
  own = rng.normal(size=(n, d)).astype(np.float32)
  images = (own + rng.normal(size=(n, d))).astype(np.float32)
  pool = rng.normal(size=(m, d)).astype(np.float32)
  pool_cls = rng.integers(0, classes, m)
  return images, own, pool, pool_cls, img_cls


def test_r_precision_chunked_equals_unchunked():
  """Chunks smaller than N (and not dividing it) give bitwise the same hits
  and the same result dict as all N images at once."""
  images, own, pool, pool_cls, img_cls = _pool_case(203, 90, 16, 7)
  idx = rp.draw_mismatched(img_cls, pool_cls, 24, np.random.default_rng(3))
  whole = rp.retrieval_hits(images, np.concatenate([own[:, None], pool[idx]], 1))
  for chunk in (1, 17, 64, 203, 1000):
    np.testing.assert_array_equal(
        rp.pooled_hits(images, own, pool, idx, chunk_size=chunk), whole)
  assert 0 < whole.sum() < len(whole)       # a case that can tell them apart
  args = (images, own, pool, pool_cls, img_cls)
  kw = dict(num_candidates=25, folds=10)
  want = rp.r_precision(*args, rng=np.random.default_rng(5), chunk_size=203, **kw)
  got = rp.r_precision(*args, rng=np.random.default_rng(5), chunk_size=17, **kw)
  np.testing.assert_array_equal(got.pop("per_fold"), want.pop("per_fold"))
  assert got == want
  with pytest.raises(ValueError, match="chunk_size"):
    rp.pooled_hits(images, own, pool, idx, chunk_size=-1)


def test_r_precision_memory_is_bounded():
  """3,000 images x 100 candidates x 256-d: the whole float64 candidate array
  alone would be 614 MB (1.5 GB peak before chunking); chunked, the numpy
  allocations peak under 200 MB (inputs ~10 MB)."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  images, own, pool, pool_cls, img_cls = _pool_case(3000, 3000, 256, 50)
  tracemalloc.start()
  try:
    rp.r_precision(images, own, pool, pool_cls, img_cls,
                   rng=np.random.default_rng(0))
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_damsm_validation_top1_shares_the_protocol():
  """damsm_lib.retrieval_top1 (built on draw_mismatched + retrieval_hits) equals a
  plain per-image loop: seeded draws of other-class captions, ties count as hits."""
  rng = np.random.default_rng(5)
  cls = rng.integers(0, 6, 60)
  sent = rng.normal(size=(60, 16))
  img = sent + rng.normal(size=(60, 16)) * 1.5
  draw = np.random.default_rng(3)
  hits = []
  for i in range(60):
    neg = draw.choice(np.flatnonzero(cls != cls[i]), 7, replace=False)
    cos = lambda u: img[i] @ u / (np.linalg.norm(img[i]) * np.linalg.norm(u))
    hits.append(all(cos(sent[j]) <= cos(sent[i]) for j in neg))
  want = np.mean(hits)
  assert 0.05 < want < 0.95
  assert damsm_lib.retrieval_top1(img, sent, cls, 8, seed=3) == pytest.approx(want)


def test_shapes_caption_agreement_counts_class_kind_and_colour():
  from t2igan_jax.evaluation import shapes_classifier
  # class = kind * 8 + colour. Predictions: exact; right kind, wrong colour;
  # right colour, wrong kind; both wrong.
  cls = np.array([10, 10, 10, 10])            # kind 1, colour 2
  pred = np.array([10, 13, 2 * 8 + 2, 0])
  logits = np.full((4, 56), -1.0)
  logits[np.arange(4), pred] = 3.0
  got = shapes_classifier.caption_agreement(logits, cls)
  assert got == {"class": 0.25, "kind": 0.5, "colour": 0.5, "num_images": 4}
  with pytest.raises(ValueError, match="3 predictions for 4 class ids"):
    shapes_classifier.caption_agreement(logits[:3], cls)
