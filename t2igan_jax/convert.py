"""Import released PyTorch checkpoints (DM-GAN, FF-GAN, AttnGAN, DAMSM) into a workdir.

    python -m t2igan_jax.convert --config=configs/dmgan_bird.py \
        --config.data.data_dir=/data/birds \
        [--netG=models/bird_DMGAN.pth] \
        --text_encoder=DAMSMencoders/bird/text_encoder200.pth \
        [--image_encoder=DAMSMencoders/bird/image_encoder200.pth] \
        [--netD=netD0.pth,netD1.pth,netD2.pth] --workdir=/ckpt/dmgan_bird

writes

* ``<workdir>/damsm/``: a DAMSM directory exactly as ``pretrain_damsm`` leaves
  one (``vocab.json`` = the dataset vocabulary, ``damsm_config.json``,
  ``checkpoints/0``) holding the converted text and image encoders;
* ``<workdir>/checkpoints/0``: a normal GAN checkpoint (``gan_lib.GanState``)
  whose meta names ``<workdir>/damsm``, so ``job=sample``, ``job=evaluate`` and
  ``job=train_gan`` (fine-tuning) load it like any other
  (``--config.gan.damsm_dir=<workdir>/damsm``; left empty, GAN jobs use
  ``<workdir>/damsm``, recognised by its ``converted.json``, and never
  pretrain into it);
* ``<workdir>/converted.json``: the source files, the parsed epoch and what
  was initialised rather than converted.

Without ``--netG`` only ``<workdir>/damsm/`` is written: AttnGAN's released
DAMSM encoders for training a GAN from scratch on that workdir.

DF-GAN (``--config=configs/dfgan_bird.py``, ``model.architecture='dfgan'``):
``--netG`` names the official ``state_epoch_*.pth`` (``netG``, ``netD``,
``netC`` and both Adam states, read by ``dfgan_torch.load_checkpoint``; no
``--netD``). Its G, D, C and optimiser states become checkpoint step 0 of a
``dfgan_lib.DfganState`` (no EMA: the file's G is the one DF-GAN samples);
tensors the file holds beyond them are listed as ``unconsumed`` in
``converted.json`` and a warning. DF-GAN uses AttnGAN's DAMSM text encoder
(``--text_encoder``, as above).

AttnGAN's own generators are narrower than the configs (GF_DIM 32 for birds,
48 for COCO; ``model.ngf`` 64): the width is read from ``h_net1.fc.0.weight``
and a mismatch stops with the override to add (``--config.model.ngf=32``),
which every later job on the workdir needs too.

What goes where:

* G: the released ``netG`` files hold only the *averaged* (EMA) generator the
  authors sampled with (``load_params(netG, avg_param_G)`` before saving), so
  the raw G and its EMA both start from it (``g_params = g_ema``); G's
  BatchNorm running statistics become ``g_stats``.
* D: from ``--netD`` (one file per stage, SN ``weight_bar`` -> kernel,
  ``weight_u`` -> the SN state, so the next forward equals PyTorch's next
  forward; ``weight_v`` is never read by the reference and is dropped), else
  freshly initialised (the released DM-GAN/FF-GAN/AttnGAN files have no D).
* Optimisers: fresh Adam states; step 0 (fine-tuning runs a fresh schedule of
  ``gan.epochs``). The epoch in a file name such as ``netG_epoch_650.pth`` is
  recorded in ``converted.json`` and the checkpoint meta (``source_epoch``), not
  used as the step.
* DAMSM: ``text_encoder*.pth`` -> the bi-LSTM (gate blocks i, f, g, o;
  ``bias_ih + bias_hh`` on the hidden-side Dense; the ``_reverse`` tensors to the
  backward cell); ``image_encoder*.pth`` -> the Inception trunk + the two
  projections. Without ``--image_encoder`` the file ``image_encoder<N>.pth``
  beside the text encoder is used when present; otherwise the image encoder is
  randomly initialised, which ``converted.json`` records and a warning states:
  sampling is unaffected, but R-precision and the DAMSM loss of fine-tuning
  need the real encoder.

Every key of every file is accounted for: consumed, ``num_batches_tracked``
(ignored), an SN ``weight_v`` (not needed, above), or one of FF-GAN's known-dead
memory keys (``FF_GAN_DEAD_KEYS``). Any other key, a missing key or a shape
mismatch raises ``CheckpointError`` naming the file, the key, its shape and the
expected shape. A leading ``module.`` (DataParallel) is stripped.

torch is not needed: files are read with ``t2igan_jax.torch_io`` (zip, legacy
pre-1.6 and TorchScript formats).
"""

import dataclasses
import functools
import json
import logging
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2igan_jax import torch_io
from t2igan_jax.errors import CheckpointError, ConfigError

DAMSM_SUBDIR = "damsm"
CONVERTED_FILE = "converted.json"

# FF-GAN keeps DM-GAN's memory modules in NEXT_STAGE_G but never calls them
# (SPEC-ffgan §1, §7): these per-stage keys are dropped.
FF_GAN_DEAD_KEYS = ("A.weight", "B.weight", "M_r.0.weight", "M_r.0.bias",
                    "M_w.0.weight", "M_w.0.bias", "key.0.weight", "key.0.bias",
                    "value.0.weight", "value.0.bias", "response_gate.0.weight",
                    "response_gate.0.bias")

