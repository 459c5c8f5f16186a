"""Evaluation (``config.job = 'evaluate'``): FID, IS and R-precision in one pass.

Protocol (SPEC-dmgan §8.1, SPEC-eval; every field in ``config.eval``):

* the EMA generator of a checkpoint, in eval mode (BN running statistics; CA
  still samples ε, ``model.ca_sample_at_eval``), makes ``num_samples`` images
  (30,000 by default) from the **test** captions: like the reference's test
  loader (shuffle, drop_last) every pass over the test split is a permutation
  of its images (``default_rng([seed, 0, pass])``), each visit draws one of the
  image's captions and fits it to ``data.eval_words_num`` (random ordered
  subset), a batch is sorted by caption length; z and ε are drawn per batch
  from ``fold_in(key(seed), batch)``. Batches (``eval.batch_size``, reference
  10: the rolled attention mask depends on it) are sharded over the data mesh.
* FID and IS see the images as the reference's PNG files hold them:
  ``u = uint8((x + 1) * 127.5)`` with truncation (``png_quantization =
  'truncate'``, reference) or rounding ('round'), then ``u / 127.5 - 1``.
  Nothing is written unless ``save_images``.
* FID: pool3 features of the FID Inception (TTUR / pytorch-fid weights,
  ``t2igan_jax.evaluation.fid_inception``; bilinear half-pixel resize to 299)
  against reference statistics: ``eval.fid_stats`` (a pytorch-fid ``.npz``)
  or, when empty, statistics of the real test images computed once and cached
  as ``workdir/fid_stats_<data>_<size>.npz`` (with a ``.json`` describing
  them). Real images go through the training transform at the last stage
  size (76/64 resize, seeded random crop and flip when
  ``data.random_crop_flip``), i.e. the distribution the generator learns,
  and are rounded to uint8.
* IS over ``is_splits`` splits with the classifier of ``is_protocol``:
  'shapes' = the project's classifier (``evaluation/shapes_classifier.py``,
  trained into ``workdir/shapes_classifier`` when ``is_weights`` is empty);
  'cub' / 'coco' = the papers' networks from ``is_weights``; 'auto' picks by
  dataset and skips IS (saying so) when cub/coco weights are not given.
* R-precision: the DAMSM image code of each generated image (unquantised, as
  the reference computes it in its sampling loop) against its own caption and
  ``rprec_candidates - 1`` captions of other classes drawn from the encoded
  pool of every test caption (``evaluation/r_precision.py``).

Results go to ``workdir/eval_<step>.json`` and TensorBoard (``eval/fid``,
``eval/is_mean``, ``eval/is_std``, ``eval/r_precision_mean``,
``eval/r_precision_std``, ``eval/samples``). With ``eval.watch`` the job keeps
evaluating every checkpoint that has no ``eval_<step>.json`` yet and waits for
new ones until ``watch_timeout_s`` pass without one (a separate evaluator
process beside training, as on Cloud TPU). ``sample.weights = 'raw'``
evaluates the trained G instead of its EMA (short runs) into
``eval_<step>_raw.json`` and ``eval_raw/...``; ``'ema_debiased'`` the
bias-corrected EMA (``t2igan_jax/ema.py``) into ``eval_<step>_ema_debiased.json``.
With ``'ema'`` a run trained with ``gan.ema_debias=True`` is evaluated with its
bias-corrected EMA; ``generator_weights_used`` / ``_description`` in the JSON
say which parameters were evaluated.
"""

import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from input_pipeline import datasets
from input_pipeline import pipeline as input_pipeline
from input_pipeline import text as text_lib
from t2igan_jax import gan_lib
from t2igan_jax import metric_writer
from t2igan_jax import sharding
from t2igan_jax.errors import CheckpointError, ConfigError
from t2igan_jax.evaluation import fid as fid_lib
from t2igan_jax.evaluation import fid_inception
from t2igan_jax.evaluation import inception_score as is_lib
from t2igan_jax.evaluation import r_precision as rprec_lib
from t2igan_jax.evaluation import shapes_classifier

