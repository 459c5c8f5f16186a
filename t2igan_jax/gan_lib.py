"""The GAN pieces several jobs share: state, models, jitted steps, restore.

``train_gan`` trains with :func:`train_step`; ``sample`` and ``evaluate``
restore a checkpoint with :func:`restore_generator` and run :func:`sample_step`;
``convert`` builds a :class:`GanState` from released weights with
:func:`create_state`'s layout and :func:`make_optimizers`.

These are the pieces of the 'stacked' architecture (:data:`STACKED`). The jobs
reach them, and another architecture's (DF-GAN: ``t2igan_jax/dfgan_job.py``),
through :class:`Architecture`, chosen by ``config.model.architecture``
(:func:`architecture`; registry ``models/families.py:ARCHITECTURES``).

:func:`train_step` is one reference iteration (SPEC-dmgan §6.2), as one jitted
function (state donated, batch sharded over the ``data`` mesh axis, BatchNorm
statistics over the global batch):

1. the batch is sorted by caption length, descending (the reference's
   ``prepare_data``; it fixes the mismatched pairs and the rolled mask);
2. frozen DAMSM text encoder (eval mode) -> words [B,T,D], sentence [B,D];
   mask = captions == 0;
3. z ~ N(0, I); one train-mode G forward (``jax.vjp`` keeps its pull-back);
4. each D_i updated on real / fake (detached) / mismatched pairs;
5. G updated on the same fakes, scored by the *updated* D_i:
   Σ_i adversarial + λ·(L_w0 + L_w1 + L_s0 + L_s1 on the last stage) + KL;
6. EMA of G's parameters (decay 0.999; ``gan.ema_debias``: started from
   zeros and bias-corrected when sampled, ``t2igan_jax/ema.py``).

Spectral-norm vectors advance on every D call (``model.sn_update``) in the
reference's call order: trunk(real), trunk(fake), joint(real), joint(fake),
joint(wrong) in the D step, then trunk(fake), joint(fake) in the G step.
"""

import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from input_pipeline import pipeline as input_pipeline
from input_pipeline.text import Vocabulary
from t2igan_jax import checkpointing
from t2igan_jax import damsm_lib
from t2igan_jax import dfgan_lib
from t2igan_jax import ema
from t2igan_jax import numerics
from t2igan_jax import sharding
from t2igan_jax.errors import CheckpointError
from t2igan_jax.losses import damsm as damsm_losses
from t2igan_jax.losses import gan as gan_losses
from t2igan_jax.models import discriminator as discriminator_lib
from t2igan_jax.models import families
from t2igan_jax.models import generator as generator_lib

CHECKPOINT_DIR = "checkpoints"
# config.model fields that choose how a step is computed, not what is
# computed: a checkpoint written under one value restores under any other.
EXECUTION_ONLY_MODEL_FIELDS = ("conv_weight_grad", "small_map_conv")


def model_meta(model: dict[str, Any]) -> dict[str, Any]:
  """``config.model`` as a checkpoint records and checks it (a plain dict).

  Drops ``EXECUTION_ONLY_MODEL_FIELDS`` from ``model`` (a ``to_dict()`` of
  ``config.model``, or the dict saved in a checkpoint's metadata), so a run
  resumes, samples or evaluates with another ``conv_weight_grad`` or
  ``small_map_conv`` than it was trained with (e.g. trained on GPU, sampled on
  CPU).
  """
  out = {k: v for k, v in model.items()
         if k not in EXECUTION_ONLY_MODEL_FIELDS}
  # The default architecture is left out, as checkpoints written before the
  # field existed have it (they resume and sample unchanged).
  if out.get("architecture") == "stacked":
    del out["architecture"]
  return out


