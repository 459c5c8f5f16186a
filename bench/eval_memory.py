"""Peak memory of R-precision and of ``job=sample`` (issue: unbounded memory).

* ``rprec``: ``evaluation.r_precision.r_precision`` on random codes: N images
  (default 30,000, the papers' protocol), their own captions and a pool of
  M = N captions of 200 classes, D = 256 (the DAMSM width of the bird/COCO
  configs), 100 candidates, 10 folds. Each run is a fresh child process;
  reported: the numpy allocations' peak (``tracemalloc``) and the process's
  peak RSS (``ru_maxrss``, includes the interpreter and the inputs). The old
  all-at-once computation (``chunk_size=N``) is run at ``--rprec_unchunked``
  (default 3,000) images for comparison; at 30,000 it needs ~15 GB.
* ``sample``: ``job=sample`` of the tiny DM-GAN (``configs/dmgan_shapes.py:
  tiny``, 2 GAN steps; trained into ``--workdir`` first when it has no
  checkpoint) on captions files of ``--sample_lines`` (default 100 and
  10,000) lines of the shapes grammar, 2 samples per line; each in a fresh
  child process: its peak RSS (JAX runtime included) and wall time. Bounded
  memory shows as equal peaks for 100 and 10,000 lines.

  python bench/eval_memory.py                       # both parts
  python bench/eval_memory.py --parts=rprec --rprec_samples=30000

Writes a table to stdout and JSON to
``bench/results/eval_memory_<time>.json``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from bench import report as bench_report  # noqa: E402  pylint: disable=g-import-not-at-top

PARTS = ("rprec", "sample")
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange",
           "purple")
KINDS = ("circle", "square", "triangle", "star", "diamond", "ring", "cross")


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_rprec(n: int, chunk_size: int | None) -> dict[str, Any]:
  """One R-precision run on random codes (in this process)."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from t2igan_jax.evaluation import r_precision as rp  # pylint: disable=g-import-not-at-top
  d, classes = 256, 200
  rng = np.random.default_rng(0)
  own = rng.normal(size=(n, d)).astype(np.float32)
  images = (own + 2 * rng.normal(size=(n, d))).astype(np.float32)
  pool = rng.normal(size=(n, d)).astype(np.float32)
  pool_cls = rng.integers(0, classes, n)
  img_cls = rng.integers(0, classes, n)
  rss_inputs = _peak_rss_mib()
  tracemalloc.start()
  t0 = time.perf_counter()
  out = rp.r_precision(images, own, pool, pool_cls, img_cls,
                       rng=np.random.default_rng(1), chunk_size=chunk_size)
  seconds = time.perf_counter() - t0
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return {"part": "rprec", "num_images": n, "dim": d, "num_candidates": 100,
          "chunk_size": chunk_size or rp.default_chunk_size(100, d),
          "numpy_peak_mib": peak / 2**20, "peak_rss_mib": _peak_rss_mib(),
          "rss_after_inputs_mib": rss_inputs, "seconds": seconds,
          "r_precision_mean": out["mean"]}


def _tiny_config(job: str):
  from configs import dmgan_shapes  # pylint: disable=g-import-not-at-top
  c = dmgan_shapes.get_config("tiny")
  c.job = job
  c.max_steps = 2
  c.checkpoint_every_steps = 2
  c.image_every_steps = 100
  return c


def child_sample(workdir: str, lines: int, out_dir: str) -> dict[str, Any]:
  """job=sample of ``lines`` shapes captions (in this process)."""
  import logging  # pylint: disable=g-import-not-at-top
  from t2igan_jax import sample as sample_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import train  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.WARNING)
  os.makedirs(out_dir, exist_ok=True)
  captions = os.path.join(out_dir, "captions.txt")
  with open(captions, "w") as f:
    for i in range(lines):
      f.write(f"a {COLOURS[i % 8]} {KINDS[(i // 8) % 7]} on a "
              f"{COLOURS[(i // 56) % 8]} background\n")
  c = _tiny_config("sample")
  c.sample.captions_file = captions
  c.sample.output_dir = os.path.join(out_dir, "samples")
  c.sample.num_per_caption = 2
  t0 = time.perf_counter()
  report = train.run(c, workdir)
  return {"part": "sample", "lines": lines, "num_per_caption": 2,
          "num_sampled": report["num_sampled"],
          "overview_lines": len(report["overview"]["lines"]),
          "overview_max_lines": sample_lib.OVERVIEW_MAX_LINES,
          "seconds": time.perf_counter() - t0,
          "peak_rss_mib": _peak_rss_mib()}


def _run_child(args: list[str]) -> dict[str, Any]:
  out = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                       check=True, capture_output=True, text=True, cwd=_ROOT)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _ensure_trained(workdir: str) -> None:
  if os.path.isdir(os.path.join(workdir, "checkpoints", "2")):
    return
  from t2igan_jax import train  # pylint: disable=g-import-not-at-top
  print(f"training the tiny DM-GAN (2 steps) into {workdir}", flush=True)
  train.run(_tiny_config("train_gan"), workdir)


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--parts", default=",".join(PARTS))
  p.add_argument("--rprec_samples", type=int, default=30000)
  p.add_argument("--rprec_unchunked", type=int, default=3000,
                 help="N of the all-at-once comparison (0: skip)")
  p.add_argument("--sample_lines", default="100,10000")
  p.add_argument("--workdir", default="/tmp/bench_eval_memory")
  p.add_argument("--out_dir", default=os.path.join(_ROOT, "bench", "results"))
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child == "rprec":
    print(json.dumps(child_rprec(args.n, args.chunk or None)))
    return {}
  if args.child == "sample":
    print(json.dumps(child_sample(args.workdir, args.n, os.path.join(
        args.workdir, f"lines_{args.n}"))))
    return {}
  results = []
  for part in [x for x in args.parts.split(",") if x]:
    if part not in PARTS:
      p.error(f"unknown part {part!r}; choose from {PARTS}")
    if part == "rprec":
      runs = [(args.rprec_samples, 0)]
      if args.rprec_unchunked:
        runs += [(args.rprec_unchunked, 0),
                 (args.rprec_unchunked, args.rprec_unchunked)]
      for n, chunk in runs:
        r = _run_child(["--child=rprec", f"--n={n}", f"--chunk={chunk}"])
        print(f"R-precision N={n} chunk {r['chunk_size']}: numpy peak "
              f"{r['numpy_peak_mib']:.0f} MiB, process peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB, {r['seconds']:.1f} s", flush=True)
        results.append(r)
    else:
      _ensure_trained(args.workdir)
      for lines in [int(x) for x in args.sample_lines.split(",") if x]:
        r = _run_child(["--child=sample", f"--n={lines}",
                        f"--workdir={args.workdir}"])
        print(f"job=sample {lines} lines x 2 samples (tiny DM-GAN): peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB, {r['seconds']:.0f} s, overview "
              f"of {r['overview_lines']} lines", flush=True)
        results.append(r)
  import jax  # pylint: disable=g-import-not-at-top
  report = {"platform": jax.default_backend(), "cpu_count": os.cpu_count(),
            "loadavg_1m_end": os.getloadavg()[0], "results": results}
  bench_report.write_report(
      args.out_dir, f"eval_memory_{time.strftime('%Y%m%d_%H%M%S')}.json",
      report)
  return report


if __name__ == "__main__":
  main()
