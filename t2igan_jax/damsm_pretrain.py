"""DAMSM pretraining (``config.job = 'pretrain_damsm'``), SPEC-dmgan §5.4.

The text encoder (bi-LSTM) and the image encoder's two projections are trained
jointly with the word-level and sentence-level DAMSM losses in both directions:

    L = L_w0 + L_w1 + L_s0 + L_s1            (unweighted, class-masked)

Reference optimiser (all defaults in ``configs/base.py``):

* Adam(lr, b1=0.5, b2=0.999, eps=1e-8), moments reset at the start of every
  epoch (``damsm.adam_reset_per_epoch``: the reference re-creates Adam);
* lr = ENCODER_LR * 0.98**e after e epochs, decayed while lr > ENCODER_LR/10;
* global-norm clip 0.25 on the text-encoder gradients only;
* the Inception trunk frozen (its parameters get no update) but run with batch
  statistics, updating its running statistics (``damsm.trunk_bn_train``).

Every ``damsm.eval_every_epochs`` epochs and at the end, the test split is
scored: the mean DAMSM loss in eval mode and the retrieval accuracy (for each
image, its own caption against ``retrieval_candidates - 1`` captions of images of
other classes, ranked by the cosine of the global image code and the sentence
feature; top-1, ties count for the true caption). Results go to TensorBoard and
to ``workdir/metrics.json``.

The workdir then holds what the GAN job needs to load frozen encoders:
checkpoints (``checkpoints/``), ``vocab.json`` and ``damsm_config.json``.
"""

import functools
import json
import logging
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from input_pipeline import pipeline as input_pipeline
from input_pipeline.text import Vocabulary
from t2igan_jax import checkpointing
from t2igan_jax import json_files
from t2igan_jax import metric_writer
from t2igan_jax import numerics
from t2igan_jax import preemption
from t2igan_jax import sharding
from t2igan_jax import time_budget
from t2igan_jax.errors import CheckpointError
from t2igan_jax.errors import ConfigError
from t2igan_jax.evaluation import r_precision
from t2igan_jax.losses import damsm as damsm_losses
from t2igan_jax.models import image_encoder as image_encoder_lib
from t2igan_jax.models import text_encoder as text_encoder_lib

VOCAB_FILE = "vocab.json"
ENCODER_CONFIG_FILE = "damsm_config.json"
CHECKPOINT_DIR = "checkpoints"


@flax.struct.dataclass
class DamsmState:
  step: jax.Array
  params: Any        # {'text_encoder': ..., 'image_encoder': ...}
  batch_stats: Any   # image encoder BatchNorm statistics
  opt_state: Any     # {'text': ..., 'image': ...}
  rng: jax.Array
  nonfinite_skipped: jax.Array  # int32: updates dropped by on_nonfinite='skip'


def lr_decay_epochs(config: ml_collections.ConfigDict) -> int:
  """Epochs after which the reference stops decaying the learning rate.

  The reference multiplies lr by ``lr_decay`` after an epoch while
  ``lr > lr0 / lr_floor_div``: the smallest k with lr0*decay**k <= lr0/div.
  """
  d = config.damsm
  return int(math.ceil(math.log(1.0 / d.lr_floor_div) / math.log(d.lr_decay)))


def learning_rate(config: ml_collections.ConfigDict, epoch):
  d = config.damsm
  return d.lr * jnp.power(d.lr_decay, jnp.minimum(epoch, lr_decay_epochs(config)))


def build_models(config: ml_collections.ConfigDict, n_words: int):
  text = text_encoder_lib.text_encoder_from_config(config, n_words)
  image = image_encoder_lib.image_encoder_from_config(config)
  return text, image


def split_image_params(image_params, train_trunk: bool):
  """(trainable, frozen) parts of the image encoder's parameters."""
  if train_trunk:
    return dict(image_params), {}
  trainable = {k: v for k, v in image_params.items() if k != "trunk"}
  frozen = {k: v for k, v in image_params.items() if k == "trunk"}
  return trainable, frozen


def _adam():
  return optax.scale_by_adam(b1=0.5, b2=0.999, eps=1e-8)


def make_optimizers(config):
  text_tx = optax.chain(optax.clip_by_global_norm(config.damsm.rnn_grad_clip),
                        _adam())
  return {"text": text_tx, "image": _adam()}


