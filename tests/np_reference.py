"""Independent NumPy reference ops shared by the model tests."""

import numpy as np


def np_conv(x, k, stride=1, pad=0):
  """NHWC x HWIO cross-correlation with zero padding, as torch's Conv2d.

  ``pad`` is an int (both axes) or ``(pad_h, pad_w)``; no bias.
  """
  ph, pw = (pad, pad) if np.isscalar(pad) else pad
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  kh, kw, _, co = k.shape
  b, h, w, _ = x.shape
  ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
  out = np.zeros((b, ho, wo, co))
  for dy in range(kh):
    for dx in range(kw):
      patch = x[:, dy:dy + stride * (ho - 1) + 1:stride,
                dx:dx + stride * (wo - 1) + 1:stride]
      out += np.einsum("bhwc,co->bhwo", patch, k[dy, dx])
  return out


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_glu(x):
  """GLU over the last axis: first half value, second half gate."""
  c = x.shape[-1] // 2
  return x[..., :c] * np_sigmoid(x[..., c:])


def np_bn_train(x, p, eps=1e-5):
  """BatchNorm with batch statistics over all axes but the last."""
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axes), x.var(axes)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_upblock(x, p):
  """upBlock: nearest x2 -> conv3x3 -> BN (batch stats) -> GLU (params dict of UpBlock)."""
  x = x.repeat(2, axis=1).repeat(2, axis=2)
  return np_glu(np_bn_train(np_conv(x, p["conv"]["kernel"], 1, 1), p["bn"]))


def np_resblock(x, p):
  """ResBlock: x + BN(conv(GLU(BN(conv(x))))) (params dict of ResBlock)."""
  y = np_glu(np_bn_train(np_conv(x, p["conv1"]["kernel"], 1, 1), p["bn1"]))
  return np_bn_train(np_conv(y, p["conv2"]["kernel"], 1, 1), p["bn2"]) + x


# ----------------------------------------------------------------------------
# PyTorch-layout (NCHW / OIHW) references, for checking weight converters: they
# read PyTorch tensors as stored, so no layout change is shared with the code
# under test.
def np_conv_nchw(x, w, b=None, stride=1, pad=0):
  """torch ``F.conv2d``: NCHW x OIHW cross-correlation, zero padding, optional bias.

  ``pad`` is an int or ``(pad_h, pad_w)``.
  """
  ph, pw = (pad, pad) if np.isscalar(pad) else pad
  x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
  _, _, kh, kw = w.shape
  _, _, h, wd = x.shape
  ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = np.zeros((x.shape[0], w.shape[0], ho, wo))
  for dy in range(kh):
    for dx in range(kw):
      patch = x[:, :, dy:dy + stride * (ho - 1) + 1:stride,
                dx:dx + stride * (wo - 1) + 1:stride]
      out += np.einsum("bchw,oc->bohw", patch, w[:, :, dy, dx])
  if b is not None:
    out += b[None, :, None, None]
  return out


def np_linear(x, w, b=None):
  """torch ``nn.Linear``: ``x @ w.T + b`` with w (out, in)."""
  y = x @ w.T
  return y if b is None else y + b


def np_bn_eval(x, sd, prefix, eps=1e-5):
  """torch BatchNorm{1,2}d in eval mode from a state dict (channel axis 1)."""
  shape = (1, -1) + (1,) * (x.ndim - 2)
  g = lambda k: sd[f"{prefix}.{k}"].reshape(shape)  # noqa: E731
  return (x - g("running_mean")) / np.sqrt(g("running_var") + eps) * g(
      "weight") + g("bias")


def np_glu_dim1(x):
  """torch ``GLU(dim=1)``: first half of axis 1 = value, second half = gate."""
  c = x.shape[1] // 2
  return x[:, :c] / (1.0 + np.exp(-x[:, c:]))


def np_lstm_direction(x, lengths, w_ih, w_hh, b_ih, b_hh, reverse=False):
  """One direction of torch ``nn.LSTM`` on packed sequences.

  x [B, T, E]; gate rows of the (4H, .) weights in torch order i, f, g, o. Each
  sequence is run on its first ``lengths[b]`` steps only (backwards for
  ``reverse``). Returns outputs [B, T, H] (zero past the length, as
  ``pad_packed_sequence``) and the final hidden state [B, H].
  """
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
  b_len, t_len, _ = x.shape
  hid = w_hh.shape[1]
  out = np.zeros((b_len, t_len, hid))
  final = np.zeros((b_len, hid))
  for b in range(b_len):
    h, c = np.zeros(hid), np.zeros(hid)
    steps = range(lengths[b])
    for t in (reversed(steps) if reverse else steps):
      z = w_ih @ x[b, t] + b_ih + w_hh @ h + b_hh
      i, f, g, o = np.split(z, 4)
      c = sig(f) * c + sig(i) * np.tanh(g)
      h = sig(o) * np.tanh(c)
      out[b, t] = h
    final[b] = h
  return out, final
