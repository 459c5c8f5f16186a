"""Initialisers that reproduce the reference's PyTorch initialisation (SPEC-dmgan §6.3).

The reference applies ``weights_init`` to G and every D:

* conv / linear weights: ``torch.nn.init.orthogonal_(weight, gain=1)``, which views
  the weight as a matrix ``out x (in·kh·kw)`` (rows orthonormal when
  ``out <= in·kh·kw``, columns orthonormal otherwise);
* conv biases keep PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
  ``fan_in = in·kh·kw``; the CA linear bias is zeroed;
* BatchNorm weight ``~ N(1, 0.02)``, bias 0.

Flax layouts: a ``Dense`` kernel is ``(in, out)`` (= torch ``weight.T``); a conv
kernel is HWIO ``(kh, kw, in, out)`` (= torch OIHW transposed by ``(2, 3, 1, 0)``).
``torch_orthogonal`` draws the torch-layout matrix and transposes it into the
Flax layout, so the orthogonality holds in the same ``out x in·kh·kw`` view.
"""

from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jnp.ndarray]


def orthogonal_matrix(key, rows: int, cols: int, gain: float = 1.0,
                      dtype=jnp.float32) -> jnp.ndarray:
  """``torch.nn.init.orthogonal_`` on a ``rows x cols`` matrix.

  QR of a standard-normal matrix (transposed first when rows < cols), with the
  signs of R's diagonal folded into Q, so the distribution is Haar.
  """
  a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
  q, r = jnp.linalg.qr(a)
  q = q * jnp.sign(jnp.diagonal(r))[None, :]
  if rows < cols:
    q = q.T
  return (gain * q).astype(dtype)


def torch_orthogonal(gain: float = 1.0) -> Initializer:
  """Orthogonal init of a Flax ``Dense`` (in, out) or conv (kh, kw, in, out) kernel.

  The matrix is drawn in PyTorch's layout ``out x (in·kh·kw)`` (input index
  major, then kh, kw) and transposed into Flax's layout.
  """

  def init(key, shape, dtype=jnp.float32):
    if len(shape) == 2:
      fan_in, out = shape
      return orthogonal_matrix(key, out, fan_in, gain, dtype).T
    if len(shape) == 4:
      kh, kw, cin, out = shape
      w = orthogonal_matrix(key, out, cin * kh * kw, gain, dtype)
      return w.reshape(out, cin, kh, kw).transpose(2, 3, 1, 0)
    raise ValueError(f"torch_orthogonal expects a 2-D or 4-D kernel, got {shape}")

  return init


def torch_default_bias(fan_in: int) -> Initializer:
  """PyTorch's default conv / linear bias init: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def bn_scale_init(key, shape, dtype=jnp.float32):
  """BatchNorm scale ``~ N(1, 0.02)`` (reference ``weights_init``)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def kernel_as_torch_matrix(kernel: jnp.ndarray) -> jnp.ndarray:
  """Views a Flax kernel as PyTorch's ``out x (in·kh·kw)`` matrix (for tests/SN)."""
  if kernel.ndim == 2:
    return kernel.T
  if kernel.ndim == 4:
    return kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)
  raise ValueError(f"expected a 2-D or 4-D kernel, got {kernel.shape}")
