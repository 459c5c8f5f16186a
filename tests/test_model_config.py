"""t2igan_jax/models/model_config.py (one frozen ModelConfig for G and D) and
t2igan_jax/models/families.py (the refiner-family registry).

The numbers of the refactor are covered by the model tests
(test_dmgan_model.py, test_ffgan_model.py, test_attngan_model.py,
test_discriminator.py, ...); here: the config object, the keyword surface, the
registry and G's explicit CA epsilon.
"""

import dataclasses
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base as base_config
from t2igan_jax import config_validation
from t2igan_jax.models import families
from t2igan_jax.models import generator as generator_lib
from t2igan_jax.models.discriminator import Discriminator, discriminators_from_config
from t2igan_jax.models.layers import UpBlock
from t2igan_jax.models.model_config import ModelConfig
from t2igan_jax.models.refiners import FFRefinementStage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(refiner="memory"):
  c = base_config.tiny(base_config.get_config())
  c.model.refiner = refiner
  c.dtype = "float32"
  return c


def g_inputs(cfg: ModelConfig, b=3, t=5):
  k = jax.random.split(jax.random.key(0), 3)
  lens = jnp.array([t, 3, 2][:b])
  mask = jnp.arange(t)[None, :] >= lens[:, None]
  words = jnp.where(mask[..., None], 0.0,
                    jax.random.normal(k[0], (b, t, cfg.text_dim)))
  return (jax.random.normal(k[1], (b, cfg.z_dim)),
          jax.random.normal(k[2], (b, cfg.text_dim)), words, mask)


def test_from_config_reads_every_field_once():
  c = tiny_config("ffblock")
  c.remat = "refiners"
  c.model.conv_weight_grad = "xla"
  c.model.small_map_conv = "matmul"
  cfg = ModelConfig.from_config(c)
  assert (cfg.ngf, cfg.ndf, cfg.z_dim, cfg.condition_dim, cfg.memory_dim) == (
      c.model.ngf, c.model.ndf, c.model.z_dim, c.model.condition_dim,
      c.model.memory_dim)
  assert cfg.text_dim == c.text_encoder.embedding_dim
  assert (cfg.num_stages, cfg.base_size) == (c.data.branch_num, c.data.base_size)
  assert cfg.refiner == "ffblock" and cfg.remat_stages == (2,)
  assert cfg.dtype == jnp.float32
  assert (cfg.conv_weight_grad, cfg.small_map_conv) == ("xla", "matmul")
  # Every flag the config and ModelConfig share is copied, none invented.
  shared = set(c.model) & {f.name for f in dataclasses.fields(ModelConfig)}
  assert {k for k in shared if getattr(cfg, k) != c.model[k]} == set()
  # Frozen and hashable: a Flax module attribute.
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.ngf = 3
  assert hash(cfg) == hash(ModelConfig.from_config(c))


def test_modules_share_one_config():
  c = tiny_config()
  g = generator_lib.generator_from_config(c)
  ds = discriminators_from_config(c)
  assert g.config is not None and all(d.config == g.config for d in ds)
  assert [d.stage for d in ds] == list(range(c.data.branch_num))
  # The fields read through as attributes (old attribute names still work).
  assert (g.ngf, g.refiner, ds[0].ndf) == (c.model.ngf, "memory", c.model.ndf)


def test_keyword_fields_fold_into_the_config():
  g = generator_lib.Generator(ngf=4, r_num=1)
  assert g.config == ModelConfig(ngf=4, r_num=1)
  g2 = g.clone(dtype=jnp.bfloat16, remat_stages=(2,))
  assert g2.config == ModelConfig(ngf=4, r_num=1, dtype=jnp.bfloat16,
                                  remat_stages=(2,))
  assert g.config.dtype == jnp.float32          # the original is unchanged
  base = ModelConfig(ngf=6)
  assert generator_lib.Generator(base, r_num=3).config == ModelConfig(ngf=6, r_num=3)
  # Aliases and positional legacy fields.
  assert FFRefinementStage(word_mask="padding").config.ffgan_word_mask == "padding"
  assert Discriminator(1, 5).config.ndf == 5 and Discriminator(1, 5).stage == 1
  # Not a ModelConfig field: still refused.
  with pytest.raises(TypeError):
    generator_lib.Generator(width=4)


def test_blocks_default_to_the_reference_config():
  x = jnp.ones((1, 2, 2, 4))
  v = UpBlock(3).init(jax.random.key(0), x, train=False)
  assert v["params"]["conv"]["kernel"].dtype == jnp.float32
  y = UpBlock(3, ModelConfig(dtype=jnp.bfloat16)).apply(v, x, train=False)
  assert y.dtype == jnp.bfloat16


