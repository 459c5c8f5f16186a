"""R-precision with the DAMSM encoders (SPEC-eval §5, SPEC-dmgan §8.1).

For generated image i with DAMSM image code v_i [D], its own caption's sentence
code s_i [D] and 99 sentence codes u_i,1..99 of captions of *other classes*
(COCO: other images), candidates c_i = [s_i, u_i,1, ..., u_i,99] [100, D]::

    score_ij = <v_i, c_ij> / max(|v_i| |c_ij|, 1e-8)         cosine, [N, 100]
    hit_i    = argmax_j score_ij == 0                        ties count as hits

Over N = 30,000 trials the hit vector is shuffled and cut into 10 folds of
n = N // 10; the result is mean +- population std of the 10 fold means.

Fold slicing (``fold_slicing``):
  'full'       fold k = hits[k*n : (k+1)*n]  (n entries; the default here).
  'reference'  fold k = hits[k*n : (k+1)*n - 1]  (n - 1 entries: DM-GAN's
               off-by-one, SPEC.md flag ``rprec_fold_slice``).
The returned dict states which one was used.

Pieces, usable on their own: :func:`cosine_scores`, :func:`retrieval_hits`
(candidates given per image, own caption first), :func:`pooled_hits` (the
same for candidates drawn from a pool, in chunks of bounded memory),
:func:`draw_mismatched`
(candidate indices of other classes from an encoded pool), :func:`fold_statistics`.
:func:`r_precision` chains them for a pool of encoded candidate captions.
The DAMSM pretraining's validation top-1 (``damsm_lib.retrieval_top1``)
is the same protocol without folds.
"""

from typing import Any

import numpy as np

FOLD_SLICINGS = ("full", "reference")
# Bytes of one chunk's float64 candidate codes in :func:`pooled_hits`: the
# [N, C, D] candidates are never built whole (30,000 x 100 x 256 float64 would
# be 6 GB), only [chunk, C, D] at a time.
CHUNK_BYTES = 32 * 2**20


def cosine_scores(image_codes: np.ndarray, candidate_codes: np.ndarray) -> np.ndarray:
  """[N, D] x [N, C, D] -> float64 [N, C] cosine (norm product clamped at 1e-8)."""
  v = np.asarray(image_codes, np.float64)
  c = np.asarray(candidate_codes, np.float64)
  if v.ndim != 2 or c.ndim != 3 or c.shape[0] != v.shape[0] or c.shape[2] != v.shape[1]:
    raise ValueError(f"cosine_scores: expected image codes [N, D] and candidates "
                     f"[N, C, D], got {v.shape} and {c.shape}")
  dots = np.einsum("nd,ncd->nc", v, c)
  norms = np.linalg.norm(v, axis=1)[:, None] * np.linalg.norm(c, axis=2)
  return dots / np.maximum(norms, 1e-8)


def retrieval_hits(image_codes: np.ndarray, candidate_codes: np.ndarray) -> np.ndarray:
  """bool [N]: the own caption (candidate 0) has the highest cosine (ties win)."""
  scores = cosine_scores(image_codes, candidate_codes)
  return scores[:, 0] >= scores[:, 1:].max(axis=1, initial=-np.inf)


