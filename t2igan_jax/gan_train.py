"""GAN training (``config.job = 'train_gan'``): one reference iteration per step.

SPEC-dmgan §6.2, as one jitted function (state donated, batch sharded over the
``data`` mesh axis, BatchNorm statistics over the global batch):

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

import functools
import logging
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
from jax.experimental import multihost_utils

from input_pipeline import pipeline as input_pipeline
from t2igan_jax import checkpointing
from t2igan_jax import damsm_pretrain
from t2igan_jax import ema
from t2igan_jax import image_text
from t2igan_jax import json_files
from t2igan_jax import metric_writer
from t2igan_jax import numerics
from t2igan_jax import preemption
from t2igan_jax import sharding
from t2igan_jax import time_budget
from t2igan_jax.losses import gan as gan_losses
from t2igan_jax.models import conditioning
from t2igan_jax.models import discriminator as discriminator_lib
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
  return {k: v for k, v in model.items()
          if k not in EXECUTION_ONLY_MODEL_FIELDS}


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
    text_params, image_vars = damsm_pretrain.encoder_variables(state)
    return cls(text_params=text_params, image_vars=image_vars)


def _adam(lr, config):
  return optax.adam(lr, b1=config.gan.beta1, b2=config.gan.beta2, eps=1e-8)


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
  """The static parts of training: modules and config (bound, never traced)."""

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
               method=_g_step_heads)
    d_params.append(v["params"])
    d_stats.append({k: v for k, v in v.items() if k != "params"})
  g_tx = _adam(c.gan.g_lr, c)
  d_tx = _adam(c.gan.d_lr, c)
  return GanState(
      step=jnp.zeros((), jnp.int32), g_params=g_vars["params"],
      g_ema=ema.init(g_vars["params"], c.gan.ema_debias),
      g_stats=g_vars["batch_stats"],
      d_params=d_params, d_stats=d_stats, g_opt=g_tx.init(g_vars["params"]),
      d_opt=[d_tx.init(p) for p in d_params], rng=state_rng,
      nonfinite_skipped=jnp.zeros((), jnp.int32))


def _d_step_heads(d, real, fake, sent, wrong_img, wrong_sent):
  """D-step head outputs in the reference's call order (SN advances per call)."""
  code_real = d.encode(real)
  code_fake = d.encode(fake)
  real_c = d.cond_logits(code_real, sent)
  fake_c = d.cond_logits(code_fake, sent)
  wrong_c = d.cond_logits(code_real[wrong_img], sent[wrong_sent])
  real_u = d.uncond_logits(code_real)
  fake_u = d.uncond_logits(code_fake)
  return real_u, real_c, fake_u, fake_c, wrong_c