@flax.struct.dataclass
class GanState:
  step: jax.Array
  g_params: Any
  g_ema: Any            # EMA of g_params (what is sampled and evaluated)
  g_stats: Any          # G BatchNorm running statistics ('live', reference)
  d_params: Any         # list, one per stage
  d_stats: Any          # list: spectral-norm state of each D
  g_opt: Any
  d_opt: Any            # list
  rng: jax.Array
  nonfinite_skipped: jax.Array  # int32: updates dropped by on_nonfinite='skip'


@flax.struct.dataclass
class Encoders:
  """Frozen DAMSM encoders (parameters are jit arguments, not constants)."""
  text_params: Any
  image_vars: Any

  @classmethod
  def from_damsm_state(cls, state) -> "Encoders":
    text_params, image_vars = damsm_lib.encoder_variables(state)
    return cls(text_params=text_params, image_vars=image_vars)


def make_optimizers(config) -> tuple[optax.GradientTransformation,
                                      optax.GradientTransformation]:
  """``(g_tx, d_tx)``: the reference's Adam for G and for every D."""
  g = config.gan
  return (optax.adam(g.g_lr, b1=g.beta1, b2=g.beta2, eps=1e-8),
          optax.adam(g.d_lr, b1=g.beta1, b2=g.beta2, eps=1e-8))


def sort_by_length(batch):
  """Reorders every batch field by caption length, descending (stable)."""
  order = jnp.argsort(-batch["caption_lens"], stable=True)
  return jax.tree.map(lambda x: jnp.take(x, order, axis=0), batch)


def word_mask(captions):
  """True at padded word slots (captions are zero-padded past their length).

  The generator applies ``model.word_axis_length`` itself ('batch_max' also
  hides the columns past the batch's longest caption; for DM-GAN those are
  padding in every row anyway).
  """
  return captions == 0


class GanModels:
  """The static parts of training: modules, optimisers and config (bound,
  never traced)."""

  def __init__(self, config, text_model, image_model, mesh=None):
    self.config = config
    self.generator = generator_lib.generator_from_config(config)
    self.discriminators = discriminator_lib.discriminators_from_config(config)
    self.text_model = text_model
    self.image_model = image_model
    self.num_stages = config.data.branch_num
    # The data mesh (optional): the step re-shards the length-sorted batch and
    # the noise over it, else GSPMD replicates everything after the
    # data-dependent sort and every device computes the whole batch.
    self.mesh = mesh
    self.g_tx, self.d_tx = make_optimizers(config)

  def shard_batch(self, tree):
    """Constrains a batch-major pytree to be split over the data axis."""
    if self.mesh is None or self.mesh.devices.size == 1:
      return tree
    return jax.lax.with_sharding_constraint(
        tree, sharding.batch_sharded(self.mesh))

  # --------------------------------------------------------------- text
  def encode_text(self, enc: Encoders, captions, lengths):
    return self.text_model.apply({"params": enc.text_params}, captions, lengths,
                                 train=False)

  # ---------------------------------------------------------- generator
  def generate(self, g_params, g_stats, z, sent, words, mask, rng, *, train):
    variables = {"params": g_params, "batch_stats": g_stats}
    sample_ca = True if train else self.config.model.ca_sample_at_eval
    if train:
      out, new_vars = self.generator.apply(
          variables, z, sent, words, mask, train=True, sample_ca=sample_ca,
          rngs={"noise": rng}, mutable=["batch_stats"])
      return out, new_vars["batch_stats"]
    out = self.generator.apply(variables, z, sent, words, mask, train=False,
                               sample_ca=sample_ca, rngs={"noise": rng})
    return out, g_stats


