"""The project's Inception-Score classifier for the embedded shapes dataset.

IS needs p(y|x) from a classifier of the dataset's classes; for CUB/COCO that
is a downloaded Inception (SPEC-eval §2). The shapes dataset has 56 classes
(main object kind x colour, ``input_pipeline.shapes.class_id``), so the
project trains its own small CNN on the shapes train split::

    x      = resize_bilinear(images, s)          [B, s, s, 3] in [-1, 1]
    h_0    = relu(conv3x3(x))                     width w
    h_i    = relu(conv3x3/2(h_{i-1}))            widths w, 2w, 4w, 8w (i = 1..4)
    logits = dense([mean_hw(h_4), max_hw(h_4)])  [B, 56]

trained with softmax cross-entropy (Adam 2e-3) on randomly cropped and flipped
renders, as the GAN sees them (rendered at 76/64 of ``s``, cropped to ``s``).
Its test accuracy (plain renders of the test split) is saved beside the
weights and reported with every IS computed with it. Scores from it measure
how recognisable and how varied the generated classes are; they are not
comparable with any published IS.

Files in the classifier directory: ``classifier.msgpack`` (flax-serialised
parameters) and ``classifier.json`` (architecture, training settings, test
accuracy).
"""

import functools
import json
import logging
import os
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from input_pipeline import pipeline as input_pipeline
from input_pipeline import shapes as shapes_lib
from input_pipeline import transforms

PARAMS_FILE = "classifier.msgpack"
META_FILE = "classifier.json"
NUM_CLASSES = len(shapes_lib.KINDS) * len(shapes_lib.OBJECT_COLOURS)
EVAL_BATCH_SIZE = 64   # batch of the test-split scoring (any size gives the same)


