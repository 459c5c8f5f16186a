"""DF-GAN (Tao et al., CVPR 2022): generator NetG, discriminator NetD, head NetC.

NHWC, float32, written from SPEC-dfgan (the official tobran/DF-GAN
``code/models/GAN.py``). One stage: noise -> fc -> 4×4 map -> up-blocks whose
deep text-image fusion blocks (DFBLK) modulate every channel with an affine
(γ, β) predicted from ``cond = [z, s]`` -> image::

    h_0 = view_NCHW(fc(z)) -> NHWC            [B, 4, 4, 8nf]
    h_k = GBlock_k(h_{k-1}, [z, s])           [B, 2^{k+2}, 2^{k+2}, C_k]
    x   = tanh(conv3x3(lrelu(h_K)))           [B, imsize, imsize, ch]

    f   = DBlocks(conv3x3(x))                 [B, 4, 4, 8nf]   (NetD, "image code")
    o   = conv4x4(lrelu(conv3x3([f, tile(s)])))  [B]           (NetC, logits)

Channel lists follow the official ``get_{G,D}_in_out_chs``: with
``L = log2(imsize) - 1`` the widths are ``nf·min(2^i, 8)`` for i < L, reversed
for G; G and D each have ``L - 1`` blocks (6 at 256 px, 4 at 64 px).

Initialisation is PyTorch's default (``U(±1/√fan_in)`` for every Linear/Conv
weight and bias; ``init_utils.torch_default_bias``), except Affine's ``linear2``
(γ: W=0, b=1; β: W=0, b=0: every affine starts as the identity, so G ignores the
sentence at init) and D_Block's scalar ``gamma`` (0: D starts linear).

Parameter names mirror the torch state-dict keys mechanically: a torch key's
``.<digit>`` becomes ``_<digit>``, the other dots become '/', ``weight`` is
``kernel`` (Conv OIHW -> HWIO, Linear (O, I) -> (I, O)); e.g.
``GBlocks.3.fuse1.affine0.fc_gamma.linear1.weight`` ->
``GBlocks_3/fuse1/affine0/fc_gamma/linear1/kernel``,
``DBlocks.0.conv_r.0.weight`` -> ``DBlocks_0/conv_r_0/kernel``,
``to_rgb.1.weight`` -> ``to_rgb_1/kernel``, ``joint_conv.2.weight`` ->
``joint_conv_2/kernel``; ``DBlocks.k.gamma`` -> ``DBlocks_k/gamma`` (shape [1]).

Bird (nf 32, z 100, cond 256, 256 px): G 9,744,131, D 6,619,206 (of which
197,376 in the dead ``conv_s`` of DBlocks 3-5), C 295,936 parameters.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2igan_jax.models.init_utils import torch_default_bias
from t2igan_jax.models.layers import upsample_nearest2x

LRELU_SLOPE = 0.2

# PyTorch's default weight init (kaiming_uniform, a=√5) has the same bound
# 1/√fan_in as its default bias init, so one uniform initialiser serves both.
torch_default_kernel = torch_default_bias


def lrelu(x):
  return jax.nn.leaky_relu(x, LRELU_SLOPE)


def _check_imsize(imsize: int) -> int:
  """L = log2(imsize) - 1 (official ``layer_num``); imsize must be 2^k, k >= 5."""
  if imsize < 32 or imsize & (imsize - 1):
    raise ValueError(f"DF-GAN imsize must be a power of two >= 32, got {imsize}")
  return int(math.log2(imsize)) - 1


def d_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
  """NetD's (fin, fout) per DBlock: widths nf·min(2^i, 8), i < L, in order."""
  widths = [nf * min(2 ** i, 8) for i in range(_check_imsize(imsize))]
  return list(zip(widths[:-1], widths[1:]))


def g_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
  """NetG's (in, out) per GBlock: D's width list reversed (8nf at 4×4 first)."""
  widths = [nf * min(2 ** i, 8) for i in range(_check_imsize(imsize))][::-1]
  return list(zip(widths[:-1], widths[1:]))


def conv(features: int, in_ch: int, kernel: int, *, stride: int = 1, pad: int = 0,
         bias: bool = True, name=None) -> nn.Conv:
  """torch ``Conv2d(in_ch, features, kernel, stride, pad, bias)`` with its default init."""
  fan_in = in_ch * kernel * kernel
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=bias,
                 kernel_init=torch_default_kernel(fan_in),
                 bias_init=torch_default_bias(fan_in), name=name)