def _init_opt_state(txs, params, train_trunk):
  image_trainable, _ = split_image_params(params["image_encoder"], train_trunk)
  return {"text": txs["text"].init(params["text_encoder"]),
          "image": txs["image"].init(image_trainable)}


def create_state(config, text_model, image_model, rng) -> DamsmState:
  """Initialises models and optimiser state (call under jit)."""
  dm = config.damsm
  text_rng, image_rng, state_rng = jax.random.split(rng, 3)
  captions = jnp.zeros((2, dm.words_num), jnp.int32)
  lengths = jnp.full((2,), dm.words_num, jnp.int32)
  images = jnp.zeros((2, dm.image_size, dm.image_size, 3), jnp.float32)
  text_vars = text_model.init({"params": text_rng}, captions, lengths,
                              train=False)
  image_vars = image_model.init({"params": image_rng}, images,
                                train_trunk_bn=False)
  params = {"text_encoder": text_vars["params"],
            "image_encoder": image_vars["params"]}
  opt_state = _init_opt_state(make_optimizers(config), params,
                              config.image_encoder.train_trunk)
  return DamsmState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=image_vars.get("batch_stats", {}),
                    opt_state=opt_state, rng=state_rng,
                    nonfinite_skipped=jnp.zeros((), jnp.int32))


def load_trunk_weights(config, state: DamsmState,
                       trunk: tuple[dict, dict] | None = None) -> DamsmState:
  """Replaces the Inception trunk with ImageNet weights: ``trunk`` (as
  ``image_encoder.read_trunk_weights`` returns it), else read from
  ``config.image_encoder.trunk_weights`` (torchvision's
  ``inception_v3_google-*.pth`` as downloaded, or an ``.npz`` of it)."""
  trunk_params, trunk_stats = trunk or image_encoder_lib.read_trunk_weights(
      config.image_encoder.trunk_weights)
  params = dict(state.params)
  params["image_encoder"] = dict(params["image_encoder"], trunk=trunk_params)
  batch_stats = dict(state.batch_stats, trunk=trunk_stats)
  return state.replace(params=jax.device_put(params),
                       batch_stats=jax.device_put(batch_stats))


def damsm_loss_terms(config, words, sent, local, glob, lengths, class_ids):
  """The four DAMSM losses (SPEC-dmgan §5.2-5.3) as a dict."""
  d = config.damsm
  region = local.reshape(local.shape[0], -1, local.shape[-1])
  w0, w1, _ = damsm_losses.words_loss(region, words, lengths, class_ids,
                                      d.gamma1, d.gamma2, d.gamma3,
                                      word_score=d.word_score)
  s0, s1 = damsm_losses.sent_loss(glob, sent, class_ids, d.gamma3)
  return {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}


