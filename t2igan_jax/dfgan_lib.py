"""DF-GAN training state, optimisers, one training step and truncated noise.

Standalone pieces for the DF-GAN family (SPEC-dfgan), to be driven by the job
layer later. The step follows the official ``code/lib/modules.py`` ``train``:

1. ``z ~ N(0, I)`` [B, z_dim]; ``x̂ = G(z, s)`` (one G forward, kept as a VJP).
2. D step: ``L_D`` on real / mismatched / detached-fake pairs + MA-GP
   (``losses.dfgan.discriminator_loss``), one Adam over D and C together.
3. G step: ``L_G = -mean(C(D(x̂), s))`` through the *updated* D and C, on the
   *same* x̂ (no new noise); the gradient reaches G through the VJP of step 1.

Optimisers (official ``code/src/train.py``; they are hard-coded there, not in
the YAMLs): G Adam(lr 1e-4, β (0, 0.9)); D+C Adam(lr 4e-4, β (0, 0.9)); eps
1e-8, no weight decay, schedule, clipping or EMA. With β1 = 0 the first Adam
update is ``lr · g / (|g| + eps)``.

Sampling noise: ``truncated_noise`` (the official ``truncated_noise``:
``truncation · truncnorm(-2, 2)``).
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from t2igan_jax.losses import dfgan as dfgan_losses
from t2igan_jax.models import dfgan


@dataclasses.dataclass(frozen=True)
class DfganConfig:
  """Sizes and optimiser settings of one DF-GAN (defaults: the bird config).

  ``nf``: base width (G's 4×4 map and D's code have 8·nf channels);
  ``z_dim``: noise size; ``cond_dim``: sentence-vector size (DAMSM); ``imsize``:
  output side (a power of two >= 32; it sets the number of blocks).
  """
  nf: int = 32
  z_dim: int = 100
  cond_dim: int = 256
  imsize: int = 256
  ch_size: int = 3
  lr_g: float = 1e-4
  lr_d: float = 4e-4
  betas: tuple[float, float] = (0.0, 0.9)
  eps: float = 1e-8
  gp_weight: float = dfgan_losses.GP_WEIGHT
  gp_power: float = dfgan_losses.GP_POWER

  def __post_init__(self):
    for field in ("nf", "z_dim", "cond_dim", "ch_size"):
      if getattr(self, field) <= 0:
        raise ValueError(f"DfganConfig.{field} must be a positive integer, "
                         f"got {getattr(self, field)}")
    try:
      dfgan.g_channels(self.nf, self.imsize)
    except ValueError as e:
      raise ValueError(f"DfganConfig.imsize: {e}") from None


BIRD = DfganConfig()   # bird.yml / coco.yml: nf 32, z 100, cond 256, 256 px


@flax.struct.dataclass
class DfganState:
  """Everything one DF-GAN step reads and writes.

  ``d_params`` = ``{'netD': ..., 'netC': ...}`` (one optimiser over both);
  ``rng``: the base key the job layer derives step keys from.
  """
  step: jnp.ndarray
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  rng: jax.Array


def models(config: DfganConfig):
  """``(NetG, NetD, NetC)`` as Flax modules for ``config``."""
  return (dfgan.DFGenerator(config.nf, config.z_dim, config.cond_dim,
                            config.imsize, config.ch_size),
          dfgan.DFDiscriminator(config.nf, config.imsize),
          dfgan.DFConditionalHead(config.nf, config.cond_dim))


def make_optimizers(config: DfganConfig):
  """``(g_tx, d_tx)``: Adam(lr_g) for G, Adam(lr_d) for D and C together."""
  b1, b2 = config.betas
  adam = functools.partial(optax.adam, b1=b1, b2=b2, eps=config.eps)
  return adam(config.lr_g), adam(config.lr_d)


def init_params(config: DfganConfig, rng: jax.Array):
  """``(g_params, {'netD', 'netC'})`` with the reference initialisation."""
  net_g, net_d, net_c = models(config)
  k_g, k_d, k_c = jax.random.split(rng, 3)
  z = jnp.zeros((1, config.z_dim), jnp.float32)
  s = jnp.zeros((1, config.cond_dim), jnp.float32)
  x = jnp.zeros((1, config.imsize, config.imsize, config.ch_size), jnp.float32)
  f = jnp.zeros((1, 4, 4, 8 * config.nf), jnp.float32)
  g_params = net_g.init(k_g, z, s)["params"]
  d_params = {"netD": net_d.init(k_d, x)["params"],
              "netC": net_c.init(k_c, f, s)["params"]}
  return g_params, d_params


def create_state(config: DfganConfig, rng: jax.Array) -> DfganState:
  """Initial state: parameters from ``rng``, fresh Adam states, step 0."""
  k_init, k_state = jax.random.split(rng)
  g_params, d_params = init_params(config, k_init)
  g_tx, d_tx = make_optimizers(config)
  return DfganState(step=jnp.zeros((), jnp.int32), g_params=g_params,
                    d_params=d_params, g_opt=g_tx.init(g_params),
                    d_opt=d_tx.init(d_params), rng=k_state)


def apply_fns(config: DfganConfig):
  """``(generate(g_params, z, s), features(d_params, x), logits(d_params, f, s))``."""
  net_g, net_d, net_c = models(config)

  def generate(g_params, noise, sent):
    return net_g.apply({"params": g_params}, noise, sent)

  def features(d_params, images):
    return net_d.apply({"params": d_params["netD"]}, images)

  def logits(d_params, feats, sent):
    return net_c.apply({"params": d_params["netC"]}, feats, sent)

  return generate, features, logits


def train_step(state: DfganState, images: jnp.ndarray, sent: jnp.ndarray,
               key: jax.Array, *, config: DfganConfig):
  """One official DF-GAN iteration (module docstring): D step, then G step.

  images [B, imsize, imsize, ch] in [-1, 1]; sent [B, cond_dim]; ``key`` draws
  the noise (the job layer derives it, e.g. ``fold_in(state.rng, state.step)``).
  Returns ``(new_state, metrics)`` with the losses of this step.
  """
  generate, features, logits = apply_fns(config)
  g_tx, d_tx = make_optimizers(config)
  noise = jax.random.normal(key, (images.shape[0], config.z_dim), jnp.float32)
  fake, g_pullback = jax.vjp(lambda p: generate(p, noise, sent), state.g_params)

  d_loss_fn = functools.partial(
      dfgan_losses.discriminator_loss, features=features, logits=logits,
      gp_weight=config.gp_weight, gp_power=config.gp_power)
  (d_loss, terms), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
      state.d_params, images, sent, fake)
  d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  g_loss, d_fake = jax.value_and_grad(
      lambda x: dfgan_losses.generator_loss(d_params, x, sent, features=features,
                                            logits=logits))(fake)
  (g_grads,) = g_pullback(d_fake)
  g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)

  new_state = state.replace(step=state.step + 1, g_params=g_params,
                            d_params=d_params, g_opt=g_opt, d_opt=d_opt)
  return new_state, {"d_loss": d_loss, "g_loss": g_loss, **terms}


def make_train_step(config: DfganConfig):
  """``train_step`` jitted once for ``config``, with the state donated."""
  return jax.jit(functools.partial(train_step, config=config), donate_argnums=0)


def truncated_noise(key: jax.Array, n: int, z_dim: int,
                    truncation: float) -> jnp.ndarray:
  """``truncation · z``, z ~ N(0, 1) truncated to [-2, 2], shape [n, z_dim].

  The official sampler's ``truncated_noise`` (it draws from NumPy's global RNG
  with scipy's ``truncnorm``; here from ``key``): |z| <= 2·truncation.
  """
  return truncation * jax.random.truncated_normal(key, -2.0, 2.0, (n, z_dim),
                                                  jnp.float32)
