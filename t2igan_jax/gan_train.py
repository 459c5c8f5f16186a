"""GAN training (``config.job = 'train_gan'``): the loop around
``gan_lib.train_step`` (one reference iteration per step, SPEC-dmgan §6.2).

The job trains against frozen DAMSM encoders (``config.gan.damsm_dir``, or
what the job runner ``t2igan_jax/train.py:damsm_phase`` resolves or pretrains),
writes checkpoints, the step log, TensorBoard scalars and sample grids of a
fixed batch of test captions (``image_every_steps``), and ends with a summary
of where its outputs are and what to run next.
"""

import functools
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from PIL import Image
from jax.experimental import multihost_utils

from input_pipeline import dataset_check
from input_pipeline import pipeline as input_pipeline
from t2igan_jax import checkpointing
from t2igan_jax import damsm_lib
from t2igan_jax import ema
from t2igan_jax import gan_lib
from t2igan_jax import image_text
from t2igan_jax import metric_writer
from t2igan_jax import numerics
from t2igan_jax import preemption
from t2igan_jax import sharding
from t2igan_jax import time_budget
from t2igan_jax import train_loop

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


def finished_result(metrics_path: str, step: int, total_steps: int,
                    directory: str) -> dict[str, Any]:
  """A run whose checkpoint already reached ``total_steps``: says so and
  returns its last recorded result (nothing is recompiled or recomputed)."""
  train_loop.log_already_finished(
      step, directory, total_steps, "; nothing to do (raise config.max_steps "
      "or the epochs to train further, or use a new --workdir)")
  return {**(train_loop.recorded_result(metrics_path, step) or {"step": step}),
          "already_finished": True}


def _caption_text(vocab, captions, lengths):
  return [" ".join(vocab.ixtoword[int(t)] for t in cap[:n])
          for cap, n in zip(captions, lengths)]


def _captioned_grid(images: np.ndarray, captions: list[str]) -> np.ndarray:
  """Training sample grid [-1, 1] images -> uint8, each caption under its image."""
  ncols = int(np.ceil(np.sqrt(images.shape[0])))
  return image_text.captioned_grid(
      metric_writer.image_grid(images, ncols), images.shape[1], captions, ncols)


def _gather(x) -> np.ndarray:
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class SampleGrids:
  """The loop hook that draws a fixed batch of test captions (and fixed
  noise) every ``image_every_steps``: EMA and raw G grids (the raw G only,
  for an architecture without EMA), the real images, the first caption's
  word attention; to TensorBoard and, per step, as PNGs in
  ``workdir/samples``."""

  def __init__(self, config, workdir: str, models, enc, splits,
               writer: metric_writer.MetricWriter, mesh):
    g = config.gan
    train_source, test_source = splits
    self.config, self.workdir, self.writer, self.enc = config, workdir, writer, enc
    self.arch = gan_lib.architecture(config)
    self.sample_fn = jax.jit(functools.partial(gan_lib.sample_step,
                                               models=models))
    vis_source = test_source
    if len(test_source) < g.batch_size:
      logging.warning("test split (%d images) is smaller than a batch (%d): "
                      "sample grids use training captions", len(test_source),
                      g.batch_size)
      vis_source = train_source
    self.local = next(iter(input_pipeline.create_iterator(
        vis_source, global_batch_size=g.batch_size,
        image_sizes=input_pipeline.stage_sizes(config),
        words_num=config.data.words_num, seed=config.seed + 7,
        truncation=config.data.caption_truncation, random_crop_flip=False,
        shuffle=True, drop_remainder=True, num_epochs=1,
        process_index=jax.process_index(),
        process_count=jax.process_count())))
    self.batch = sharding.device_batch(self.local, mesh)
    self.z = jax.device_put(
        gan_lib.draw_z(jax.random.key(config.seed + 11), g.batch_size,
                       config.model.z_dim, config.sample.truncation),
        sharding.replicated(mesh))
    self.rng = jax.random.key(config.seed + 13)
    vocab = train_source.vocab
    self.captions = _caption_text(vocab, *(
        _gather(self.batch[k]) for k in ("captions", "caption_lens")))
    if jax.process_index() == 0:
      self._write_captions(_caption_text(vocab, self.local["captions"],
                                         self.local["caption_lens"]))

  def _write_captions(self, captions_txt: list[str]) -> None:
    self.writer.write_text(0, "samples/captions", "\n\n".join(
        f"{i}: {t}" for i, t in enumerate(captions_txt)))
    with open(os.path.join(self.workdir, "sample_captions.txt"), "w") as f:
      f.write("\n".join(captions_txt) + "\n")

  def _attention_grid(self, attention) -> np.ndarray:
    """First caption's first words: [T, H, W] maps scaled to [-1, 1]."""
    att = _gather(attention[0])
    n = int(min(self.local["caption_lens"][0], 6))
    maps = att[0, :n]
    maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-8)
    return metric_writer.image_grid(np.repeat(maps[..., None], 3, -1) * 2 - 1,
                                    ncols=n)

  def grids(self, state) -> dict[str, np.ndarray]:
    g = self.config.gan
    g_stats = self.arch.sampling_stats(state)
    g_ema = (ema.sampling_params(state, g.ema_decay, g.ema_debias)
             if self.arch.has_ema else state.g_params)
    images, attention = self.sample_fn(g_ema, g_stats, self.batch,
                                       self.enc, self.z, self.rng)
    images = multihost_utils.process_allgather(images, tiled=True)
    grids = {f"samples/stage{i}_{np.shape(im)[1]}px":
             _captioned_grid(np.asarray(im), self.captions)
             for i, im in enumerate(images)}
    if self.arch.has_ema:
      raw, _ = self.sample_fn(state.g_params, g_stats, self.batch,
                              self.enc, self.z, self.rng)
      grids["samples_raw_generator/last_stage"] = _captioned_grid(
          _gather(raw[-1]), self.captions)
    grids.update({f"real/stage{i}": metric_writer.image_grid(np.asarray(im))
                  for i, im in enumerate(self.local["images"])})
    if attention:
      grids["attention/caption0"] = self._attention_grid(attention)
    return grids

  def __call__(self, step: int, state) -> dict[str, np.ndarray]:
    grids = self.grids(state)
    self.writer.write_images(step, grids)
    if jax.process_index() == 0:
      sample_dir = os.path.join(self.workdir, "samples")
      os.makedirs(sample_dir, exist_ok=True)
      for name, grid in grids.items():
        if name.startswith("samples"):
          fname = f"step{step:07d}_{name.replace('/', '_')}.png"
          Image.fromarray(grid).save(os.path.join(sample_dir, fname))
    return grids


