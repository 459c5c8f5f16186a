"""Inception Score (SPEC-eval §2) and its two classifiers (COCO and CUB protocols).

For the prediction matrix p[N, K] = p(y|x) and 10 splits (rows
``[k*N//S : (k+1)*N//S]``, as improved-GAN and StackGAN slice them)::

    p_k(y) = mean_{x in split k} p(y|x)
    IS_k   = exp( mean_{x in split k} sum_y p(y|x) (log p(y|x) - log p_k(y)) )
    IS     = mean_k IS_k  +-  std_k IS_k        (population std, np.std)

computed in float64 (``0 log 0 = 0``). IS = 1 when every image gets the same
prediction; IS = K for confident one-hot predictions spread evenly over K classes.

``drop_last`` reproduces the CUB script (StackGAN): it scores ``floor(N / 64)``
full batches of 64, so 30,000 images become 29,952 (config flag ``is_drop_last``,
reference default True). The CUB script also shuffles the images first: pass
``rng`` to permute the rows before dropping.

Classifiers (:func:`load_is_classifier`), each ``fn(images f32[B,H,W,3] in [-1,1])
-> logits f32[B, K]``:

* 'coco' — the TF 2015-12-05 Inception with its 1008-way ``output`` layer:
  ``logits = pool3 @ W`` **without the bias** (improved-GAN; ``logit_bias=True``
  adds it, config flag ``is_coco_logit_bias``, reference default False). pool3
  comes from :class:`~t2igan_jax.evaluation.fid_inception.FidInceptionV3` with the
  TF graph's input handling (resize 'tf_legacy', input (x255 - 128)/128).
  Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torchvision
  names + ``fc.weight`` [1008, 2048] and ``fc.bias`` [1008]), or an ``.npz`` with
  the same keys. ``default_1.pt`` cannot be used: its ``output`` layer was removed.
* 'cub' — StackGAN's Inception-v3 fine-tuned on CUB (50 classes + background).
  Accepted format: an ``.npz`` (or a torch file read by ``t2igan_jax.torch_io``)
  with torchvision Inception-v3 trunk names (``Conv2d_1a_3x3.conv.weight`` OIHW,
  ``<conv>.bn.{bias,running_mean,running_var}`` and optionally ``bn.weight``)
  plus ``fc.weight`` [51 or 50, 2048] and ``fc.bias``. TF-slim semantics are used:
  average pools exclude padding (TF 'SAME'), average pool in Mixed_7c, BN eps
  1e-3, resize 'half_pixel' to 299 (the reference used scipy's PIL bilinear
  ``imresize`` on uint8, so resized inputs differ slightly). With 51 rows the
  first (background) logit is dropped. Converting the TF checkpoint
  (``inception_finetuned_models/birds_valid299/model.ckpt``, EMA variables) to this
  layout is left to the user; this module does not read TF checkpoints.

Neither weight file ships with any PyPI package (SPEC-eval §0.3): IS numbers are
paper-comparable only with them.
"""

import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from t2igan_jax.evaluation import fid_inception

PROTOCOLS = ("coco", "cub")
CUB_CLASSES = 50
COCO_CLASSES = 1008