def create_state(models: GanModels, rng) -> GanState:
  """Fresh G (raw and EMA), Ds and their Adam states (call under jit)."""
  c = models.config
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  b, t = 2, c.data.words_num
  z = jnp.zeros((b, c.model.z_dim))
  sent = jnp.zeros((b, c.text_encoder.embedding_dim))
  words = jnp.zeros((b, t, c.text_encoder.embedding_dim))
  mask = jnp.zeros((b, t), bool)
  g_vars = models.generator.init({"params": g_rng, "noise": g_rng}, z, sent,
                                 words, mask, train=False)
  sizes = input_pipeline.stage_sizes(c)
  d_params, d_stats = [], []
  for i, d in enumerate(models.discriminators):
    x = jnp.zeros((b, sizes[i], sizes[i], 3))
    v = d.init({"params": jax.random.fold_in(d_rng, i)}, x, sent,
               method=g_step_heads)
    d_params.append(v["params"])
    d_stats.append({k: v for k, v in v.items() if k != "params"})
  return GanState(
      step=jnp.zeros((), jnp.int32), g_params=g_vars["params"],
      g_ema=ema.init(g_vars["params"], c.gan.ema_debias),
      g_stats=g_vars["batch_stats"],
      d_params=d_params, d_stats=d_stats,
      g_opt=models.g_tx.init(g_vars["params"]),
      d_opt=[models.d_tx.init(p) for p in d_params], rng=state_rng,
      nonfinite_skipped=jnp.zeros((), jnp.int32))


def d_step_heads(d, real, fake, sent, wrong_img, wrong_sent):
  """D-step head outputs in the reference's call order (SN advances per call)."""
  code_real = d.encode(real)
  code_fake = d.encode(fake)
  real_c = d.cond_logits(code_real, sent)
  fake_c = d.cond_logits(code_fake, sent)
  wrong_c = d.cond_logits(code_real[wrong_img], sent[wrong_sent])
  real_u = d.uncond_logits(code_real)
  fake_u = d.uncond_logits(code_fake)
  return real_u, real_c, fake_u, fake_c, wrong_c


def g_step_heads(d, fake, sent):
  """G-step head outputs ``(unconditional, conditional)`` of one D."""
  code = d.encode(fake)
  return d.uncond_logits(code), d.cond_logits(code, sent)


@dataclasses.dataclass(frozen=True)
class _StepInputs:
  """What the D and G updates of one step share (traced values)."""
  batch: Any             # sorted by caption length
  words: jax.Array       # [B, T, D], no gradient
  sent: jax.Array        # [B, D], no gradient
  wrong_img: jax.Array   # mismatched pairs: image indices
  wrong_sent: jax.Array  # ... and their sentence indices
  poison: Any            # numerics.poison_terms bound to config and step


def _d_update(models: GanModels, state: GanState, i: int, fake,
              x: _StepInputs):
  """Adam update of D_i on real / fake (detached) / mismatched pairs.

  Returns ``(params, sn_state, opt_state, metrics)``.
  """
  c, d = models.config, models.discriminators[i]

  def loss_fn(d_params):
    heads, new_vars = d.apply(
        {"params": d_params, **state.d_stats[i]}, x.batch["images"][i], fake,
        x.sent, x.wrong_img, x.wrong_sent, method=d_step_heads,
        mutable=list(state.d_stats[i].keys()))
    loss, parts = gan_losses.discriminator_loss(*heads, mode=c.gan.bce)
    loss = x.poison({f"d_loss{i}": loss})[f"d_loss{i}"]
    return loss, (parts, new_vars)

  (loss, (parts, new_vars)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.d_params[i])
  updates, opt = models.d_tx.update(grads, state.d_opt[i], state.d_params[i])
  metrics = {f"d_loss{i}": loss, f"d_real{i}": parts["d_real"],
             f"d_fake{i}": parts["d_fake"],
             f"d_grad_norm{i}": optax.tree.norm(grads)}
  return (optax.apply_updates(state.d_params[i], updates), dict(new_vars),
          opt, metrics)