def default_chunk_size(num_candidates: int, dim: int) -> int:
  """Images per chunk so that a chunk's float64 candidates take CHUNK_BYTES."""
  return max(1, CHUNK_BYTES // (8 * num_candidates * max(dim, 1)))


def pooled_hits(image_codes: np.ndarray, own_sent_codes: np.ndarray,
                pool: np.ndarray, mismatched: np.ndarray,
                chunk_size: int | None = None) -> np.ndarray:
  """bool [N]: :func:`retrieval_hits` with candidates ``[own_i, pool[m_i]]``.

  The same numbers as building the [N, C, D] candidates at once, computed
  ``chunk_size`` images at a time (default :func:`default_chunk_size`), so
  memory stays bounded for any N: each image's cosines depend only on its
  own row.
  """
  v = np.asarray(image_codes)
  own = np.asarray(own_sent_codes)
  idx = np.asarray(mismatched)
  n = v.shape[0]
  chunk = int(chunk_size or default_chunk_size(idx.shape[1] + 1, v.shape[1]))
  if chunk < 1:
    raise ValueError(f"pooled_hits: chunk_size must be >= 1, got {chunk_size}")
  hits = np.empty((n,), bool)
  for start in range(0, n, chunk):
    rows = slice(start, start + chunk)
    candidates = np.concatenate([own[rows, None, :], pool[idx[rows]]], axis=1)
    hits[rows] = retrieval_hits(v[rows], candidates)
  return hits


def draw_mismatched(image_class_ids: np.ndarray, candidate_class_ids: np.ndarray,
                    num: int, rng: np.random.Generator) -> np.ndarray:
  """int [N, num]: for each image, ``num`` distinct candidates of another class.

  Image i draws ``rng.choice(np.flatnonzero(candidate_class_ids !=
  image_class_ids[i]), num, replace=False)``, images in order (so a seeded
  generator gives a reproducible draw).
  """
  img_cls = np.asarray(image_class_ids)
  cand_cls = np.asarray(candidate_class_ids)
  out = np.empty((img_cls.shape[0], num), np.int64)
  others_of: dict[Any, np.ndarray] = {}
  for i, cls in enumerate(img_cls.tolist()):
    others = others_of.get(cls)
    if others is None:
      others = others_of[cls] = np.flatnonzero(cand_cls != cls)
    if len(others) < num:
      raise ValueError(f"R-precision: image {i} (class {cls}) needs {num} candidate "
                       f"captions of other classes, but the pool has {len(others)}")
    out[i] = rng.choice(others, num, replace=False)
  return out


def fold_statistics(hits: np.ndarray, folds: int = 10, fold_slicing: str = "full",
                    rng: np.random.Generator | None = None
                    ) -> tuple[float, float, np.ndarray]:
  """(mean, population std, per-fold means) of the hit vector cut into ``folds``.

  The hits are permuted with ``rng`` first when it is given (the reference
  shuffles). Fold size n = N // folds; trailing N mod folds entries are unused.
  """
  if fold_slicing not in FOLD_SLICINGS:
    raise ValueError(f"fold_slicing must be one of {FOLD_SLICINGS}, got {fold_slicing!r}")
  h = np.asarray(hits, np.float64).reshape(-1)
  if rng is not None:
    h = h[rng.permutation(h.shape[0])]
  n = h.shape[0] // folds
  min_n = 2 if fold_slicing == "reference" else 1
  if n < min_n:
    raise ValueError(f"R-precision: {h.shape[0]} trials are too few for {folds} folds "
                     f"with {fold_slicing!r} slicing")
  end = 1 if fold_slicing == "reference" else 0
  per_fold = np.array([h[k * n:(k + 1) * n - end].mean() for k in range(folds)])
  return float(per_fold.mean()), float(per_fold.std()), per_fold


def r_precision(image_codes: np.ndarray, own_sent_codes: np.ndarray,
                candidate_sent_codes: np.ndarray, candidate_class_ids: np.ndarray,
                image_class_ids: np.ndarray, *, num_candidates: int = 100,
                folds: int = 10, fold_slicing: str = "full",
                rng: np.random.Generator,
                chunk_size: int | None = None) -> dict[str, Any]:
  """R-precision (top-1 of ``num_candidates``) with folds.

  Args:
    image_codes: [N, D] DAMSM global codes of the generated images.
    own_sent_codes: [N, D] sentence codes of the caption each image was made from.
    candidate_sent_codes: [M, D] an encoded pool of captions to draw mismatches
      from (e.g. one random caption of every test image).
    candidate_class_ids: [M] class of each pool caption (COCO: the image id).
    image_class_ids: [N] class of each generated image's caption.
    num_candidates: 100 (own + 99 mismatched).
    folds: 10.
    fold_slicing: 'full' (default) or 'reference' (module docstring).
    rng: draws the mismatches (:func:`draw_mismatched`), then shuffles the hits.
    chunk_size: images scored at a time (:func:`pooled_hits`; the result does
      not depend on it).

  Returns:
    ``{'mean', 'std', 'per_fold', 'fold_slicing', 'fold_size', 'num_images',
    'num_candidates', 'top1' (mean over all images), 'description'}``.
  """
  v = np.asarray(image_codes)
  own = np.asarray(own_sent_codes)
  pool = np.asarray(candidate_sent_codes)
  if own.shape != v.shape or pool.ndim != 2 or pool.shape[1] != v.shape[1]:
    raise ValueError(f"r_precision: image codes {v.shape}, own sentence codes "
                     f"{own.shape} and candidate pool {pool.shape} do not agree")
  if len(candidate_class_ids) != pool.shape[0] or len(image_class_ids) != v.shape[0]:
    raise ValueError("r_precision: class ids must have one entry per pool caption "
                     "and per image")
  idx = draw_mismatched(image_class_ids, candidate_class_ids, num_candidates - 1, rng)
  hits = pooled_hits(v, own, pool, idx, chunk_size=chunk_size)
  mean, std, per_fold = fold_statistics(hits, folds, fold_slicing, rng)
  n = hits.shape[0] // folds
  size = n - 1 if fold_slicing == "reference" else n
  note = ("reference slicing: each fold drops its last entry, DM-GAN's off-by-one"
          if fold_slicing == "reference" else "full slicing (the reference's folds "
          "drop their last entry; fold_slicing='reference' reproduces that)")
  return {
      "mean": mean, "std": std, "per_fold": per_fold, "fold_slicing": fold_slicing,
      "fold_size": size, "num_images": int(hits.shape[0]),
      "num_candidates": num_candidates, "top1": float(hits.mean()),
      "description": (f"R-precision top-1 of {num_candidates} over {hits.shape[0]} "
                      f"images, {folds} folds of {size}; {note}"),
  }