# ---------------------------------------------------------------- registry
def test_registry_names_are_read_without_jax():
  code = ("import sys; from t2igan_jax.models import families; "
          "print(','.join(families.REFINER_FAMILIES)); "
          "assert 'jax' not in sys.modules, 'families imported jax'")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "memory,ffblock,attention"
  assert config_validation.CHOICES["model.refiner"] == tuple(
      families.REFINER_FAMILIES)


# The submodules of h_net2 that only a given family has.
FAMILY_KEYS = {"memory": {"memory_writer", "key_addressing", "value_reading",
                          "response_gate"},
               "ffblock": {"ff_block", "s_att"},
               "attention": {"att"}}


@pytest.mark.parametrize("refiner", list(families.REFINER_FAMILIES))
def test_every_family_builds(refiner):
  cls = families.resolve_refiner(refiner)
  assert cls.__name__.endswith("RefinementStage")
  cfg = ModelConfig.from_config(tiny_config(refiner))
  g = generator_lib.Generator(cfg)
  shapes = jax.eval_shape(lambda: g.init(
      {"params": jax.random.key(0), "noise": jax.random.key(1)},
      *g_inputs(cfg), train=False))
  stage = set(shapes["params"]["h_net2"])
  assert stage == FAMILY_KEYS[refiner] | {"residual_0", "upsample"}
  assert set(shapes["params"]) == {"ca_net", "h_net1", "h_net2", "img_net1",
                                   "img_net2"}


def test_unknown_family_is_one_line():
  with pytest.raises(NotImplementedError) as err:
    families.resolve_refiner("dfgan_refiner")
  msg = str(err.value)
  assert "\n" not in msg and "config.model.refiner" in msg
  assert "'dfgan_refiner'" in msg and "memory, ffblock, attention" in msg
  c = tiny_config()
  c.model.refiner = "dfgan_refiner"
  with pytest.raises(Exception, match="model.refiner"):
    config_validation.validate(c)


class SkipStage(nn.Module):
  """A minimal refiner family for the registry test: out = UpBlock(h)."""
  config: ModelConfig = ModelConfig()

  @nn.compact
  def __call__(self, h, words, mask, sent=None, train=None):
    del sent
    out = UpBlock(self.config.ngf, self.config, name="upsample")(h, train=train)
    b, hh, ww, _ = h.shape
    att = jnp.zeros((b, words.shape[1], hh, ww)) + 0 * mask[:, :, None, None]
    return out, att


def test_a_new_family_is_one_registry_line(monkeypatch):
  monkeypatch.setitem(families.REFINER_FAMILIES, "skip",
                      f"{__name__}:SkipStage")
  cfg = dataclasses.replace(ModelConfig.from_config(tiny_config()), refiner="skip")
  g = generator_lib.Generator(cfg)
  out, variables = g.init_with_output(
      {"params": jax.random.key(0), "noise": jax.random.key(1)}, *g_inputs(cfg),
      train=False)
  assert set(variables["params"]["h_net2"]) == {"upsample"}
  assert out["images"][1].shape[1] == 2 * cfg.base_size


# ------------------------------------------------------------- CA epsilon
@pytest.fixture(scope="module")
def tiny_g():
  cfg = ModelConfig.from_config(tiny_config())
  g = generator_lib.Generator(cfg)
  inputs = g_inputs(cfg)
  v = g.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
             *inputs, train=False)
  run = jax.jit(lambda eps, key, sample_ca=None: g.apply(
      v, *inputs, train=False, eps=eps, sample_ca=sample_ca,
      rngs={"noise": key}), static_argnums=(2,))
  return cfg, run


def test_given_eps_replaces_the_noise_stream(tiny_g):
  cfg, run = tiny_g
  b = 3
  eps = jax.random.normal(jax.random.key(5), (b, cfg.condition_dim))
  a = run(eps, jax.random.key(1))
  same = run(eps, jax.random.key(2))           # the rng is not used
  for x, y in zip(a["images"], same["images"]):
    np.testing.assert_array_equal(x, y)
  other = run(eps + 1.0, jax.random.key(1))
  assert not np.allclose(a["images"][-1], other["images"][-1])
  # eps = 0 gives c = mu, what not sampling gives (another compiled graph:
  # equal up to float rounding).
  zero = run(jnp.zeros_like(eps), jax.random.key(1))
  mu_only = run(None, jax.random.key(1), False)
  np.testing.assert_array_equal(zero["mu"], mu_only["mu"])
  for x, y in zip(zero["images"], mu_only["images"]):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  # eps=None: drawn from the 'noise' stream, so the rng matters.
  n1, n2 = run(None, jax.random.key(1)), run(None, jax.random.key(2))
  assert not np.allclose(n1["images"][-1], n2["images"][-1])


def test_eps_of_the_wrong_shape_is_named(tiny_g):
  cfg, run = tiny_g
  with pytest.raises(ValueError, match="eps shape"):
    run(jnp.zeros((2, cfg.condition_dim)), jax.random.key(1))