DamsmPhase = Callable[[], tuple[str | None, float | None]]


def _given_damsm(config) -> DamsmPhase:
  """``config.gan.damsm_dir`` as it is (the job runner resolves an empty one)."""
  def phase():
    if not config.gan.damsm_dir:
      raise FileNotFoundError(
          "config.gan.damsm_dir is empty: name a pretrain_damsm workdir (or "
          "run the job through t2igan_jax.train.run, which pretrains one)")
    return config.gan.damsm_dir, None
  return phase


def train(config: ml_collections.ConfigDict, workdir: str, *,
          damsm: DamsmPhase | None = None) -> dict[str, Any]:
  """Runs (or resumes) GAN training; returns the last logged metrics.

  ``damsm()`` gives ``(damsm_dir, seconds)``: the DAMSM workdir to train
  against (None: its pretraining was preempted) and the seconds this command
  spent pretraining it (None: none); called once the data and config are
  checked (default: ``config.gan.damsm_dir``).

  On preemption (SIGTERM) it saves the step it finished and returns with
  ``result['preempted'] = True``.
  """
  with preemption.PreemptionWatcher() as watcher:
    return _train(config, workdir, watcher, damsm or _given_damsm(config))


def _open_data(config, mesh):
  """Both splits (files and batch sizes checked at once), the step count."""
  g = config.gan
  sharding.check_batch_size(g.batch_size, mesh, "config.gan.batch_size")
  sizes = input_pipeline.stage_sizes(config)
  splits = dataset_check.open_splits(config, sizes[-1])
  steps_per_epoch = input_pipeline.steps_per_epoch(len(splits[0]),
                                                   g.batch_size)
  total_steps = g.epochs * steps_per_epoch
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  return splits, steps_per_epoch, total_steps


def _encoders(config, damsm_dir, vocab, mesh):
  """Frozen DAMSM encoders, replicated; ``(text, image models, enc)``."""
  text_model, text_params, image_model, image_vars, _ = (
      damsm_lib.load_encoders(
          damsm_dir, expected_vocab=vocab, step=config.gan.damsm_step,
          accept_undigested=config.accept_undigested_checkpoints))
  enc = jax.device_put(
      gan_lib.Encoders(text_params=text_params, image_vars=image_vars),
      sharding.replicated(mesh))
  return text_model, image_model, enc


def _checkpointer(config, workdir, steps_per_epoch, vocab, damsm_dir, enc):
  """The run's Checkpointer, its metadata and the restore compatibility."""
  g = config.gan
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, gan_lib.CHECKPOINT_DIR),
      max_to_keep=config.keep_checkpoints,
      interval=config.checkpoint_every_steps,
      keep_period=g.snapshot_interval * steps_per_epoch,
      accept_undigested=config.accept_undigested_checkpoints)
  meta = {"job": "train_gan", "vocab_fingerprint": vocab.fingerprint(),
          "model": gan_lib.model_meta(config.model.to_dict()),
          "damsm_dir": os.path.abspath(damsm_dir),
          "stage_sizes": list(input_pipeline.stage_sizes(config)),
          # True: zero-started EMA (t2igan_jax/ema.py); None: the reference's
          # (or none: an architecture without EMA ignores gan.ema_debias).
          ema.META_KEY: (True if g.ema_debias
                         and gan_lib.architecture(config).has_ema else None),
          "ema_decay": g.ema_decay, "seed": config.seed}
  digest = checkpointing.state_digest(enc)
  compatible = {
      "keys": ("vocab_fingerprint", "model", "stage_sizes", ema.META_KEY),
      "views": {"model": gan_lib.model_meta},
      "check": _same_damsm_check(digest, damsm_dir, ckpt.directory)}
  return ckpt, meta, compatible, digest