def _g_step_heads(d, fake, sent):
  code = d.encode(fake)
  return d.uncond_logits(code), d.cond_logits(code, sent)


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
  b = captions.shape[0]
  z = models.shard_batch(jax.random.normal(z_rng, (b, c.model.z_dim)))

  def g_forward(g_params):
    out, new_stats = models.generate(g_params, state.g_stats, z, sent, words,
                                     mask, ca_rng, train=True)
    return (tuple(out["images"]), out["mu"], out["logvar"]), new_stats

  (fakes, mu, logvar), g_vjp, g_stats = jax.vjp(g_forward, state.g_params,
                                                has_aux=True)
  wrong_img, wrong_sent = gan_losses.wrong_pairs(sent, batch["class_ids"],
                                                 c.gan.wrong_pair)
  metrics = {}
  d_tx = _adam(c.gan.d_lr, c)
  new_d_params, new_d_stats, new_d_opt = [], [], []
  for i, d in enumerate(models.discriminators):
    real = batch["images"][i]
    fake = jax.lax.stop_gradient(fakes[i])

    def d_loss_fn(d_params, d=d, real=real, fake=fake, i=i):
      heads, new_vars = d.apply(
          {"params": d_params, **state.d_stats[i]}, real, fake, sent,
          wrong_img, wrong_sent, method=_d_step_heads,
          mutable=list(state.d_stats[i].keys()))
      loss, parts = gan_losses.discriminator_loss(*heads, mode=c.gan.bce)
      loss = numerics.debug_poison(c, f"d_loss{i}", loss, state.step)
      return loss, (parts, new_vars)

    (d_loss, (parts, new_vars)), grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d_params[i])
    updates, opt = d_tx.update(grads, state.d_opt[i], state.d_params[i])
    new_d_params.append(optax.apply_updates(state.d_params[i], updates))
    new_d_stats.append(dict(new_vars))
    new_d_opt.append(opt)
    metrics[f"d_loss{i}"] = d_loss
    metrics[f"d_real{i}"] = parts["d_real"]
    metrics[f"d_fake{i}"] = parts["d_fake"]
    metrics[f"d_grad_norm{i}"] = optax.tree.norm(grads)

  # ----------------------------------------------------------- G update
  update_sn = c.model.sn_update == "every_call"

  def g_loss_fn(fakes, mu, logvar):
    terms = {}
    stats_out = []
    total = 0.0
    for i, d in enumerate(models.discriminators):
      variables = {"params": new_d_params[i], **new_d_stats[i]}
      if update_sn:
        (u, cond), new_vars = d.apply(variables, fakes[i], sent,
                                      method=_g_step_heads,
                                      mutable=list(new_d_stats[i].keys()))
        stats_out.append(dict(new_vars))
      else:
        u, cond = d.apply(variables, fakes[i], sent, method=_g_step_heads)
        stats_out.append(new_d_stats[i])
      adv = gan_losses.generator_adv_loss(u, cond, c.gan.bce)
      adv = numerics.debug_poison(c, f"g_adv{i}", adv, state.step)
      terms[f"g_adv{i}"] = adv
      total = total + adv
    local, glob = models.image_model.apply(enc.image_vars, fakes[-1],
                                           train_trunk_bn=False)
    damsm = damsm_pretrain.damsm_loss_terms(
        c, words, sent, local, glob, lengths, batch["class_ids"])
    w = damsm["w_loss0"] + damsm["w_loss1"]
    s = damsm["s_loss0"] + damsm["s_loss1"]
    kl = conditioning.kl_loss(mu, logvar, c.gan.kl_reduction)
    w = numerics.debug_poison(c, "g_w_loss", w, state.step)
    s = numerics.debug_poison(c, "g_s_loss", s, state.step)
    kl = numerics.debug_poison(c, "kl_loss", kl, state.step)
    total = total + c.gan.lambda_damsm * (w + s) + kl
    terms.update({"g_w_loss": w, "g_s_loss": s, "kl_loss": kl})
    return total, (terms, stats_out)

  (g_loss, (g_terms, d_stats_after)), cotangents = jax.value_and_grad(
      g_loss_fn, argnums=(0, 1, 2), has_aux=True)(fakes, mu, logvar)
  (g_grads,) = g_vjp(cotangents)
  g_tx = _adam(c.gan.g_lr, c)
  g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  decay = c.gan.ema_decay
  g_ema = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, state.g_ema,
                       g_params)
  metrics.update(g_terms)
  metrics["g_loss"] = g_loss
  metrics["g_grad_norm"] = optax.tree.norm(g_grads)
  new_state = state.replace(
      step=state.step + 1, g_params=g_params, g_ema=g_ema, g_stats=g_stats,
      d_params=new_d_params, d_stats=d_stats_after, g_opt=g_opt,
      d_opt=new_d_opt)
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


# Written into workdir/damsm when its pretraining (the first phase of a
# train_gan command) stopped at its share of the time budget: later starts
# keep those encoders (the GAN's checkpoints were trained against them).
DAMSM_BUDGET_STOP_FILE = "stopped_by_time_budget.json"
_DAMSM_CONFIGS = {"birds": ("damsm_bird", "bird"), "coco": ("damsm_coco", "coco"),
                  "shapes": ("damsm_shapes", "shapes")}