def _g_loss(models: GanModels, enc: Encoders, d_params, d_stats,
            x: _StepInputs, fakes, mu, logvar):
  """L_G on the fakes, scored by the updated Ds; ``(total, (terms, d_stats))``
  with the Ds' spectral-norm state after these calls."""
  c = models.config
  terms, stats_out = {}, []
  for i, d in enumerate(models.discriminators):
    variables = {"params": d_params[i], **d_stats[i]}
    if c.model.sn_update == "every_call":
      (u, cond), new_vars = d.apply(variables, fakes[i], x.sent,
                                    method=g_step_heads,
                                    mutable=list(d_stats[i].keys()))
      stats_out.append(dict(new_vars))
    else:
      u, cond = d.apply(variables, fakes[i], x.sent, method=g_step_heads)
      stats_out.append(d_stats[i])
    terms[f"g_adv{i}"] = gan_losses.generator_adv_loss(u, cond, c.gan.bce)
  local, glob = models.image_model.apply(enc.image_vars, fakes[-1],
                                         train_trunk_bn=False)
  damsm = damsm_losses.damsm_loss_terms(
      c.damsm, x.words, x.sent, local, glob, x.batch["caption_lens"],
      x.batch["class_ids"])
  terms["g_w_loss"] = damsm["w_loss0"] + damsm["w_loss1"]
  terms["g_s_loss"] = damsm["s_loss0"] + damsm["s_loss1"]
  terms["kl_loss"] = gan_losses.kl_loss(mu, logvar, c.gan.kl_reduction)
  terms = x.poison(terms)
  total = 0.0
  for i in range(len(models.discriminators)):
    total = total + terms[f"g_adv{i}"]
  total = (total + c.gan.lambda_damsm * (terms["g_w_loss"] + terms["g_s_loss"])
           + terms["kl_loss"])
  return total, (terms, stats_out)


def train_step(state: GanState, batch, enc: Encoders, *, models: GanModels):
  """One full reference iteration; returns (new_state, metrics)."""
  c = models.config
  rng = jax.random.fold_in(state.rng, state.step)
  z_rng, ca_rng = jax.random.split(rng)
  batch = models.shard_batch(sort_by_length(batch))
  captions, lengths = batch["captions"], batch["caption_lens"]
  words, sent = models.encode_text(enc, captions, lengths)
  words, sent = jax.lax.stop_gradient(words), jax.lax.stop_gradient(sent)
  mask = word_mask(captions)
  z = models.shard_batch(jax.random.normal(z_rng, (captions.shape[0],
                                                   c.model.z_dim)))

  def g_forward(g_params):
    out, new_stats = models.generate(g_params, state.g_stats, z, sent, words,
                                     mask, ca_rng, train=True)
    return (tuple(out["images"]), out["mu"], out["logvar"]), new_stats

  (fakes, mu, logvar), g_vjp, g_stats = jax.vjp(g_forward, state.g_params,
                                                has_aux=True)
  wrong_img, wrong_sent = gan_losses.wrong_pairs(sent, batch["class_ids"],
                                                 c.gan.wrong_pair)
  x = _StepInputs(batch, words, sent, wrong_img, wrong_sent, functools.partial(
      numerics.poison_terms, c, step=state.step))
  metrics = {}
  d_params, d_stats, d_opt = [], [], []
  for i in range(len(models.discriminators)):
    p, s, o, m = _d_update(models, state, i, jax.lax.stop_gradient(fakes[i]), x)
    d_params.append(p)
    d_stats.append(s)
    d_opt.append(o)
    metrics.update(m)

  g_loss_fn = functools.partial(_g_loss, models, enc, d_params, d_stats, x)
  (g_loss, (g_terms, d_stats_after)), cotangents = jax.value_and_grad(
      g_loss_fn, argnums=(0, 1, 2), has_aux=True)(fakes, mu, logvar)
  (g_grads,) = g_vjp(cotangents)
  g_updates, g_opt = models.g_tx.update(g_grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  decay = c.gan.ema_decay
  g_ema = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, state.g_ema,
                       g_params)
  metrics.update(g_terms)
  metrics["g_loss"] = g_loss
  metrics["g_grad_norm"] = optax.tree.norm(g_grads)
  new_state = state.replace(
      step=state.step + 1, g_params=g_params, g_ema=g_ema, g_stats=g_stats,
      d_params=d_params, d_stats=d_stats_after, g_opt=g_opt, d_opt=d_opt)
  new_state = numerics.guard_update(c, state, new_state, metrics)
  metrics["nonfinite_skipped"] = new_state.nonfinite_skipped
  return new_state, metrics


