"""DAMSM encoders: state, jitted steps, optimisers, loading (SPEC-dmgan §5.4).

The pieces several jobs share: ``pretrain_damsm`` trains with
:func:`train_step` and scores with :func:`encode_step` / :func:`retrieval_top1`;
``train_gan``, ``sample``, ``evaluate`` and ``convert`` read frozen encoders
with :func:`load_encoders` / :func:`encoder_variables`.

Reference optimiser (all defaults in ``configs/base.py``):

* Adam(lr, b1=0.5, b2=0.999, eps=1e-8), moments reset at the start of every
  epoch (``damsm.adam_reset_per_epoch``: the reference re-creates Adam);
* lr = ENCODER_LR * 0.98**e after e epochs, decayed while lr > ENCODER_LR/10;
* global-norm clip 0.25 on the text-encoder gradients only;
* the Inception trunk frozen (its parameters get no update) but run with batch
  statistics, updating its running statistics (``damsm.trunk_bn_train``).

A DAMSM workdir holds ``checkpoints/`` (:class:`DamsmState`), ``vocab.json``
and ``damsm_config.json`` (:func:`encoder_config`).
"""

import functools
import json
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from input_pipeline.text import Vocabulary
from t2igan_jax import checkpointing
from t2igan_jax import json_files
from t2igan_jax import numerics
from t2igan_jax import sharding
from t2igan_jax.errors import CheckpointError
from t2igan_jax.errors import ConfigError
from t2igan_jax.evaluation import r_precision
from t2igan_jax.losses import damsm as damsm_losses
from t2igan_jax.models import image_encoder as image_encoder_lib
from t2igan_jax.models import text_encoder as text_encoder_lib

VOCAB_FILE = "vocab.json"
ENCODER_CONFIG_FILE = "damsm_config.json"
CHECKPOINT_DIR = "checkpoints"
# The loss terms config.debug_nonfinite_term may name in pretrain_damsm.
LOSS_TERMS = ("w_loss0", "w_loss1", "s_loss0", "s_loss1")


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


def init_opt_state(txs, params, train_trunk):
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
  opt_state = init_opt_state(make_optimizers(config), params,
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
    fresh = init_opt_state(txs, state.params, train_trunk)
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
    terms = damsm_losses.damsm_loss_terms(
        config.damsm, words, sent, local, glob, batch["caption_lens"],
        batch["class_ids"])
    terms = numerics.poison_terms(config, terms, state.step)
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
  terms = damsm_losses.damsm_loss_terms(
      config.damsm, words, sent, local, glob, batch["caption_lens"],
      batch["class_ids"])
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


def vocab_meta(vocab: Vocabulary) -> dict[str, Any]:
  """The checkpoint metadata that ties a DAMSM to its vocabulary."""
  return {"vocab_fingerprint": vocab.fingerprint(), "n_words": vocab.n_words}


def encoder_config(config) -> dict[str, Any]:
  """The config sections needed to rebuild the encoders (saved with them)."""
  return {"text_encoder": config.text_encoder.to_dict(),
          "image_encoder": config.image_encoder.to_dict(),
          "damsm": {"image_size": config.damsm.image_size,
                    "words_num": config.damsm.words_num},
          "data": {"name": config.data.name}}


def write_json(path: str, obj: Any) -> None:
  """``obj`` as JSON at ``path``, written atomically (tmp file + rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


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
