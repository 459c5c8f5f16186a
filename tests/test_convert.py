"""Converter of released PyTorch checkpoints: layouts, every key, the whole job.

State dicts are built by the NumPy reference forwards below, which read (and
on a first "build" pass create) tensors under the reference key names in
PyTorch's own layouts (NCHW activations, OIHW kernels, Linear (out, in),
Conv1d (out, in, 1), LSTM gate rows i|f|g|o). Channel counts are reduced;
everything else has the reference shape. The dicts are saved with real torch
(zip and legacy formats), converted, and each converted network's forward is
compared with the NumPy forward.
"""

import collections
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from np_reference import (np_bn_eval, np_conv_nchw, np_glu_dim1, np_linear,
                          np_lstm_direction)

from configs import attngan_bird, attngan_shapes, dmgan_bird, dmgan_shapes, ffgan_bird
from t2igan_jax import convert
from t2igan_jax.errors import CheckpointError

torch = pytest.importorskip("torch")

TOL = dict(rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- helpers
class Params:
  """Reads reference tensors by name; in build mode creates them first."""

  def __init__(self, seed=0, sd=None):
    self.sd = collections.OrderedDict() if sd is None else sd
    self.build = sd is None
    self.rng = np.random.default_rng(seed)
    self.new_u = {}

  def _init(self, shape, init):
    r = self.rng
    if init == "weight":
      fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
      return r.standard_normal(shape) * 1.2 / math.sqrt(fan_in)
    if init == "bias":
      return 0.1 * r.standard_normal(shape)
    if init == "unit":
      v = r.standard_normal(shape)
      return v / np.linalg.norm(v)
    if init == "uniform":
      return r.uniform(-0.3, 0.3, shape)
    raise ValueError(init)

  def get(self, key, shape, init="weight"):
    if key not in self.sd:
      assert self.build, f"missing {key}"
      self.sd[key] = self._init(tuple(shape), init).astype(np.float32)
    value = self.sd[key]
    assert value.shape == tuple(shape), (key, value.shape, shape)
    return value.astype(np.float64)

  def bn(self, prefix, x, eps=1e-5):
    c = x.shape[1]
    if self.build and f"{prefix}.weight" not in self.sd:
      r = self.rng
      self.sd[f"{prefix}.weight"] = (1 + 0.1 * r.standard_normal(c)).astype(np.float32)
      self.sd[f"{prefix}.bias"] = (0.1 * r.standard_normal(c)).astype(np.float32)
      self.sd[f"{prefix}.running_mean"] = (0.1 * r.standard_normal(c)).astype(np.float32)
      self.sd[f"{prefix}.running_var"] = r.uniform(0.5, 1.5, c).astype(np.float32)
      self.sd[f"{prefix}.num_batches_tracked"] = np.array(7, np.int64)
    sd = {k: v.astype(np.float64) for k, v in self.sd.items()
          if k.startswith(prefix + ".")}
    return np_bn_eval(x, sd, prefix, eps)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def relu(x):
  return np.maximum(x, 0.0)


def lrelu(x):
  return np.where(x > 0, x, 0.2 * x)


def softmax(x, axis=-1):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def save_torch(sd, path, zip_format):
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in sd.items())
  torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
  return str(path)


# ----------------------------------------------------- NumPy generator (NCHW)
def up_block(p, prefix, x, cout):
  x = x.repeat(2, axis=2).repeat(2, axis=3)
  x = np_conv_nchw(x, p.get(f"{prefix}.1.weight", (2 * cout, x.shape[1], 3, 3)),
                   pad=1)
  return np_glu_dim1(p.bn(f"{prefix}.2", x))


def res_block(p, prefix, x):
  c = x.shape[1]
  y = np_conv_nchw(x, p.get(f"{prefix}.block.0.weight", (2 * c, c, 3, 3)), pad=1)
  y = np_glu_dim1(p.bn(f"{prefix}.block.1", y))
  y = np_conv_nchw(y, p.get(f"{prefix}.block.3.weight", (c, c, 3, 3)), pad=1)
  return p.bn(f"{prefix}.block.4", y) + x


def conv1d_relu(p, prefix, x, cout):
  """Conv1d(k=1) + ReLU on B x C x T."""
  w = p.get(f"{prefix}.0.weight", (cout, x.shape[1], 1))
  b = p.get(f"{prefix}.0.bias", (cout,), "bias")
  return relu(np.einsum("oi,bit->bot", w[:, :, 0], x) + b[None, :, None])


def rolled_softmax(logits, mask):
  """Reference masking: logits (B*Q) x T against mask.repeat(Q, 1)."""
  bq, _ = logits.shape
  q = bq // mask.shape[0]
  logits = np.where(np.tile(mask, (q, 1)), -np.inf, logits)
  return softmax(logits)