def _missing_damsm_error(config) -> FileNotFoundError:
  """The two ways to get the DAMSM encoders a GAN trains against."""
  damsm_config, folder = _DAMSM_CONFIGS.get(config.data.name,
                                            ("damsm_<dataset>", "<dataset>"))
  return FileNotFoundError(
      "config.gan.damsm_dir is empty: the GAN trains against frozen DAMSM "
      "encoders. Either pretrain them (python main.py "
      f"--config=configs/{damsm_config}.py --workdir=<damsm_dir> ..., then "
      "--config.gan.damsm_dir=<damsm_dir>), or convert AttnGAN's released "
      "ones (python -m t2igan_jax.convert --config=<this config> "
      f"--text_encoder=DAMSMencoders/{folder}/text_encoder200.pth "
      "--workdir=<this workdir>: writes <this workdir>/damsm, which this job "
      "then uses)")


def _pretrains_damsm(config, workdir) -> bool:
  """Whether this train_gan command pretrains (or resumes) its DAMSM first."""
  damsm_dir = os.path.join(workdir, "damsm")
  return bool(not config.gan.damsm_dir and config.gan.pretrain_damsm_if_missing
              and not os.path.isfile(os.path.join(damsm_dir, "converted.json"))
              and not os.path.isfile(os.path.join(damsm_dir,
                                                  DAMSM_BUDGET_STOP_FILE)))


def _resolve_damsm_dir(config, workdir) -> str:
  """The DAMSM workdir; pretrains one into workdir/damsm when asked.

  With ``max_train_seconds`` the pretraining gets ``gan.damsm_budget_share``
  of it; stopped there, its encoders are final for this workdir.
  """
  if config.gan.damsm_dir:
    return config.gan.damsm_dir
  damsm_dir = os.path.join(workdir, "damsm")
  if os.path.isfile(os.path.join(damsm_dir, "converted.json")):
    return damsm_dir  # written by t2igan_jax.convert
  stop_file = os.path.join(damsm_dir, DAMSM_BUDGET_STOP_FILE)
  if os.path.isfile(stop_file):
    logging.info("the DAMSM pretraining of this workdir stopped at its share "
                 "of the time budget (%s): the GAN keeps those encoders",
                 stop_file)
    return damsm_dir
  if not config.gan.pretrain_damsm_if_missing:
    raise _missing_damsm_error(config)
  damsm_config = ml_collections.ConfigDict(config.to_dict())
  damsm_config.job = "pretrain_damsm"
  damsm_config.debug_nonfinite_step = -1  # a GAN loss term is not DAMSM's
  damsm_config.max_train_seconds = time_budget.split_for_damsm(
      config.max_train_seconds, config.gan.damsm_budget_share)
  logging.info("no config.gan.damsm_dir: pretraining DAMSM into %s first",
               damsm_dir)
  if config.max_train_seconds > 0:
    logging.info(
        "time budget in force for the whole command: config.max_train_seconds"
        "=%g s (%s): the DAMSM pretraining gets up to %.0f s "
        "(gan.damsm_budget_share=%g), the GAN loop what is left",
        config.max_train_seconds,
        metric_writer.format_eta(config.max_train_seconds),
        damsm_config.max_train_seconds, config.gan.damsm_budget_share)
  os.makedirs(damsm_dir, exist_ok=True)
  result = damsm_pretrain.pretrain(damsm_config, damsm_dir)
  if result.get("preempted"):
    return None  # the GAN job stops too; the next start resumes DAMSM
  if result.get("time_budget_reached"):
    logging.warning(
        "DAMSM pretraining stopped at its share of the time budget after step "
        "%d; the GAN trains against these encoders, which stay fixed for this "
        "workdir (for the full schedule pretrain with job=pretrain_damsm into "
        "its own workdir and pass config.gan.damsm_dir)", result["step"])
    if jax.process_index() == 0:
      damsm_pretrain._write_json(stop_file, {  # pylint: disable=protected-access
          "step": int(result["step"]),
          "seconds": damsm_config.max_train_seconds})
  return damsm_dir