class ShapesClassifier(nn.Module):
  """conv3x3-ReLU, four stride-2 conv3x3-ReLU, mean+max pool, dense -> logits."""
  width: int = 32
  input_size: int = 64
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images [B, H, W, 3] in [-1, 1] (any size) -> logits [B, num_classes]."""
    b = images.shape[0]
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (self.input_size, self.input_size):
      x = jax.image.resize(x, (b, self.input_size, self.input_size, 3),
                           "bilinear")
    x = nn.relu(nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)),
                        name="conv0")(x))
    for i in range(4):
      x = nn.Conv(self.width * 2**i, (3, 3), strides=(2, 2),
                  padding=((1, 1), (1, 1)), name=f"conv{i + 1}")(x)
      x = nn.relu(x)
    pooled = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], -1)
    return nn.Dense(self.num_classes, name="logits")(pooled)


def _module(meta: dict[str, Any]) -> ShapesClassifier:
  return ShapesClassifier(width=int(meta["width"]),
                          input_size=int(meta["input_size"]),
                          num_classes=int(meta["num_classes"]))


def _template(module: ShapesClassifier):
  x = jnp.zeros((1, module.input_size, module.input_size, 3))
  return jax.eval_shape(module.init, jax.random.key(0), x)["params"]


def _batches(source, batch_size, size, seed, augment, num_epochs=None,
             drop_remainder=True):
  return input_pipeline.create_iterator(
      source, global_batch_size=batch_size, image_sizes=(size,),
      words_num=1, seed=seed, truncation="prefix", random_crop_flip=augment,
      shuffle=augment, drop_remainder=drop_remainder, num_epochs=num_epochs,
      mirror_captions=False)


def caption_agreement(logits, class_ids) -> dict[str, float]:
  """How often the classifier's top-1 class agrees with the captioned class.

  ``logits`` [N, 56], ``class_ids`` [N] (``kind · 8 + colour``, the main
  object of the caption). With ``pred = argmax(logits)``::

      class  = mean(pred == class_ids)                       (chance 1/56)
      kind   = mean(pred // 8 == class_ids // 8)              (chance 1/7)
      colour = mean(pred %  8 == class_ids %  8)              (chance 1/8)

  On generated images this measures whether the samples show the captioned
  shape and colour; read it against the same numbers on real test images.
  """
  pred = np.argmax(np.asarray(logits), axis=-1)
  cls = np.asarray(class_ids)
  n_col = len(shapes_lib.OBJECT_COLOURS)
  if pred.shape != cls.shape:
    raise ValueError(f"{pred.shape[0]} predictions for {cls.shape[0]} class ids")
  return {"class": float(np.mean(pred == cls)),
          "kind": float(np.mean(pred // n_col == cls // n_col)),
          "colour": float(np.mean(pred % n_col == cls % n_col)),
          "num_images": int(cls.size)}


def _test_source(config: ml_collections.ConfigDict, num_train: int,
                 size: int) -> shapes_lib.ShapesSource:
  """The shapes test split of ``config.data``, plain renders at ``size``, as
  the classifier is scored on (``num_train``: the train split it was built
  with; the test items do not depend on it)."""
  return shapes_lib.source_from_config(config.data, "test", size, num_train)


def _logits_and_classes(logits_fn: Callable, source, batch_size: int,
                        size: int) -> tuple[np.ndarray, np.ndarray]:
  logits, classes = [], []
  for batch in _batches(source, batch_size, size, 0, augment=False,
                        num_epochs=1, drop_remainder=False):
    logits.append(np.asarray(logits_fn(batch["images"][0])))
    classes.append(np.asarray(batch["class_ids"]))
  return np.concatenate(logits), np.concatenate(classes)


def accuracy(logits_fn: Callable, source, batch_size: int, size: int) -> float:
  """Top-1 accuracy of ``logits_fn`` on every item of ``source`` (plain renders)."""
  return caption_agreement(*_logits_and_classes(logits_fn, source, batch_size,
                                                size))["class"]


def test_split_agreement(config: ml_collections.ConfigDict,
                         logits_fn: Callable, meta: dict[str, Any]
                         ) -> dict[str, float]:
  """``caption_agreement`` of the classifier on the plain renders of the test
  split (the images its ``test_accuracy`` was measured on: its ``class``
  entry equals that accuracy)."""
  size = int(meta["input_size"])
  source = _test_source(config, int(meta["num_train"]), size)
  return caption_agreement(*_logits_and_classes(logits_fn, source,
                                                EVAL_BATCH_SIZE, size))


def train(config: ml_collections.ConfigDict, directory: str) -> dict[str, Any]:
  """Trains the classifier as ``config.eval.classifier_*`` say; saves it.

  Uses the shapes dataset of ``config.data`` (seed, captions) with
  ``eval.classifier_num_train`` training scenes (scenes depend only on
  (seed, split, index), so the GAN's training images are among them; the test
  split is disjoint). Returns the saved metadata (with ``test_accuracy``).
  """
  e, d = config.eval, config.data
  size = int(e.classifier_input_size)
  module = ShapesClassifier(width=int(e.classifier_width), input_size=size)
  train_source = shapes_lib.source_from_config(
      d, "train", transforms.load_size(size), e.classifier_num_train)
  test_source = _test_source(config, e.classifier_num_train, size)
  batch_size = min(int(e.classifier_batch_size), len(train_source))
  tx = optax.adam(2e-3)
  params = jax.jit(module.init)(jax.random.key(config.seed),
                                jnp.zeros((1, size, size, 3)))["params"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = module.apply({"params": p}, images)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  logging.info("training the shapes IS classifier (%d steps, batch %d, %d px, "
               "%d train scenes) into %s", e.classifier_steps, batch_size,
               size, len(train_source), directory)
  t0 = time.monotonic()
  it = _batches(train_source, batch_size, size, config.seed, augment=True)
  loss = float("nan")
  for i in range(int(e.classifier_steps)):
    batch = next(it)
    params, opt_state, loss = step(params, opt_state, batch["images"][0],
                                   batch["class_ids"])
    if (i + 1) % 250 == 0:
      logging.info("classifier step %d: loss %.4f", i + 1, float(loss))
  loss = float(loss)
  if not np.isfinite(loss):
    raise FloatingPointError(f"shapes classifier training diverged (loss "
                             f"{loss}); {directory} was not written")
  logits_fn = jax.jit(functools.partial(module.apply, {"params": params}))
  acc = accuracy(logits_fn, test_source, EVAL_BATCH_SIZE, size)
  meta = {"width": module.width, "input_size": size,
          "num_classes": module.num_classes, "steps": int(e.classifier_steps),
          "batch_size": batch_size, "num_train": len(train_source),
          "num_test": len(test_source), "shapes_seed": int(d.shapes_seed),
          "shapes_scenes": str(d.shapes_scenes),
          "final_train_loss": loss, "test_accuracy": acc,
          "train_seconds": time.monotonic() - t0}
  os.makedirs(directory, exist_ok=True)
  if jax.process_index() == 0:
    _atomic_write(os.path.join(directory, PARAMS_FILE),
                  flax.serialization.to_bytes(jax.device_get(params)))
    _atomic_write(os.path.join(directory, META_FILE),
                  json.dumps(meta, indent=1, sort_keys=True).encode())
  logging.info("shapes IS classifier: test accuracy %.4f on %d test images "
               "(%.0f s)", acc, len(test_source), meta["train_seconds"])
  return meta


def _atomic_write(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def exists(directory: str) -> bool:
  return all(os.path.isfile(os.path.join(directory, f))
             for f in (PARAMS_FILE, META_FILE))


def load(directory: str) -> tuple[Callable[[jax.Array], jax.Array],
                                  dict[str, Any]]:
  """(jitted fn(images [B,H,W,3] in [-1, 1]) -> logits [B, 56], metadata)."""
  paths = [os.path.join(directory, f) for f in (PARAMS_FILE, META_FILE)]
  for p in paths:
    if not os.path.isfile(p):
      raise FileNotFoundError(
          f"{p} is missing: {directory!r} is not a shapes classifier "
          "directory (config.eval.is_weights; leave it empty to train one)")
  with open(paths[1]) as f:
    meta = json.load(f)
  module = _module(meta)
  with open(paths[0], "rb") as f:
    try:
      params = flax.serialization.from_bytes(_template(module), f.read())
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{paths[0]} does not hold the classifier described by "
                       f"{paths[1]}: {e}") from e
  params = jax.tree.map(jnp.asarray, params)
  return jax.jit(functools.partial(module.apply, {"params": params})), meta


def load_or_train(config: ml_collections.ConfigDict, directory: str):
  """Loads the classifier in ``directory``; trains it there first if missing."""
  if not exists(directory):
    train(config, directory)
  return load(directory)