# ------------------------------------------------------------ layout rules
# kind -> {flax leaf: torch leaf}; the array transform is chosen by kind.
_LEAVES = {
    "conv": {"kernel": "weight", "bias": "bias"},
    "dense": {"kernel": "weight", "bias": "bias"},
    "conv1d": {"kernel": "weight", "bias": "bias"},
    "conv1x1": {"kernel": "weight", "bias": "bias"},
    "bn": {"scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"},
    "sn_conv": {"kernel": "weight_bar", "bias": "bias", "u": "weight_u"},
}


def torch_shape(kind: str, leaf: str, flax_shape: tuple) -> tuple:
  """The PyTorch shape of a Flax leaf of a module of ``kind``."""
  if leaf != "kernel":
    return tuple(flax_shape)
  if kind in ("conv", "sn_conv"):         # HWIO <- OIHW
    kh, kw, ci, co = flax_shape
    return (co, ci, kh, kw)
  if kind == "dense":                     # (I, O) <- Linear (O, I)
    return tuple(flax_shape[::-1])
  if kind == "conv1d":                    # (I, O) <- Conv1d (O, I, 1)
    return (flax_shape[1], flax_shape[0], 1)
  if kind == "conv1x1":                   # (I, O) <- Conv2d 1x1 (O, I, 1, 1)
    return (flax_shape[1], flax_shape[0], 1, 1)
  raise ValueError(kind)


