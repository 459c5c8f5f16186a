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