def train_step(state: DamsmState, batch, *, config, text_model, image_model,
               steps_per_epoch: int):
  """One DAMSM update (jitted once, state donated)."""
  txs = make_optimizers(config)
  train_trunk = config.image_encoder.train_trunk
  trunk_bn_train = config.damsm.trunk_bn_train
  rng = jax.random.fold_in(state.rng, state.step)
  epoch = state.step // steps_per_epoch
  lr = learning_rate(config, epoch)

  opt_state = state.opt_state
  if config.damsm.adam_reset_per_epoch:
    fresh = _init_opt_state(txs, state.params, train_trunk)
    reset = (state.step % steps_per_epoch) == 0
    opt_state = jax.tree.map(lambda f, o: jnp.where(reset, f, o), fresh,
                             opt_state)

  image_trainable, image_frozen = split_image_params(
      state.params["image_encoder"], train_trunk)
  images = batch["images"][0]

  def loss_fn(trainable):
    words, sent = text_model.apply(
        {"params": trainable["text_encoder"]}, batch["captions"],
        batch["caption_lens"], train=True, rngs={"dropout": rng})
    image_params = {**trainable["image_encoder"], **image_frozen}
    (local, glob), new_vars = image_model.apply(
        {"params": image_params, "batch_stats": state.batch_stats}, images,
        train_trunk_bn=trunk_bn_train, mutable=["batch_stats"])
    terms = damsm_loss_terms(config, words, sent, local, glob,
                             batch["caption_lens"], batch["class_ids"])
    terms = {k: numerics.debug_poison(config, k, v, state.step)
             for k, v in terms.items()}
    loss = sum(terms.values())
    return loss, (terms, new_vars["batch_stats"])

  trainable = {"text_encoder": state.params["text_encoder"],
               "image_encoder": image_trainable}
  (loss, (terms, new_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  text_updates, text_opt = txs["text"].update(
      grads["text_encoder"], opt_state["text"], trainable["text_encoder"])
  image_updates, image_opt = txs["image"].update(
      grads["image_encoder"], opt_state["image"], image_trainable)
  scale = lambda u: jax.tree.map(lambda x: -lr * x, u)  # noqa: E731
  new_text = optax.apply_updates(trainable["text_encoder"], scale(text_updates))
  new_image = optax.apply_updates(image_trainable, scale(image_updates))
  params = {"text_encoder": new_text,
            "image_encoder": {**new_image, **image_frozen}}
  metrics = dict(terms)
  metrics["loss"] = loss
  metrics["lr"] = lr
  metrics["text_grad_norm"] = optax.tree.norm(grads["text_encoder"])
  metrics["image_grad_norm"] = optax.tree.norm(grads["image_encoder"])
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=new_stats,
      opt_state={"text": text_opt, "image": image_opt})
  new_state = numerics.guard_update(config, state, new_state, metrics)
  metrics["nonfinite_skipped"] = new_state.nonfinite_skipped
  return new_state, metrics


def encode_step(params, batch_stats, batch, *, config, text_model, image_model):
  """Eval-mode features and DAMSM losses of one batch."""
  words, sent = text_model.apply({"params": params["text_encoder"]},
                                 batch["captions"], batch["caption_lens"],
                                 train=False)
  local, glob = image_model.apply(
      {"params": params["image_encoder"], "batch_stats": batch_stats},
      batch["images"][0], train_trunk_bn=False)
  terms = damsm_loss_terms(config, words, sent, local, glob,
                           batch["caption_lens"], batch["class_ids"])
  return {"sent": sent, "image_code": glob, "class_ids": batch["class_ids"],
          "loss": sum(terms.values())}


def retrieval_top1(image_codes, sent_codes, class_ids, num_candidates: int,
                   seed: int) -> float:
  """Top-1 sentence retrieval among ``num_candidates`` (R-precision protocol).

  For image i the candidates are its own caption and ``num_candidates - 1``
  captions of images of other classes, drawn without replacement with a
  seeded generator; scores are cosine similarities; a tie counts for the true
  caption (as in the reference's R-precision).
  """
  # Shared with the evaluation's R-precision (t2igan_jax/evaluation/r_precision.py).
  try:
    negatives = r_precision.draw_mismatched(
        class_ids, class_ids, num_candidates - 1, np.random.default_rng(seed))
  except ValueError as e:
    raise ConfigError(f"config.damsm.retrieval_candidates={num_candidates}: {e} "
                      "(captions encoded); raise config.damsm.eval_batches") from e
  sent = np.asarray(sent_codes)
  candidates = np.concatenate([sent[:, None], sent[negatives]], axis=1)
  return float(np.mean(r_precision.retrieval_hits(image_codes, candidates)))


def _vocab_meta(vocab: Vocabulary) -> dict[str, Any]:
  return {"vocab_fingerprint": vocab.fingerprint(), "n_words": vocab.n_words}


def encoder_config(config) -> dict[str, Any]:
  """The config sections needed to rebuild the encoders (saved with them)."""
  return {"text_encoder": config.text_encoder.to_dict(),
          "image_encoder": config.image_encoder.to_dict(),
          "damsm": {"image_size": config.damsm.image_size,
                    "words_num": config.damsm.words_num},
          "data": {"name": config.data.name}}


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


LOSS_TERMS = ("w_loss0", "w_loss1", "s_loss0", "s_loss1")


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) DAMSM pretraining; returns the last evaluation.

  On preemption (SIGTERM) it saves the step it finished and returns
  ``{'step': step, 'preempted': True}``.
  """
  with preemption.PreemptionWatcher() as watcher:
    return _pretrain(config, workdir, watcher)


def _pretrain(config, workdir, watcher) -> dict[str, Any]:
  dm = config.damsm
  numerics.check_debug_term(config, LOSS_TERMS, "pretrain_damsm")
  if (config.image_encoder.backbone == "inception"
      and not config.image_encoder.train_trunk
      and not config.image_encoder.trunk_weights):
    raise ConfigError(
        "config.image_encoder.trunk_weights is empty: the reference DAMSM "
        "freezes an ImageNet-pretrained Inception-v3 trunk, and a frozen random "
        "trunk would train on garbage features. Download torchvision's "
        f"weights ({image_encoder_lib.TORCHVISION_INCEPTION_URL}) and give "
        "the file as --config.image_encoder.trunk_weights=<path>/"
        "inception_v3_google-0cc3c7bd.pth, or set "
        "config.image_encoder.train_trunk=True")
  trunk = None  # read (and checked) now, before anything compiles
  if config.image_encoder.trunk_weights:
    trunk = image_encoder_lib.read_trunk_weights(
        config.image_encoder.trunk_weights)
  mesh = sharding.make_mesh(config.num_devices)
  sharding.check_batch_size(dm.batch_size, mesh, "config.damsm.batch_size")

  image_sizes = (dm.image_size,)
  # Both splits checked at once (files, batch sizes, retrieval candidates).
  train_source, test_source = input_pipeline.open_splits(config, dm.image_size)
  vocab = train_source.vocab
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_source),
                                                   dm.batch_size)
  total_steps = dm.epochs * steps_per_epoch
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  logging.info("DAMSM: %d train / %d test images, vocabulary %d words, "
               "%d steps per epoch, %d steps", len(train_source),
               len(test_source), vocab.n_words, steps_per_epoch, total_steps)

  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, VOCAB_FILE), vocab.to_json())
    _write_json(os.path.join(workdir, ENCODER_CONFIG_FILE),
                encoder_config(config))

  text_model, image_model = build_models(config, vocab.n_words)
  repl = sharding.replicated(mesh)
  init_fn = jax.jit(functools.partial(create_state, config, text_model,
                                      image_model), out_shardings=repl)

  train_iter = input_pipeline.create_train_iterator(
      config, train_source, global_batch_size=dm.batch_size,
      image_sizes=image_sizes, words_num=dm.words_num)

  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, CHECKPOINT_DIR),
      max_to_keep=config.keep_checkpoints,
      interval=config.checkpoint_every_steps,
      keep_period=dm.snapshot_interval * steps_per_epoch,
      accept_undigested=config.accept_undigested_checkpoints)
  meta = {"job": "pretrain_damsm", **_vocab_meta(vocab),
          "encoders": encoder_config(config)}
  compatible = ("vocab_fingerprint", "encoders")
  # Finished and evaluated: say so without building or compiling anything.
  done = ckpt.finished_step(total_steps, meta, compatible)
  finished = None if done is None else _finished_evaluation(
      os.path.join(workdir, config.metrics_json), done)
  if finished is not None:
    ckpt.close()
    logging.warning(
        "this run is already finished: checkpoint step %d in %s reached its "
        "%d steps and was evaluated; nothing to do (raise config.max_steps or "
        "damsm.epochs to train further)", done, ckpt.directory, total_steps)
    return {**finished, "already_finished": True}
  state = init_fn(jax.random.key(config.seed))
  restored = ckpt.restore_compatible(state, meta, compatible)
  if restored is not None:
    state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("resumed from checkpoint step %d", int(state.step))
  elif trunk is not None:
    state = load_trunk_weights(config, state, trunk)

  step_fn = jax.jit(
      functools.partial(train_step, config=config, text_model=text_model,
                        image_model=image_model,
                        steps_per_epoch=steps_per_epoch),
      donate_argnums=(0,))
  encode_fn = jax.jit(functools.partial(
      encode_step, config=config, text_model=text_model,
      image_model=image_model))

  writer = metric_writer.MetricWriter(workdir)
  metrics_path = os.path.join(workdir, config.metrics_json)
  json_files.read_json_records(metrics_path)  # damaged: stop now, not at eval

  def evaluate(step: int) -> dict[str, Any]:
    test_iter = input_pipeline.create_iterator(
        test_source, global_batch_size=dm.batch_size, image_sizes=image_sizes,
        words_num=dm.words_num, seed=config.seed + 1,
        truncation=config.data.caption_truncation,
        random_crop_flip=config.data.random_crop_flip, shuffle=True,
        drop_remainder=True, num_epochs=1,
        process_index=jax.process_index(),
        process_count=jax.process_count(), num_workers=0)
    outputs = []
    for i, local_batch in enumerate(test_iter):
      if i >= dm.eval_batches:
        break
      out = encode_fn(state.params, state.batch_stats,
                      sharding.device_batch(local_batch, mesh))
      outputs.append(multihost_utils.process_allgather(out, tiled=True))
    if not outputs:
      raise ConfigError(
          f"config.damsm.batch_size={dm.batch_size} is larger than the test "
          f"split ({len(test_source)} images): no evaluation batch")
    cat = {k: np.concatenate([np.asarray(o[k]).reshape(
        (-1,) + np.shape(o[k])[1:]) for o in outputs]) for k in outputs[0]}
    result = {
        "step": step,
        "epoch": step / steps_per_epoch,
        "test_loss": float(np.mean(cat["loss"])),
        "retrieval_top1": retrieval_top1(
            cat["image_code"], cat["sent"], cat["class_ids"],
            dm.retrieval_candidates, seed=config.seed),
        "retrieval_candidates": dm.retrieval_candidates,
        "num_test_images": int(cat["sent"].shape[0]),
    }
    writer.write_scalars(step, {"eval/test_loss": result["test_loss"],
                                "eval/retrieval_top1": result["retrieval_top1"]})
    writer.flush()
    if jax.process_index() == 0:
      metric_writer.append_json_record(metrics_path, result)
    logging.info("eval at step %d (epoch %.2f): test loss %.4f, retrieval "
                 "top-1 of %d: %.4f (%d images)", step, result["epoch"],
                 result["test_loss"], dm.retrieval_candidates,
                 result["retrieval_top1"], result["num_test_images"])
    return result

  # Snapshots every dm.snapshot_interval epochs, kept by keep_period.
  snapshot_every = dm.snapshot_interval * steps_per_epoch
  step = int(state.step)
  progress = metric_writer.Progress(total_steps, start_step=step)
  step_log = metric_writer.StepLog(os.path.join(workdir, config.step_log))
  step_log.truncate(step)
  pending = metric_writer.StepMetrics(config.on_nonfinite, step_log)
  last_eval = None
  eval_every = dm.eval_every_epochs * steps_per_epoch
  stop = ""
  budget = time_budget.TimeBudget(config.max_train_seconds,
                                  sync_every=config.log_every_steps)
  progress.budget = budget  # the ETA: the earlier of the steps and the budget
  if budget.seconds > 0:
    logging.info("%s", budget.describe("DAMSM pretraining"))
  # Compiled before the first step, so that a SIGTERM during start-up or
  # compiling stops the job before it runs a step.
  first_batch = None
  if step < total_steps:
    first_batch = next(train_iter)
    step_fn.lower(state, sharding.device_batch(first_batch, mesh)).compile()
  if watcher.stop_before_first_step(step, ckpt.directory):
    ckpt.close()
    writer.close()
    return {"step": step, "preempted": True, "before_first_step": True}
  try:
    while step < total_steps:
      local_batch, first_batch = first_batch or next(train_iter), None
      state, metrics = step_fn(state, sharding.device_batch(local_batch, mesh))
      step += 1
      pending.add(step, metrics)
      if step % config.log_every_steps == 0 or step == total_steps:
        scalars = metric_writer.write_interval(writer, progress, pending, step,
                                               extra={"data/skipped_examples":
                                                      train_iter.num_skipped})
        logging.info("step %d: loss %.4f (w %.4f/%.4f, s %.4f/%.4f) lr %.2e",
                     step, scalars["train/loss"], scalars["train/w_loss0"],
                     scalars["train/w_loss1"], scalars["train/s_loss0"],
                     scalars["train/s_loss1"], scalars["train/lr"])
      stop = time_budget.stop_reason(watcher, budget, step)
      # The step's checkpoint first: a failing evaluation never costs the
      # training before it.
      ckpt.save_loop_step(step, state, train_iter, meta, pending,
                          total_steps=total_steps,
                          snapshot_every=snapshot_every, stop=stop)
      if stop != time_budget.PREEMPTED and (
          step % eval_every == 0 or step == total_steps or stop):
        last_eval = evaluate(step)
      if stop:
        break
  finally:
    ckpt.close()
    writer.close()
  if stop == time_budget.PREEMPTED:
    return {"step": step, "preempted": True}
  if last_eval is None:  # a finished run without its final evaluation
    last_eval = evaluate(step)
  if stop == time_budget.OUT_OF_TIME:
    return {**last_eval, "time_budget_reached": True}
  return last_eval


def _finished_evaluation(metrics_path: str, step: int) -> dict[str, Any] | None:
  """The evaluation record of ``step`` in metrics.json, or None."""
  records = [r for r in json_files.read_json_records(metrics_path)
             if isinstance(r, dict) and r.get("step") == step
             and "test_loss" in r]
  return records[-1] if records else None


def load_encoders(damsm_dir: str, expected_vocab: Vocabulary | None = None,
                  *, step: int = -1, accept_undigested: bool = False):
  """Frozen DAMSM encoders from a pretraining workdir.

  Returns ``(text_model, text_params, image_model, image_variables, vocab)``.
  Raises with the path when something is missing or the vocabulary differs from
  ``expected_vocab`` (the dataset's).

  The directory is read-only here (it may be shared by several GAN jobs):
  checkpoint ``step`` (-1: the newest) is restored and verified, and a
  damaged one raises CheckpointError naming the directory and the step;
  nothing falls back to an older encoder, nothing there is moved or cleaned.
  """
  if not damsm_dir or not os.path.isdir(damsm_dir):
    raise FileNotFoundError(
        f"DAMSM directory {damsm_dir!r} does not exist (config.gan.damsm_dir "
        "must name the workdir of a pretrain_damsm run)")
  vocab_path = os.path.join(damsm_dir, VOCAB_FILE)
  enc_path = os.path.join(damsm_dir, ENCODER_CONFIG_FILE)
  for p in (vocab_path, enc_path):
    if not os.path.isfile(p):
      raise FileNotFoundError(f"{p} is missing: {damsm_dir} is not a DAMSM "
                              "pretraining workdir")
  fix = (f"restore it from a copy, or run job=pretrain_damsm with --workdir="
         f"{damsm_dir} again (it rewrites this file at start)")
  vocab_json = json_files.read_json(vocab_path, fix)
  try:
    vocab = Vocabulary.from_json(vocab_json)
  except (ValueError, TypeError) as e:
    raise json_files.DamagedFileError(f"{vocab_path} is damaged: {e}; "
                                      f"{fix}") from None
  if expected_vocab is not None and vocab != expected_vocab:
    raise ConfigError(
        f"the DAMSM vocabulary in {vocab_path} ({vocab.n_words} words) does not "
        f"match the dataset's ({expected_vocab.n_words} words): pretrain DAMSM "
        "on the same dataset")
  enc = json_files.read_json(enc_path, fix)
  enc_config = ml_collections.ConfigDict(enc)
  text_model, image_model = build_models(enc_config, vocab.n_words)
  abstract = jax.eval_shape(
      functools.partial(create_state, _with_defaults(enc_config), text_model,
                        image_model), jax.random.key(0))
  # Replicated over every device of every process: orbax needs the target
  # layout to restore in a multi-process job.
  repl = sharding.replicated(sharding.make_mesh(0))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract)
  ckpt = checkpointing.Checkpointer(
      os.path.join(damsm_dir, CHECKPOINT_DIR), max_to_keep=1000, interval=1,
      read_only=True, accept_undigested=accept_undigested)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    chosen = max(steps) if step < 0 else step
    if chosen not in steps:
      raise CheckpointError(
          f"config.gan.damsm_step={step}: no such checkpoint step in "
          f"{ckpt.directory} (steps there: {sorted(steps)})")
    try:
      restored = ckpt.restore(abstract, chosen)
    except CheckpointError as e:
      raise CheckpointError(
          f"DAMSM encoders unusable: {e}. A GAN job reads "
          f"config.gan.damsm_dir={damsm_dir} read-only and never falls back "
          "to an older encoder: repair that directory (resuming its "
          "pretrain_damsm run moves a bad step aside) or choose a step "
          f"explicitly with --config.gan.damsm_step (steps there: "
          f"{sorted(steps)})") from e
  finally:
    ckpt.close()
  text_params, image_vars = encoder_variables(restored[0])
  return text_model, text_params, image_model, image_vars, vocab


def encoder_variables(state: DamsmState):
  """``(text_params, image_variables)`` of a DAMSM state, as the GAN uses them
  (the image encoder's parameters with the trunk's BatchNorm statistics)."""
  return state.params["text_encoder"], {"params": state.params["image_encoder"],
                                        "batch_stats": state.batch_stats}


def _with_defaults(enc_config: ml_collections.ConfigDict):
  """A full config (base defaults) with the saved encoder sections applied."""
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.text_encoder.update(enc_config.text_encoder)
  c.image_encoder.update(enc_config.image_encoder)
  c.damsm.image_size = enc_config.damsm.image_size
  c.damsm.words_num = enc_config.damsm.words_num
  return c
