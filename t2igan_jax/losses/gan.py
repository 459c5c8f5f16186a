"""Adversarial losses of DM-GAN / AttnGAN (SPEC-dmgan §6.4).

Discriminator i, with U the unconditional head, C the sentence-conditioned
head, f the trunk, x real, x̂ fake, s the DAMSM sentence feature:

    L_D = ½[BCE(U(f(x)), 1) + BCE(C(f(x), s), 1)]
        + ⅓[BCE(U(f(x̂)), 0) + BCE(C(f(x̂), s), 0) + BCE(C(f(x)[:-1], s[1:]), 0)]

Generator, summed over stages:

    L_G = Σ_i [BCE(U(f(x̂_i)), 1) + BCE(C(f(x̂_i), s), 1)]

The heads return logits. ``bce='torch_clamped'`` (reference) applies a float32
sigmoid and PyTorch ``BCELoss``'s log clamp at -100; ``bce='logits'`` uses the
log-sigmoid form (equal except where the sigmoid saturates).
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _torch_bce_elementwise(p, target):
  """PyTorch ``BCELoss`` on probabilities, element-wise (no reduction).

  Forward: -(t·max(log p, -100) + (1-t)·max(log(1-p), -100)).
  Backward, as PyTorch's: (p - t) / max(p·(1-p), 1e-12). The naive autodiff
  of the clamped logs gives 0·inf = NaN once the sigmoid saturates in float32;
  PyTorch's analytic gradient stays finite (and the sigmoid's p·(1-p) then
  makes the logit gradient 0), so this reproduces the reference exactly.
  """
  log_p = jnp.maximum(jnp.log(p), -100.0)
  log_1mp = jnp.maximum(jnp.log(1.0 - p), -100.0)
  return -(target * log_p + (1.0 - target) * log_1mp)


def _torch_bce_fwd(p, target):
  return _torch_bce_elementwise(p, target), (p, target)


def _torch_bce_bwd(res, g):
  p, target = res
  grad_p = g * (p - target) / jnp.maximum(p * (1.0 - p), 1e-12)
  return grad_p, jnp.zeros_like(target)


_torch_bce_elementwise.defvjp(_torch_bce_fwd, _torch_bce_bwd)


def bce(logits, target: float, mode: str = "torch_clamped"):
  """Mean binary cross-entropy of ``logits`` against a constant target."""
  logits = logits.astype(jnp.float32)
  if mode == "torch_clamped":
    p = jax.nn.sigmoid(logits)
    t = jnp.full_like(p, target)
    return jnp.mean(_torch_bce_elementwise(p, t))
  if mode == "logits":
    log_p = jax.nn.log_sigmoid(logits)
    log_1mp = jax.nn.log_sigmoid(-logits)
    return -jnp.mean(target * log_p + (1.0 - target) * log_1mp)
  raise ValueError(f"config.gan.bce={mode!r} is not 'torch_clamped'|'logits'")


def wrong_pairs(sent, class_ids, mode: str = "shift"):
  """Indices (image_idx, sentence_idx) of the mismatched real pairs.

  'shift' (reference): image k with the sentence of item k+1 of the
  length-sorted batch (B-1 pairs). 'other_class': image k with the sentence of
  the next item (cyclically) whose class differs; when none differs, k+1.
  """
  b = sent.shape[0]
  if mode == "shift":
    return jnp.arange(b - 1), jnp.arange(1, b)
  if mode == "other_class":
    offsets = jnp.arange(1, b)
    cand = (jnp.arange(b)[:, None] + offsets[None, :]) % b          # [B, B-1]
    differs = class_ids[cand] != class_ids[:, None]
    first = jnp.argmax(differs, axis=1)
    pick = jnp.where(differs.any(axis=1), cand[jnp.arange(b), first],
                     (jnp.arange(b) + 1) % b)
    return jnp.arange(b), pick
  raise ValueError(f"config.gan.wrong_pair={mode!r} is not 'shift'|'other_class'")


def discriminator_loss(real_u, real_c, fake_u, fake_c, wrong_c, mode):
  """L_D from the five head outputs (logits)."""
  real = (bce(real_u, 1.0, mode) + bce(real_c, 1.0, mode)) / 2.0
  fake = (bce(fake_u, 0.0, mode) + bce(fake_c, 0.0, mode)
          + bce(wrong_c, 0.0, mode)) / 3.0
  return real + fake, {"d_real": real, "d_fake": fake}


def generator_adv_loss(fake_u, fake_c, mode):
  """One stage's adversarial G term."""
  return bce(fake_u, 1.0, mode) + bce(fake_c, 1.0, mode)


def kl_loss(mu, logvar, reduction: str = "mean"):
  """Conditioning augmentation's KL(N(mu, exp(logvar)) || N(0, I)) (SPEC-dmgan §3.2).

  ``KL = -1/2 · mean_{b,k}(1 + logvar - mu^2 - exp(logvar))`` over all
  B×ncf entries ('mean', reference) or the sum ('sum').
  """
  terms = 1.0 + logvar - jnp.square(mu) - jnp.exp(logvar)
  if reduction == "mean":
    return -0.5 * jnp.mean(terms)
  if reduction == "sum":
    return -0.5 * jnp.sum(terms)
  raise ValueError(f"kl_reduction must be 'mean' or 'sum', got {reduction!r}")
