"""DF-GAN in the GAN jobs: the ``'dfgan'`` :class:`gan_lib.Architecture`.

``train_gan``, ``sample``, ``evaluate`` and ``convert`` reach DF-GAN
(SPEC-dfgan; ``dfgan_lib``) through :data:`ARCHITECTURE`
(``config.model.architecture = 'dfgan'``). One training step
(:func:`train_step`) is the official iteration (``dfgan_lib.train_step``) on

* the condition ``s`` [B, cond_dim]: the frozen DAMSM text encoder's sentence
  vector (eval mode, no gradient). The official ``prepare_data`` sorts the
  captions by length to run the RNN and then restores the loader order
  (``rm_sort``), so the batch stays in loader order here (the mismatched
  pairs roll the images of that order);
* the images [B, S, S, 3] of the loader's last (only) stage, S =
  ``data.base_size``;
* the noise ``z ~ N(0, I)`` [B, z_dim] from ``fold_in(state.rng, step)``.

The state is ``dfgan_lib.DfganState`` (no EMA, no BatchNorm statistics).
Sampling runs G through an adapter with the stacked generator's call
(``_Generator``: images ``[x]`` of one stage, no attention, no CA), so
``gan_lib.sample_step``, ``generation`` and ``evaluate`` are unchanged; z is
drawn with ``config.sample.truncation`` (``gan_lib.draw_z``).
"""

import dataclasses
from typing import Any

import jax

from t2igan_jax import dfgan_lib
from t2igan_jax import gan_lib


def dfgan_config(config) -> dfgan_lib.DfganConfig:
  """The ``DfganConfig`` of a run's config: nf = ``model.ngf``, cond_dim =
  the DAMSM embedding, imsize = ``data.base_size``, the ``gan`` Adams."""
  m, g = config.model, config.gan
  return dfgan_lib.DfganConfig(
      nf=m.ngf, z_dim=m.z_dim, cond_dim=config.text_encoder.embedding_dim,
      imsize=config.data.base_size, lr_g=g.g_lr, lr_d=g.d_lr,
      betas=(g.beta1, g.beta2))


@dataclasses.dataclass(frozen=True)
class NoiseSizes:
  """What ``generation`` reads of a generator's config (no CA: eps is empty)."""
  z_dim: int
  condition_dim: int = 0


class _Generator:
  """NetG behind the stacked generator's ``apply`` (``gan_lib.Architecture``).

  ``words``, ``mask``, ``train``, ``eps`` and the rngs are accepted and
  unused (G has no attention, CA, BatchNorm or dropout).
  """

  def __init__(self, cfg: dfgan_lib.DfganConfig):
    self.net = dfgan_lib.models(cfg)[0]
    self.config = NoiseSizes(cfg.z_dim)

  def apply(self, variables, z, sent, words=None, mask=None, *, train=False,
            eps=None, sample_ca=None, rngs=None):
    del words, mask, train, eps, sample_ca, rngs
    image = self.net.apply({"params": variables["params"]}, z, sent)
    return {"images": [image], "attention": []}


class DfganModels(gan_lib.GanModels):
  """The static parts of a DF-GAN run (``GanModels``' text encoding, batch
  sharding and ``generate``; NetG, NetD and NetC from ``dfgan_lib``)."""

  # pylint: disable-next=super-init-not-called
  def __init__(self, config, text_model, image_model, mesh=None):
    self.config = config
    self.dfgan_config = dfgan_config(config)
    self.generator = _Generator(self.dfgan_config)
    self.discriminators = ()
    self.text_model = text_model
    self.image_model = image_model
    self.num_stages = 1
    self.mesh = mesh
    self.g_tx, self.d_tx = dfgan_lib.make_optimizers(self.dfgan_config)

  def generate(self, g_params, g_stats, z, sent, words, mask, rng, *, train):
    del rng, train
    return self.generator.apply({"params": g_params}, z, sent), g_stats


def create_state(models: DfganModels, rng) -> dfgan_lib.DfganState:
  """Fresh NetG, NetD + NetC and their Adam states (``dfgan_lib``)."""
  return dfgan_lib.create_state(models.dfgan_config, rng)


def train_step(state: dfgan_lib.DfganState, batch, enc: gan_lib.Encoders, *,
               models: DfganModels):
  """One official DF-GAN iteration on a loader batch (module docstring)."""
  key = jax.random.fold_in(state.rng, state.step)
  batch = models.shard_batch(batch)
  _, sent = models.encode_text(enc, batch["captions"], batch["caption_lens"])
  sent = jax.lax.stop_gradient(sent)
  return dfgan_lib.train_step(state, batch["images"][-1], sent, key,
                              config=models.dfgan_config)


def log_line(models: DfganModels):
  """The step log line: L_G, L_D and L_D's terms (interval means)."""
  del models

  def line(s):
    return (f"g_loss {s['train/g_loss']:.3f}  d_loss {s['train/d_loss']:.3f} "
            f"(real {s['train/d_real']:.3f} fake {s['train/d_fake']:.3f} mis "
            f"{s['train/d_mis']:.3f} ma_gp {s['train/ma_gp']:.4f})")
  return line


def trained_parameters(state: dfgan_lib.DfganState) -> dict[str, Any]:
  return {"generator (NetG)": state.g_params,
          "discriminator (NetD)": state.d_params["netD"],
          "conditional head (NetC)": state.d_params["netC"]}


def generator_weights(config, models, state, meta) -> tuple[Any, str, str]:
  """DF-GAN keeps no EMA: the raw G (config validation allows only 'raw')."""
  del config, models, meta
  return state.g_params, "raw", "raw generator (DF-GAN keeps no EMA)"


ARCHITECTURE = gan_lib.Architecture(
    name="dfgan", models=DfganModels, create_state=create_state,
    train_step=train_step,
    # No loss term takes config.debug_nonfinite_term's NaN.
    loss_term_names=lambda config: (),
    log_line=log_line, trained_parameters=trained_parameters,
    generator_weights=generator_weights,
    sampling_stats=lambda state: {}, has_ema=False,
    describe=lambda config: "DF-GAN")
