"""DAMSM pretraining (``config.job = 'pretrain_damsm'``), SPEC-dmgan §5.4.

The text encoder (bi-LSTM) and the image encoder's two projections are trained
jointly with the word-level and sentence-level DAMSM losses in both directions:

    L = L_w0 + L_w1 + L_s0 + L_s1            (unweighted, class-masked)

The state, step functions and optimiser (Adam with the reference's schedule,
clip and frozen trunk) are in ``t2igan_jax/damsm_lib.py``.

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
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from input_pipeline import dataset_check
from input_pipeline import pipeline as input_pipeline
from t2igan_jax import checkpointing
from t2igan_jax import damsm_lib
from t2igan_jax import metric_writer
from t2igan_jax import numerics
from t2igan_jax import preemption
from t2igan_jax import sharding
from t2igan_jax import time_budget
from t2igan_jax import train_loop
from t2igan_jax.errors import ConfigError
from t2igan_jax.models import image_encoder as image_encoder_lib


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) DAMSM pretraining; returns the last evaluation.

  On preemption (SIGTERM) it saves the step it finished and returns
  ``{'step': step, 'preempted': True}``.
  """
  with preemption.PreemptionWatcher() as watcher:
    return _pretrain(config, workdir, watcher)


def _read_trunk(config):
  """The ImageNet trunk weights (read and checked before anything compiles),
  or None; ConfigError for a frozen Inception trunk without them."""
  ie = config.image_encoder
  if ie.backbone == "inception" and not ie.train_trunk and not ie.trunk_weights:
    raise ConfigError(
        "config.image_encoder.trunk_weights is empty: the reference DAMSM "
        "freezes an ImageNet-pretrained Inception-v3 trunk, and a frozen random "
        "trunk would train on garbage features. Download torchvision's "
        f"weights ({image_encoder_lib.TORCHVISION_INCEPTION_URL}) and give "
        "the file as --config.image_encoder.trunk_weights=<path>/"
        "inception_v3_google-0cc3c7bd.pth, or set "
        "config.image_encoder.train_trunk=True")
  if not ie.trunk_weights:
    return None
  return image_encoder_lib.read_trunk_weights(ie.trunk_weights)


def _open_data(config, mesh):
  """Both splits (files, batch sizes, retrieval candidates checked at once)
  and the step counts; logs the start-up line."""
  dm = config.damsm
  sharding.check_batch_size(dm.batch_size, mesh, "config.damsm.batch_size")
  splits = dataset_check.open_splits(config, dm.image_size)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(splits[0]),
                                                   dm.batch_size)
  total_steps = dm.epochs * steps_per_epoch
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  logging.info("DAMSM on %s (source %s): %d train / %d test images, "
               "vocabulary %d words, %d steps per epoch, %d steps",
               config.data.name, config.data.source, len(splits[0]),
               len(splits[1]), splits[0].vocab.n_words, steps_per_epoch,
               total_steps)
  return splits, steps_per_epoch, total_steps


def _checkpointer(config, workdir, steps_per_epoch, vocab):
  """The run's Checkpointer, its metadata and the keys that must match."""
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, damsm_lib.CHECKPOINT_DIR),
      max_to_keep=config.keep_checkpoints,
      interval=config.checkpoint_every_steps,
      keep_period=config.damsm.snapshot_interval * steps_per_epoch,
      accept_undigested=config.accept_undigested_checkpoints)
  meta = {"job": "pretrain_damsm", **damsm_lib.vocab_meta(vocab),
          "encoders": damsm_lib.encoder_config(config)}
  return ckpt, meta, ("vocab_fingerprint", "encoders")


class Evaluation:
  """The loop hook that scores the test split (every
  ``damsm.eval_every_epochs``, at the end, at a time-budget stop): mean DAMSM
  loss in eval mode and top-1 retrieval; to TensorBoard, metrics.json and
  the log. ``last`` holds the latest result."""

  def __init__(self, config, test_source, mesh, encode_fn, writer,
               metrics_path: str, steps_per_epoch: int):
    self.config, self.test_source, self.mesh = config, test_source, mesh
    self.encode_fn, self.writer = encode_fn, writer
    self.metrics_path, self.steps_per_epoch = metrics_path, steps_per_epoch
    self.last: dict[str, Any] | None = None

  def _outputs(self, state) -> dict[str, np.ndarray]:
    """Encoded test batches, gathered and concatenated."""
    c, dm = self.config, self.config.damsm
    test_iter = input_pipeline.create_iterator(
        self.test_source, global_batch_size=dm.batch_size,
        image_sizes=(dm.image_size,), words_num=dm.words_num,
        seed=c.seed + 1, truncation=c.data.caption_truncation,
        random_crop_flip=c.data.random_crop_flip, shuffle=True,
        drop_remainder=True, num_epochs=1, process_index=jax.process_index(),
        process_count=jax.process_count(), num_workers=0)
    outputs = []
    for i, local_batch in enumerate(test_iter):
      if i >= dm.eval_batches:
        break
      out = self.encode_fn(state.params, state.batch_stats,
                           sharding.device_batch(local_batch, self.mesh))
      outputs.append(multihost_utils.process_allgather(out, tiled=True))
    if not outputs:
      raise ConfigError(
          f"config.damsm.batch_size={dm.batch_size} is larger than the test "
          f"split ({len(self.test_source)} images): no evaluation batch")
    return {k: np.concatenate([np.asarray(o[k]).reshape(
        (-1,) + np.shape(o[k])[1:]) for o in outputs]) for k in outputs[0]}

  def __call__(self, step: int, state) -> dict[str, Any]:
    dm = self.config.damsm
    cat = self._outputs(state)
    result = {
        "step": step,
        "epoch": step / self.steps_per_epoch,
        "test_loss": float(np.mean(cat["loss"])),
        "retrieval_top1": damsm_lib.retrieval_top1(
            cat["image_code"], cat["sent"], cat["class_ids"],
            dm.retrieval_candidates, seed=self.config.seed),
        "retrieval_candidates": dm.retrieval_candidates,
        "num_test_images": int(cat["sent"].shape[0]),
    }
    self.writer.write_scalars(step, {
        "eval/test_loss": result["test_loss"],
        "eval/retrieval_top1": result["retrieval_top1"]})
    self.writer.flush()
    if jax.process_index() == 0:
      metric_writer.append_json_record(self.metrics_path, result)
    logging.info("eval at step %d (epoch %.2f): test loss %.4f, retrieval "
                 "top-1 of %d: %.4f (%d images)", step, result["epoch"],
                 result["test_loss"], dm.retrieval_candidates,
                 result["retrieval_top1"], result["num_test_images"])
    self.last = result
    return result