def to_flax(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
  """PyTorch layout -> Flax layout (see ``torch_shape``)."""
  value = np.asarray(value, np.float32)
  if leaf != "kernel":
    return value
  if kind in ("conv", "sn_conv"):
    return value.transpose(2, 3, 1, 0)
  if kind == "dense":
    return value.T
  if kind == "conv1d":
    return value[:, :, 0].T
  if kind == "conv1x1":
    return value[:, :, 0, 0].T
  raise ValueError(kind)


Rule = tuple[str, Callable[[re.Match], str], str]


def _r(pattern: str, template, kind: str) -> Rule:
  fn = template if callable(template) else (lambda m, t=template: m.expand(t))
  return (pattern, fn, kind)


# Flax module path ('/'-joined) -> (torch module prefix, kind).
GENERATOR_RULES: tuple[Rule, ...] = (
    _r(r"ca_net/fc", "ca_net.fc", "dense"),
    _r(r"h_net1/fc", "h_net1.fc.0", "dense"),
    _r(r"h_net1/fc_bn", "h_net1.fc.1", "bn"),
    _r(r"h_net1/(upsample\d+)/conv", r"h_net1.\1.1", "conv"),
    _r(r"h_net1/(upsample\d+)/bn", r"h_net1.\1.2", "bn"),
    _r(r"(img_net\d+)/conv", r"\1.img.0", "conv"),
    _r(r"(h_net\d+)/memory_writer/(A|B)", r"\1.\2", "dense"),
    _r(r"(h_net\d+)/memory_writer/(M_w|M_r)", r"\1.\2.0", "conv1d"),
    _r(r"(h_net\d+)/key_addressing/key", r"\1.key.0", "conv1d"),
    _r(r"(h_net\d+)/value_reading/value", r"\1.value.0", "conv1d"),
    _r(r"(h_net\d+)/response_gate/conv", r"\1.response_gate.0", "conv"),
    _r(r"(h_net\d+)/residual_(\d+)/conv1", r"\1.residual.\2.block.0", "conv"),
    _r(r"(h_net\d+)/residual_(\d+)/bn1", r"\1.residual.\2.block.1", "bn"),
    _r(r"(h_net\d+)/residual_(\d+)/conv2", r"\1.residual.\2.block.3", "conv"),
    _r(r"(h_net\d+)/residual_(\d+)/bn2", r"\1.residual.\2.block.4", "bn"),
    _r(r"(h_net\d+)/upsample/conv", r"\1.upsample.1", "conv"),
    _r(r"(h_net\d+)/upsample/bn", r"\1.upsample.2", "bn"),
    _r(r"(h_net\d+)/ff_block/w_att/conv_context", r"\1.w_att.conv_context",
       "conv1x1"),
    _r(r"(h_net\d+)/ff_block/affine/(conv|conv_weight|conv_bias)",
       r"\1.affine.\2", "conv"),
    _r(r"(h_net\d+)/s_att/conv_context", r"\1.s_att.conv_context", "conv1x1"),
    _r(r"(h_net\d+)/att/conv_context", r"\1.att.conv_context", "conv1x1"),
)

DISCRIMINATOR_RULES: tuple[Rule, ...] = (
    _r(r"encoder/img_code_s16_(\d)",
       lambda m: f"img_code_s16.{2 * int(m.group(1))}.module", "sn_conv"),
    _r(r"encoder/(img_code_s\d+)", r"\1.0.module", "sn_conv"),
    _r(r"encoder/(img_code_s\d+_\d)", r"\1.0.module", "sn_conv"),
    _r(r"uncond_dnet/outlogits", "UNCOND_DNET.outlogits.0", "conv"),
    _r(r"cond_dnet/joint_conv", "COND_DNET.jointConv.0.module", "sn_conv"),
    _r(r"cond_dnet/outlogits", "COND_DNET.outlogits.0", "conv"),
)


@dataclasses.dataclass(frozen=True)
class Target:
  """Where one PyTorch tensor goes."""
  collection: str          # 'params' | 'batch_stats'
  path: tuple              # Flax path inside the collection
  kind: str
  leaf: str
  shape: tuple             # expected PyTorch shape


def key_map(shapes: Mapping[str, Any], rules: Sequence[Rule]) -> dict[str, Target]:
  """PyTorch key -> Target for every leaf of ``shapes`` ({'params', 'batch_stats'} trees).

  Raises ValueError for a Flax leaf no rule covers (a model the converter does
  not know).
  """
  out = {}
  for collection in ("params", "batch_stats"):
    tree = shapes.get(collection, {})
    for path, leaf_value in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(str(p.key) for p in path)
      module, leaf = "/".join(keys[:-1]), keys[-1]
      for pattern, template, kind in rules:
        m = re.fullmatch(pattern, module)
        if m and leaf in _LEAVES[kind]:
          torch_key = f"{template(m)}.{_LEAVES[kind][leaf]}"
          out[torch_key] = Target(collection, keys, kind, leaf,
                                  torch_shape(kind, leaf, leaf_value.shape))
          break
      else:
        raise ValueError(f"no PyTorch name for the Flax variable "
                         f"{collection}/{'/'.join(keys)}")
  return out


def strip_data_parallel(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops a leading ``module.`` (nn.DataParallel) when every key has it."""
  if state and all(k.startswith("module.") for k in state):
    return {k[len("module."):]: v for k, v in state.items()}
  return dict(state)


def _set(tree: dict, keys: tuple, value) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def _fmt(keys: Sequence[str], limit: int = 12) -> str:
  keys = list(keys)
  more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def convert_state(state: Mapping[str, np.ndarray], targets: Mapping[str, Target],
                  *, source: str, what: str,
                  ignored: Callable[[str], bool] = lambda k: False) -> dict:
  """Maps a PyTorch state dict onto Flax collections, checking every key.

  ``ignored(key)`` marks keys that are accounted for but not used (known-dead
  or redundant). Returns ``{'params': ..., 'batch_stats': ...}``.
  """
  state = strip_data_parallel(state)
  used = {k for k in state if not k.endswith(".num_batches_tracked")
          and not ignored(k)}
  missing = sorted(set(targets) - used)
  unknown = sorted(used - set(targets))
  problems = []
  if missing:
    problems.append("missing keys (expected shape): " + _fmt(
        f"{k} {targets[k].shape}" for k in missing))
  if unknown:
    problems.append("unknown keys (shape): " + _fmt(
        f"{k} {tuple(np.shape(state[k]))}" for k in unknown))
  for k in sorted(set(targets) & used):
    got = tuple(np.shape(state[k]))
    if got != targets[k].shape:
      problems.append(f"shape mismatch: {k} has shape {got}, expected "
                      f"{targets[k].shape}")
  if problems:
    raise CheckpointError(
        f"{source} does not fit the {what}: " + "; ".join(problems) +
        " (check the file and the config: model.refiner, model.ngf, "
        "model.r_num, data.branch_num, ...)")
  out: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for k, t in targets.items():
    _set(out[t.collection], t.path, to_flax(t.kind, t.leaf, state[k]))
  return out


def _read(path: str, what: str) -> dict[str, np.ndarray]:
  if not path:
    raise ConfigError(f"no {what} file given")
  state = torch_io.load(path)
  logging.info("read %s %s: %d tensors", what, path, len(state))
  return state


def _shapes(fn, *args) -> dict:
  variables = jax.eval_shape(fn, *args)
  return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


# ----------------------------------------------------------------- generator
def generator_shapes(config) -> dict:
  from t2igan_jax.models import generator as generator_lib  # pylint: disable=g-import-not-at-top
  g = generator_lib.generator_from_config(config)
  b, t, e = 2, config.data.words_num, config.text_encoder.embedding_dim
  return _shapes(lambda: g.init(
      {"params": jax.random.key(0), "noise": jax.random.key(0)},
      jnp.zeros((b, config.model.z_dim)), jnp.zeros((b, e)),
      jnp.zeros((b, t, e)), jnp.zeros((b, t), bool), train=False))


def generator_ignored(config) -> Callable[[str], bool]:
  """FF-GAN's dead memory keys (``h_net<k>.<FF_GAN_DEAD_KEYS>``), else nothing."""
  if config.model.refiner != "ffblock":
    return lambda k: False
  pattern = re.compile(r"h_net(\d+)\.(" + "|".join(
      re.escape(k) for k in FF_GAN_DEAD_KEYS) + r")")

  def ignored(key):
    m = pattern.fullmatch(key)
    return bool(m) and 2 <= int(m.group(1)) <= config.data.branch_num
  return ignored


WIDTH_KEY = "h_net1.fc.0.weight"   # Linear(z + c, GF_DIM * 16 * 4 * 4 * 2)


def inferred_ngf(state: Mapping[str, np.ndarray], targets: Mapping[str, Target],
                 config) -> int | None:
  """GF_DIM of the file's generator, read from ``WIDTH_KEY``'s rows.

  None when the file has no such key or its width is the config's (or is no
  whole multiple of it): the key-by-key check then reports what is wrong.
  """
  state = strip_data_parallel(state)
  if WIDTH_KEY not in state or WIDTH_KEY not in targets:
    return None
  got, expected = np.shape(state[WIDTH_KEY]), targets[WIDTH_KEY].shape
  if len(got) != 2 or got[1] != expected[1] or got[0] == expected[0]:
    return None
  per_ngf = expected[0] // config.model.ngf
  if got[0] % per_ngf:
    return None
  return got[0] // per_ngf


def check_generator_width(state: Mapping[str, np.ndarray],
                          targets: Mapping[str, Target], config,
                          source: str) -> None:
  """ConfigError naming ``--config.model.ngf=<N>`` when the file's generator is
  GF_DIM N wide and the config's another (AttnGAN's released generators: 32
  for birds, 48 for COCO; DM-GAN's and the configs': 64)."""
  ngf = inferred_ngf(state, targets, config)
  if ngf is not None:
    raise ConfigError(
        f"{source} holds a generator of width GF_DIM {ngf} ({WIDTH_KEY} has "
        f"shape {tuple(np.shape(strip_data_parallel(state)[WIDTH_KEY]))}), but "
        f"config.model.ngf is {config.model.ngf}: add --config.model.ngf={ngf} "
        "(here and to every later job on this workdir: sample, evaluate, "
        "train_gan)")


def convert_generator(state: Mapping[str, np.ndarray], config, *,
                      source: str = "netG") -> dict:
  """``netG`` state dict -> ``{'params', 'batch_stats'}`` of ``Generator``."""
  targets = key_map(generator_shapes(config), GENERATOR_RULES)
  check_generator_width(state, targets, config, source)
  return convert_state(state, targets, source=source,
                       what=f"'{config.model.refiner}' generator "
                       f"({config.data.branch_num} stages, ngf "
                       f"{config.model.ngf}, r_num {config.model.r_num})",
                       ignored=generator_ignored(config))


# ------------------------------------------------------------ discriminators
def discriminator_shapes(config, stage: int) -> dict:
  from input_pipeline import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax.models import discriminator as discriminator_lib  # pylint: disable=g-import-not-at-top
  d = discriminator_lib.Discriminator(stage=stage, ndf=config.model.ndf)
  size = input_pipeline.stage_sizes(config)[stage]
  x = jnp.zeros((2, size, size, 3))
  sent = jnp.zeros((2, config.text_encoder.embedding_dim))
  return _shapes(lambda: d.init({"params": jax.random.key(0)}, x, sent,
                                method=gan_lib.g_step_heads))


def convert_discriminator(state: Mapping[str, np.ndarray], config, stage: int,
                          *, source: str = "netD") -> dict:
  """``netD<stage>`` (DM-GAN SN discriminator) -> ``{'params', 'batch_stats'}``."""
  targets = key_map(discriminator_shapes(config, stage), DISCRIMINATOR_RULES)
  out = convert_state(
      state, targets, source=source,
      what=f"stage-{stage} discriminator (ndf {config.model.ndf})",
      ignored=lambda k: k.endswith(".module.weight_v"))
  return out


# ---------------------------------------------------------------- DAMSM
LSTM_GATES = ("i", "f", "g", "o")   # PyTorch's row-block order


def convert_text_encoder(state: Mapping[str, np.ndarray], config, n_words: int,
                         *, source: str = "text_encoder") -> dict:
  """``text_encoder*.pth`` (RNN_ENCODER) -> TextEncoder ``params``.

  Checks the vocabulary size (``n_words`` = the dataset's) against the
  embedding rows, and ``config.text_encoder.{word_dim, embedding_dim}``
  against the tensors.
  """
  state = strip_data_parallel(state)
  te = config.text_encoder
  hidden = te.embedding_dim // 2
  expected = {"encoder.weight": (n_words, te.word_dim)}
  for sfx in ("", "_reverse"):
    expected[f"rnn.weight_ih_l0{sfx}"] = (4 * hidden, te.word_dim)
    expected[f"rnn.weight_hh_l0{sfx}"] = (4 * hidden, hidden)
    expected[f"rnn.bias_ih_l0{sfx}"] = (4 * hidden,)
    expected[f"rnn.bias_hh_l0{sfx}"] = (4 * hidden,)
  emb = state.get("encoder.weight")
  if emb is not None and np.ndim(emb) == 2:
    if emb.shape[0] != n_words:
      raise CheckpointError(
          f"{source}: encoder.weight has {emb.shape[0]} rows (a vocabulary of "
          f"{emb.shape[0]} words) but the dataset vocabulary has {n_words} "
          "words: the text encoder was trained on another captions.pickle "
          "(check config.data.name / config.data.data_dir)")
    if emb.shape[1] != te.word_dim:
      raise ConfigError(
          f"{source}: encoder.weight has shape {emb.shape}: word vectors of "
          f"{emb.shape[1]}, but config.text_encoder.word_dim is {te.word_dim}")
  hh = state.get("rnn.weight_hh_l0")
  if hh is not None and np.ndim(hh) == 2 and hh.shape[1] * 2 != te.embedding_dim:
    raise ConfigError(
        f"{source}: rnn.weight_hh_l0 has shape {hh.shape} (hidden size "
        f"{hh.shape[1]} per direction), but config.text_encoder.embedding_dim "
        f"is {te.embedding_dim} (expected 2 x hidden = {2 * hh.shape[1]})")
  missing = sorted(set(expected) - set(state))
  unknown = sorted(set(state) - set(expected))
  bad = [f"{k} has shape {tuple(np.shape(state[k]))}, expected {s}"
         for k, s in expected.items()
         if k in state and tuple(np.shape(state[k])) != s]
  if missing or unknown or bad:
    raise CheckpointError(
        f"{source} is not a DAMSM text encoder (RNN_ENCODER) state dict: "
        f"missing {_fmt(missing)}; unknown {_fmt(unknown)}; {'; '.join(bad)}")
  f32 = lambda k: np.asarray(state[k], np.float32)  # noqa: E731
  params = {"embedding": {"embedding": f32("encoder.weight")}}
  for cell, sfx in (("forward_cell", ""), ("backward_cell", "_reverse")):
    w_ih, w_hh = f32(f"rnn.weight_ih_l0{sfx}"), f32(f"rnn.weight_hh_l0{sfx}")
    bias = f32(f"rnn.bias_ih_l0{sfx}") + f32(f"rnn.bias_hh_l0{sfx}")
    p = {}
    for k, gate in enumerate(LSTM_GATES):
      rows = slice(k * hidden, (k + 1) * hidden)
      p[f"i{gate}"] = {"kernel": w_ih[rows].T.copy()}
      p[f"h{gate}"] = {"kernel": w_hh[rows].T.copy(), "bias": bias[rows].copy()}
    params[cell] = p
  return params


def convert_image_encoder(state: Mapping[str, np.ndarray], config, *,
                          source: str = "image_encoder") -> dict:
  """``image_encoder*.pth`` (CNN_ENCODER: Inception-v3 + emb heads) -> ImageEncoder variables."""
  from t2igan_jax.models import image_encoder as image_encoder_lib  # pylint: disable=g-import-not-at-top
  if config.image_encoder.backbone != "inception":
    raise ConfigError(
        f"{source} is an Inception-v3 DAMSM image encoder, but "
        f"config.image_encoder.backbone is {config.image_encoder.backbone!r} "
        "(expected 'inception')")
  state = strip_data_parallel(state)
  try:
    variables = image_encoder_lib.load_image_encoder(state)
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{source} does not fit the DAMSM image encoder "
                          f"(CNN_ENCODER): {e}") from e
  d = variables["params"]["emb_cnn_code"]["bias"].shape[0]
  if d != config.text_encoder.embedding_dim:
    raise ConfigError(
        f"{source}: emb_cnn_code has {d} outputs, but "
        f"config.text_encoder.embedding_dim is {config.text_encoder.embedding_dim}")
  return variables


# --------------------------------------------------------------- the job
def parse_epoch(path: str) -> int | None:
  """The epoch in a reference file name (``netG_epoch_650.pth``,
  ``text_encoder200.pth``), or None."""
  m = re.search(r"(\d+)\.pth?$", os.path.basename(path or ""))
  return int(m.group(1)) if m else None


def sibling_image_encoder(text_encoder_path: str) -> str | None:
  """``.../image_encoder<N>.pth`` beside ``.../text_encoder<N>.pth``, if it exists."""
  base = os.path.basename(text_encoder_path)
  if not base.startswith("text_encoder"):
    return None
  candidate = os.path.join(os.path.dirname(text_encoder_path),
                           "image_encoder" + base[len("text_encoder"):])
  return candidate if os.path.isfile(candidate) else None


def _shape(v) -> tuple:
  return tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))


