"""DF-GAN losses: hinge with matching-aware zero-centred gradient penalty (MA-GP).

With f = NetD (image code), C = NetC (logits), x real, x̂ = G(z, s) fake and
s the sentence vector, over a batch of B (SPEC-dfgan "Losses and the training
step", the official ``code/lib/modules.py``):

    L_D = mean(relu(1 - C(f(x), s)))                          real, matching
        + ½ mean(relu(1 + C(f(x̂), s)))                         fake (x̂ detached)
        + ½ mean(relu(1 + C(roll(f(x), -1), s)))               mismatched
        + k · mean_i ‖(∂C(f(x), s)_i/∂x_i, ∂C(f(x), s)_i/∂s_i)‖₂^p    MA-GP, k=2, p=6
    L_G = -mean(C(f(x̂), s))

The mismatched pairs roll the real *image codes* by −1 within the batch
(``C(f(x)[(i+1) % B], s_i)``). MA-GP takes the gradient of the real logits
w.r.t. the image and the sentence together, in one per-sample norm (no epsilon,
no centring: the norm itself is penalised), and is differentiated again w.r.t.
D and C (double backward).

The loss functions take the networks as apply functions on one parameter tree
``params`` (D and C together, as they share one optimiser):

    features(params, images [B,H,W,3]) -> [B,4,4,8nf]
    logits(params, features, sent [B,cond]) -> [B]

Per-sample gradients come from the gradient of the summed logits, which is
exact because D and C treat samples independently (no batch statistics).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

Params = Any
FeaturesFn = Callable[[Params, jnp.ndarray], jnp.ndarray]
LogitsFn = Callable[[Params, jnp.ndarray, jnp.ndarray], jnp.ndarray]

GP_WEIGHT = 2.0   # k
GP_POWER = 6.0    # p


def hinge_real(logits: jnp.ndarray) -> jnp.ndarray:
  """``mean(relu(1 - logits))`` (positives: real, matching pairs)."""
  return jnp.mean(jax.nn.relu(1.0 - logits))


def hinge_fake(logits: jnp.ndarray) -> jnp.ndarray:
  """``mean(relu(1 + logits))`` (negatives: fake or mismatched pairs)."""
  return jnp.mean(jax.nn.relu(1.0 + logits))


def mismatched_features(features: jnp.ndarray) -> jnp.ndarray:
  """Image codes rolled by −1 on the batch axis: row i holds ``features[(i+1) % B]``."""
  return jnp.roll(features, -1, axis=0)


def ma_gp_from_grads(grad_images: jnp.ndarray, grad_sent: jnp.ndarray,
                     weight: float = GP_WEIGHT, power: float = GP_POWER) -> jnp.ndarray:
  """``k · mean_i(‖[vec(∂x_i), ∂s_i]‖₂^p)`` from per-sample gradients [B,...], [B,cond].

  As the reference: ``sqrt(sum(g²))`` then the power, no epsilon.
  """
  b = grad_images.shape[0]
  g = jnp.concatenate([grad_images.reshape(b, -1), grad_sent.reshape(b, -1)], axis=1)
  norm = jnp.sqrt(jnp.sum(g * g, axis=1))
  return weight * jnp.mean(norm ** power)


def ma_gp(critic: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
          images: jnp.ndarray, sent: jnp.ndarray, weight: float = GP_WEIGHT,
          power: float = GP_POWER) -> jnp.ndarray:
  """MA-GP of ``critic(images, sent) -> [B]`` logits at the real, matching pairs."""
  grads = jax.grad(lambda x, s: jnp.sum(critic(x, s)), argnums=(0, 1))(images, sent)
  return ma_gp_from_grads(*grads, weight=weight, power=power)


def discriminator_loss(params: Params, images: jnp.ndarray, sent: jnp.ndarray,
                       fake: jnp.ndarray, *, features: FeaturesFn, logits: LogitsFn,
                       gp_weight: float = GP_WEIGHT, gp_power: float = GP_POWER):
  """``L_D`` (module docstring) and its terms; ``fake`` is detached here.

  One D forward on the real images serves the real logits, the mismatched
  pairs and (through its VJP) the MA-GP gradients, as in the reference.
  Returns ``(loss, {'d_real', 'd_fake', 'd_mis', 'ma_gp'})``.
  """

  def real_logits(x, s):
    f = features(params, x)
    return logits(params, f, s), f

  pred_real, pullback, real_feat = jax.vjp(real_logits, images, sent, has_aux=True)
  gp = ma_gp_from_grads(*pullback(jnp.ones_like(pred_real)), weight=gp_weight,
                        power=gp_power)
  err_real = hinge_real(pred_real)
  err_mis = hinge_fake(logits(params, mismatched_features(real_feat), sent))
  fake_feat = features(params, jax.lax.stop_gradient(fake))
  err_fake = hinge_fake(logits(params, fake_feat, sent))
  loss = err_real + (err_fake + err_mis) / 2.0 + gp
  return loss, {"d_real": err_real, "d_fake": err_fake, "d_mis": err_mis,
                "ma_gp": gp}


def generator_loss(params: Params, fake: jnp.ndarray, sent: jnp.ndarray, *,
                   features: FeaturesFn, logits: LogitsFn) -> jnp.ndarray:
  """``L_G = -mean(C(f(x̂), s))``; differentiate w.r.t. ``fake`` (or G's params)."""
  return -jnp.mean(logits(params, features(params, fake), sent))