CLASSIFIER_DIR = "shapes_classifier"
SHAPES_AGREEMENT_NOTE = (
    "fraction of images whose shapes-classifier top-1 class has the "
    "caption's main-object class / kind (shape) / colour (chance 1/56, 1/7, "
    "1/8); 'real_test_images' = the same classifier on the test renders")
FID_NOTE = ("FID with the TTUR / pytorch-fid Inception weights (2015-12-05 "
            "graph), bilinear half-pixel resize to 299: not comparable with the "
            "papers' 'PyTorch FID' (torchvision ImageNet Inception) columns; "
            "comparable with TF-FID numbers only against statistics of the "
            "same real images")


def eval_path(workdir: str, step: int, weights: str = "ema") -> str:
  """``eval_<step>.json`` (EMA G, reference) or ``eval_<step>_raw.json``."""
  suffix = "" if weights == "ema" else f"_{weights}"
  return os.path.join(workdir, f"eval_{step}{suffix}.json")


def quantize(images, mode: str):
  """[-1, 1] floats -> the values a uint8 PNG of them holds, back in [-1, 1]."""
  x = jnp.clip((images + 1.0) * 127.5, 0.0, 255.0)
  x = jnp.floor(x) if mode == "truncate" else jnp.round(x)
  return x / 127.5 - 1.0


def _to_uint8(images: np.ndarray) -> np.ndarray:
  """Already quantised [-1, 1] images -> their exact uint8 pixels."""
  return np.round((np.asarray(images, np.float32) + 1.0) * 127.5).astype(np.uint8)


def resolve_is_protocol(config) -> str:
  """``config.eval.is_protocol``; 'auto' = the dataset's (its entry in
  ``input_pipeline/datasets.py``)."""
  return datasets.resolve_is_protocol(config.data.name,
                                      config.eval.is_protocol)


def _eval_step(g_params, g_stats, batch, enc, z_key, ca_key, index, *,
               models: gan_lib.GanModels, quantization: str):
  """One generated batch: (quantised last-stage images, DAMSM image codes,
  own sentence codes)."""
  b = batch["captions"].shape[0]
  z = gan_lib.draw_z(jax.random.fold_in(z_key, index), b,
                     models.config.model.z_dim,
                     models.config.sample.truncation)
  images, _ = gan_lib.sample_step(g_params, g_stats, batch, enc, z,
                                    jax.random.fold_in(ca_key, index),
                                    models=models)
  last = images[-1]
  _, image_code = models.image_model.apply(enc.image_vars, last,
                                           train_trunk_bn=False)
  _, sent = models.encode_text(enc, batch["captions"], batch["caption_lens"])
  return quantize(last, quantization), image_code, sent