def memory_stage(p, pre, h, words, mask, mem_dim, r_num):
  b, c, hh, ww = h.shape
  e, t = words.shape[1], words.shape[2]
  q = hh * ww
  r = h.reshape(b, c, q).mean(2)
  gate1 = np_linear(words.transpose(0, 2, 1), p.get(f"{pre}.A.weight", (1, e)))
  gate2 = np_linear(r, p.get(f"{pre}.B.weight", (1, c)))
  g = sigmoid(gate1[..., 0] + gate2)                       # B x T
  mw = conv1d_relu(p, f"{pre}.M_w", words, mem_dim)        # B x m x T
  mr = conv1d_relu(p, f"{pre}.M_r", r[:, :, None], mem_dim)
  memory = mw * g[:, None, :] + mr * (1 - g[:, None, :])
  key = conv1d_relu(p, f"{pre}.key", memory, c)
  value = conv1d_relu(p, f"{pre}.value", memory, c)
  logits = np.einsum("bcq,bct->bqt", h.reshape(b, c, q), key).reshape(b * q, t)
  attn = rolled_softmax(logits, mask).reshape(b, q, t)
  ctx = np.einsum("bct,bqt->bcq", value, attn).reshape(b, c, hh, ww)
  gate = sigmoid(np_conv_nchw(
      np.concatenate([h, ctx], 1),
      p.get(f"{pre}.response_gate.0.weight", (1, 2 * c, 1, 1)),
      p.get(f"{pre}.response_gate.0.bias", (1,), "bias")))
  hw = h * (1 - gate) + ctx * gate
  x = np.concatenate([hw, hw], 1)
  for i in range(r_num):
    x = res_block(p, f"{pre}.residual.{i}", x)
  return up_block(p, f"{pre}.upsample", x, c), attn


def word_context(p, key, h, words, mask):
  b, c, hh, ww = h.shape
  e, t = words.shape[1], words.shape[2]
  q = hh * ww
  src = np.einsum("oe,bet->bot", p.get(key, (c, e, 1, 1))[:, :, 0, 0], words)
  logits = np.einsum("bcq,bct->bqt", h.reshape(b, c, q), src).reshape(b * q, t)
  attn = (rolled_softmax(logits, mask) if mask is not None
          else softmax(logits)).reshape(b, q, t)
  return np.einsum("bct,bqt->bcq", src, attn).reshape(b, c, hh, ww), attn


def attention_stage(p, pre, h, words, mask, r_num):
  ctx, attn = word_context(p, f"{pre}.att.conv_context.weight", h, words, mask)
  x = np.concatenate([h, ctx], 1)
  for i in range(r_num):
    x = res_block(p, f"{pre}.residual.{i}", x)
  return up_block(p, f"{pre}.upsample", x, h.shape[1]), attn


def ff_stage(p, pre, h, words, sent, r_num):
  b, c, hh, ww = h.shape
  ctx, attn = word_context(p, f"{pre}.w_att.conv_context.weight", h, words, None)
  u = np_conv_nchw(ctx, p.get(f"{pre}.affine.conv.weight", (128, c, 3, 3)), pad=1)
  gamma = np_conv_nchw(u, p.get(f"{pre}.affine.conv_weight.weight", (c, 128, 3, 3)),
                       pad=1)
  beta = np_conv_nchw(u, p.get(f"{pre}.affine.conv_bias.weight", (c, 128, 3, 3)),
                      pad=1)
  hw = h * gamma + beta
  s = sent @ p.get(f"{pre}.s_att.conv_context.weight",
                   (c, sent.shape[1], 1, 1))[:, :, 0, 0].T     # B x C
  a = softmax(h.reshape(b, c, -1) * s[:, :, None], axis=2)
  g = (s[:, :, None] * a).reshape(b, c, hh, ww)
  x = np.concatenate([hw, g], 1)
  for i in range(r_num):
    x = res_block(p, f"{pre}.residual.{i}", x)
  return up_block(p, f"{pre}.upsample", x, c), attn