DAMSM_DIGEST_KEY = "damsm_digest"


def _same_damsm_check(digest: str, damsm_dir: str, directory: str):
  """``check(step, saved_meta)`` for ``restore_compatible``: refuses a
  checkpoint trained with other frozen DAMSM encoders (their digest, recorded
  in every GAN checkpoint, differs), naming both DAMSM directories."""

  def check(step, saved):
    theirs = saved.get(DAMSM_DIGEST_KEY)
    if theirs is None or theirs == digest:  # (None: written before digests)
      return
    raise checkpointing.IncompatibleCheckpointError(
        f"checkpoint step {step} in {directory} was trained with the DAMSM "
        f"encoders of {saved.get('damsm_dir')!r} (digest {theirs[:12]}...), "
        f"but config.gan.damsm_dir gives other encoders "
        f"({os.path.abspath(damsm_dir)!r}, digest {digest[:12]}...): use the "
        "DAMSM it was trained with (config.gan.damsm_dir, gan.damsm_step) or "
        "a new --workdir")

  return check


def recorded_result(metrics_path: str, step: int) -> dict[str, Any] | None:
  """The last record of ``step`` in metrics.json, or None."""
  records = [r for r in json_files.read_json_records(metrics_path)
             if isinstance(r, dict) and r.get("step") == step]
  return records[-1] if records else None


def finished_result(metrics_path: str, step: int, total_steps: int,
                    directory: str) -> dict[str, Any]:
  """A run whose checkpoint already reached ``total_steps``: says so and
  returns its last recorded result (nothing is recompiled or recomputed)."""
  logging.warning(
      "this run is already finished: checkpoint step %d in %s reached its %d "
      "steps; nothing to do (raise config.max_steps or the epochs to train "
      "further, or use a new --workdir)", step, directory, total_steps)
  return {**(recorded_result(metrics_path, step) or {"step": step}),
          "already_finished": True}


def _caption_text(vocab, captions, lengths):
  return [" ".join(vocab.ixtoword[int(t)] for t in cap[:n])
          for cap, n in zip(captions, lengths)]