def _check_same_tree(converted, reference, what: str) -> None:
  """The converted variables have exactly the structure/shapes of ``reference``."""
  flat_c = {jax.tree_util.keystr(p): _shape(v) for p, v in
            jax.tree_util.tree_flatten_with_path(converted)[0]}
  flat_r = {jax.tree_util.keystr(p): _shape(v) for p, v in
            jax.tree_util.tree_flatten_with_path(reference)[0]}
  if flat_c != flat_r:
    diff = sorted(set(flat_c.items()) ^ set(flat_r.items()))
    raise CheckpointError(f"converted {what} does not match the model's "
                          f"variables: {diff[:6]}")


def _as_device(tree, like):
  return jax.tree.map(lambda v, r: jnp.asarray(v, r.dtype), tree, like)


def _fill_from_abstract(abstract, **fields):
  """``abstract`` (eval_shape of a create_state) with ``fields`` set; any other
  field (step and counters such as ``nonfinite_skipped``) starts at zero."""
  state = abstract.replace(**fields)
  return jax.tree.map(
      lambda x: jnp.zeros(x.shape, x.dtype)
      if isinstance(x, jax.ShapeDtypeStruct) else x, state)


def damsm_state(config, text_model, image_model, text_params, image_vars):
  """A ``DamsmState`` as ``damsm_lib.create_state`` makes one (same RNG
  splits, fresh optimiser), holding the converted encoders. Only a missing
  image encoder is initialised (jitted), so nothing else is compiled."""
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  key = jax.random.key(config.seed)
  abstract = jax.eval_shape(functools.partial(
      damsm_lib.create_state, config, text_model, image_model), key)
  _, image_rng, state_rng = jax.random.split(key, 3)
  if image_vars is None:
    size = config.damsm.image_size
    image_vars = jax.jit(lambda r: image_model.init(
        {"params": r}, jnp.zeros((2, size, size, 3)), train_trunk_bn=False))(
            image_rng)
  _check_same_tree(text_params, abstract.params["text_encoder"], "text encoder")
  _check_same_tree(image_vars["params"], abstract.params["image_encoder"],
                   "image encoder")
  _check_same_tree(image_vars.get("batch_stats", {}), abstract.batch_stats,
                   "image encoder statistics")
  params = _as_device({"text_encoder": text_params,
                       "image_encoder": image_vars["params"]}, abstract.params)
  state = _fill_from_abstract(
      abstract, params=params,
      batch_stats=_as_device(image_vars.get("batch_stats", {}),
                             abstract.batch_stats),
      opt_state=damsm_lib.init_opt_state(
          damsm_lib.make_optimizers(config), params,
          config.image_encoder.train_trunk),
      rng=state_rng)
  _check_same_tree(state, abstract, "DAMSM state")
  return state