def np_generator(p, cfg, z, sent, words, captions, lengths):
  """G_NET in eval mode with c = mu. words [B, E, T] (reference layout)."""
  m = cfg.model
  ngf, ncf, e = m.ngf, m.condition_dim, sent.shape[1]
  x = np_glu_dim1(np_linear(sent, p.get("ca_net.fc.weight", (4 * ncf, e)),
                            p.get("ca_net.fc.bias", (4 * ncf,), "bias")))
  mu = x[:, :ncf]
  n_up = int(round(math.log2(cfg.data.base_size / 4)))
  c0 = ngf * 2 ** n_up
  h = np_linear(np.concatenate([mu, z], 1),
                p.get("h_net1.fc.0.weight", (c0 * 32, ncf + m.z_dim)))
  h = np_glu_dim1(p.bn("h_net1.fc.1", h)).reshape(len(z), c0, 4, 4)
  for i in range(n_up):
    h = up_block(p, f"h_net1.upsample{i + 1}", h, c0 // 2 ** (i + 1))

  def img(k, h):
    return np.tanh(np_conv_nchw(h, p.get(f"img_net{k}.img.0.weight", (3, ngf, 3, 3)),
                                pad=1))
  images, atts = [img(1, h)], []
  t_max = int(max(lengths))              # the reference's T = batch max
  words, mask = words[:, :, :t_max], captions[:, :t_max] == 0
  for k in range(2, cfg.data.branch_num + 1):
    pre = f"h_net{k}"
    if m.refiner == "memory":
      h, att = memory_stage(p, pre, h, words, mask, m.memory_dim, m.r_num)
    elif m.refiner == "attention":
      h, att = attention_stage(p, pre, h, words, mask, m.r_num)
    else:
      h, att = ff_stage(p, pre, h, words, sent, m.r_num)
    images.append(img(k, h))
    atts.append(att)
  return images, atts, mu


def add_ffgan_dead_keys(p, cfg):
  """FF-GAN's unused DM-GAN memory tensors (present in its netG files)."""
  e, c, m = cfg.text_encoder.embedding_dim, cfg.model.ngf, cfg.model.memory_dim
  shapes = {"A.weight": (1, e), "B.weight": (1, c), "M_r.0.weight": (m, c, 1),
            "M_r.0.bias": (m,), "M_w.0.weight": (m, e, 1), "M_w.0.bias": (m,),
            "key.0.weight": (c, m, 1), "key.0.bias": (c,),
            "value.0.weight": (c, m, 1), "value.0.bias": (c,),
            "response_gate.0.weight": (1, 2 * c, 1, 1),
            "response_gate.0.bias": (1,)}
  assert set(shapes) == set(convert.FF_GAN_DEAD_KEYS)
  for k in range(2, cfg.data.branch_num + 1):
    for name, shape in shapes.items():
      p.get(f"h_net{k}.{name}", shape)


def text_inputs(cfg, seed=1, lengths=(4, 6, 2)):
  rng = np.random.default_rng(seed)
  b, t, e = len(lengths), cfg.data.words_num, cfg.text_encoder.embedding_dim
  captions = np.zeros((b, t), np.int32)
  words = np.zeros((b, t, e))
  for i, n in enumerate(lengths):
    captions[i, :n] = rng.integers(1, 20, n)
    words[i, :n] = rng.standard_normal((n, e))
  sent = rng.standard_normal((b, e))
  z = rng.standard_normal((b, cfg.model.z_dim))
  return z, sent, words, captions, np.asarray(lengths)


def tiny(module, **model):
  cfg = module.get_config("tiny")
  for k, v in model.items():
    if k in ("base_size", "branch_num"):
      cfg.data[k] = v
    else:
      cfg.model[k] = v
  return cfg


GENERATOR_CASES = {
    # refiner: (config, file format)
    "memory": (lambda: tiny(dmgan_bird, r_num=2, base_size=16, branch_num=3), False),
    "ffblock": (lambda: tiny(ffgan_bird, r_num=2), True),
    "attention": (lambda: tiny(attngan_bird), False),
}


@pytest.mark.parametrize("refiner", sorted(GENERATOR_CASES))
def test_generator_matches_numpy(tmp_path, refiner):
  from t2igan_jax.models.generator import generator_from_config
  make_cfg, zip_format = GENERATOR_CASES[refiner]
  cfg = make_cfg()
  assert cfg.model.refiner == refiner
  z, sent, words, captions, lengths = text_inputs(cfg)
  p = Params(seed=3)   # the build pass creates the tensors and the reference
  ref_images, ref_atts, ref_mu = np_generator(
      p, cfg, z, sent, words.transpose(0, 2, 1), captions, lengths)
  if refiner == "ffblock":
    add_ffgan_dead_keys(p, cfg)
  path = save_torch(p.sd, tmp_path / "netG_epoch_7.pth", zip_format)
  variables = convert.convert_generator(convert.torch_io.load(path), cfg,
                                        source=path)
  out = generator_from_config(cfg).apply(
      variables, jnp.asarray(z, jnp.float32), jnp.asarray(sent, jnp.float32),
      jnp.asarray(words, jnp.float32), jnp.asarray(captions == 0), train=False,
      sample_ca=False)
  np.testing.assert_allclose(out["mu"], ref_mu, **TOL)
  assert len(out["images"]) == cfg.data.branch_num
  for got, ref in zip(out["images"], ref_images):
    np.testing.assert_allclose(got, ref.transpose(0, 2, 3, 1), **TOL)
  t_max = int(lengths.max())
  for got, ref in zip(out["attention"], ref_atts):
    b, t = got.shape[:2]
    got = np.asarray(got).reshape(b, t, -1).transpose(0, 2, 1)   # B x Q x T
    np.testing.assert_allclose(got[..., :t_max], ref, **TOL)
    if refiner != "ffblock":   # columns past the batch maximum are masked
      np.testing.assert_array_equal(got[..., t_max:], 0.0)


# -------------------------------------------------- NumPy discriminator (NCHW)
def sn_conv(p, pre, x, cout, k, stride, pad):
  cin = x.shape[1]
  w = p.get(f"{pre}.weight_bar", (cout, cin, k, k))
  b = p.get(f"{pre}.bias", (cout,), "bias")
  u = p.get(f"{pre}.weight_u", (cout,), "unit")
  p.get(f"{pre}.weight_v", (cin * k * k,), "unit")     # stored, never read
  wm = w.reshape(cout, -1)
  v = wm.T @ u
  v = v / (np.linalg.norm(v) + 1e-12)
  u_new = wm @ v
  u_new = u_new / (np.linalg.norm(u_new) + 1e-12)
  sigma = u_new @ wm @ v
  p.new_u[pre] = u_new
  return np_conv_nchw(x, w / sigma, b, stride, pad)


def np_discriminator(p, stage, ndf, x, sent):
  for i in range(4):
    x = lrelu(sn_conv(p, f"img_code_s16.{2 * i}.module", x, ndf * 2 ** i, 4, 2, 1))
  ch = 8 * ndf
  for j in range(stage):
    ch *= 2
    x = lrelu(sn_conv(p, f"img_code_s{32 * 2 ** j}.0.module", x, ch, 4, 2, 1))
  for i in range(stage):
    ch //= 2
    x = lrelu(sn_conv(p, f"img_code_s{16 * 2 ** stage}_{i + 1}.0.module", x, ch,
                      3, 1, 1))
  code, s = x, x.shape[2]

  def logits(name, h):
    return np_conv_nchw(h, p.get(f"{name}.outlogits.0.weight", (1, 8 * ndf, s, s)),
                        p.get(f"{name}.outlogits.0.bias", (1,), "bias"),
                        stride=s).reshape(-1)
  uncond = logits("UNCOND_DNET", code)
  tiled = np.broadcast_to(sent[:, :, None, None], sent.shape + (s, s))
  joint = lrelu(sn_conv(p, "COND_DNET.jointConv.0.module",
                        np.concatenate([code, tiled], 1), 8 * ndf, 3, 1, 1))
  return code, uncond, logits("COND_DNET", joint)


@pytest.mark.parametrize("stage,zip_format", [(0, True), (1, False)])
def test_discriminator_matches_numpy(tmp_path, stage, zip_format):
  from t2igan_jax.models.discriminator import Discriminator
  cfg = dmgan_bird.get_config("tiny")
  size = cfg.data.base_size * 2 ** stage
  rng = np.random.default_rng(stage)
  x = rng.uniform(-1, 1, (2, 3, size, size))
  sent = rng.standard_normal((2, cfg.text_encoder.embedding_dim))
  ref = Params(seed=10 + stage)
  ref_code, ref_uncond, ref_cond = np_discriminator(ref, stage, cfg.model.ndf,
                                                    x, sent)
  p = ref
  path = save_torch(p.sd, tmp_path / f"netD{stage}.pth", zip_format)
  variables = convert.convert_discriminator(convert.torch_io.load(path), cfg,
                                            stage, source=path)
  (code, uncond, cond), new_vars = Discriminator(stage, cfg.model.ndf).apply(
      variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
      jnp.asarray(sent, jnp.float32), mutable=["batch_stats"])
  np.testing.assert_allclose(code, ref_code.transpose(0, 2, 3, 1), **TOL)
  np.testing.assert_allclose(uncond, ref_uncond, **TOL)
  np.testing.assert_allclose(cond, ref_cond, **TOL)
  # The SN state advanced exactly as PyTorch's forward advances weight_u.
  flat = {"/".join(str(k.key) for k in path_): v for path_, v in
          jax.tree_util.tree_flatten_with_path(new_vars["batch_stats"])[0]}
  rules = convert.key_map(convert.discriminator_shapes(cfg, stage),
                          convert.DISCRIMINATOR_RULES)
  checked = 0
  for torch_key, target in rules.items():
    if target.leaf == "u":
      pre = torch_key[:-len(".weight_u")]
      np.testing.assert_allclose(flat["/".join(target.path)], ref.new_u[pre],
                                 rtol=1e-5, atol=1e-6)
      checked += 1
  assert checked == 5 + 2 * stage


# ---------------------------------------------------------- text encoder
def np_text_encoder(p, captions, lengths, n_words, word_dim, hidden):
  emb = p.get("encoder.weight", (n_words, word_dim), "uniform")[captions]
  outs, finals = [], []
  for sfx, reverse in (("", False), ("_reverse", True)):
    out, final = np_lstm_direction(
        emb, lengths, p.get(f"rnn.weight_ih_l0{sfx}", (4 * hidden, word_dim), "uniform"),
        p.get(f"rnn.weight_hh_l0{sfx}", (4 * hidden, hidden), "uniform"),
        p.get(f"rnn.bias_ih_l0{sfx}", (4 * hidden,), "uniform"),
        p.get(f"rnn.bias_hh_l0{sfx}", (4 * hidden,), "uniform"), reverse)
    outs.append(out)
    finals.append(final)
  return np.concatenate(outs, -1), np.concatenate(finals, -1)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_text_encoder_matches_numpy(tmp_path, zip_format):
  from t2igan_jax.models.text_encoder import text_encoder_from_config
  cfg = dmgan_bird.get_config("tiny")
  n_words, hidden = 23, cfg.text_encoder.embedding_dim // 2
  lengths = np.array([3, 8, 1, 5])          # unsorted, one full, one single word
  rng = np.random.default_rng(0)
  captions = np.zeros((4, cfg.data.words_num), np.int32)
  for i, n in enumerate(lengths):
    captions[i, :n] = rng.integers(1, n_words, n)
  p = Params(seed=5)
  ref_words, ref_sent = np_text_encoder(p, captions, lengths, n_words,
                                        cfg.text_encoder.word_dim, hidden)
  path = save_torch(p.sd, tmp_path / "text_encoder200.pth", zip_format)
  params = convert.convert_text_encoder(convert.torch_io.load(path), cfg, n_words,
                                        source=path)
  words, sent = text_encoder_from_config(cfg, n_words).apply(
      {"params": params}, jnp.asarray(captions), jnp.asarray(lengths), train=False)
  np.testing.assert_allclose(words, ref_words, **TOL)
  np.testing.assert_allclose(sent, ref_sent, **TOL)


def test_text_encoder_wrong_vocabulary_size(tmp_path):
  cfg = dmgan_bird.get_config("tiny")
  p = Params(seed=5)
  np_text_encoder(p, np.ones((1, 3), np.int32), np.array([3]), 40,
                  cfg.text_encoder.word_dim, cfg.text_encoder.embedding_dim // 2)
  path = save_torch(p.sd, tmp_path / "text_encoder100.pth", True)
  with pytest.raises(CheckpointError,
                     match=r"text_encoder100.pth: encoder.weight has 40 rows.*"
                     r"vocabulary has 23 words"):
    convert.convert_text_encoder(convert.torch_io.load(path), cfg, 23,
                                 source=path)


# ---------------------------------------------------------- image encoder
def basic_conv(p, name, x, cout, k, stride=1, pad=0):
  kh, kw = (k, k) if np.isscalar(k) else k
  w = p.get(f"{name}.conv.weight", (cout, x.shape[1], kh, kw))
  return relu(p.bn(f"{name}.bn", np_conv_nchw(x, w, None, stride, pad), eps=1e-3))


def avg_pool3(x):
  """3x3/1 average pool, padding 1, count_include_pad=True."""
  xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  h, w = x.shape[2:]
  return sum(xp[:, :, dy:dy + h, dx:dx + w] for dy in range(3)
             for dx in range(3)) / 9.0


def max_pool3s2(x):
  h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
  return np.max([x[:, :, dy:dy + 2 * h - 1:2, dx:dx + 2 * w - 1:2]
                 for dy in range(3) for dx in range(3)], axis=0)


def np_inception(p, x):
  """torchvision Inception-v3 (DAMSM CNN_ENCODER trunk): returns (Mixed_6e, Mixed_7c)."""
  def block_a(n, x, pool_features):
    b1 = basic_conv(p, f"{n}.branch1x1", x, 64, 1)
    b5 = basic_conv(p, f"{n}.branch5x5_1", x, 48, 1)
    b5 = basic_conv(p, f"{n}.branch5x5_2", b5, 64, 5, pad=2)
    bd = basic_conv(p, f"{n}.branch3x3dbl_1", x, 64, 1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_2", bd, 96, 3, pad=1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_3", bd, 96, 3, pad=1)
    bp = basic_conv(p, f"{n}.branch_pool", avg_pool3(x), pool_features, 1)
    return np.concatenate([b1, b5, bd, bp], 1)

  def block_b(n, x):
    b3 = basic_conv(p, f"{n}.branch3x3", x, 384, 3, stride=2)
    bd = basic_conv(p, f"{n}.branch3x3dbl_1", x, 64, 1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_2", bd, 96, 3, pad=1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_3", bd, 96, 3, stride=2)
    return np.concatenate([b3, bd, max_pool3s2(x)], 1)

  def block_c(n, x, c7):
    b1 = basic_conv(p, f"{n}.branch1x1", x, 192, 1)
    b7 = basic_conv(p, f"{n}.branch7x7_1", x, c7, 1)
    b7 = basic_conv(p, f"{n}.branch7x7_2", b7, c7, (1, 7), pad=(0, 3))
    b7 = basic_conv(p, f"{n}.branch7x7_3", b7, 192, (7, 1), pad=(3, 0))
    bd = basic_conv(p, f"{n}.branch7x7dbl_1", x, c7, 1)
    bd = basic_conv(p, f"{n}.branch7x7dbl_2", bd, c7, (7, 1), pad=(3, 0))
    bd = basic_conv(p, f"{n}.branch7x7dbl_3", bd, c7, (1, 7), pad=(0, 3))
    bd = basic_conv(p, f"{n}.branch7x7dbl_4", bd, c7, (7, 1), pad=(3, 0))
    bd = basic_conv(p, f"{n}.branch7x7dbl_5", bd, 192, (1, 7), pad=(0, 3))
    bp = basic_conv(p, f"{n}.branch_pool", avg_pool3(x), 192, 1)
    return np.concatenate([b1, b7, bd, bp], 1)

  def block_d(n, x):
    b3 = basic_conv(p, f"{n}.branch3x3_1", x, 192, 1)
    b3 = basic_conv(p, f"{n}.branch3x3_2", b3, 320, 3, stride=2)
    b7 = basic_conv(p, f"{n}.branch7x7x3_1", x, 192, 1)
    b7 = basic_conv(p, f"{n}.branch7x7x3_2", b7, 192, (1, 7), pad=(0, 3))
    b7 = basic_conv(p, f"{n}.branch7x7x3_3", b7, 192, (7, 1), pad=(3, 0))
    b7 = basic_conv(p, f"{n}.branch7x7x3_4", b7, 192, 3, stride=2)
    return np.concatenate([b3, b7, max_pool3s2(x)], 1)

  def block_e(n, x):
    b1 = basic_conv(p, f"{n}.branch1x1", x, 320, 1)
    b3 = basic_conv(p, f"{n}.branch3x3_1", x, 384, 1)
    b3 = np.concatenate([
        basic_conv(p, f"{n}.branch3x3_2a", b3, 384, (1, 3), pad=(0, 1)),
        basic_conv(p, f"{n}.branch3x3_2b", b3, 384, (3, 1), pad=(1, 0))], 1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_1", x, 448, 1)
    bd = basic_conv(p, f"{n}.branch3x3dbl_2", bd, 384, 3, pad=1)
    bd = np.concatenate([
        basic_conv(p, f"{n}.branch3x3dbl_3a", bd, 384, (1, 3), pad=(0, 1)),
        basic_conv(p, f"{n}.branch3x3dbl_3b", bd, 384, (3, 1), pad=(1, 0))], 1)
    bp = basic_conv(p, f"{n}.branch_pool", avg_pool3(x), 192, 1)
    return np.concatenate([b1, b3, bd, bp], 1)

  x = basic_conv(p, "Conv2d_1a_3x3", x, 32, 3, stride=2)
  x = basic_conv(p, "Conv2d_2a_3x3", x, 32, 3)
  x = basic_conv(p, "Conv2d_2b_3x3", x, 64, 3, pad=1)
  x = max_pool3s2(x)
  x = basic_conv(p, "Conv2d_3b_1x1", x, 80, 1)
  x = basic_conv(p, "Conv2d_4a_3x3", x, 192, 3)
  x = max_pool3s2(x)
  x = block_a("Mixed_5b", x, 32)
  x = block_a("Mixed_5c", x, 64)
  x = block_a("Mixed_5d", x, 64)
  x = block_b("Mixed_6a", x)
  for n, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                ("Mixed_6e", 192)):
    x = block_c(n, x, c7)
  mixed_6e = x
  x = block_d("Mixed_7a", x)
  x = block_e("Mixed_7b", x)
  return mixed_6e, block_e("Mixed_7c", x)


def np_image_encoder(p, x, dim):
  f6e, f7c = np_inception(p, x)
  local = np_conv_nchw(f6e, p.get("emb_features.weight", (dim, 768, 1, 1)))
  pooled = f7c.mean((2, 3))
  glob = np_linear(pooled, p.get("emb_cnn_code.weight", (dim, 2048)),
                   p.get("emb_cnn_code.bias", (dim,), "bias"))
  return local, glob


def test_image_encoder_matches_numpy(tmp_path):
  """The full-width Inception trunk (567 reference tensors) at 75 px input."""
  from t2igan_jax.models.image_encoder import ImageEncoder
  cfg = dmgan_bird.get_config("tiny")
  cfg.image_encoder.backbone = "inception"
  cfg.image_encoder.input_size = 75
  dim = cfg.text_encoder.embedding_dim
  x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 75, 75))
  p = Params(seed=7)
  ref_local, ref_glob = np_image_encoder(p, x, dim)
  assert len(p.sd) == 567
  path = save_torch(p.sd, tmp_path / "image_encoder200.pth", False)
  variables = convert.convert_image_encoder(convert.torch_io.load(path), cfg,
                                            source=path)
  local, glob = ImageEncoder(embedding_dim=dim, backbone="inception",
                             input_size=75).apply(
                                 variables, jnp.asarray(x.transpose(0, 2, 3, 1),
                                                        jnp.float32),
                                 train_trunk_bn=False)
  np.testing.assert_allclose(local, ref_local.transpose(0, 2, 3, 1), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(glob, ref_glob, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------- key accounting
@pytest.fixture(scope="module")
def dmgan_state():
  cfg = dmgan_bird.get_config("tiny")
  z, sent, words, captions, lengths = text_inputs(cfg)
  p = Params(seed=3)
  np_generator(p, cfg, z, sent, words.transpose(0, 2, 1), captions, lengths)
  return cfg, p.sd


def test_reference_key_count():
  """Full-size key lists equal SPEC-dmgan §10.1-10.2 (119 / 143 G tensors with
  num_batches_tracked; D 24 / 32 / 40 with weight_v)."""
  for module, expected in ((dmgan_bird, 119), ):
    targets = convert.key_map(convert.generator_shapes(module.get_config()),
                              convert.GENERATOR_RULES)
    n_bn = sum(1 for k in targets if k.endswith(".running_mean"))
    assert len(targets) + n_bn == expected
  coco = dmgan_bird.get_config()
  coco.model.r_num = 3
  targets = convert.key_map(convert.generator_shapes(coco), convert.GENERATOR_RULES)
  assert len(targets) + sum(k.endswith(".running_mean") for k in targets) == 143
  for stage, expected in ((0, 24), (1, 32), (2, 40)):
    targets = convert.key_map(
        convert.discriminator_shapes(dmgan_bird.get_config(), stage),
        convert.DISCRIMINATOR_RULES)
    assert len(targets) + sum(k.endswith("weight_u") for k in targets) == expected


def test_data_parallel_prefix(dmgan_state):
  cfg, sd = dmgan_state
  plain = convert.convert_generator(sd, cfg)
  prefixed = convert.convert_generator({"module." + k: v for k, v in sd.items()},
                                       cfg)
  jax.tree.map(np.testing.assert_array_equal, plain, prefixed)


def test_unknown_missing_and_misshaped_keys(dmgan_state):
  cfg, sd = dmgan_state
  extra = dict(sd, **{"h_net2.extra.weight": np.zeros((3, 4), np.float32)})
  with pytest.raises(CheckpointError,
                     match=r"bird.pth does not fit.*unknown keys.*h_net2.extra.weight \(3, 4\)"):
    convert.convert_generator(extra, cfg, source="bird.pth")
  missing = {k: v for k, v in sd.items() if k != "h_net2.key.0.weight"}
  with pytest.raises(CheckpointError,
                     match=r"missing keys.*h_net2.key.0.weight \(8, 16, 1\)"):
    convert.convert_generator(missing, cfg)
  bad = dict(sd, **{"img_net1.img.0.weight": np.zeros((3, 9, 3, 3), np.float32)})
  with pytest.raises(CheckpointError,
                     match=r"img_net1.img.0.weight has shape \(3, 9, 3, 3\), "
                     r"expected \(3, 8, 3, 3\)"):
    convert.convert_generator(bad, cfg)
  # The memory keys are FF-GAN's known-dead keys, unknown for other models.
  with pytest.raises(CheckpointError, match="unknown keys.*h_net2.A.weight"):
    convert.convert_generator(sd, tiny(attngan_bird))
  with pytest.raises(CheckpointError, match=r"'ffblock' generator.*missing keys"
                     r".*h_net2.affine.conv.weight") as e:
    convert.convert_generator(sd, tiny(ffgan_bird))
  assert "A.weight" not in str(e.value)


def test_wrong_model_file(tmp_path, dmgan_state):
  cfg, sd = dmgan_state
  p = Params(seed=5)
  np_text_encoder(p, np.ones((1, 3), np.int32), np.array([3]), 23,
                  cfg.text_encoder.word_dim, cfg.text_encoder.embedding_dim // 2)
  te = save_torch(p.sd, tmp_path / "text_encoder200.pth", True)
  with pytest.raises(CheckpointError,
                     match=r"text_encoder200.pth does not fit the 'memory' generator"):
    convert.convert_generator(convert.torch_io.load(te), cfg, source=te)
  g = save_torch(sd, tmp_path / "netG.pth", True)
  with pytest.raises(CheckpointError, match="netG.pth is not a DAMSM text encoder"):
    convert.convert_text_encoder(convert.torch_io.load(g), cfg, 23, source=g)


# ------------------------------------------------------------- the whole job
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """convert() on the tiny shapes config; returns (cfg, workdir, state dicts)."""
  from input_pipeline import pipeline as input_pipeline
  cfg = dmgan_shapes.get_config("tiny")
  tmp = tmp_path_factory.mktemp("convert")
  vocab = input_pipeline.get_source(cfg, "train", 64).vocab
  z, sent, words, captions, lengths = text_inputs(cfg)
  pg = Params(seed=3)
  np_generator(pg, cfg, z, sent, words.transpose(0, 2, 1), captions, lengths)
  netg = save_torch(pg.sd, tmp / "netG_epoch_650.pth", False)
  pt = Params(seed=4)
  np_text_encoder(pt, np.ones((1, 3), np.int32), np.array([3]), vocab.n_words,
                  cfg.text_encoder.word_dim, cfg.text_encoder.embedding_dim // 2)
  text = save_torch(pt.sd, tmp / "text_encoder200.pth", True)
  pds = []
  for stage in range(cfg.data.branch_num):
    pd = Params(seed=20 + stage)
    size = cfg.data.base_size * 2 ** stage
    np_discriminator(pd, stage, cfg.model.ndf, np.zeros((1, 3, size, size)),
                     np.zeros((1, cfg.text_encoder.embedding_dim)))
    pds.append(pd.sd)
  netd = [save_torch(sd, tmp / f"netD{i}.pth", i % 2 == 0)
          for i, sd in enumerate(pds)]
  workdir = str(tmp / "work")
  record = convert.convert(cfg, workdir, netG=netg, text_encoder=text, netD=netd)
  return dict(cfg=cfg, workdir=workdir, record=record, g=pg.sd, text=pt.sd,
              d=pds, vocab=vocab, paths=dict(netG=netg, text=text, netD=netd))


def test_convert_writes_loadable_workdir(converted):
  from t2igan_jax import checkpointing, damsm_lib, gan_lib, train
  cfg, workdir, vocab = converted["cfg"], converted["workdir"], converted["vocab"]
  rec = converted["record"]
  assert rec["source_epoch"] == 650 and rec["step"] == 0
  assert rec["discriminators"] == "converted"
  assert rec["image_encoder"] == "initialised"
  # GAN jobs find the converted DAMSM dir and never pretrain into it (the
  # shapes config has gan.pretrain_damsm_if_missing=True).
  assert cfg.gan.pretrain_damsm_if_missing and not cfg.gan.damsm_dir
  assert train.resolve_damsm_dir(cfg, workdir) == os.path.join(
      workdir, "damsm")
  # DAMSM dir: load_encoders (as GAN training does) gives the converted LSTM.
  text_model, text_params, _, _, dvocab = damsm_lib.load_encoders(
      os.path.join(workdir, "damsm"), expected_vocab=vocab)
  assert dvocab == vocab
  np.testing.assert_array_equal(text_params["embedding"]["embedding"],
                                converted["text"]["encoder.weight"])
  hid = cfg.text_encoder.embedding_dim // 2
  np.testing.assert_allclose(
      text_params["backward_cell"]["hf"]["bias"],
      converted["text"]["rnn.bias_ih_l0_reverse"][hid:2 * hid]
      + converted["text"]["rnn.bias_hh_l0_reverse"][hid:2 * hid], rtol=1e-6)
  # GAN checkpoint: restored exactly as train_gan restores (compatibility meta).
  models = gan_lib.GanModels(cfg, text_model, None)
  fresh = jax.eval_shape(functools.partial(gan_lib.create_state, models),
                         jax.random.key(0))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=3, interval=1)
  try:
    meta = ckpt.restore_meta()
    assert meta["damsm_dir"] == os.path.join(os.path.abspath(workdir), "damsm")
    assert meta["model"] == gan_lib.model_meta(cfg.model.to_dict())
    state, data_state, _ = ckpt.restore(checkpointing.abstract_like(fresh))
  finally:
    ckpt.close()
  assert int(state.step) == 0 and data_state["next_batch"] == 0
  g_expected = convert.convert_generator(converted["g"], cfg)
  jax.tree.map(np.testing.assert_array_equal, state.g_params, g_expected["params"])
  jax.tree.map(np.testing.assert_array_equal, state.g_ema, g_expected["params"])
  jax.tree.map(np.testing.assert_array_equal, state.g_stats,
               g_expected["batch_stats"])
  for i, sd in enumerate(converted["d"]):
    d_expected = convert.convert_discriminator(sd, cfg, i)
    jax.tree.map(np.testing.assert_array_equal, state.d_params[i],
                 d_expected["params"])
    jax.tree.map(np.testing.assert_array_equal, state.d_stats[i]["batch_stats"],
                 d_expected["batch_stats"])
  # Fresh Adam moments.
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state.g_opt)
             if jnp.issubdtype(x.dtype, jnp.floating))


def test_convert_refuses_existing_checkpoints_and_bad_files(converted, tmp_path):
  paths, cfg = converted["paths"], converted["cfg"]
  with pytest.raises(CheckpointError, match="already holds checkpoints"):
    convert.convert(cfg, converted["workdir"], netG=paths["netG"],
                    text_encoder=paths["text"])
  raw = open(paths["netG"], "rb").read()
  cut = tmp_path / "netG_cut.pth"
  cut.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(CheckpointError, match="netG_cut.pth"):
    convert.convert(cfg, str(tmp_path / "w"), netG=str(cut),
                    text_encoder=paths["text"])
  assert not os.path.exists(tmp_path / "w")   # nothing written on failure
  with pytest.raises(ValueError, match="one netD file per stage"):
    convert.convert(cfg, str(tmp_path / "w2"), netG=paths["netG"],
                    text_encoder=paths["text"], netD=paths["netD"][:1])


def test_parse_epoch_and_sibling(tmp_path):
  assert convert.parse_epoch("/m/netG_epoch_650.pth") == 650
  assert convert.parse_epoch("text_encoder200.pth") == 200
  assert convert.parse_epoch("bird_DMGAN.pth") is None
  (tmp_path / "text_encoder100.pth").write_bytes(b"x")
  assert convert.sibling_image_encoder(str(tmp_path / "text_encoder100.pth")) is None
  (tmp_path / "image_encoder100.pth").write_bytes(b"x")
  assert convert.sibling_image_encoder(
      str(tmp_path / "text_encoder100.pth")) == str(tmp_path / "image_encoder100.pth")


def test_generator_width_read_from_the_file(tmp_path):
  """AttnGAN's released generators are narrower (GF_DIM 32 birds, 48 COCO) than
  the configs (64): the converter reads the width from h_net1.fc.0.weight and
  names the override, before writing anything."""
  from t2igan_jax.errors import ConfigError
  narrow = tiny(attngan_bird, ngf=16)
  z, sent, words, captions, lengths = text_inputs(narrow)
  p = Params(seed=3)
  np_generator(p, narrow, z, sent, words.transpose(0, 2, 1), captions, lengths)
  path = save_torch(p.sd, tmp_path / "bird_AttnGAN2.pth", False)
  state = convert.torch_io.load(path)
  wide = tiny(attngan_bird, ngf=8)
  with pytest.raises(ConfigError, match=r"bird_AttnGAN2.pth holds a generator of "
                     r"width GF_DIM 16 .*add --config.model.ngf=16"):
    convert.convert_generator(state, wide, source=path)
  # The whole command on data it can read (a size preset keeps the data:
  # the bird config would stop first at its empty data_dir).
  wide_shapes = tiny(attngan_shapes, ngf=8)
  with pytest.raises(ConfigError, match=r"--config.model.ngf=16"):
    convert.convert(wide_shapes, str(tmp_path / "w"), netG=path,
                    text_encoder=path)
  assert not os.path.exists(tmp_path / "w")
  variables = convert.convert_generator(state, narrow, source=path)
  np.testing.assert_array_equal(
      variables["params"]["h_net1"]["fc"]["kernel"], p.sd["h_net1.fc.0.weight"].T)


def test_convert_damsm_encoders_only(converted, tmp_path):
  """Without --netG: only workdir/damsm, which a GAN job on that workdir uses
  instead of pretraining (the second way the missing-DAMSM error names)."""
  from t2igan_jax import train
  cfg = converted["cfg"]
  workdir = str(tmp_path / "damsm_only")
  record = convert.convert(cfg, workdir, netG=None,
                           text_encoder=converted["paths"]["text"])
  assert record["sources"]["netG"] is None
  assert sorted(os.listdir(workdir)) == ["damsm"]
  assert train.resolve_damsm_dir(cfg, workdir) == os.path.join(
      workdir, "damsm")
  with pytest.raises(ValueError, match="--netD needs --netG"):
    convert.convert(cfg, str(tmp_path / "w"), netG=None,
                    text_encoder=converted["paths"]["text"],
                    netD=converted["paths"]["netD"])