def dense(features: int, in_features: int, name=None, **init) -> nn.Dense:
  """torch ``Linear(in_features, features)`` with its default init (overridable)."""
  init.setdefault("kernel_init", torch_default_kernel(in_features))
  init.setdefault("bias_init", torch_default_bias(in_features))
  return nn.Dense(features, name=name, **init)


class AffineMLP(nn.Module):
  """fc_gamma / fc_beta: ``linear2(ReLU(linear1(y)))``, [B, cond_dim] -> [B, C].

  ``linear2`` starts at W=0 with bias ``out_bias`` (1 for γ, 0 for β).
  """
  features: int
  out_bias: float = 0.0

  @nn.compact
  def __call__(self, y):
    c = self.features
    h = nn.relu(dense(c, y.shape[-1], name="linear1")(y))
    return dense(c, c, name="linear2", kernel_init=nn.initializers.zeros,
                 bias_init=nn.initializers.constant(self.out_bias))(h)


class Affine(nn.Module):
  """Affine(cond_dim, C): ``γ(y)[:, None, None, :] · x + β(y)[:, None, None, :]``.

      γ(y) = linear2(ReLU(linear1(y))),  β(y) likewise with its own weights
      x [B, H, W, C], y = [z, s] [B, cond_dim] -> [B, H, W, C]

  Params: ``fc_gamma/linear1`` (cond_dim, C), ``fc_gamma/linear2`` (C, C) and the
  same under ``fc_beta`` (AffineMLP); at init γ = 1 and β = 0 (identity).
  """

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]
    gamma = AffineMLP(c, 1.0, name="fc_gamma")(y)
    beta = AffineMLP(c, 0.0, name="fc_beta")(y)
    return gamma[:, None, None, :] * x + beta[:, None, None, :]


class DFBlock(nn.Module):
  """DFBLK: ``lrelu(affine1(lrelu(affine0(x, y)), y))``, [B,H,W,C] -> [B,H,W,C].

  Submodules ``affine0``, ``affine1`` (Affine); LeakyReLU slope 0.2.
  """

  @nn.compact
  def __call__(self, x, y):
    h = lrelu(Affine(name="affine0")(x, y))
    return lrelu(Affine(name="affine1")(h, y))


class GBlock(nn.Module):
  """G_Block(cond, in, out): nearest ×2 first, then shortcut + fused residual.

      u = up2(x)                                          [B, 2H, 2W, in]
      r = c2(fuse2(c1(fuse1(u, y)), y))                   [B, 2H, 2W, out]
      out = (c_sc(u) if in != out else u) + r

  ``c1`` 3×3 in->out, ``c2`` 3×3 out->out (pad 1, bias), ``c_sc`` 1×1 in->out
  (bias; only when in != out); ``fuse1`` on ``in`` channels, ``fuse2`` on
  ``out``. No normalisation and no activation after c2.
  """
  out_ch: int

  @nn.compact
  def __call__(self, x, y):
    in_ch = x.shape[-1]
    x = upsample_nearest2x(x)
    h = DFBlock(name="fuse1")(x, y)
    h = conv(self.out_ch, in_ch, 3, pad=1, name="c1")(h)
    h = DFBlock(name="fuse2")(h, y)
    h = conv(self.out_ch, self.out_ch, 3, pad=1, name="c2")(h)
    if in_ch != self.out_ch:
      x = conv(self.out_ch, in_ch, 1, name="c_sc")(x)
    return x + h