def loss_term_names(config) -> tuple[str, ...]:
  """The loss terms ``config.debug_nonfinite_term`` may name."""
  n = config.data.branch_num
  return (*(f"d_loss{i}" for i in range(n)), *(f"g_adv{i}" for i in range(n)),
          "g_w_loss", "g_s_loss", "kl_loss")


def sample_step(g_params, g_stats, batch, enc: Encoders, z, rng, *,
                models: GanModels):
  """Generator ``g_params`` in eval mode (BN running statistics) on a batch.

  Pass ``state.g_ema`` for the reference's sampling weights, ``state.g_params``
  for the raw ones (the EMA lags by ~1/(1-decay) = 1000 steps early on).
  """
  words, sent = models.encode_text(enc, batch["captions"], batch["caption_lens"])
  mask = word_mask(batch["captions"])
  out, _ = models.generate(g_params, g_stats, z, sent, words, mask, rng,
                           train=False)
  return out["images"], out["attention"]


# --------------------------------------------------------------- restore
@dataclasses.dataclass
class RestoredGenerator:
  """A trained generator ready to sample (all arrays on the default device)."""
  models: GanModels
  g_params: Any          # the EMA parameters (what the reference samples), or
                         # the raw ones with config.sample.weights='raw'
  g_stats: Any           # BN running statistics ('live', reference)
  enc: Encoders
  vocab: Vocabulary
  step: int
  meta: dict[str, Any]
  damsm_dir: str
  weights: str = "ema"   # config.sample.weights
  # Which parameters g_params are: 'ema' (reference), 'ema_debiased' or 'raw'.
  weights_used: str = "ema"
  weights_description: str = ""


def checkpoint_dir(workdir: str) -> str:
  """``workdir/checkpoints``: where a GAN (or DAMSM) run keeps checkpoints."""
  return os.path.join(workdir, CHECKPOINT_DIR)


def list_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in ``workdir/checkpoints`` (ascending); a GAN
  or a DAMSM workdir (both keep their checkpoints there)."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  # Read-only: a training job may be writing into it (evaluate --watch).
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=1000, interval=1,
                                    read_only=True)
  try:
    return sorted(ckpt.all_steps())
  finally:
    ckpt.close()


def check_meta(config, meta: dict[str, Any], where: str) -> None:
  """CheckpointError unless ``meta`` is a GAN checkpoint's of this config's
  model and stage sizes (``where`` names the checkpoint)."""
  if meta.get("job") != "train_gan":
    raise CheckpointError(f"{where} was written by job {meta.get('job')!r}, not "
                          "train_gan: point --workdir at a GAN training run")
  saved_model = model_meta(meta.get("model") or {})
  current = model_meta(config.model.to_dict())
  differ = sorted(k for k in saved_model if current.get(k) != saved_model[k])
  if differ:
    k = differ[0]
    raise CheckpointError(
        f"{where} was trained with config.model.{k}={saved_model[k]!r} but the "
        f"config has {current.get(k)!r} (differing fields: {differ}); use the "
        "training run's config")
  sizes = list(input_pipeline.stage_sizes(config))
  if meta.get("stage_sizes") is not None and list(meta["stage_sizes"]) != sizes:
    raise CheckpointError(
        f"{where} has stage sizes {meta['stage_sizes']} but the config gives "
        f"{sizes} (config.data.base_size / branch_num)")