def _log_line(s: dict[str, float]) -> str:
  return (f"loss {s['train/loss']:.4f} (w {s['train/w_loss0']:.4f}/"
          f"{s['train/w_loss1']:.4f}, s {s['train/s_loss0']:.4f}/"
          f"{s['train/s_loss1']:.4f}) lr {s['train/lr']:.2e}")


def _finished(ckpt, meta, compatible, metrics_path, total_steps):
  """The recorded evaluation of a run already finished, or None."""
  done = ckpt.finished_step(total_steps, meta, compatible)
  finished = None if done is None else train_loop.recorded_result(
      metrics_path, done, key="test_loss")
  if finished is None:
    return None
  ckpt.close()
  train_loop.log_already_finished(
      done, ckpt.directory, total_steps, " and was evaluated; nothing to do "
      "(raise config.max_steps or damsm.epochs to train further)")
  return {**finished, "already_finished": True}


def _initial_state(config, models, mesh, ckpt, meta, compatible, train_iter,
                   trunk):
  """Restored (with the data iterator), or fresh with the ImageNet trunk."""
  state = jax.jit(functools.partial(damsm_lib.create_state, config, *models),
                  out_shardings=sharding.replicated(mesh))(
                      jax.random.key(config.seed))
  restored = ckpt.restore_compatible(state, meta, compatible)
  if restored is not None:
    state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("resumed from checkpoint step %d", int(state.step))
  elif trunk is not None:
    state = damsm_lib.load_trunk_weights(config, state, trunk)
  return state


def _trained_parameters(config, state: damsm_lib.DamsmState):
  """The text encoder and the trained part of the image encoder."""
  image, _ = damsm_lib.split_image_params(state.params["image_encoder"],
                                          config.image_encoder.train_trunk)
  return {"text_encoder": state.params["text_encoder"], "image_encoder": image}


def _pretrain(config, workdir, watcher) -> dict[str, Any]:
  dm = config.damsm
  numerics.check_debug_term(config, damsm_lib.LOSS_TERMS, "pretrain_damsm")
  trunk = _read_trunk(config)
  mesh = sharding.make_mesh(config.num_devices)
  (train_source, test_source), steps_per_epoch, total_steps = _open_data(
      config, mesh)
  vocab = train_source.vocab
  if jax.process_index() == 0:
    damsm_lib.write_json(os.path.join(workdir, damsm_lib.VOCAB_FILE),
                         vocab.to_json())
    damsm_lib.write_json(os.path.join(workdir, damsm_lib.ENCODER_CONFIG_FILE),
                         damsm_lib.encoder_config(config))
  text_model, image_model = damsm_lib.build_models(config, vocab.n_words)
  train_iter = input_pipeline.create_train_iterator(
      config, train_source, global_batch_size=dm.batch_size,
      image_sizes=(dm.image_size,), words_num=dm.words_num)
  ckpt, meta, compatible = _checkpointer(config, workdir, steps_per_epoch,
                                         vocab)
  metrics_path = os.path.join(workdir, config.metrics_json)
  # Finished and evaluated: say so without building or compiling anything.
  finished = _finished(ckpt, meta, compatible, metrics_path, total_steps)
  if finished is not None:
    return finished
  state = _initial_state(config, (text_model, image_model), mesh, ckpt, meta,
                         compatible, train_iter, trunk)
  models = dict(config=config, text_model=text_model, image_model=image_model)
  writer = metric_writer.MetricWriter(workdir)
  evaluate = Evaluation(config, test_source, mesh, jax.jit(functools.partial(
      damsm_lib.encode_step, **models)), writer, metrics_path, steps_per_epoch)
  job = train_loop.Job(
      name="DAMSM pretraining", total_steps=total_steps,
      snapshot_every=dm.snapshot_interval * steps_per_epoch,
      step_fn=jax.jit(functools.partial(damsm_lib.train_step, **models,
                                        steps_per_epoch=steps_per_epoch),
                      donate_argnums=(0,)),
      log_line=_log_line, budget_seconds=config.max_train_seconds,
      hooks=(train_loop.Hook(dm.eval_every_epochs * steps_per_epoch,
                             evaluate),),
      parameters=functools.partial(_trained_parameters, config))
  out = train_loop.run(config, workdir, job, state, mesh=mesh, ckpt=ckpt,
                       meta=meta, train_iter=train_iter, writer=writer,
                       watcher=watcher)
  if out.before_first_step:
    return train_loop.early_stop_record(out.step)
  if out.stop == time_budget.PREEMPTED:
    return {"step": out.step, "preempted": True}
  last_eval = evaluate.last
  if last_eval is None:  # a finished run without its final evaluation
    last_eval = evaluate(out.step, out.state)
  if out.stop == time_budget.OUT_OF_TIME:
    return {**last_eval, "time_budget_reached": True}
  return last_eval