def _captioned_grid(images: np.ndarray, captions: list[str]) -> np.ndarray:
  """Training sample grid [-1, 1] images -> uint8, each caption under its image."""
  ncols = int(np.ceil(np.sqrt(images.shape[0])))
  return image_text.captioned_grid(
      metric_writer.image_grid(images, ncols), images.shape[1], captions, ncols)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) GAN training; returns the last logged metrics.

  On preemption (SIGTERM) it saves the step it finished and returns with
  ``result['preempted'] = True``.
  """
  with preemption.PreemptionWatcher() as watcher:
    return _train(config, workdir, watcher)


def _train(config, workdir, watcher) -> dict[str, Any]:
  g = config.gan
  mesh = sharding.make_mesh(config.num_devices)
  sharding.check_batch_size(g.batch_size, mesh, "config.gan.batch_size")
  sizes = input_pipeline.stage_sizes(config)
  # Both splits checked at once (files, batch sizes).
  train_source, test_source = input_pipeline.open_splits(config, sizes[-1])
  vocab = train_source.vocab

  numerics.check_debug_term(config, loss_term_names(config), "train_gan")
  pretrains_damsm = _pretrains_damsm(config, workdir)
  t_damsm = time.monotonic()
  damsm_dir = _resolve_damsm_dir(config, workdir)
  damsm_seconds = time.monotonic() - t_damsm if pretrains_damsm else 0.0
  if damsm_dir is None:
    return {"step": 0, "preempted": True}
  text_model, text_params, image_model, image_vars, _ = (
      damsm_pretrain.load_encoders(
          damsm_dir, expected_vocab=vocab, step=g.damsm_step,
          accept_undigested=config.accept_undigested_checkpoints))
  repl = sharding.replicated(mesh)
  enc = jax.device_put(Encoders(text_params=text_params, image_vars=image_vars),
                       repl)
  damsm_digest = checkpointing.state_digest(enc)
  models = GanModels(config, text_model, image_model, mesh=mesh)

  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_source),
                                                   g.batch_size)
  total_steps = g.epochs * steps_per_epoch
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  logging.info("GAN (%s refiner): %d train images, %d steps per epoch, %d "
               "steps, stages %s", config.model.refiner, len(train_source),
               steps_per_epoch, total_steps, sizes)

  train_iter = input_pipeline.create_train_iterator(
      config, train_source, global_batch_size=g.batch_size,
      image_sizes=sizes, words_num=config.data.words_num)

  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, CHECKPOINT_DIR),
      max_to_keep=config.keep_checkpoints,
      interval=config.checkpoint_every_steps,
      keep_period=g.snapshot_interval * steps_per_epoch,
      accept_undigested=config.accept_undigested_checkpoints)
  meta = {"job": "train_gan", "vocab_fingerprint": vocab.fingerprint(),
          "model": model_meta(config.model.to_dict()), "damsm_dir": os.path.abspath(damsm_dir),
          "stage_sizes": list(sizes),
          # True: zero-started EMA (t2igan_jax/ema.py); None: the reference's.
          ema.META_KEY: True if g.ema_debias else None,
          "ema_decay": g.ema_decay, "seed": config.seed}
  compatible = {
      "keys": ("vocab_fingerprint", "model", "stage_sizes", ema.META_KEY),
      "views": {"model": model_meta},
      "check": _same_damsm_check(damsm_digest, damsm_dir, ckpt.directory)}
  metrics_path = os.path.join(workdir, config.metrics_json)
  done = ckpt.finished_step(total_steps, meta, **compatible)
  if done is not None and recorded_result(metrics_path, done) is not None:
    ckpt.close()  # finished and recorded: nothing is built or compiled
    return finished_result(metrics_path, done, total_steps, ckpt.directory)
  state = jax.jit(functools.partial(create_state, models),
                  out_shardings=repl)(jax.random.key(config.seed))
  restored = ckpt.restore_compatible(state, meta, **compatible)
  meta[DAMSM_DIGEST_KEY] = damsm_digest
  if restored is not None:
    state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("resumed from checkpoint step %d", int(state.step))
  if int(state.step) >= total_steps:
    ckpt.close()
    return finished_result(metrics_path, int(state.step), total_steps,
                           ckpt.directory)

  step_fn = jax.jit(functools.partial(train_step, models=models),
                    donate_argnums=(0,))
  sample_fn = jax.jit(functools.partial(sample_step, models=models))

  # A fixed batch of test captions and noise for the image grids.
  vis_source = test_source
  if len(test_source) < g.batch_size:
    logging.warning("test split (%d images) is smaller than a batch (%d): "
                    "sample grids use training captions", len(test_source),
                    g.batch_size)
    vis_source = train_source
  vis_iter = input_pipeline.create_iterator(
      vis_source, global_batch_size=g.batch_size, image_sizes=sizes,
      words_num=config.data.words_num, seed=config.seed + 7,
      truncation=config.data.caption_truncation, random_crop_flip=False,
      shuffle=True, drop_remainder=True, num_epochs=1,
      process_index=jax.process_index(), process_count=jax.process_count())
  vis_local = next(iter(vis_iter))
  vis_batch = sharding.device_batch(vis_local, mesh)
  vis_z = jax.device_put(jax.random.normal(jax.random.key(config.seed + 11),
                                           (g.batch_size, config.model.z_dim)),
                         repl)
  vis_rng = jax.random.key(config.seed + 13)

  writer = metric_writer.MetricWriter(workdir)
  vis_captions = _caption_text(vocab, *(np.asarray(
      multihost_utils.process_allgather(vis_batch[k], tiled=True))
                                        for k in ("captions", "caption_lens")))
  if jax.process_index() == 0:
    captions_txt = _caption_text(vocab, vis_local["captions"],
                                 vis_local["caption_lens"])
    writer.write_text(0, "samples/captions", "\n\n".join(
        f"{i}: {t}" for i, t in enumerate(captions_txt)))
    with open(os.path.join(workdir, "sample_captions.txt"), "w") as f:
      f.write("\n".join(captions_txt) + "\n")

  def log_images(step):
    g_ema = ema.sampling_params(state, g.ema_decay, g.ema_debias)
    images, attention = sample_fn(g_ema, state.g_stats, vis_batch, enc,
                                  vis_z, vis_rng)
    images = multihost_utils.process_allgather(images, tiled=True)
    grids = {f"samples/stage{i}_{np.shape(im)[1]}px":
             _captioned_grid(np.asarray(im), vis_captions) for i, im in
             enumerate(images)}
    raw, _ = sample_fn(state.g_params, state.g_stats, vis_batch, enc, vis_z,
                       vis_rng)
    raw = multihost_utils.process_allgather(raw[-1], tiled=True)
    grids["samples_raw_generator/last_stage"] = _captioned_grid(
        np.asarray(raw), vis_captions)
    real = {f"real/stage{i}": metric_writer.image_grid(np.asarray(im))
            for i, im in enumerate(vis_local["images"])}
    grids.update(real)
    if attention:
      att = np.asarray(multihost_utils.process_allgather(attention[0],
                                                         tiled=True))
      # First caption's first words: [T, H, W] maps scaled to [-1, 1].
      n = int(min(vis_local["caption_lens"][0], 6))
      maps = att[0, :n]
      maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-8)
      grids["attention/caption0"] = metric_writer.image_grid(
          np.repeat(maps[..., None], 3, -1) * 2 - 1, ncols=n)
    writer.write_images(step, grids)
    if jax.process_index() == 0:
      sample_dir = os.path.join(workdir, "samples")
      os.makedirs(sample_dir, exist_ok=True)
      for name, grid in grids.items():
        if name.startswith("samples"):
          fname = f"step{step:07d}_{name.replace('/', '_')}.png"
          Image.fromarray(grid).save(os.path.join(sample_dir, fname))
    return grids

  # Snapshots every g.snapshot_interval epochs, kept by keep_period.
  snapshot_every = g.snapshot_interval * steps_per_epoch
  step = int(state.step)
  step_log = metric_writer.StepLog(os.path.join(workdir, config.step_log))
  json_files.read_json_records(os.path.join(workdir, config.metrics_json))
  step_log.truncate(step)
  pending = metric_writer.StepMetrics(config.on_nonfinite, step_log)
  last_scalars: dict[str, float] = {}
  stop = ""
  t_start = time.monotonic()
  budget = time_budget.TimeBudget(
      time_budget.left_for_gan(config.max_train_seconds, damsm_seconds),
      sync_every=config.log_every_steps)
  if budget.seconds > 0:
    logging.info("%s%s", budget.describe("the GAN loop"), (
        f" (config.max_train_seconds={config.max_train_seconds:g} s for the "
        f"command; its DAMSM phase took {damsm_seconds:.0f} s)"
        if pretrains_damsm else ""))
  progress = metric_writer.Progress(total_steps, start_step=step, budget=budget)
  # The learning rates (constant: the reference's Adam has no schedule).
  lr_scalars = {"train/g_lr": g.g_lr, "train/d_lr": g.d_lr}
  # Compiled before the first step, so that a SIGTERM during start-up or
  # compiling stops the job before it runs a step.
  first_batch = next(train_iter)
  step_fn.lower(state, sharding.device_batch(first_batch, mesh), enc).compile()
  if watcher.stop_before_first_step(step, ckpt.directory):
    ckpt.close()
    writer.close()
    return {"step": step, "preempted": True, "before_first_step": True}
  try:
    while step < total_steps:
      local_batch, first_batch = first_batch or next(train_iter), None
      state, metrics = step_fn(state, sharding.device_batch(local_batch, mesh),
                               enc)
      step += 1
      pending.add(step, metrics)
      if step % config.log_every_steps == 0 or step == total_steps:
        last_scalars = metric_writer.write_interval(
            writer, progress, pending, step,
            extra={"data/skipped_examples": train_iter.num_skipped,
                   **lr_scalars})
        logging.info("step %d: g_loss %.3f  d_loss %s  w %.3f s %.3f kl %.3f",
                     step, last_scalars["train/g_loss"],
                     " ".join(f"{last_scalars[f'train/d_loss{i}']:.3f}"
                              for i in range(len(sizes))),
                     last_scalars["train/g_w_loss"],
                     last_scalars["train/g_s_loss"],
                     last_scalars["train/kl_loss"])
      if step % config.image_every_steps == 0 or step == total_steps:
        log_images(step)
      stop = time_budget.stop_reason(watcher, budget, step)
      if stop == time_budget.OUT_OF_TIME:
        if step % config.log_every_steps:
          last_scalars = metric_writer.write_interval(
              writer, progress, pending, step,
              extra={"data/skipped_examples": train_iter.num_skipped,
                     **lr_scalars})
        if step % config.image_every_steps:
          log_images(step)
      ckpt.save_loop_step(step, state, train_iter, meta, pending,
                          total_steps=total_steps,
                          snapshot_every=snapshot_every, stop=stop)
      if stop:
        break
  finally:
    ckpt.close()
    writer.close()
  result = {"step": step, "seconds": time.monotonic() - t_start,
            **last_scalars}
  if stop == time_budget.OUT_OF_TIME:
    result["time_budget_reached"] = True
  if stop == time_budget.PREEMPTED and step < total_steps:
    return {**result, "preempted": True}
  # (Preempted at the last step: the run is complete, its losses recorded.)
  if jax.process_index() == 0:
    metric_writer.append_json_record(
        os.path.join(workdir, config.metrics_json), result)
    logging.info("%s", closing_summary(config, workdir, result, total_steps))
  return result


# A captions file of the repository per dataset (for the suggested sample job).
EXAMPLE_CAPTIONS = {"shapes": "docs/shapes_demo_captions.txt",
                    "birds": "docs/example_captions/birds.txt",
                    "coco": "docs/example_captions/coco.txt"}


def closing_summary(config, workdir: str, result: dict[str, Any],
                    total_steps: int) -> str:
  """The run's last lines: how it ended, where its sample grids,
  checkpoints and TensorBoard logs are, and the commands to run next."""
  step = result["step"]
  if result.get("time_budget_reached"):
    status = (f"stopped by the time budget at step {step:,d} of "
              f"{total_steps:,d} (checkpoint saved; the same command resumes "
              "it)")
  else:
    status = f"finished at step {step:,d} of {total_steps:,d}"
  sample_dir = os.path.join(workdir, "samples")
  latest = sorted(f for f in (os.listdir(sample_dir)
                              if os.path.isdir(sample_dir) else [])
                  if f.startswith(f"step{step:07d}_"))
  captions = EXAMPLE_CAPTIONS.get(config.data.name, "<one caption per line>")
  return "\n".join([
      f"GAN training {status}.",
      f"  sample grids: {sample_dir}/ (step {step}: "
      f"{', '.join(latest) or 'none'}; their captions: "
      f"{os.path.join(workdir, 'sample_captions.txt')})",
      f"  checkpoints:  {os.path.join(workdir, CHECKPOINT_DIR)}/",
      f"  TensorBoard:  tensorboard --logdir={workdir}",
      "Next: images for your own captions, then FID / IS / R-precision:",
      "  " + metric_writer.main_command(
          workdir, "sample", (f"--config.sample.captions_file={captions}",)),
      "  " + metric_writer.main_command(workdir, "evaluate"),
  ])