def _put_global(x: np.ndarray, target) -> jax.Array:
  """A global host array (identical on every process) -> sharded jax array."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, target, lambda idx: x[idx])


class _Chunker:
  """Runs ``fn`` over fixed-size chunks of images (one compile), padding the last."""

  def __init__(self, fn: Callable, size: int, mesh):
    self.fn, self.size, self.mesh = fn, size, mesh
    self.buffer: list[np.ndarray] = []
    self.outputs: list[np.ndarray] = []

  def _run(self, images: np.ndarray) -> np.ndarray:
    n = images.shape[0]
    if n < self.size:
      pad = np.zeros((self.size - n,) + images.shape[1:], images.dtype)
      images = np.concatenate([images, pad])
    x = images.astype(np.float32) / 127.5 - 1.0
    if self.size % self.mesh.devices.size == 0:
      x = _put_global(x, sharding.batch_sharded(self.mesh))
    out = multihost_utils.process_allgather(self.fn(x), tiled=True)
    return np.asarray(out)[:n]

  def add(self, images_uint8: np.ndarray) -> None:
    self.buffer.append(images_uint8)
    while sum(len(b) for b in self.buffer) >= self.size:
      cat = np.concatenate(self.buffer)
      self.outputs.append(self._run(cat[:self.size]))
      self.buffer = [cat[self.size:]] if len(cat) > self.size else []

  def result(self) -> np.ndarray:
    if self.buffer:
      self.outputs.append(self._run(np.concatenate(self.buffer)))
      self.buffer = []
    return np.concatenate(self.outputs)


@dataclasses.dataclass
class _Generated:
  """What one evaluation pass collects from its generated batches."""
  fid_chunks: Any = None
  is_chunks: Any = None
  image_codes: list = dataclasses.field(default_factory=list)
  sent_codes: list = dataclasses.field(default_factory=list)
  class_ids: list = dataclasses.field(default_factory=list)
  first_grid: Any = None
  done: int = 0

  def add(self, images, keep: int, codes, sent, class_ids) -> np.ndarray:
    """Takes the first ``keep`` samples of a batch; returns their pixels."""
    pixels = _to_uint8(images[:keep])
    for chunks in (self.fid_chunks, self.is_chunks):
      if chunks is not None:
        chunks.add(pixels)
    self.image_codes.append(codes[:keep])
    self.sent_codes.append(sent[:keep])
    self.class_ids.append(class_ids[:keep])
    if self.first_grid is None:
      self.first_grid = metric_writer.image_grid(images)
    self.done += keep
    return pixels


class Evaluator:
  """Everything that does not depend on the checkpoint, built once.

  ``run(step)`` evaluates one checkpoint step of ``workdir``.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    e = config.eval
    self.mesh = sharding.make_mesh(config.num_devices)
    sharding.check_batch_size(e.batch_size, self.mesh, "config.eval.batch_size")
    self.size = input_pipeline.stage_sizes(config)[-1]
    self.test_source = input_pipeline.get_source(config, "test", self.size)
    n = len(self.test_source)
    if n < e.batch_size:
      raise ConfigError(f"config.eval.batch_size={e.batch_size} is larger than "
                        f"the test split ({n} images)")
    self.captions = [self.test_source.captions(i) for i in range(n)]
    self.class_ids = np.asarray([self.test_source.class_id(i)
                                 for i in range(n)], np.int64)
    if e.fid:
      self.fid_module, self.fid_variables = (
          fid_inception.load_fid_inception(e.fid_weights or None))
      self.fid_fn = fid_inception.fid_feature_fn(self.fid_module,
                                                 self.fid_variables)
    else:
      logging.warning("config.eval.fid=False: FID is not computed")
      self.fid_module = self.fid_variables = self.fid_fn = None
    self.is_protocol = resolve_is_protocol(config)
    self.is_fn, self.is_info = self._load_is_classifier()
    self._real_stats = None
    # Per DAMSM directory (one per training run): the jitted generation step
    # and the encoded caption pool, reused by every checkpoint of the run.
    self._per_damsm: dict[str, Any] = {}

  # ---------------------------------------------------------- classifiers
  def _load_is_classifier(self):
    e, p = self.config.eval, self.is_protocol
    if p == "none":
      return None, {"skipped": "config.eval.is_protocol='none'"}
    if p == "shapes":
      if self.config.data.name != "shapes":
        raise ConfigError("config.eval.is_protocol='shapes' needs the embedded "
                          f"shapes dataset, not {self.config.data.name!r}")
      directory = e.is_weights or os.path.join(self.workdir, CLASSIFIER_DIR)
      fn, meta = shapes_classifier.load_or_train(self.config, directory)
      self.shapes_real_agreement = shapes_classifier.test_split_agreement(
          self.config, fn, meta)
      return fn, {"protocol": "shapes", "classifier_dir": os.path.abspath(
          directory), "classifier_test_accuracy": meta["test_accuracy"],
                  "paper_comparable": False}
    if not e.is_weights and e.is_protocol == "auto":
      msg = (f"IS skipped: the {p!r} protocol needs the papers' classifier "
             "weights (config.eval.is_weights; see docs/evaluation.md)")
      logging.warning(msg)
      return None, {"skipped": msg}
    fn = is_lib.load_is_classifier(p, e.is_weights,
                                   logit_bias=e.is_coco_logit_bias)
    return fn, {"protocol": p, "weights": os.path.abspath(e.is_weights),
                "paper_comparable": True}

  # --------------------------------------------------------- real images
  def stats_path(self) -> str:
    if self.config.eval.fid_stats:
      return self.config.eval.fid_stats
    return os.path.join(self.workdir, f"fid_stats_{self.config.data.name}_"
                        f"{self.size}.npz")

  def _stats_description(self) -> dict[str, Any]:
    c = self.config
    return {"data": c.data.name, "image_size": self.size,
            "num_images": len(self.test_source),
            "random_crop_flip": bool(c.data.random_crop_flip),
            "fid_weights": c.eval.fid_weights or fid_inception.FID_PACKAGE_PIN,
            "shapes_seed": c.data.shapes_seed if c.data.name == "shapes" else None,
            "shapes_scenes": (c.data.shapes_scenes if c.data.name == "shapes"
                              else None),
            "quantization": "round"}

  def real_images(self):
    """Iterator of uint8 [b, size, size, 3] batches of the real test images."""
    c = self.config
    it = input_pipeline.create_iterator(
        self.test_source, global_batch_size=c.eval.fid_batch_size,
        image_sizes=(self.size,), words_num=c.data.eval_words_num,
        seed=c.eval.seed, truncation=c.data.caption_truncation,
        random_crop_flip=c.data.random_crop_flip, shuffle=False,
        drop_remainder=False, num_epochs=1)
    for batch in it:
      yield _to_uint8(np.asarray(batch["images"][0]))

  def features(self, uint8_batches) -> np.ndarray:
    """FID features [N, 2048] of uint8 image batches (the evaluation's path)."""
    chunks = _Chunker(self.fid_fn, self.config.eval.fid_batch_size, self.mesh)
    for images in uint8_batches:
      chunks.add(images)
    return chunks.result()

  def real_statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the real test images: loaded, or computed and cached."""
    if self._real_stats is not None:
      return self._real_stats
    path = self.stats_path()
    described = os.path.splitext(path)[0] + ".json"
    want = self._stats_description()
    if self.config.eval.fid_stats:
      self._real_stats = fid_lib.load_statistics(path)
      return self._real_stats
    if os.path.isfile(path) and os.path.isfile(described):
      with open(described) as f:
        have = json.load(f)
      if {k: have.get(k) for k in want} == want:
        logging.info("FID reference statistics from %s", path)
        self._real_stats = fid_lib.load_statistics(path)
        return self._real_stats
      logging.warning("%s describes other real images (%s); recomputing",
                      described, have)
    t0 = time.monotonic()
    feats = self.features(self.real_images())
    mu, sigma = fid_lib.statistics(feats)
    if jax.process_index() == 0:
      fid_lib.save_statistics(path, mu, sigma)
      with open(described, "w") as f:
        json.dump(want, f, indent=1)
    logging.info("FID reference statistics of %d real test images (%d px) "
                 "-> %s (%.0f s)", feats.shape[0], self.size, path,
                 time.monotonic() - t0)
    self._real_stats = (mu, sigma)
    return self._real_stats

  # ---------------------------------------------------- caption sampling
  def batch_captions(self, index: int) -> dict[str, np.ndarray]:
    """Global batch ``index`` of test captions (reference test loader)."""
    e = self.config.eval
    n = len(self.captions)
    per_pass = n // e.batch_size
    pass_, pos = divmod(index, per_pass)
    order = np.random.default_rng([e.seed, 0, pass_]).permutation(n)
    rows = order[pos * e.batch_size:(pos + 1) * e.batch_size]
    rng = np.random.default_rng([e.seed, 1, index])
    caps, lens = [], []
    for i in rows:
      options = self.captions[i]
      ids = options[int(rng.integers(len(options)))]
      cap, length = text_lib.fit_caption(ids, self.config.data.eval_words_num,
                                         rng, self.config.data.caption_truncation)
      caps.append(cap)
      lens.append(length)
    lens = np.asarray(lens, np.int32)
    order = np.argsort(-lens, kind="stable")
    return {"captions": np.stack(caps)[order].astype(np.int32),
            "caption_lens": lens[order],
            "class_ids": self.class_ids[rows][order].astype(np.int32)}

  def caption_pool(self, gen: gan_lib.RestoredGenerator):
    """Sentence codes [M, D] of every test caption (fitted once) and classes."""
    return self._compiled(gen)["pool"]

  def _compiled(self, gen: gan_lib.RestoredGenerator) -> dict[str, Any]:
    if gen.damsm_dir not in self._per_damsm:
      step_fn = jax.jit(functools.partial(
          _eval_step, models=gen.models,
          quantization=self.config.eval.png_quantization))
      self._per_damsm[gen.damsm_dir] = {"step_fn": step_fn,
                                        "pool": self._encode_pool(gen)}
    return self._per_damsm[gen.damsm_dir]

  def _encode_pool(self, gen: gan_lib.RestoredGenerator):
    c = self.config
    rng = np.random.default_rng([c.eval.seed, 2])
    caps, lens, classes = [], [], []
    for i, options in enumerate(self.captions):
      for ids in options:
        cap, length = text_lib.fit_caption(ids, c.data.eval_words_num, rng,
                                           c.data.caption_truncation)
        caps.append(cap)
        lens.append(length)
        classes.append(self.class_ids[i])
    caps = np.stack(caps).astype(np.int32)
    lens = np.asarray(lens, np.int32)
    encode = jax.jit(lambda p, x, l: gen.models.text_model.apply(
        {"params": p}, x, l, train=False)[1])
    chunk = 256
    codes = []
    for start in range(0, len(caps), chunk):
      x, l = caps[start:start + chunk], lens[start:start + chunk]
      m = len(x)
      if m < chunk:
        x = np.concatenate([x, np.repeat(x[-1:], chunk - m, 0)])
        l = np.concatenate([l, np.repeat(l[-1:], chunk - m, 0)])
      codes.append(np.asarray(encode(gen.enc.text_params, x, l))[:m])
    return np.concatenate(codes), np.asarray(classes)

  # ------------------------------------------------------------- a step
  def run(self, step: int) -> dict[str, Any]:
    """Evaluates checkpoint ``step`` (-1: latest); writes eval_<step>.json."""
    c, e = self.config, self.config.eval
    t0 = time.monotonic()
    gen = gan_lib.restore_generator(c, self.workdir, step)
    step = gen.step
    logging.info("evaluating checkpoint step %d (%s): %d samples, batch %d, "
                 "%d px", step, gen.weights_description, e.num_samples,
                 e.batch_size, self.size)
    out = self._generate(gen, step)
    gen_seconds = time.monotonic() - t0
    result: dict[str, Any] = {
        "step": step, "num_samples": out.done, "batch_size": e.batch_size,
        "seed": e.seed, "image_size": self.size,
        "png_quantization": e.png_quantization,
        "eval_words_num": c.data.eval_words_num,
        "architecture": c.model.architecture, "refiner": c.model.refiner,
        "damsm_dir": gen.damsm_dir, "truncation": c.sample.truncation,
        "generator_weights": c.sample.weights,
        "generator_weights_used": gen.weights_used,
        "generator_weights_description": gen.weights_description}
    result.update(self._fid_result(out.fid_chunks))
    result.update(self._is_result(out.is_chunks, out.class_ids))
    result.update(self._r_precision_result(gen, out))
    result["generation_seconds"] = gen_seconds
    result["seconds"] = time.monotonic() - t0
    self._write(step, result, out.first_grid)
    return result

  def _generate(self, gen: gan_lib.RestoredGenerator,
                step: int) -> "_Generated":
    """``eval.num_samples`` images of ``gen``: their FID / IS features (fed
    to chunked feature functions), DAMSM codes and class ids, the first
    batch's grid, and the PNGs when ``eval.save_images``."""
    e = self.config.eval
    # restore_generator already placed them replicated on this mesh's devices.
    step_fn = self._compiled(gen)["step_fn"]
    z_key, ca_key = jax.random.key(e.seed), jax.random.key(e.seed + 1)
    batch_sharding = sharding.batch_sharded(self.mesh)
    out = _Generated(
        fid_chunks=(_Chunker(self.fid_fn, e.fid_batch_size, self.mesh)
                    if e.fid else None),
        is_chunks=(_Chunker(self.is_fn, e.fid_batch_size, self.mesh)
                   if self.is_fn is not None else None))
    image_dir = os.path.join(self.workdir, f"eval_{step}_images")
    if e.save_images and jax.process_index() == 0:
      os.makedirs(image_dir, exist_ok=True)
    for k in range(math.ceil(e.num_samples / e.batch_size)):
      host = self.batch_captions(k)
      batch = {key: _put_global(host[key], batch_sharding)
               for key in ("captions", "caption_lens")}
      images, codes, sent = step_fn(gen.g_params, gen.g_stats, batch, gen.enc,
                                    z_key, ca_key, k)
      images, codes, sent = (np.asarray(x) for x in
                             multihost_utils.process_allgather(
                                 (images, codes, sent), tiled=True))
      keep = min(e.batch_size, e.num_samples - out.done)
      pixels = out.add(images, keep, codes, sent, host["class_ids"])
      if e.save_images and jax.process_index() == 0:
        for j in range(keep):
          Image.fromarray(pixels[j]).save(
              os.path.join(image_dir, f"{out.done - keep + j:06d}.png"))
      if (k + 1) % 100 == 0:
        logging.info("generated %d / %d images", out.done, e.num_samples)
    return out

  def _fid_result(self, fid_chunks) -> dict[str, Any]:
    e = self.config.eval
    if fid_chunks is None:
      return {"fid": None, "fid_protocol": {"skipped": "config.eval.fid=False"}}
    feats = fid_chunks.result()
    mu_r, sigma_r = self.real_statistics()
    mu_g, sigma_g = fid_lib.statistics(feats)
    return {
        "fid": fid_lib.frechet_distance(mu_g, sigma_g, mu_r, sigma_r),
        "fid_protocol": {
            "weights": e.fid_weights or fid_inception.FID_PACKAGE_PIN,
            "resize": f"{self.fid_module.resize_mode} bilinear to "
                      f"{self.fid_module.input_size}",
            "reference_statistics": os.path.abspath(self.stats_path()),
            "paper_comparable": False, "note": FID_NOTE}}

  def _is_result(self, is_chunks, class_ids) -> dict[str, Any]:
    e = self.config.eval
    result: dict[str, Any] = {}
    if is_chunks is not None:
      logits = is_chunks.result()
      drop = self.is_protocol == "cub" and e.is_drop_last
      rng = np.random.default_rng([e.seed, 3]) if drop else None
      mean, std = is_lib.inception_score(logits, e.is_splits, from_logits=True,
                                         drop_last=drop, rng=rng)
      result.update({"is_mean": mean, "is_std": std, "is_splits": e.is_splits,
                     "is_drop_last": drop})
      if self.is_protocol == "shapes":
        result["shapes_caption_agreement"] = {
            "samples": shapes_classifier.caption_agreement(
                logits, np.concatenate(class_ids)),
            "real_test_images": self.shapes_real_agreement,
            "description": SHAPES_AGREEMENT_NOTE}
    result["is_protocol"] = self.is_info
    return result

  def _r_precision_result(self, gen, out: "_Generated") -> dict[str, Any]:
    e = self.config.eval
    pool, pool_classes = self.caption_pool(gen)
    rp = rprec_lib.r_precision(
        np.concatenate(out.image_codes), np.concatenate(out.sent_codes), pool,
        pool_classes, np.concatenate(out.class_ids),
        num_candidates=e.rprec_candidates, folds=e.rprec_folds,
        fold_slicing=e.rprec_fold_slice,
        rng=np.random.default_rng([e.seed, 4]))
    return {
        "r_precision_mean": rp["mean"], "r_precision_std": rp["std"],
        "r_precision_per_fold": [float(x) for x in rp["per_fold"]],
        "r_precision_fold_slicing": rp["fold_slicing"],
        "r_precision_description": rp["description"],
        "r_precision_paper_comparable": False,
        "r_precision_note": "DAMSM encoders of this run (the papers used the "
                            "released ones, which also trained their G)"}

  def _write(self, step: int, result: dict[str, Any], grid) -> None:
    weights = self.config.sample.weights
    tag = "eval" if weights == "ema" else f"eval_{weights}"   # TensorBoard
    scalars = {f"{tag}/r_precision_mean": result["r_precision_mean"],
               f"{tag}/r_precision_std": result["r_precision_std"]}
    if result["fid"] is not None:
      scalars[f"{tag}/fid"] = result["fid"]
    if "is_mean" in result:
      scalars.update({f"{tag}/is_mean": result["is_mean"],
                      f"{tag}/is_std": result["is_std"]})
    writer = metric_writer.MetricWriter(self.workdir)
    try:
      writer.write_scalars(step, scalars)
      if grid is not None:
        writer.write_images(step, {f"{tag}/samples": grid})
    finally:
      writer.close()
    if jax.process_index() == 0:
      path = eval_path(self.workdir, step, self.config.sample.weights)
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
      os.replace(tmp, path)
    summary = ("FID skipped" if result["fid"] is None
               else f"FID {result['fid']:.3f}")
    if "is_mean" in result:
      summary += f", IS {result['is_mean']:.3f} ± {result['is_std']:.3f}"
    summary += (f", R-precision {result['r_precision_mean']:.4f} ± "
                f"{result['r_precision_std']:.4f}")
    logging.info("eval step %d (%d samples, %.0f s): %s -> %s", step,
                 result["num_samples"], result["seconds"], summary,
                 eval_path(self.workdir, step, self.config.sample.weights))


