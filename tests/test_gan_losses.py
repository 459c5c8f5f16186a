"""GAN losses (SPEC-dmgan §6.4) against NumPy, incl. saturation gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2igan_jax.losses import gan


def np_bce(logits, target):
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  with np.errstate(divide="ignore"):
    log_p = np.maximum(np.log(p), -100.0)
    log_1mp = np.maximum(np.log(1.0 - p), -100.0)
  return float(-np.mean(target * log_p + (1 - target) * log_1mp))


@pytest.mark.parametrize("mode", ["torch_clamped", "logits"])
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_bce_matches_numpy(mode, target):
  logits = np.linspace(-6, 6, 11).astype(np.float32)
  np.testing.assert_allclose(float(gan.bce(jnp.asarray(logits), target, mode)),
                             np_bce(logits, target), rtol=1e-5)


def test_torch_bce_is_clamped_and_finite_when_saturated():
  # sigmoid(200) == 1 in float32: log(1 - p) = -inf, clamped to -100.
  logits = jnp.asarray([200.0, -200.0, 0.5])
  value = gan.bce(logits, 0.0, "torch_clamped")
  expected = (100.0 + 0.0 + -np.log(1 - 1 / (1 + np.exp(-0.5)))) / 3
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  grad = jax.grad(lambda x: gan.bce(x, 0.0, "torch_clamped"))(logits)
  assert np.all(np.isfinite(np.asarray(grad)))
  # PyTorch: dL/dlogit = (p - t)/max(p(1-p), 1e-12) * p(1-p) / N.
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  p32 = np.asarray(jax.nn.sigmoid(logits), np.float64)
  ref = (p32 - 0.0) / np.maximum(p32 * (1 - p32), 1e-12) * (p32 * (1 - p32)) / 3
  np.testing.assert_allclose(np.asarray(grad), ref, rtol=1e-5, atol=1e-12)
  del p


def test_torch_bce_gradient_matches_logits_form_away_from_saturation():
  logits = jnp.linspace(-4.0, 4.0, 9)
  for t in (0.0, 1.0):
    g1 = jax.grad(lambda x: gan.bce(x, t, "torch_clamped"))(logits)
    g2 = jax.grad(lambda x: gan.bce(x, t, "logits"))(logits)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4,
                               atol=1e-7)


def test_discriminator_loss_composition():
  rng = np.random.default_rng(0)
  heads = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
  wrong = rng.normal(size=4).astype(np.float32)
  loss, parts = gan.discriminator_loss(*map(jnp.asarray, heads),
                                       jnp.asarray(wrong), "torch_clamped")
  real_u, real_c, fake_u, fake_c = heads
  expected = ((np_bce(real_u, 1) + np_bce(real_c, 1)) / 2
              + (np_bce(fake_u, 0) + np_bce(fake_c, 0) + np_bce(wrong, 0)) / 3)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(parts["d_real"]),
                             (np_bce(real_u, 1) + np_bce(real_c, 1)) / 2,
                             rtol=1e-5)
  g = gan.generator_adv_loss(jnp.asarray(fake_u), jnp.asarray(fake_c),
                             "torch_clamped")
  np.testing.assert_allclose(float(g), np_bce(fake_u, 1) + np_bce(fake_c, 1),
                             rtol=1e-5)


def test_wrong_pairs():
  sent = jnp.zeros((5, 3))
  img, snt = gan.wrong_pairs(sent, jnp.arange(5), "shift")
  np.testing.assert_array_equal(img, [0, 1, 2, 3])
  np.testing.assert_array_equal(snt, [1, 2, 3, 4])
  classes = jnp.asarray([3, 3, 7, 3, 7])
  img, snt = gan.wrong_pairs(sent, classes, "other_class")
  np.testing.assert_array_equal(img, np.arange(5))
  np.testing.assert_array_equal(snt, [2, 2, 3, 4, 0])
  assert np.all(np.asarray(classes)[np.asarray(snt)] != np.asarray(classes))
  with pytest.raises(ValueError, match="wrong_pair"):
    gan.wrong_pairs(sent, classes, "nope")