def gan_state(config, models, g_vars, d_vars):
  """A ``GanState`` as ``gan_lib.create_state`` makes one (same RNG splits,
  fresh Adam states), with G (raw and EMA) and, when given, the Ds converted.
  Only missing Ds are initialised (the whole create_state is then jitted)."""
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  key = jax.random.key(config.seed)
  abstract = jax.eval_shape(functools.partial(gan_lib.create_state, models),
                            key)
  _, _, state_rng = jax.random.split(key, 3)
  _check_same_tree(g_vars["params"], abstract.g_params, "generator")
  _check_same_tree(g_vars["batch_stats"], abstract.g_stats, "generator statistics")
  g_params = _as_device(g_vars["params"], abstract.g_params)
  if d_vars:
    d_params, d_stats = [], []
    for i, v in enumerate(d_vars):
      _check_same_tree(v["params"], abstract.d_params[i], f"discriminator {i}")
      _check_same_tree({"batch_stats": v["batch_stats"]}, abstract.d_stats[i],
                       f"discriminator {i} SN state")
      d_params.append(_as_device(v["params"], abstract.d_params[i]))
      d_stats.append(_as_device({"batch_stats": v["batch_stats"]},
                                abstract.d_stats[i]))
  else:
    fresh = jax.jit(functools.partial(gan_lib.create_state, models))(key)
    d_params, d_stats = fresh.d_params, fresh.d_stats
  g_tx, d_tx = gan_lib.make_optimizers(config)
  state = _fill_from_abstract(
      abstract, g_params=g_params, g_ema=g_params,
      g_stats=_as_device(g_vars["batch_stats"], abstract.g_stats),
      d_params=d_params, d_stats=d_stats, g_opt=g_tx.init(g_params),
      d_opt=[d_tx.init(p) for p in d_params], rng=state_rng)
  _check_same_tree(state, abstract, "GAN state")
  return state