def _softmax64(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def inception_score(probs_or_logits: np.ndarray, splits: int = 10, *,
                    from_logits: bool, drop_last: bool = False, batch_size: int = 64,
                    rng: np.random.Generator | None = None) -> tuple[float, float]:
  """Inception Score mean and std over ``splits`` (see the module docstring).

  Args:
    probs_or_logits: [N, K] class probabilities, or logits with ``from_logits``.
    splits: number of splits (10 in every reference script).
    from_logits: apply a softmax over K first.
    drop_last: keep only ``floor(N / batch_size) * batch_size`` rows (the CUB
      script's full batches of 64; config ``is_drop_last``).
    batch_size: batch size for ``drop_last``.
    rng: if given, rows are permuted first (the CUB script shuffles images).

  Returns:
    (mean, std) of the per-split scores (std = population std).
  """
  p = np.asarray(probs_or_logits, np.float64)
  if p.ndim != 2:
    raise ValueError(f"inception_score expects [N, K] predictions, got {p.shape}")
  if rng is not None:
    p = p[rng.permutation(p.shape[0])]
  if drop_last:
    p = p[:(p.shape[0] // batch_size) * batch_size]
  if p.shape[0] < splits:
    raise ValueError(f"inception_score: {p.shape[0]} predictions (after drop_last="
                     f"{drop_last}) cannot make {splits} splits")
  p = _softmax64(p) if from_logits else p
  if not from_logits and (np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4)):
    raise ValueError("inception_score: rows are not probability vectors; pass "
                     "from_logits=True for logits")
  n = p.shape[0]
  scores = []
  for k in range(splits):
    part = p[k * n // splits:(k + 1) * n // splits]
    marginal = part.mean(axis=0, keepdims=True)
    log_ratio = np.log(np.where(part > 0, part, 1.0)) - np.log(
        np.where(part > 0, marginal, 1.0))
    kl = np.sum(part * log_ratio, axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _read_classifier_state(protocol: str, weights_path: str) -> dict[str, np.ndarray]:
  if protocol not in PROTOCOLS:
    raise ValueError(f"IS protocol must be one of {PROTOCOLS}, got {protocol!r}")
  what = {"coco": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (the TF "
                  "2015-12-05 Inception with its 1008-way output layer)",
          "cub": "StackGAN's CUB fine-tuned Inception-v3 converted to an .npz with "
                 "torchvision names plus fc.weight/fc.bias (see "
                 "t2igan_jax/evaluation/inception_score.py)"}[protocol]
  if not weights_path:
    raise FileNotFoundError(
        f"Inception Score ({protocol}): no classifier weights given (empty path); "
        f"provide {what}. No PyPI package ships these weights.")
  path = os.fspath(weights_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Inception Score ({protocol}): classifier weights not found at {path!r}; "
        f"provide {what}.")
  return fid_inception.flatten_state(fid_inception.read_state(path))


def _fc(state: Mapping[str, np.ndarray], path: str, rows: tuple[int, ...]
        ) -> tuple[np.ndarray, np.ndarray]:
  keys = [k for k in ("fc.weight", "fc.bias") if k not in state]
  if keys:
    raise ValueError(f"{path}: classifier weights lack {keys} (the IS classifier needs "
                     "the final fully connected layer)")
  w, b = np.asarray(state["fc.weight"], np.float32), np.asarray(state["fc.bias"], np.float32)
  if w.ndim != 2 or w.shape[0] not in rows or w.shape[1] != fid_inception.FEATURE_DIM \
      or b.shape != (w.shape[0],):
    raise ValueError(f"{path}: expected fc.weight [{' or '.join(map(str, rows))}, 2048] "
                     f"and a matching fc.bias, got {w.shape} and {b.shape}")
  return w, b


def load_is_classifier(protocol: str, weights_path: str, *, logit_bias: bool = False,
                       resize_mode: str | None = None
                       ) -> Callable[[Any], jax.Array]:
  """Builds the IS classifier ``fn(images f32[B,H,W,3] in [-1,1]) -> logits f32[B,K]``.

  Args:
    protocol: 'coco' (K = 1008) or 'cub' (K = 50).
    weights_path: the weight file (formats in the module docstring).
    logit_bias: COCO only: add the output layer's bias (reference: False, the
      improved-GAN quirk; config ``is_coco_logit_bias``). CUB always uses it.
    resize_mode: override the resize to 299 ('tf_legacy' for COCO, 'half_pixel'
      for CUB by default).

  Raises:
    FileNotFoundError: empty path or missing file (says which file to provide).
    ValueError: unknown protocol, or the file does not fit the network.
  """
  state = _read_classifier_state(protocol, weights_path)
  if protocol == "coco":
    module = fid_inception.FidInceptionV3(
        resize_mode=resize_mode or "tf_legacy", input_transform="tf", mixed_7c_pool="max")
    w, b = _fc(state, weights_path, (COCO_CLASSES,))
    drop_background = False
    use_bias = logit_bias
  else:
    has_gamma = any(k.endswith(".bn.weight") for k in state)
    module = fid_inception.FidInceptionV3(
        resize_mode=resize_mode or "half_pixel", input_transform="none",
        mixed_7c_pool="avg", bn_use_scale=has_gamma)
    w, b = _fc(state, weights_path, (CUB_CLASSES, CUB_CLASSES + 1))
    drop_background = w.shape[0] == CUB_CLASSES + 1
    use_bias = True
  params, stats = fid_inception.load_trunk_weights(
      state, weights_path, bn_use_scale=module.bn_use_scale,
      mixed_7c_pool=module.mixed_7c_pool)
  variables = jax.tree.map(jnp.asarray, {"params": {"trunk": params},
                                         "batch_stats": {"trunk": stats}})
  head = {"w": jnp.asarray(w.T), "b": jnp.asarray(b if use_bias else np.zeros_like(b))}

  def classify(images) -> jax.Array:
    return _logits(module, drop_background, variables, head,
                   jnp.asarray(images, jnp.float32))

  return classify


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logits(module, drop_background: bool, variables, head, images):
  """pool3 @ W + b (b is zeros when the bias is left out); background column dropped."""
  pool3 = module.apply(variables, images)
  logits = jnp.einsum("bd,dk->bk", pool3, head["w"],
                      precision=jax.lax.Precision.HIGHEST) + head["b"]
  return logits[:, 1:] if drop_background else logits