class DFGenerator(nn.Module):
  """NetG(nf, z_dim, cond_dim, imsize): ``(z [B,z_dim], s [B,cond_dim]) -> [B,imsize,imsize,ch]``.

      h = fc(z).view(B, 8nf, 4, 4) -> NHWC        (flat index c·16 + h·4 + w)
      y = concat([z, s])                          noise first, [B, z_dim + cond_dim]
      h = GBlocks_k(h, y), k < L - 1
      x = tanh(to_rgb_1(lrelu(h)))                to_rgb_1: 3×3 nf->ch, pad 1, bias

  ``cond_dim`` is implied by ``s``; it is a field so the config is explicit.
  """
  nf: int = 32
  z_dim: int = 100
  cond_dim: int = 256
  imsize: int = 256
  ch_size: int = 3

  @nn.compact
  def __call__(self, noise, sent):
    b = noise.shape[0]
    pairs = g_channels(self.nf, self.imsize)
    h = dense(8 * self.nf * 16, self.z_dim, name="fc")(noise)
    h = h.reshape(b, 8 * self.nf, 4, 4).transpose(0, 2, 3, 1)
    y = jnp.concatenate([noise, sent], axis=-1)
    for k, (_, out_ch) in enumerate(pairs):
      h = GBlock(out_ch, name=f"GBlocks_{k}")(h, y)
    h = conv(self.ch_size, pairs[-1][1], 3, pad=1, name="to_rgb_1")(lrelu(h))
    return jnp.tanh(h)


def avg_pool2(x):
  """``F.avg_pool2d(x, 2)`` on NHWC: mean of each 2×2 window, stride 2."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class DBlock(nn.Module):
  """D_Block(fin, fout): ``pool(shortcut(x)) + γ · res(x)``, [B,H,W,fin] -> [B,H/2,W/2,fout].

      res = lrelu(conv_r_2(lrelu(conv_r_0(x))))   conv_r_0: 4×4 s2 p1; conv_r_2: 3×3 p1; no bias
      sc  = avg_pool2(conv_s(x)) if fin != fout else avg_pool2(x)   conv_s: 1×1, bias

  ``gamma`` is a learned scalar (shape [1]) initialised to 0. ``conv_s`` is
  built in every block, as in the reference: where fin == fout its parameters
  exist (created at init, so the state dict round-trips and the counts match)
  but are never used, so their gradient is exactly zero.
  """
  fout: int

  @nn.compact
  def __call__(self, x):
    fin = x.shape[-1]
    res = lrelu(conv(self.fout, fin, 4, stride=2, pad=1, bias=False, name="conv_r_0")(x))
    res = lrelu(conv(self.fout, self.fout, 3, pad=1, bias=False, name="conv_r_2")(res))
    conv_s = conv(self.fout, fin, 1, name="conv_s")
    if fin != self.fout:
      x = conv_s(x)
    elif self.is_initializing():
      conv_s(x)   # dead in the reference too: build its parameters only
    gamma = self.param("gamma", nn.initializers.zeros, (1,))
    return avg_pool2(x) + gamma * res


class DFDiscriminator(nn.Module):
  """NetD(nf, imsize): ``x [B,imsize,imsize,ch] -> image code [B,4,4,8nf]``.

      f = conv_img(x)                 3×3 ch->nf, pad 1, bias; no activation
      f = DBlocks_k(f), k < L - 1     (fin, fout) from ``d_channels``
  """
  nf: int = 32
  imsize: int = 256

  @nn.compact
  def __call__(self, x):
    h = conv(self.nf, x.shape[-1], 3, pad=1, name="conv_img")(x)
    for k, (_, fout) in enumerate(d_channels(self.nf, self.imsize)):
      h = DBlock(fout, name=f"DBlocks_{k}")(h)
    return h


class DFConditionalHead(nn.Module):
  """NetC(nf, cond_dim): ``(f [B,4,4,8nf], s [B,cond_dim]) -> logits [B]``.

      h = concat([f, tile_4×4(s)])               image code first, [B,4,4,8nf+cond]
      o = joint_conv_2(lrelu(joint_conv_0(h)))   3×3 p1 ->2nf, then 4×4 valid ->1; no bias

  The reference returns [B,1,1,1]; here the logits are flattened to [B].
  """
  nf: int = 32
  cond_dim: int = 256

  @nn.compact
  def __call__(self, features, sent):
    b, h, w, c = features.shape
    y = jnp.broadcast_to(sent[:, None, None, :], (b, h, w, sent.shape[-1]))
    x = jnp.concatenate([features, y], axis=-1)
    x = lrelu(conv(2 * self.nf, x.shape[-1], 3, pad=1, bias=False,
                   name="joint_conv_0")(x))
    x = conv(1, 2 * self.nf, 4, bias=False, name="joint_conv_2")(x)
    return x.reshape(b)