def read_dfgan(config, path: str) -> dict[str, Any]:
  """An official DF-GAN ``state_epoch_*.pth`` for ``config``
  (``dfgan_torch.load_checkpoint``); warns about unconsumed tensors."""
  from t2igan_jax import dfgan_job  # pylint: disable=g-import-not-at-top
  from t2igan_jax import dfgan_torch  # pylint: disable=g-import-not-at-top
  loaded = dfgan_torch.load_checkpoint(path, dfgan_job.dfgan_config(config))
  if loaded["unconsumed"]:
    logging.warning("%s: %d entries not used (listed in converted.json): %s",
                    path, len(loaded["unconsumed"]), loaded["unconsumed"][:8])
  if loaded["epoch"] is None:
    loaded["epoch"] = parse_epoch(path)
  return loaded


def dfgan_state(config, loaded):
  """A ``DfganState`` as ``dfgan_job.create_state`` makes one (same RNG
  split) holding the file's G, D + C and Adam states (fresh ones when the
  file has none); step 0."""
  from t2igan_jax import dfgan_job  # pylint: disable=g-import-not-at-top
  from t2igan_jax import dfgan_lib  # pylint: disable=g-import-not-at-top
  cfg = dfgan_job.dfgan_config(config)
  key = jax.random.key(config.seed)
  abstract = jax.eval_shape(functools.partial(dfgan_lib.create_state, cfg), key)
  _check_same_tree(loaded["g_params"], abstract.g_params, "DF-GAN NetG")
  _check_same_tree(loaded["d_params"], abstract.d_params, "DF-GAN NetD/NetC")
  g_params = _as_device(loaded["g_params"], abstract.g_params)
  d_params = _as_device(loaded["d_params"], abstract.d_params)
  g_tx, d_tx = dfgan_lib.make_optimizers(cfg)
  g_opt = loaded["g_opt"] if loaded["g_opt"] is not None else g_tx.init(g_params)
  d_opt = loaded["d_opt"] if loaded["d_opt"] is not None else d_tx.init(d_params)
  state = _fill_from_abstract(
      abstract, g_params=g_params, d_params=d_params,
      g_opt=_as_device(g_opt, abstract.g_opt),
      d_opt=_as_device(d_opt, abstract.d_opt), rng=jax.random.split(key)[1])
  _check_same_tree(state, abstract, "DF-GAN state")
  return state


