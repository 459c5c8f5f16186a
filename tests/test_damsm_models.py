"""DAMSM encoders: text encoder vs a NumPy PyTorch-style LSTM, Inception blocks vs NumPy,
the align-corners resize, trunk conversion round trip, and the image encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from np_reference import np_conv

from configs import base as base_config
from t2igan_jax.models import inception as inc
from t2igan_jax.models.image_encoder import (ImageEncoder, export_inception_trunk,
                                             image_encoder_from_config,
                                             inception_trunk_shapes, load_image_encoder,
                                             load_inception_trunk)
from t2igan_jax.models.text_encoder import TextEncoder, text_encoder_from_config

N_WORDS, WORD_DIM, EMB, B, T = 20, 8, 16, 4, 6
LENGTHS = np.array([6, 1, 3, 5], np.int32)   # unsorted on purpose; includes 1 and T


# ===================================================================== text encoder
def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _torch_lstm_weights(cell):
  """Flax OptimizedLSTMCell params -> PyTorch (weight_ih, weight_hh, bias_ih, bias_hh)."""
  gates = "ifgo"
  w_ih = np.concatenate([np.asarray(cell[f"i{g}"]["kernel"]).T for g in gates], 0)
  w_hh = np.concatenate([np.asarray(cell[f"h{g}"]["kernel"]).T for g in gates], 0)
  bias = np.concatenate([np.asarray(cell[f"h{g}"]["bias"]) for g in gates], 0)
  return w_ih, w_hh, 0.25 * bias, 0.75 * bias   # any split: PyTorch adds the two biases


def _np_lstm(xs, w_ih, w_hh, b_ih, b_hh):
  """PyTorch nn.LSTM equations over one sequence xs [L, in]; returns h for every step."""
  hid = w_hh.shape[1]
  h, c = np.zeros(hid), np.zeros(hid)
  out = []
  for x in xs:
    z = w_ih @ x + b_ih + w_hh @ h + b_hh
    i, f, g, o = (z[k * hid:(k + 1) * hid] for k in range(4))
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c = f * c + i * g
    h = o * np.tanh(c)
    out.append(h)
  return np.stack(out)


def np_text_encoder(params, captions, lengths):
  emb = np.asarray(params["embedding"]["embedding"], np.float64)
  fwd = [w.astype(np.float64) for w in _torch_lstm_weights(params["forward_cell"])]
  bwd = [w.astype(np.float64) for w in _torch_lstm_weights(params["backward_cell"])]
  hid = EMB // 2
  words = np.zeros((len(captions), captions.shape[1], EMB))
  sent = np.zeros((len(captions), EMB))
  for b, (cap, n) in enumerate(zip(captions, lengths)):
    xs = emb[cap[:n]]
    hf = _np_lstm(xs, *fwd)
    hb = _np_lstm(xs[::-1], *bwd)[::-1]      # reads n-1 .. 0, stored in input order
    words[b, :n, :hid] = hf
    words[b, :n, hid:] = hb
    sent[b] = np.concatenate([hf[n - 1], hb[0]])
  return words, sent


@pytest.fixture(scope="module")
def text_model():
  model = TextEncoder(n_words=N_WORDS, word_dim=WORD_DIM, embedding_dim=EMB)
  rng = np.random.default_rng(0)
  captions = rng.integers(1, N_WORDS, size=(B, T)).astype(np.int32)
  captions[np.arange(T)[None, :] >= LENGTHS[:, None]] = 0
  variables = model.init(jax.random.key(0), captions, LENGTHS, train=False)
  apply = jax.jit(lambda v, c, l, key: model.apply(v, c, l, train=True, rngs={"dropout": key}))
  apply_eval = jax.jit(lambda v, c, l: model.apply(v, c, l, train=False))
  return model, variables, captions, apply, apply_eval


def test_text_encoder_param_tree(text_model):
  _, variables, _, _, _ = text_model
  p = variables["params"]
  assert set(p) == {"embedding", "forward_cell", "backward_cell"}
  assert p["embedding"]["embedding"].shape == (N_WORDS, WORD_DIM)
  assert np.abs(np.asarray(p["embedding"]["embedding"])).max() <= 0.1
  for cell in ("forward_cell", "backward_cell"):
    for g in "ifgo":
      assert set(p[cell][f"i{g}"]) == {"kernel"}
      assert p[cell][f"i{g}"]["kernel"].shape == (WORD_DIM, EMB // 2)
      assert p[cell][f"h{g}"]["kernel"].shape == (EMB // 2, EMB // 2)
      assert p[cell][f"h{g}"]["bias"].shape == (EMB // 2,)


def test_text_encoder_matches_numpy_lstm(text_model):
  _, variables, captions, _, apply_eval = text_model
  words, sent = apply_eval(variables, captions, LENGTHS)
  assert words.shape == (B, T, EMB) and sent.shape == (B, EMB)
  ref_words, ref_sent = np_text_encoder(variables["params"], captions, LENGTHS)
  np.testing.assert_allclose(np.asarray(words), ref_words, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(sent), ref_sent, atol=1e-5, rtol=0)
  pad = np.arange(T)[None, :] >= LENGTHS[:, None]
  assert np.all(np.asarray(words)[pad] == 0.0)          # exact zeros
  # Garbage token ids in the padding change nothing.
  noisy = np.where(pad, 7, captions).astype(np.int32)
  w2, s2 = apply_eval(variables, noisy, LENGTHS)
  np.testing.assert_array_equal(np.asarray(w2), np.asarray(words))
  np.testing.assert_array_equal(np.asarray(s2), np.asarray(sent))


def test_text_encoder_dropout_only_in_train(text_model):
  _, variables, captions, apply, apply_eval = text_model
  w_eval, s_eval = apply_eval(variables, captions, LENGTHS)
  w_a, s_a = apply(variables, captions, LENGTHS, jax.random.key(1))
  w_a2, _ = apply(variables, captions, LENGTHS, jax.random.key(1))
  w_b, _ = apply(variables, captions, LENGTHS, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(w_a), np.asarray(w_a2))
  assert np.abs(np.asarray(w_a) - np.asarray(w_eval)).max() > 1e-3
  assert np.abs(np.asarray(s_a) - np.asarray(s_eval)).max() > 1e-3
  assert np.abs(np.asarray(w_a) - np.asarray(w_b)).max() > 1e-3
  pad = np.arange(T)[None, :] >= LENGTHS[:, None]
  assert np.all(np.asarray(w_a)[pad] == 0.0)
  # With rate 0, train mode equals eval mode.
  model0 = TextEncoder(n_words=N_WORDS, word_dim=WORD_DIM, embedding_dim=EMB, dropout=0.0)
  w0, _ = model0.apply(variables, captions, LENGTHS, train=True,
                       rngs={"dropout": jax.random.key(3)})
  np.testing.assert_allclose(np.asarray(w0), np.asarray(w_eval), atol=1e-6)


def test_text_encoder_from_config():
  c = base_config.get_config()
  m = text_encoder_from_config(c, 5450)
  assert (m.n_words, m.word_dim, m.embedding_dim, m.dropout) == (5450, 300, 256, 0.5)


# ========================================================================= resize
def np_resize_align_corners(img, out_h, out_w):
  """Per-output-pixel bilinear interpolation, align_corners=True (PyTorch)."""
  n, in_h, in_w, ch = img.shape
  out = np.zeros((n, out_h, out_w, ch))
  sy = (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
  sx = (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
  for y in range(out_h):
    fy = y * sy
    y0 = min(int(np.floor(fy)), in_h - 1)
    y1 = min(y0 + 1, in_h - 1)
    wy = fy - y0
    for x in range(out_w):
      fx = x * sx
      x0 = min(int(np.floor(fx)), in_w - 1)
      x1 = min(x0 + 1, in_w - 1)
      wx = fx - x0
      out[:, y, x] = ((1 - wy) * ((1 - wx) * img[:, y0, x0] + wx * img[:, y0, x1])
                      + wy * ((1 - wx) * img[:, y1, x0] + wx * img[:, y1, x1]))
  return out


@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (9, 4)), ((6, 6), (1, 3)),
                                          ((4, 4), (4, 4))])
def test_resize_small_cases(in_hw, out_hw):
  img = np.random.default_rng(1).normal(size=(2, *in_hw, 3)).astype(np.float32)
  got = np.asarray(inc.resize_bilinear_align_corners(jnp.asarray(img), out_hw))
  np.testing.assert_allclose(got, np_resize_align_corners(img, *out_hw), atol=1e-5)


def test_resize_256_to_299_preserves_corners():
  img = np.random.default_rng(2).uniform(-1, 1, size=(1, 256, 256, 2)).astype(np.float32)
  got = np.asarray(jax.jit(lambda x: inc.resize_bilinear_align_corners(x, 299))(img))
  assert got.shape == (1, 299, 299, 2)
  np.testing.assert_allclose(got, np_resize_align_corners(img, 299, 299), atol=1e-5)
  for y, x, sy, sx in [(0, 0, 0, 0), (0, -1, 0, -1), (-1, 0, -1, 0), (-1, -1, -1, -1)]:
    np.testing.assert_array_equal(got[:, y, x], img[:, sy, sx])


# ================================================================ Inception blocks
def _shape(module, in_shape, **kw):
  x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
  return jax.eval_shape(
      lambda x: module.init_with_output(jax.random.key(0), x, use_running_average=True, **kw)[0],
      x)


@pytest.mark.parametrize("make,in_shape,out_shape", [
    (lambda: inc.BasicConv2d(32, (3, 3), strides=(2, 2)), (2, 299, 299, 3), (2, 149, 149, 32)),
    (lambda: inc.InceptionA(pool_features=32), (2, 35, 35, 192), (2, 35, 35, 256)),
    (lambda: inc.InceptionA(pool_features=64), (2, 35, 35, 256), (2, 35, 35, 288)),
    (lambda: inc.InceptionB(), (2, 35, 35, 288), (2, 17, 17, 768)),
    (lambda: inc.InceptionC(channels_7x7=160), (2, 17, 17, 768), (2, 17, 17, 768)),
    (lambda: inc.InceptionD(), (2, 17, 17, 768), (2, 8, 8, 1280)),
    (lambda: inc.InceptionE(), (2, 8, 8, 1280), (2, 8, 8, 2048)),
    (lambda: inc.InceptionE(pool="max"), (2, 8, 8, 2048), (2, 8, 8, 2048)),
])
def test_inception_block_shapes(make, in_shape, out_shape):
  assert _shape(make(), in_shape).shape == out_shape


def test_inception_trunk_shapes_and_parameter_count():
  f6e, f7c = _shape(inc.InceptionTrunk(), (2, 299, 299, 3))
  assert f6e.shape == (2, 17, 17, 768) and f7c.shape == (2, 8, 8, 2048)
  shapes = inception_trunk_shapes()
  assert tuple(shapes["params"]) == inc.TRUNK_MODULES

  # Independent count from SPEC-dmgan §5.1: (in, out, kh, kw) of every BasicConv2d;
  # each contributes in*out*kh*kw conv weights + 2*out BN (gamma, beta).
  def block_a(cin, pool):
    return [(cin, 64, 1, 1), (cin, 48, 1, 1), (48, 64, 5, 5), (cin, 64, 1, 1),
            (64, 96, 3, 3), (96, 96, 3, 3), (cin, pool, 1, 1)]

  def block_c(c7):
    return [(768, 192, 1, 1), (768, c7, 1, 1), (c7, c7, 1, 7), (c7, 192, 7, 1),
            (768, c7, 1, 1), (c7, c7, 7, 1), (c7, c7, 1, 7), (c7, c7, 7, 1),
            (c7, 192, 1, 7), (768, 192, 1, 1)]

  def block_e(cin):
    return [(cin, 320, 1, 1), (cin, 384, 1, 1), (384, 384, 1, 3), (384, 384, 3, 1),
            (cin, 448, 1, 1), (448, 384, 3, 3), (384, 384, 1, 3), (384, 384, 3, 1),
            (cin, 192, 1, 1)]

  layers = ([(3, 32, 3, 3), (32, 32, 3, 3), (32, 64, 3, 3), (64, 80, 1, 1), (80, 192, 3, 3)]
            + block_a(192, 32) + block_a(256, 64) + block_a(288, 64)
            + [(288, 384, 3, 3), (288, 64, 1, 1), (64, 96, 3, 3), (96, 96, 3, 3)]
            + block_c(128) + block_c(160) + block_c(160) + block_c(192)
            + [(768, 192, 1, 1), (192, 320, 3, 3), (768, 192, 1, 1), (192, 192, 1, 7),
               (192, 192, 7, 1), (192, 192, 3, 3)]
            + block_e(1280) + block_e(2048))
  assert len(layers) == 94
  expected = sum(i * o * kh * kw + 2 * o for i, o, kh, kw in layers)
  # = torchvision inception_v3's 27,161,264 minus AuxLogits (3,326,696) and fc (2,049,000).
  assert expected == 21_785_568
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count == expected
  n_stats = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["batch_stats"]))
  assert n_stats == sum(2 * o for _, o, _, _ in layers)


# ---------------------------------------------------------- NumPy block references


def np_pool3(x, kind, count_include_pad=True):
  """3x3 stride-1 pool with padding 1."""
  n, h, w, c = x.shape
  fill = -np.inf if kind == "max" else 0.0
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
  ones = np.pad(np.ones((h, w)), 1)
  out = np.zeros_like(x, dtype=np.float64)
  for y in range(h):
    for xx in range(w):
      win = xp[:, y:y + 3, xx:xx + 3]
      if kind == "max":
        out[:, y, xx] = win.max(axis=(1, 2))
      else:
        cnt = 9.0 if count_include_pad else ones[y:y + 3, xx:xx + 3].sum()
        out[:, y, xx] = win.sum(axis=(1, 2)) / cnt
  return out


def np_basic(x, p, s, stride=1, pad=(0, 0), eps=1e-3, train=False):
  y = np_conv(x, np.asarray(p["conv"]["kernel"], np.float64), stride, pad)
  if train:
    mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
  else:
    mean, var = np.asarray(s["bn"]["mean"]), np.asarray(s["bn"]["var"])
  y = (y - mean) / np.sqrt(var + eps) * np.asarray(p["bn"]["scale"]) + np.asarray(p["bn"]["bias"])
  return np.maximum(y, 0.0)


def np_inception_a(x, p, s, count_include_pad, train):
  c = lambda name, inp, pad=(0, 0): np_basic(inp, p[name], s[name], pad=pad, train=train)
  b1 = c("branch1x1", x)
  b5 = c("branch5x5_2", c("branch5x5_1", x), pad=(2, 2))
  b3 = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x), pad=(1, 1)), pad=(1, 1))
  bp = c("branch_pool", np_pool3(x, "avg", count_include_pad))
  return np.concatenate([b1, b5, b3, bp], axis=-1)


def np_inception_e(x, p, s, pool, count_include_pad, train):
  c = lambda name, inp, pad=(0, 0): np_basic(inp, p[name], s[name], pad=pad, train=train)
  b1 = c("branch1x1", x)
  b3 = c("branch3x3_1", x)
  b3 = np.concatenate([c("branch3x3_2a", b3, (0, 1)), c("branch3x3_2b", b3, (1, 0))], -1)
  bd = c("branch3x3dbl_2", c("branch3x3dbl_1", x), (1, 1))
  bd = np.concatenate([c("branch3x3dbl_3a", bd, (0, 1)), c("branch3x3dbl_3b", bd, (1, 0))], -1)
  bp = c("branch_pool", np_pool3(x, pool, count_include_pad))
  return np.concatenate([b1, b3, bd, bp], axis=-1)


def _randomise(variables, seed):
  """Random conv weights, BN gamma/beta and running stats (var > 0)."""
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = path[-1].key
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.3, leaf.shape), jnp.float32)
    return jnp.asarray(rng.normal(0, 0.5, leaf.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, variables)


@pytest.mark.parametrize("block,np_block", [
    (inc.InceptionA(pool_features=4, count_include_pad=True),
     lambda x, p, s, t: np_inception_a(x, p, s, True, t)),
    (inc.InceptionA(pool_features=4, count_include_pad=False),
     lambda x, p, s, t: np_inception_a(x, p, s, False, t)),
    (inc.InceptionE(pool="max", count_include_pad=False),
     lambda x, p, s, t: np_inception_e(x, p, s, "max", False, t)),
], ids=["A-include-pad", "A-exclude-pad", "E-max-pool"])
def test_inception_block_numerics(block, np_block):
  x = np.random.default_rng(3).normal(size=(2, 4, 5, 6)).astype(np.float32)
  variables = _randomise(block.init(jax.random.key(0), x, use_running_average=True), 4)
  p, s = variables["params"], variables["batch_stats"]
  got = block.apply(variables, x, use_running_average=True)
  np.testing.assert_allclose(np.asarray(got), np_block(x.astype(np.float64), p, s, False),
                             rtol=1e-4, atol=1e-4)
  got_train, _ = block.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(got_train), np_block(x.astype(np.float64), p, s, True),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind,cip", [("avg", True), ("avg", False), ("max", True)])
def test_pool_helpers(kind, cip):
  x = np.random.default_rng(5).normal(size=(2, 4, 5, 3)).astype(np.float32)
  got = inc.avg_pool_3x3(x, cip) if kind == "avg" else inc.max_pool_3x3(x, stride=1)
  np.testing.assert_allclose(np.asarray(got), np_pool3(x, kind, cip), atol=1e-6)
  got2 = np.asarray(inc.max_pool_3x3(x, stride=2))
  want2 = np.stack([np.stack([x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                              for j in range(2)], 1) for i in range(1)], 1)
  np.testing.assert_array_equal(got2, want2)


# ======================================================= trunk conversion round trip
@pytest.fixture(scope="module")
def random_trunk():
  shapes = inception_trunk_shapes()
  rng = np.random.default_rng(6)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes["params"])
  stats = jax.tree.map(lambda s: rng.uniform(0.5, 2, s.shape).astype(np.float32),
                       shapes["batch_stats"])
  return params, stats


def test_trunk_export_load_round_trip(random_trunk):
  params, stats = random_trunk
  state = export_inception_trunk(params, stats)
  assert len(state) == 94 * 5
  assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)             # OIHW
  assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
  assert state["Mixed_5b.branch_pool.bn.running_var"].shape == (32,)
  np.testing.assert_array_equal(state["Mixed_5b.branch5x5_2.conv.weight"],
                                params["Mixed_5b"]["branch5x5_2"]["conv"]["kernel"].transpose(3, 2, 0, 1))
  # Extra keys of real checkpoints are skipped.
  extra = dict(state)
  extra["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(7)
  extra["AuxLogits.fc.weight"] = np.zeros((3, 3), np.float32)
  extra["fc.bias"] = np.zeros(3, np.float32)
  p2, s2 = load_inception_trunk(extra)
  jax.tree.map(np.testing.assert_array_equal, p2, params)
  jax.tree.map(np.testing.assert_array_equal, s2, stats)


def test_trunk_load_errors(random_trunk):
  state = export_inception_trunk(*random_trunk)
  missing = dict(state)
  del missing["Mixed_6c.branch7x7dbl_4.bn.running_mean"]
  with pytest.raises(KeyError, match="Mixed_6c.branch7x7dbl_4.bn.running_mean"):
    load_inception_trunk(missing)
  unexpected = dict(state, **{"Mixed_5b.branch9x9.conv.weight": np.zeros(1, np.float32)})
  with pytest.raises(KeyError, match="Mixed_5b.branch9x9.conv.weight"):
    load_inception_trunk(unexpected)
  bad = dict(state)
  bad["Mixed_7a.branch3x3_2.conv.weight"] = np.zeros((320, 192, 1, 1), np.float32)
  with pytest.raises(ValueError, match="Mixed_7a.branch3x3_2.conv.weight"):
    load_inception_trunk(bad)


def test_load_image_encoder_from_npz(random_trunk, tmp_path):
  params, stats = random_trunk
  state = export_inception_trunk(params, stats)
  rng = np.random.default_rng(7)
  state["emb_features.weight"] = rng.normal(size=(EMB, 768, 1, 1)).astype(np.float32)
  state["emb_cnn_code.weight"] = rng.normal(size=(EMB, 2048)).astype(np.float32)
  state["emb_cnn_code.bias"] = rng.normal(size=(EMB,)).astype(np.float32)
  path = tmp_path / "image_encoder.npz"
  np.savez(path, **state)
  variables = load_image_encoder(path)
  enc = ImageEncoder(embedding_dim=EMB)
  want = jax.eval_shape(
      lambda x: enc.init(jax.random.key(0), x, train_trunk_bn=False),
      jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  assert (jax.tree.structure(jax.tree.map(lambda x: 0, variables))
          == jax.tree.structure(jax.tree.map(lambda x: 0, dict(want))))
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), variables, dict(want))
  np.testing.assert_array_equal(variables["params"]["emb_cnn_code"]["kernel"],
                                state["emb_cnn_code.weight"].T)


# ================================================================== image encoder
def test_image_encoder_inception_shapes():
  enc = ImageEncoder(embedding_dim=EMB)
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  (local, code), variables = jax.eval_shape(
      lambda x: enc.init_with_output(jax.random.key(0), x, train_trunk_bn=False), x)
  assert local.shape == (2, 17, 17, EMB) and code.shape == (2, EMB)
  assert set(variables["params"]) == {"trunk", "emb_features", "emb_cnn_code"}
  assert tuple(variables["params"]["trunk"]) == inc.TRUNK_MODULES
  assert variables["params"]["emb_features"]["kernel"].shape == (1, 1, 768, EMB)
  assert variables["params"]["emb_cnn_code"]["kernel"].shape == (2048, EMB)


@pytest.fixture(scope="module")
def small_encoder():
  enc = ImageEncoder(embedding_dim=EMB, backbone="small", input_size=32, small_width=4)
  images = jnp.asarray(np.random.default_rng(8).uniform(-1, 1, (2, 40, 40, 3)), jnp.float32)
  variables = enc.init(jax.random.key(0), images, train_trunk_bn=False)
  return enc, variables, images


def test_image_encoder_small_forward_and_init(small_encoder):
  enc, variables, images = small_encoder
  assert set(variables["params"]) == {"trunk", "emb_features", "emb_cnn_code"}
  assert set(variables["params"]["trunk"]) == {"layer1", "layer2", "layer3", "layer4"}
  assert set(variables["batch_stats"]) == {"trunk"}
  w = np.asarray(variables["params"]["emb_features"]["kernel"])
  assert w.shape == (1, 1, 16, EMB) and np.abs(w).max() <= 0.1
  bias = np.asarray(variables["params"]["emb_cnn_code"]["bias"])
  assert np.abs(bias).max() <= 1 / np.sqrt(32) and np.abs(bias).max() > 0
  local, code = enc.apply(variables, images, train_trunk_bn=False)
  assert local.shape == (2, 4, 4, EMB) and code.shape == (2, EMB)
  (local_t, code_t), upd = enc.apply(variables, images, train_trunk_bn=True,
                                     mutable=["batch_stats"])
  assert local_t.shape == local.shape and code_t.shape == code.shape
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         upd["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("train_bn", [False, True])
def test_image_encoder_gradient_reaches_images(small_encoder, train_bn):
  enc, variables, images = small_encoder

  def f(x):
    if train_bn:
      (local, code), _ = enc.apply(variables, x, train_trunk_bn=True, mutable=["batch_stats"])
    else:
      local, code = enc.apply(variables, x, train_trunk_bn=False)
    return jnp.sum(local ** 2) + jnp.sum(jnp.sin(code))

  g = np.asarray(jax.jit(jax.grad(f))(images))
  assert g.shape == images.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_image_encoder_config_and_errors():
  enc = image_encoder_from_config(base_config.get_config())
  assert (enc.backbone, enc.input_size, enc.embedding_dim) == ("inception", 299, 256)
  c = base_config.tiny(base_config.get_config())
  enc = image_encoder_from_config(c)
  assert (enc.backbone, enc.input_size, enc.small_width, enc.embedding_dim) == ("small", 32, 8, 32)
  c.image_encoder.backbone = "resnet"
  with pytest.raises(ValueError, match=r"config\.image_encoder\.backbone"):
    image_encoder_from_config(c)
  with pytest.raises(ValueError, match="resnet"):
    ImageEncoder(backbone="resnet").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                         train_trunk_bn=False)
