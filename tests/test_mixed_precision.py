"""Mixed precision (config.dtype) and rematerialisation (config.remat) of the
GAN training step, on the tiny DM-GAN config (32/64 px, batch 8, one device).

Tolerances, chosen from measurement (``python -m pytest
tests/test_mixed_precision.py -q -s`` prints the observed errors):

* bf16 vs fp32, one full train_step from the same state and batch: every loss
  term within 5e-2 relative (or 5e-3 absolute for terms near 0). bfloat16 has an
  8-bit mantissa (relative rounding 2^-9 ≈ 2e-3 per op); a few dozen chained
  convs/BN layers accumulate that to ~1e-2; measured worst relative difference
  over the loss terms here: 7.2e-3 (printed by the test), 7x under the bound.
* remat vs none: the same float32 computation rescheduled, so G's gradients
  agree to float32 round-off (rtol 1e-5 / atol 1e-6) and the loss to 1e-6.
  (A whole train_step with remat is exercised by the remat column of
  bench/train_step.py; after one Adam step, whose first update is ~lr·sign(g),
  round-off in near-zero gradients moves parameters by up to lr, so parameters
  are not a useful equality check there.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_fixtures import host_batch, untrained_gan

from configs import dmgan_shapes
from t2igan_jax import config_validation
from t2igan_jax import gan_lib
from t2igan_jax.models import generator as generator_lib
from t2igan_jax.models import precision

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BF16_RTOL = 5e-2
BF16_ATOL = 5e-3


def tiny_config(**overrides):
  c = dmgan_shapes.get_config("tiny")
  c.num_devices = 1
  for k, v in overrides.items():
    c[k] = v
  config_validation.validate(c)
  return c


def one_step(config, state=None):
  models, enc = untrained_gan(config)
  if state is None:
    state = jax.jit(functools.partial(gan_lib.create_state, models))(
        jax.random.key(0))
  step = jax.jit(functools.partial(gan_lib.train_step, models=models))
  new_state, metrics = step(state, host_batch(config), enc)
  return state, new_state, jax.device_get(metrics)


@pytest.fixture(scope="module")
def fp32_step():
  return one_step(tiny_config(dtype="float32"))


def test_auto_dtype_is_float32_on_cpu_and_bf16_on_accelerators():
  c = tiny_config()
  assert c.dtype == "auto"
  expected = (jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu")
              else jnp.float32)
  assert precision.compute_dtype(c) == expected
  assert precision.compute_dtype(tiny_config(dtype="bfloat16")) == jnp.bfloat16


def test_bf16_losses_match_fp32_and_params_stay_fp32(fp32_step):
  state, new32, m32 = fp32_step
  _, new16, m16 = one_step(tiny_config(dtype="bfloat16"), state)
  # Parameters, optimiser state, EMA and BN statistics stay float32.
  for tree in (new16.g_params, new16.g_ema, new16.g_stats, new16.d_params,
               new16.d_stats, new16.g_opt, new16.d_opt):
    for x in jax.tree.leaves(tree):
      if jnp.issubdtype(x.dtype, jnp.floating):
        assert x.dtype == jnp.float32, x.dtype
  terms = [k for k in m32 if k.startswith(("d_loss", "d_real", "d_fake",
                                           "g_adv", "g_w_loss", "g_s_loss",
                                           "kl_loss", "g_loss"))]
  assert len(terms) >= 10
  worst = 0.0
  for k in terms:
    a, b = float(m32[k]), float(m16[k])
    assert np.isfinite(b), k
    err = abs(a - b) / max(abs(a), BF16_ATOL / BF16_RTOL)
    worst = max(worst, err)
    assert abs(a - b) <= BF16_RTOL * abs(a) + BF16_ATOL, (k, a, b)
  print(f"\nbf16 vs fp32 worst relative loss difference: {worst:.2e}")
  # The bf16 step really computed in bf16 (it is not the fp32 step).
  assert any(float(m32[k]) != float(m16[k]) for k in terms)


def _generator_grads(remat_stages, dtype=jnp.float32):
  c = tiny_config(dtype="float32")
  g = generator_lib.generator_from_config(c).clone(remat_stages=remat_stages,
                                                   dtype=dtype)
  b, t, e = 4, c.data.words_num, c.text_encoder.embedding_dim
  keys = jax.random.split(jax.random.key(3), 4)
  z = jax.random.normal(keys[0], (b, c.model.z_dim))
  sent = jax.random.normal(keys[1], (b, e))
  lens = jnp.array([t, t - 2, 3, 2])
  mask = jnp.arange(t)[None, :] >= lens[:, None]
  words = jnp.where(mask[..., None], 0.0, jax.random.normal(keys[2], (b, t, e)))
  variables = g.init({"params": keys[3], "noise": keys[3]}, z, sent, words, mask,
                     train=False)

  def loss(params):
    out, new_vars = g.apply({"params": params, **{k: v for k, v in
                                                   variables.items()
                                                   if k != "params"}},
                            z, sent, words, mask, train=True,
                            rngs={"noise": keys[0]}, mutable=["batch_stats"])
    val = sum(jnp.mean(jnp.square(im - 0.1 * i)) for i, im in
              enumerate(out["images"]))
    val = val + sum(jnp.mean(a * a) for a in out["attention"])
    return val, new_vars["batch_stats"]

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


def test_remat_stage_selection():
  assert precision.remat_stages("none", 3) == ()
  assert precision.remat_stages("last_stage", 3) == (3,)
  assert precision.remat_stages("refiners", 3) == (2, 3)
  assert precision.remat_stages("refiners", 1) == ()
  with pytest.raises(ValueError, match="config.remat"):
    precision.remat_stages("everything", 3)


def test_remat_gives_identical_generator_gradients():
  c = tiny_config(remat="refiners")
  stages = precision.remat_stages(c.remat, c.data.branch_num)
  assert stages == (2,)   # the tiny config has one refinement stage
  (l0, s0), g0 = _generator_grads(())
  (l1, s1), g1 = _generator_grads(stages)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g0))


def test_remat_really_wraps_the_stage_in_remat():
  c = tiny_config(remat="refiners")
  g = generator_lib.generator_from_config(c)
  assert g.remat_stages == (2,)
  b, t, e = 2, c.data.words_num, c.text_encoder.embedding_dim
  args = (jnp.zeros((b, c.model.z_dim)), jnp.zeros((b, e)),
          jnp.zeros((b, t, e)), jnp.zeros((b, t), bool))
  v = g.init({"params": jax.random.key(0), "noise": jax.random.key(0)}, *args,
             train=False)
  jaxpr = jax.make_jaxpr(lambda p: g.apply({**v, "params": p}, *args, train=True,
                                           rngs={"noise": jax.random.key(1)},
                                           mutable=["batch_stats"]))(v["params"])
  assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)
  # Same parameter tree as without remat (checkpoints stay compatible).
  v0 = generator_lib.generator_from_config(tiny_config()).init(
      {"params": jax.random.key(0), "noise": jax.random.key(0)}, *args,
      train=False)
  assert jax.tree.structure(v0) == jax.tree.structure(v)


def test_bad_dtype_and_remat_are_named():
  from t2igan_jax.errors import ConfigError
  for field, value in (("dtype", "float16"), ("remat", "all")):
    c = dmgan_shapes.get_config("tiny")
    c[field] = value
    with pytest.raises(ConfigError, match=f"config.{field}"):
      config_validation.validate(c)