def write_damsm_dir(config, damsm_dir: str, vocab, text_state, image_state, *,
                    sources: dict) -> None:
  """A DAMSM directory (as ``pretrain_damsm`` writes) from converted encoders."""
  from input_pipeline import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  os.makedirs(damsm_dir, exist_ok=True)
  ckpt_dir = os.path.join(damsm_dir, damsm_lib.CHECKPOINT_DIR)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise CheckpointError(f"{ckpt_dir} already holds checkpoints; convert "
                          "into a new --workdir")
  text_model, image_model = damsm_lib.build_models(config, vocab.n_words)
  text_params = convert_text_encoder(text_state, config, vocab.n_words,
                                     source=sources["text_encoder"])
  image_vars = None
  if image_state is not None:
    image_vars = convert_image_encoder(image_state, config,
                                       source=sources["image_encoder"])
  state = damsm_state(config, text_model, image_model, text_params, image_vars)
  damsm_lib.write_json(os.path.join(damsm_dir, damsm_lib.VOCAB_FILE),
                             vocab.to_json())
  damsm_lib.write_json(
      os.path.join(damsm_dir, damsm_lib.ENCODER_CONFIG_FILE),
      damsm_lib.encoder_config(config))
  source = input_pipeline.get_source(config, "train", config.damsm.image_size)
  data_iter = input_pipeline.create_train_iterator(
      config, source, global_batch_size=config.damsm.batch_size,
      image_sizes=(config.damsm.image_size,), words_num=config.damsm.words_num)
  meta = {"job": "pretrain_damsm", **damsm_lib.vocab_meta(vocab),
          "encoders": damsm_lib.encoder_config(config),
          "converted_from": sources}
  ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=1000, interval=1)
  try:
    ckpt.save(0, state, data_iter.get_state(), meta, force=True)
  finally:
    ckpt.close()
  # Marks the directory as converted: GAN jobs with an empty gan.damsm_dir use
  # it as is (never pretrain into it, even with gan.pretrain_damsm_if_missing).
  damsm_lib.write_json(os.path.join(damsm_dir, CONVERTED_FILE),
                             {"sources": sources})


def convert(config, workdir: str, *, netG: str | None, text_encoder: str,  # pylint: disable=invalid-name
            image_encoder: str | None = None,
            netD: Sequence[str] = ()) -> dict[str, Any]:  # pylint: disable=invalid-name
  """Writes ``workdir/damsm`` and the GAN checkpoint ``workdir/checkpoints/0``.

  Without ``netG`` only ``workdir/damsm`` is written: AttnGAN's released DAMSM
  encoders for a GAN trained from scratch (``train_gan`` on this workdir uses
  them, as does ``--config.gan.damsm_dir=<workdir>/damsm`` elsewhere).

  Returns the record also written to ``workdir/converted.json`` (with a GAN).
  """
  from input_pipeline import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import config_validation  # pylint: disable=g-import-not-at-top
  config_validation.validate(config)
  netD = list(netD or [])  # pylint: disable=invalid-name
  _check_arguments(config, workdir, netG, netD)
  if not image_encoder:
    image_encoder = sibling_image_encoder(text_encoder)
    if image_encoder:
      logging.info("using %s (beside the text encoder)", image_encoder)

  # Read and convert everything before writing anything.
  g_vars = None
  if netG and config.model.architecture == "dfgan":
    g_vars = read_dfgan(config, netG)
  elif netG:
    g_vars = convert_generator(_read(netG, "netG"), config, source=netG)
  d_vars = [convert_discriminator(_read(p, f"netD{i}"), config, i, source=p)
            for i, p in enumerate(netD)]
  text_state = _read(text_encoder, "text_encoder")
  image_state = _read(image_encoder, "image_encoder") if image_encoder else None

  sizes = input_pipeline.stage_sizes(config)
  train_source = input_pipeline.get_source(config, "train", sizes[-1])
  vocab = train_source.vocab
  os.makedirs(workdir, exist_ok=True)
  damsm_dir = os.path.abspath(os.path.join(workdir, DAMSM_SUBDIR))
  sources = {"netG": os.path.abspath(netG) if netG else None,
             "text_encoder": os.path.abspath(text_encoder),
             "image_encoder": os.path.abspath(image_encoder) if image_encoder else None,
             "netD": [os.path.abspath(p) for p in netD]}
  if image_state is None:
    logging.warning(
        "no image encoder (--image_encoder, or image_encoder<N>.pth beside the "
        "text encoder): %s holds a RANDOM image encoder. Sampling works; "
        "R-precision and fine-tuning (DAMSM loss) need the real one.", damsm_dir)
  write_damsm_dir(config, damsm_dir, vocab, text_state, image_state,
                  sources=sources)
  if not netG:
    logging.info("wrote %s (DAMSM encoders only): train_gan with "
                 "--workdir=%s uses it, or pass --config.gan.damsm_dir=%s",
                 damsm_dir, workdir, damsm_dir)
    return {"sources": sources, "damsm_dir": damsm_dir,
            "image_encoder": ("converted" if image_state is not None
                              else "initialised")}

  return write_gan_checkpoint(config, workdir, g_vars, d_vars, vocab=vocab,
                              train_source=train_source, damsm_dir=damsm_dir,
                              sources=sources,
                              image_converted=image_state is not None)