def restore_generator(config: ml_collections.ConfigDict, workdir: str,
                      step: int = -1) -> RestoredGenerator:
  """The generator of checkpoint ``step`` (-1: the newest) in ``workdir``.

  The DAMSM encoders come from ``config.gan.damsm_dir`` or, when empty, from
  the directory recorded in the checkpoint's metadata. Raises
  FileNotFoundError without a checkpoint, CheckpointError when the step is
  missing or the checkpoint belongs to another model/vocabulary.
  """
  directory = checkpoint_dir(workdir)
  steps = list_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f"no GAN checkpoint in {directory}: train one first "
        "(config.job='train_gan') or convert released weights "
        "(python -m t2igan_jax.convert)")
  step = steps[-1] if step is None or step < 0 else int(step)
  if step not in steps:
    raise CheckpointError(f"checkpoint step {step} is not in {directory} "
                          f"(available: {steps})")
  ckpt = checkpointing.Checkpointer(
      directory, max_to_keep=1000, interval=1, read_only=True,
      accept_undigested=config.accept_undigested_checkpoints)
  try:
    where = f"checkpoint step {step} in {directory}"
    meta = ckpt.restore_meta(step) or {}
    check_meta(config, meta, where)
    damsm_dir = config.gan.damsm_dir or meta.get("damsm_dir", "")
    text_model, text_params, image_model, image_vars, vocab = (
        damsm_lib.load_encoders(
            damsm_dir,
            accept_undigested=config.accept_undigested_checkpoints))
    if meta.get("vocab_fingerprint") not in (None, vocab.fingerprint()):
      raise CheckpointError(
          f"{where} was trained with vocabulary {meta['vocab_fingerprint']} but "
          f"the DAMSM in {damsm_dir} has {vocab.fingerprint()}")
    arch = architecture(config)
    models = arch.models(config, text_model, image_model)
    abstract = jax.eval_shape(functools.partial(arch.create_state, models),
                              jax.random.key(0))
    state, _, _ = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  # One placement for everything the sampling step reads: the encoders come
  # back replicated over all devices, the generator state on one.
  repl = sharding.replicated(sharding.make_mesh(config.num_devices))
  weights, used, description = arch.generator_weights(config, models, state,
                                                      meta)
  logging.info("checkpoint step %d: sampling the %s (config.sample.weights="
               "%r)", step, description, config.sample.weights)
  g_params, g_stats, enc = jax.device_put(
      (weights, arch.sampling_stats(state),
       Encoders(text_params=text_params, image_vars=image_vars)), repl)
  return RestoredGenerator(models=models, g_params=g_params,
                           g_stats=g_stats, enc=enc, vocab=vocab,
                           step=step, meta=meta, damsm_dir=damsm_dir,
                           weights=config.sample.weights, weights_used=used,
                           weights_description=description)


def generator_weights(config, models: GanModels, state,
                      meta: dict[str, Any]) -> tuple[Any, str, str]:
  """(parameters, 'ema' | 'ema_debiased' | 'raw', a description) to sample.

  ``config.sample.weights``: 'raw' = ``state.g_params``; 'ema' = the run's
  EMA as it was trained (checkpoint metadata ``ema.META_KEY``: the reference
  EMA, or bias-corrected for a ``gan.ema_debias=True`` run); 'ema_debiased' =
  bias-corrected in both cases (for a reference run through
  ``ema.debias_plain_ema`` with θ_0 re-initialised from the run's seed).
  """
  choice = config.sample.weights
  if choice == "raw":
    return state.g_params, "raw", "raw generator (not its EMA)"
  decay = float(meta.get("ema_decay", config.gan.ema_decay))
  t = ema.num_updates(state)
  if meta.get(ema.META_KEY):
    return (ema.sampling_params(state, decay, True), "ema_debiased",
            ema.describe(True, decay, t))
  if choice == "ema":
    return state.g_ema, "ema", ema.describe(False, decay, t)
  seed = int(meta.get("seed", config.seed))
  theta0 = jax.jit(functools.partial(create_state, models))(
      jax.random.key(seed)).g_params
  return (ema.debias_plain_ema(state.g_ema, theta0, decay, t), "ema_debiased",
          ema.describe(True, decay, t) + f", from the run's plain EMA and its "
          f"initial weights (seed {seed}"
          f"{'' if 'seed' in meta else ', config.seed: not in the checkpoint'})")




