"""Fingerprint of short tiny training runs: every logged per-step loss and a
SHA-256 of every array of the final checkpoint, to show that a refactor
changes no number.

Runs each tiny shapes GAN config through ``main.py`` in subprocesses (its
DAMSM job, then the GAN against that DAMSM), reads the
step log (``losses.jsonl``) and restores the last checkpoint's ``state`` item
without a target (orbax's own tree), hashing each leaf by its path.

  python bench/refactor_fingerprint.py --out=/tmp/before.json
  (change the code)
  python bench/refactor_fingerprint.py --out=/tmp/after.json \
      --compare=/tmp/before.json

Leaves are compared by value and by sorted path; a path that only moved
(another pytree layout with the same arrays) is reported separately from a
changed number.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAN_CONFIGS = ("dmgan_shapes", "ffgan_shapes", "attngan_shapes", "dfgan_shapes")
STEPS = 6


def _run(config: str, workdir: str, *overrides: str) -> None:
  cmd = [sys.executable, os.path.join(ROOT, "main.py"),
         f"--config={os.path.join(ROOT, 'configs', config)}.py:tiny",
         f"--workdir={workdir}", "--config.num_devices=1",
         "--config.compilation_cache_dir=", *overrides]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        check=False)
  if done.returncode:
    sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def _leaf_hashes(checkpoint_root: str) -> dict[str, str]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  steps = sorted(int(s) for s in os.listdir(checkpoint_root) if s.isdigit())
  path = os.path.join(checkpoint_root, str(steps[-1]), "state")
  tree = ocp.StandardCheckpointer().restore(path)
  out = {}
  import jax  # pylint: disable=g-import-not-at-top
  for keys, leaf in _flatten(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    arr = np.asarray(leaf)
    if arr.dtype == object:  # e.g. optax's EmptyState restored as None
      out["/".join(keys)] = repr(leaf)
      continue
    h = hashlib.sha256(str(arr.dtype).encode() + str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    out["/".join(keys)] = h.hexdigest()
  return out


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    for k in sorted(tree, key=str):
      yield from _flatten(tree[k], prefix + (str(k),))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, prefix + (str(i),))
  else:
    yield prefix, tree


def _losses(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "losses.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def fingerprint(root: str) -> dict:
  result = {}
  for config in GAN_CONFIGS:
    workdir = os.path.join(root, config)
    damsm = os.path.join(workdir, "damsm")
    # The DAMSM on this config's own data (the single-scene demo data of
    # dmgan_shapes has another vocabulary than the full scenes).
    _run(config, damsm, "--config.job=pretrain_damsm", "--config.damsm.epochs=1")
    result[f"{config}/damsm"] = {
        "losses": _losses(damsm),
        "leaves": _leaf_hashes(os.path.join(damsm, "checkpoints"))}
    _run(config, workdir, f"--config.max_steps={STEPS}",
         f"--config.gan.damsm_dir={damsm}", "--config.log_every_steps=1",
         "--config.image_every_steps=1000")
    result[config] = {"losses": _losses(workdir),
                      "leaves": _leaf_hashes(os.path.join(workdir,
                                                          "checkpoints"))}
    print(f"{config}: {len(result[config]['losses'])} loss records, "
          f"{len(result[config]['leaves'])} arrays", flush=True)
  return result


def compare(before: dict, after: dict) -> bool:
  same = True
  for run, b in before.items():
    a = after.get(run)
    if a is None:
      print(f"{run}: missing after")
      same = False
      continue
    if b["losses"] != a["losses"]:
      print(f"{run}: step losses differ")
      same = False
    if b["leaves"] == a["leaves"]:
      print(f"{run}: {len(b['losses'])} loss records and "
            f"{len(b['leaves'])} arrays bitwise equal")
    elif sorted(b["leaves"].values()) == sorted(a["leaves"].values()):
      print(f"{run}: all {len(b['leaves'])} arrays bitwise equal, some under "
            "other paths")
    else:
      same = False
      changed = [k for k in b["leaves"] if a["leaves"].get(k) != b["leaves"][k]]
      print(f"{run}: {len(changed)} arrays differ, e.g. {changed[:5]}")
  return same


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--compare", default="")
  parser.add_argument("--root", default="")
  args = parser.parse_args()
  root = args.root or tempfile.mkdtemp(prefix="fingerprint_")
  result = fingerprint(root)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.out} (runs in {root})")
  if args.compare:
    with open(args.compare) as f:
      ok = compare(json.load(f), result)
    print("bitwise equal" if ok else "DIFFERENT")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