def _check_arguments(config, workdir: str, netG, netD) -> None:  # pylint: disable=invalid-name
  """ConfigError / CheckpointError for file lists that cannot work."""
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  n_stages = config.data.branch_num
  if netD and config.model.architecture == "dfgan":
    raise ConfigError("--netD: a DF-GAN state_epoch_*.pth holds netD and netC "
                      "itself; give only that file, as --netG")
  if netD and not netG:
    raise ConfigError("--netD needs --netG (the discriminators join a "
                      "converted generator's checkpoint)")
  if netD and len(netD) != n_stages:
    raise ConfigError(
        f"--netD names {len(netD)} files but config.data.branch_num is "
        f"{n_stages}: give one netD file per stage (netD0, netD1, ...) or none")
  ckpt_dir = os.path.join(workdir, gan_lib.CHECKPOINT_DIR)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise CheckpointError(f"{ckpt_dir} already holds checkpoints; convert "
                          "into a new --workdir")


def write_gan_checkpoint(config, workdir: str, g_vars, d_vars, *, vocab,
                         train_source, damsm_dir: str, sources: dict,
                         image_converted: bool) -> dict[str, Any]:
  """GAN checkpoint step 0 of converted G (and D) variables, plus
  ``workdir/converted.json``; returns that record."""
  from input_pipeline import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  dfgan = config.model.architecture == "dfgan"
  if dfgan:
    state = dfgan_state(config, g_vars)
    epoch = g_vars["epoch"]
  else:
    state = gan_state(config, gan_lib.GanModels(config, None, None), g_vars,
                      d_vars)
    epoch = parse_epoch(sources["netG"])
  sizes = input_pipeline.stage_sizes(config)
  meta = {"job": "train_gan", "vocab_fingerprint": vocab.fingerprint(),
          "model": gan_lib.model_meta(config.model.to_dict()),
          "damsm_dir": damsm_dir,
          "stage_sizes": list(sizes), "converted_from": sources,
          "source_epoch": epoch}
  data_iter = input_pipeline.create_train_iterator(
      config, train_source, global_batch_size=config.gan.batch_size,
      image_sizes=sizes, words_num=config.data.words_num)
  ckpt_dir = os.path.join(workdir, gan_lib.CHECKPOINT_DIR)
  ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=config.keep_checkpoints,
                                    interval=1)
  try:
    ckpt.save(0, state, data_iter.get_state(), meta, force=True)
  finally:
    ckpt.close()
  record = {"sources": sources, "source_epoch": epoch, "step": 0,
            "damsm_dir": damsm_dir, "refiner": config.model.refiner,
            "g_ema_equals_g": True,
            "discriminators": "converted" if d_vars else "initialised",
            "image_encoder": "converted" if image_converted else "initialised",
            "optimizers": "initialised"}
  if dfgan:
    del record["refiner"], record["g_ema_equals_g"]
    record.update(
        architecture="dfgan", discriminators="converted",
        optimizers="converted" if g_vars["g_opt"] is not None
        else "initialised", unconsumed=g_vars["unconsumed"])
  with open(os.path.join(workdir, CONVERTED_FILE), "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  logging.info("wrote %s (GAN checkpoint step 0) and %s", ckpt_dir, damsm_dir)
  return record


# --------------------------------------------------------------------- CLI
def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Output workdir (GAN checkpoint, damsm/).")
  config_flags.DEFINE_config_file(
      "config", None, "Config file (configs/*.py) describing the model and the "
      "dataset (its vocabulary); override with --config.<field>=<value>.",
      lock_config=True)
  flags.DEFINE_string("netG", None, "Generator .pth (bird_DMGAN.pth, "
                      "netG_epoch_N.pth, bird_AttnGAN2.pth, ...; DF-GAN: its "
                      "state_epoch_N.pth with netG, netD and netC); without it "
                      "only the DAMSM encoders are converted (workdir/damsm).")
  flags.DEFINE_string("text_encoder", None, "DAMSM text_encoder*.pth.")
  flags.DEFINE_string("image_encoder", None, "DAMSM image_encoder*.pth "
                      "(default: image_encoder<N>.pth beside the text encoder).")
  flags.DEFINE_list("netD", [], "Comma-separated netD0.pth,netD1.pth,... (one "
                    "per stage); default: freshly initialised discriminators.")
  flags.mark_flags_as_required(["config", "workdir", "text_encoder"])
  return flags.FLAGS


def main(argv):
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from t2igan_jax import errors  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  flags_ = _FLAGS
  try:
    record = convert(flags_.config, flags_.workdir, netG=flags_.netG,
                     text_encoder=flags_.text_encoder,
                     image_encoder=flags_.image_encoder, netD=flags_.netD)
  except errors.USER_ERRORS as e:
    logging.error("%s: %s", type(e).__name__, e)
    sys.exit(f"error: {e}")
  print(json.dumps(record, indent=1, sort_keys=True))


_FLAGS = None

if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=g-import-not-at-top
  _FLAGS = _define_flags()
  _app.run(main)
