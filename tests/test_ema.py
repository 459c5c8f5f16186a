"""The EMA of G (t2igan_jax/ema.py): the reference's plain EMA and the
bias-corrected one of ``gan.ema_debias``, against NumPy.

One compiled ``train_step`` of the tiny DM-GAN (plain-EMA config) runs three
steps twice from the same initial state: once with the EMA started at θ_0
(reference), once started from zeros (what ``create_state`` builds with
``gan.ema_debias=True``; ``train_step`` itself does not read the flag).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_fixtures import host_batch, untrained_gan

from configs import dmgan_shapes
from t2igan_jax import ema
from t2igan_jax import gan_lib

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STEPS = 3


def _np_tree(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_debias_plain_ema_matches_numpy():
  """(a_t - d^t θ_0) / (1 - d^t) of the θ_0-started EMA equals the
  zero-started EMA divided by 1 - d^t, for several t; t = 0 gives θ_0."""
  rng = np.random.default_rng(0)
  d = 0.9
  thetas = [{"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
            for _ in range(6)]
  plain = thetas[0]
  zero = jax.tree.map(np.zeros_like, thetas[0])
  for t in range(1, 6):
    plain = jax.tree.map(lambda a, p: d * a + (1 - d) * p, plain, thetas[t])
    zero = jax.tree.map(lambda a, p: d * a + (1 - d) * p, zero, thetas[t])
    want = jax.tree.map(lambda e: e / (1 - d**t), zero)
    got = ema.debias_plain_ema(plain, thetas[0], d, t)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    for g, w in zip(jax.tree.leaves(ema.debiased(zero, d, t)),
                    jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-12)
  assert ema.debias_plain_ema(plain, thetas[0], d, 0) is thetas[0]
  with pytest.raises(ValueError, match="first update"):
    ema.debiased(zero, d, 0)


def test_num_updates_leaves_out_skipped_updates():
  class State:  # pylint: disable=too-few-public-methods
    step = jnp.asarray(10)
    nonfinite_skipped = jnp.asarray(3)
  assert ema.num_updates(State()) == 7


@pytest.fixture(scope="module")
def trajectories():
  """θ_0..θ_3 and the two EMAs after 3 steps, from one compiled train_step."""
  config = dmgan_shapes.get_config("tiny")
  config.num_devices = 1
  config.gan.ema_debias = False
  models, enc = untrained_gan(config)
  plain0 = jax.jit(functools.partial(gan_lib.create_state, models))(
      jax.random.key(0))
  debias_config = dmgan_shapes.get_config("tiny")
  debias_config.num_devices = 1
  debias_config.gan.ema_debias = True
  debias_models = gan_lib.GanModels(debias_config, models.text_model,
                                      models.image_model)
  debias0 = jax.jit(functools.partial(gan_lib.create_state, debias_models))(
      jax.random.key(0))
  step_fn = jax.jit(functools.partial(gan_lib.train_step, models=models))
  thetas = [_np_tree(plain0.g_params)]
  plain, debias = plain0, debias0
  for k in range(STEPS):
    batch = host_batch(config, seed=k)
    plain, _ = step_fn(plain, batch, enc)
    debias, _ = step_fn(debias, batch, enc)
    thetas.append(_np_tree(plain.g_params))
  return config, plain0, debias0, plain, debias, thetas


def test_create_state_starts_the_ema(trajectories):
  _, plain0, debias0, _, _, _ = trajectories
  for p, a, z, q in zip(*(jax.tree.leaves(t) for t in (
      plain0.g_params, plain0.g_ema, debias0.g_ema, debias0.g_params))):
    np.testing.assert_array_equal(p, a)        # reference: a_0 = θ_0
    np.testing.assert_array_equal(p, q)        # the same G either way
    assert not np.asarray(z).any()             # debiased: e_0 = 0
  # Before the first update the sampled weights are θ_0 in both modes.
  for p, w in zip(jax.tree.leaves(plain0.g_params), jax.tree.leaves(
      ema.sampling_params(debias0, 0.999, True))):
    np.testing.assert_array_equal(p, w)


def test_train_step_emas_match_numpy(trajectories):
  """The two EMAs of train_step against NumPy from the θ_t it produced; the
  debiased read-out of either equals e_t / (1 - d^t)."""
  config, _, _, plain, debias, thetas = trajectories
  d = config.gan.ema_decay
  np_plain = thetas[0]
  np_zero = [np.zeros_like(x) for x in thetas[0]]
  for theta in thetas[1:]:
    np_plain = [d * a + (1 - d) * p for a, p in zip(np_plain, theta)]
    np_zero = [d * a + (1 - d) * p for a, p in zip(np_zero, theta)]
  want = [e / (1 - d**STEPS) for e in np_zero]
  assert int(plain.step) == int(debias.step) == STEPS
  for got, w in zip(_np_tree(plain.g_ema), np_plain):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)
  for got, w in zip(_np_tree(debias.g_ema), np_zero):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-9)
  from_debias = _np_tree(ema.sampling_params(debias, d, True))
  from_plain = _np_tree(ema.debias_plain_ema(
      plain.g_ema, jax.tree.unflatten(jax.tree.structure(plain.g_ema),
                                      [jnp.asarray(x, jnp.float32)
                                       for x in thetas[0]]), d, STEPS))
  for a, b, w in zip(from_debias, from_plain, want):
    np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-6)
    # From a float32 plain EMA the subtraction of 0.997 θ_0 costs digits:
    # 3 steps are the worst case (later, 1 - d^t grows towards 1).
    np.testing.assert_allclose(b, w, rtol=1e-3, atol=1e-4)
  assert ema.sampling_params(plain, d, False) is plain.g_ema