def watch(evaluator: Evaluator) -> list[dict[str, Any]]:
  """Evaluates every checkpoint without eval_<step>.json, waiting for new ones.

  Returns when ``eval.watch_timeout_s`` pass with nothing new to evaluate.
  """
  e = evaluator.config.eval
  results = []
  deadline = time.monotonic() + e.watch_timeout_s
  while True:
    pending = [s for s in gan_lib.list_steps(evaluator.workdir)
               if not os.path.exists(eval_path(
                   evaluator.workdir, s, evaluator.config.sample.weights))]
    if pending:
      for step in pending:
        try:
          results.append(evaluator.run(step))
        except CheckpointError as err:  # e.g. deleted by max_to_keep meanwhile
          logging.warning("skipping checkpoint step %d: %s", step, err)
      deadline = time.monotonic() + e.watch_timeout_s
      continue
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      logging.info("no new checkpoint for %.0f s; stopping (%d evaluated)",
                   e.watch_timeout_s, len(results))
      return results
    time.sleep(min(e.watch_poll_s, remaining))


def evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Runs ``job = evaluate``: one step's result, or a list in watch mode."""
  evaluator = Evaluator(config, workdir)
  if config.eval.watch:
    return watch(evaluator)
  return evaluator.run(config.eval.step)