def _log_start(config, splits, steps_per_epoch, total_steps) -> None:
  logging.info("GAN (%s) on %s (source %s): %d train / %d test "
               "images, %d steps per epoch, %d steps, stages %s",
               gan_lib.architecture(config).describe(config),
               config.data.name, config.data.source,
               len(splits[0]), len(splits[1]), steps_per_epoch, total_steps,
               input_pipeline.stage_sizes(config))


def _initial_state(arch, models, mesh, ckpt, meta, compatible, train_iter):
  """Restored (with the data iterator), else fresh from ``config.seed``."""
  state = jax.jit(functools.partial(arch.create_state, models),
                  out_shardings=sharding.replicated(mesh))(
                      jax.random.key(models.config.seed))
  restored = ckpt.restore_compatible(state, meta, **compatible)
  if restored is None:
    return state
  state, data_state = restored
  train_iter.set_state(data_state)
  logging.info("resumed from checkpoint step %d", int(state.step))
  return state


def _train(config, workdir, watcher, damsm: DamsmPhase) -> dict[str, Any]:
  g = config.gan
  arch = gan_lib.architecture(config)
  mesh = sharding.make_mesh(config.num_devices)
  splits, steps_per_epoch, total_steps = _open_data(config, mesh)
  vocab = splits[0].vocab
  numerics.check_debug_term(config, arch.loss_term_names(config),
                            "train_gan")
  damsm_dir, damsm_seconds = damsm()
  if damsm_dir is None:
    return {"step": 0, "preempted": True}
  text_model, image_model, enc = _encoders(config, damsm_dir, vocab, mesh)
  models = arch.models(config, text_model, image_model, mesh=mesh)
  _log_start(config, splits, steps_per_epoch, total_steps)
  train_iter = input_pipeline.create_train_iterator(
      config, splits[0], global_batch_size=g.batch_size,
      image_sizes=input_pipeline.stage_sizes(config),
      words_num=config.data.words_num)
  ckpt, meta, compatible, digest = _checkpointer(
      config, workdir, steps_per_epoch, vocab, damsm_dir, enc)
  metrics_path = os.path.join(workdir, config.metrics_json)
  done = ckpt.finished_step(total_steps, meta, **compatible)
  if done is not None and train_loop.recorded_result(metrics_path,
                                                     done) is not None:
    ckpt.close()  # finished and recorded: nothing is built or compiled
    return finished_result(metrics_path, done, total_steps, ckpt.directory)
  state = _initial_state(arch, models, mesh, ckpt, meta, compatible,
                         train_iter)
  meta[DAMSM_DIGEST_KEY] = digest
  if int(state.step) >= total_steps:
    ckpt.close()
    return finished_result(metrics_path, int(state.step), total_steps,
                           ckpt.directory)
  writer = metric_writer.MetricWriter(workdir)
  job = train_loop.Job(
      name="the GAN loop", total_steps=total_steps,
      snapshot_every=g.snapshot_interval * steps_per_epoch,
      step_fn=jax.jit(functools.partial(arch.train_step, models=models),
                      donate_argnums=(0,)),
      step_args=(enc,), log_line=arch.log_line(models),
      budget_seconds=time_budget.left_for_gan(config.max_train_seconds,
                                              damsm_seconds or 0.0),
      budget_note=_budget_note(config, damsm_seconds),
      # The learning rates (constant: the reference's Adam has no schedule).
      extra_scalars={"train/g_lr": g.g_lr, "train/d_lr": g.d_lr},
      hooks=(train_loop.Hook(config.image_every_steps, SampleGrids(
          config, workdir, models, enc, splits, writer, mesh)),),
      record_result=True, parameters=arch.trained_parameters)
  out = train_loop.run(config, workdir, job, state, mesh=mesh, ckpt=ckpt,
                       meta=meta, train_iter=train_iter, writer=writer,
                       watcher=watcher)
  if out.before_first_step:
    return train_loop.early_stop_record(out.step)
  result = out.record(total_steps)
  if "preempted" not in result and jax.process_index() == 0:
    logging.info("%s", closing_summary(config, workdir, result, total_steps))
  return result


def _budget_note(config, damsm_seconds: float | None) -> str:
  """How the command's budget was shared with its DAMSM phase (if any)."""
  if damsm_seconds is None:
    return ""
  return (f" (config.max_train_seconds={config.max_train_seconds:g} s for the "
          f"command; its DAMSM phase took {damsm_seconds:.0f} s)")


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
      f"  checkpoints:  {os.path.join(workdir, gan_lib.CHECKPOINT_DIR)}/",
      f"  TensorBoard:  tensorboard --logdir={workdir}",
      "Next: images for your own captions, then FID / IS / R-precision:",
      "  " + metric_writer.main_command(
          workdir, "sample", (f"--config.sample.captions_file={captions}",)),
      "  " + metric_writer.main_command(workdir, "evaluate"),
  ])