def draw_z(key, n: int, z_dim: int, truncation: float = 0.0):
  """Sampling noise [n, z_dim]: N(0, I), or with ``truncation`` > 0
  (``config.sample.truncation``) DF-GAN's ``truncation · N(0, 1)`` truncated
  to [-2, 2] (``dfgan_lib.truncated_noise``)."""
  if truncation > 0:
    return dfgan_lib.truncated_noise(key, n, z_dim, truncation)
  return jax.random.normal(key, (n, z_dim))


# ---------------------------------------------------------- architectures
@dataclasses.dataclass(frozen=True)
class Architecture:
  """What the GAN jobs need of one architecture (``config.model.architecture``;
  registered in ``models/families.py:ARCHITECTURES``).

  The models object has ``config``, ``text_model``, ``image_model``,
  ``generator`` (``.apply(variables, z, sent, words, mask, train=, eps=,
  rngs=)`` -> ``{'images': [...], 'attention': [...]}``, ``.config.z_dim`` /
  ``.condition_dim``), ``encode_text`` and ``generate`` as :class:`GanModels`,
  so ``sample_step``, ``generation`` and ``evaluate`` serve every architecture.
  """
  name: str
  # (config, text_model, image_model, mesh=None) -> the models object
  models: Callable[..., Any]
  # (models, rng) -> a fresh state (called under jit)
  create_state: Callable[[Any, Any], Any]
  # (state, batch, enc, *, models) -> (state, metrics); jitted by the job
  train_step: Callable[..., Any]
  # config -> the terms config.debug_nonfinite_term may name
  loss_term_names: Callable[[Any], tuple[str, ...]]
  # models -> (interval means -> the step log line)
  log_line: Callable[[Any], Callable[[Mapping[str, float]], str]]
  # state -> {name: parameter tree} (the table logged at start)
  trained_parameters: Callable[[Any], dict[str, Any]]
  # (config, models, state, meta) -> (params, 'ema' | ..., description)
  generator_weights: Callable[..., tuple[Any, str, str]]
  # state -> the G statistics sampled with (BN running stats, or {})
  sampling_stats: Callable[[Any], Any]
  has_ema: bool = True       # sample grids of the EMA and of the raw G
  describe: Callable[[Any], str] = lambda config: config.model.architecture


def architecture(config) -> Architecture:
  """The :class:`Architecture` of ``config.model.architecture``."""
  return families.resolve_architecture(config.model.architecture)


def stacked_log_line(models: GanModels) -> Callable[[Mapping[str, float]], str]:
  """The step log line of the stacked GAN (from the interval means)."""
  n_stages = len(models.discriminators)

  def line(s):
    d_loss = " ".join(f"{s[f'train/d_loss{i}']:.3f}" for i in range(n_stages))
    return (f"g_loss {s['train/g_loss']:.3f}  d_loss {d_loss}  w "
            f"{s['train/g_w_loss']:.3f} s {s['train/g_s_loss']:.3f} kl "
            f"{s['train/kl_loss']:.3f}")
  return line


def stacked_trained_parameters(state: GanState) -> dict[str, Any]:
  return {"generator": state.g_params,
          **{f"discriminator{i}": p for i, p in enumerate(state.d_params)}}


STACKED = Architecture(
    name="stacked", models=GanModels, create_state=create_state,
    train_step=train_step, loss_term_names=loss_term_names,
    log_line=stacked_log_line, trained_parameters=stacked_trained_parameters,
    generator_weights=generator_weights,
    sampling_stats=lambda state: state.g_stats, has_ema=True,
    describe=lambda config: f"{config.model.refiner} refiner")
