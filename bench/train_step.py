"""Training-step benchmark of the GAN families: one full reference iteration, timed.

For each named config (``bird``: configs/<family>_bird.py, batch 10, 256 px;
``coco``: configs/<family>_coco.py, batch 16, 256 px; ``tiny``:
configs/<family>_shapes.py:tiny, ``shapes``: configs/<family>_shapes.py), each
computation dtype (``--dtypes``: config.dtype), each G remat option
(``--remats``: config.remat), each mesh size (``--devices``: a sweep of data
mesh sizes, reporting the batch and XLA FLOPs per device) and
each generator family (``--refiners``: memory = DM-GAN (dmgan_*), ffblock =
FF-GAN (ffgan_*), attention = AttnGAN's refinement stage (attngan_*); the
shapes/tiny configs differ only in ``model.refiner``, FF-GAN bird uses its own
batch size 4 unless ``--batch_size`` is given) it builds
the real ``gan_lib.train_step`` (D update on every stage, G update with the
adversarial + DAMSM + KL losses, EMA) over randomly initialised DAMSM encoders
and a synthetic global batch laid out like the input pipeline's, jits it as
``gan_train.train`` does (state donated), and reports

* seconds per iteration (median / mean / min over ``--steps`` timed iterations
  after warm-ups, each one bracketed by ``block_until_ready``) and images/s;
* lower and compile time;
* FLOPs per iteration from XLA's cost analysis of the compiled step, the
  achieved FLOP/s and its fraction of the fp32 matmul peak measured in the same
  run (a jitted square f32 matmul, ``precision=HIGHEST``);
* peak host memory (``ru_maxrss``) and, where the backend has it, the device
  allocator's peak (``memory_stats()['peak_bytes_in_use']``), plus XLA's
  static memory analysis of the compiled step.

Each (config, family, dtype, remat, devices) run (and the matmul peak) runs in
its own child process by default, so the memory peaks belong to one run;
``--no-isolate`` runs all in-process. ``--compile_only`` lowers and compiles
the step from abstract shapes (``jax.eval_shape``, nothing allocated) and
reports only XLA's cost and memory analysis: FLOPs and the temp (activation)
memory each remat option saves at bird/COCO size, without running a 100 s+
CPU iteration.

  python bench/train_step.py --configs=tiny,shapes,bird --steps 5
  python bench/train_step.py --configs=shapes --refiners=memory,ffblock
  python bench/train_step.py --configs=bird,coco --refiners=memory \
      --remats=none,last_stage,refiners --dtypes=float32,bfloat16 --compile_only
  python bench/train_step.py --configs=tiny --refiners=memory --devices=1,2,4,8
  python bench/train_step.py --configs=bird --refiners=memory --steps 2 \
      --conv_weight_grad=per_tap

Writes a table to stdout and JSON to
``bench/results/train_step_<platform>_<timestamp>.json``.
"""

import argparse
import functools
import json
import os
import platform as platform_lib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

CONFIGS = ("bird", "coco", "tiny", "shapes")
# generator family (model.refiner) -> config-file prefix
FAMILIES = {"memory": "dmgan", "ffblock": "ffgan", "attention": "attngan"}
BIRD_N_WORDS = 5450               # CUB vocabulary of the reference captions
BIRD_NUM_CLASSES = 200
COCO_N_WORDS = 27297              # AttnGAN's COCO vocabulary
COCO_NUM_CLASSES = 1 << 30        # COCO has no classes: ids all distinct
DTYPES = ("auto", "float32", "bfloat16")
REMATS = ("none", "last_stage", "refiners")
REFERENCE = {   # (config, refiner) -> reference numbers
    ("bird", "memory"): {"flops_per_iter": 2.39e12,
                         "note": "reference PyTorch DM-GAN bird iteration, batch 10"},
}


# --------------------------------------------------------------- helpers
def _host_peak_rss_bytes() -> int:
  """Peak resident set size of this process (ru_maxrss: KiB on Linux)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _host_rss_bytes() -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _loadavg() -> float | None:
  """1-minute load average (other work on a shared host skews timings)."""
  try:
    return os.getloadavg()[0]
  except OSError:
    return None


def _device_memory(devices) -> dict[str, Any] | None:
  """Largest peak / in-use bytes over the devices; None without stats (CPU)."""
  peaks, in_use, limits = [], [], []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if not stats:
      continue
    peaks.append(stats.get("peak_bytes_in_use", 0))
    in_use.append(stats.get("bytes_in_use", 0))
    limits.append(stats.get("bytes_limit", 0))
  if not peaks:
    return None
  return {"peak_bytes_in_use": int(max(peaks)),
          "bytes_in_use": int(max(in_use)),
          "bytes_limit": int(max(limits))}


def _cost_flops(compiled) -> float | None:
  """Total 'flops' of XLA's cost analysis (dict, or a list of per-module dicts)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if cost is None:
    return None
  if isinstance(cost, dict):
    cost = [cost]
  total, found = 0.0, False
  for entry in cost:
    if entry and "flops" in entry:
      total += float(entry["flops"])
      found = True
  return total if found else None


def _memory_analysis(compiled) -> dict[str, int] | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  out = {}
  for name in ("argument_size_in_bytes", "output_size_in_bytes",
               "alias_size_in_bytes", "temp_size_in_bytes",
               "generated_code_size_in_bytes"):
    value = getattr(m, name, None)
    if value is not None:
      out[name] = int(value)
  return out or None


def _param_count(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def _default_steps(name: str, backend: str) -> tuple[int, int]:
  """(timed steps, warm-up steps) when the flags leave them unset."""
  if backend == "cpu":
    return (3, 1) if name == "bird" else (10, 2)
  return 20, 2


# ----------------------------------------------------------- matmul peak
def measure_matmul_peak(size: int = 0, reps: int = 0) -> dict[str, Any]:
  """fp32 matmul FLOP/s of a jitted square matmul (HIGHEST precision)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  gpu_like = backend in ("gpu", "cuda", "rocm", "tpu")
  n = size or (8192 if gpu_like else 2048)
  reps = reps or (20 if gpu_like else 8)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  result = {"n": n, "reps": reps, "dtype": "float32",
            "flops_per_matmul": 2.0 * n**3}
  for label, precision in (("highest", jax.lax.Precision.HIGHEST),
                           ("default", None)):
    if label == "default" and not gpu_like:
      continue  # CPU f32 matmuls are f32 either way
    f = jax.jit(functools.partial(jnp.matmul, precision=precision))
    for _ in range(2):
      f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      f(a, b).block_until_ready()
      times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    result[label] = {"best_s": min(times), "median_s": statistics.median(times),
                     "flops_per_s_best": flops / min(times),
                     "flops_per_s_median": flops / statistics.median(times)}
  result["peak_flops_per_s"] = result["highest"]["flops_per_s_best"]
  return result


# -------------------------------------------------------------- configs
def load_config(name: str, refiner: str = "memory"):
  """configs/<family>_{bird,shapes}.py for a config name and a generator family."""
  import importlib  # pylint: disable=g-import-not-at-top
  if name not in CONFIGS:
    raise ValueError(f"unknown config {name!r}; choose from {CONFIGS}")
  if refiner not in FAMILIES:
    raise ValueError(f"unknown refiner {refiner!r}; choose from {tuple(FAMILIES)}")
  dataset = name if name in ("bird", "coco") else "shapes"
  module = importlib.import_module(f"configs.{FAMILIES[refiner]}_{dataset}")
  config = module.get_config("tiny" if name == "tiny" else None)
  if config.model.refiner != refiner:
    raise ValueError(f"configs/{FAMILIES[refiner]}_{dataset}.py has "
                     f"model.refiner={config.model.refiner!r}, not {refiner!r}")
  return config


def _vocab_and_classes(name: str, config) -> tuple[int, int]:
  """(n_words, num_classes) of the config's dataset, without data files."""
  if config.data.name == "coco":
    return COCO_N_WORDS, COCO_NUM_CLASSES
  if config.data.name != "shapes":
    return BIRD_N_WORDS, BIRD_NUM_CLASSES
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  del name
  source = pipeline.get_source(config, "train",
                               pipeline.stage_sizes(config)[-1])
  return source.vocab.n_words, source.num_classes


def synthetic_batch(config, batch_size: int, n_words: int, num_classes: int,
                    seed: int = 0) -> dict[str, Any]:
  """A host batch shaped like input_pipeline's (sorted by length, zero-padded)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  t = config.data.words_num
  lens = rng.integers(1, t + 1, size=batch_size).astype(np.int32)
  lens = np.sort(lens)[::-1].copy()                       # pipeline order
  captions = rng.integers(1, n_words, size=(batch_size, t)).astype(np.int32)
  captions[np.arange(t)[None, :] >= lens[:, None]] = 0
  images = tuple(
      rng.uniform(-1.0, 1.0, size=(batch_size, s, s, 3)).astype(np.float32)
      for s in pipeline.stage_sizes(config))
  return {"images": images, "captions": captions, "caption_lens": lens,
          "class_ids": rng.integers(0, num_classes, size=batch_size
                                    ).astype(np.int32)}


def run_config(name: str, *, refiner: str = "memory", steps: int = 0,
               warmup: int = -1, num_devices: int = 0,
               batch_size: int = 0, dtype: str = "auto", remat: str = "none",
               compile_only: bool = False,
               conv_weight_grad: str = "",
               small_map_conv: str = "") -> dict[str, Any]:
  """Builds, compiles and times the training step of one config and family.

  ``conv_weight_grad`` / ``small_map_conv``: config.model overrides ('' = the
  config's).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import config_validation  # pylint: disable=g-import-not-at-top
  from t2igan_jax.models import conv_grad  # pylint: disable=g-import-not-at-top
  from t2igan_jax.models import precision  # pylint: disable=g-import-not-at-top
  from t2igan_jax.models import small_map_conv as small_map_conv_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import sharding  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  d_steps, d_warmup = _default_steps(name, backend)
  steps = steps or d_steps
  warmup = d_warmup if warmup < 0 else warmup

  config = load_config(name, refiner)
  config.num_devices = num_devices
  config.dtype = dtype
  config.remat = remat
  if conv_weight_grad:
    config.model.conv_weight_grad = conv_weight_grad
  if small_map_conv:
    config.model.small_map_conv = small_map_conv
  if batch_size:
    config.gan.batch_size = batch_size
  if config.data.name != "shapes" and not config.data.data_dir:
    config.data.data_dir = "<synthetic>"    # only to satisfy validation
  config_validation.validate(config)
  b = config.gan.batch_size
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_size(b, mesh, "config.gan.batch_size")
  repl = sharding.replicated(mesh)
  sizes = pipeline.stage_sizes(config)

  load_start = _loadavg()
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  n_words, num_classes = _vocab_and_classes(name, config)
  timings["vocab_s"] = time.perf_counter() - t0

  # Frozen DAMSM encoders with random parameters (timing only).
  # --compile_only: abstract shapes only (jax.eval_shape), nothing allocated.
  def make(fn):
    jitted = jax.jit(fn, out_shardings=repl)
    if not compile_only:
      return jax.block_until_ready(jitted())
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
        jax.eval_shape(jitted))

  t0 = time.perf_counter()
  text_model, image_model = damsm_lib.build_models(config, n_words)
  dstate = make(lambda: damsm_lib.create_state(
      config, text_model, image_model, jax.random.key(1)))
  enc = gan_lib.Encoders.from_damsm_state(dstate)
  del dstate
  timings["encoders_init_s"] = time.perf_counter() - t0
  t1 = time.perf_counter()
  models = gan_lib.GanModels(config, text_model, image_model, mesh=mesh)
  state = make(lambda: gan_lib.create_state(
      models, jax.random.key(config.seed)))
  timings["gan_init_s"] = time.perf_counter() - t1
  timings["init_s"] = time.perf_counter() - t0

  host_batch = synthetic_batch(config, b, n_words, num_classes)
  batch = sharding.device_batch(host_batch, mesh)

  step_fn = jax.jit(functools.partial(gan_lib.train_step, models=models),
                    donate_argnums=(0,))
  t0 = time.perf_counter()
  lowered = step_fn.lower(state, batch, enc)
  timings["lower_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  timings["compile_s"] = time.perf_counter() - t0
  flops = _cost_flops(compiled)
  static_mem = _memory_analysis(compiled)
  n_dev = int(mesh.devices.size)
  common = {
      "config": name, "refiner": refiner, "batch_size": b,
      "dtype": dtype, "compute_dtype": str(jnp.dtype(
          precision.compute_dtype(config))),
      "remat": remat, "num_devices": n_dev,
      "conv_weight_grad": config.model.conv_weight_grad,
      "conv_weight_grad_resolved": conv_grad.resolve(
          config.model.conv_weight_grad),
      "small_map_conv": config.model.small_map_conv,
      "small_map_conv_resolved": small_map_conv_lib.resolve(
          config.model.small_map_conv),
      "batch_per_device": b // n_dev,
      "stage_sizes": list(sizes), "timings": timings,
      # XLA's cost analysis of an SPMD-partitioned program is per device.
      "flops_per_iter_per_device": flops,
      "xla_memory_analysis": static_mem,
      "params": {"generator": _param_count(state.g_params),
                 "discriminators": _param_count(state.d_params),
                 "text_encoder": _param_count(enc.text_params),
                 "image_encoder": _param_count(enc.image_vars["params"])},
  }
  if compile_only:
    return {**common, "compile_only": True,
            "flops_per_iter": flops * n_dev if flops else None,
            "host_peak_rss_bytes": _host_peak_rss_bytes()}

  metrics = None
  warm_times = []
  for _ in range(warmup):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, enc)
    jax.block_until_ready((state, metrics))
    warm_times.append(time.perf_counter() - t0)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, enc)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  loss = {k: float(v) for k, v in jax.device_get(metrics).items()}

  med = statistics.median(times)
  result = {
      **common,
      "ngf": config.model.ngf, "ndf": config.model.ndf,
      "r_num": config.model.r_num, "words_num": config.data.words_num,
      "n_words": n_words,
      "image_backbone": config.image_encoder.backbone,
      "warmup_s": warm_times,
      "step_s": times,
      "s_per_iter_median": med,
      "s_per_iter_mean": statistics.fmean(times),
      "s_per_iter_min": min(times),
      "images_per_s": b / med,
      "flops_per_iter": flops * n_dev if flops else None,
      "achieved_flops_per_s": (flops * n_dev / med) if flops else None,
      "host_peak_rss_bytes": _host_peak_rss_bytes(),
      "host_rss_bytes_end": _host_rss_bytes(),
      "device_memory": _device_memory(mesh.devices.flat),
      "host_loadavg_1m": {"start": load_start, "end": _loadavg()},
      "final_metrics": loss,
      "finite": bool(all(np.isfinite(v) for v in loss.values())),
  }
  if (name, refiner) in REFERENCE:
    result["reference"] = REFERENCE[(name, refiner)]
  return result


# ------------------------------------------------------------ reporting
def _fmt(x, scale=1.0, spec=".2f", missing="-"):
  return missing if x is None else format(x / scale, spec)


def print_rows(head, rows) -> None:
  """Prints ``rows`` (lists of strings) under ``head``, right-aligned."""
  widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
            for i, h in enumerate(head)]
  line = "  ".join(h.rjust(w) for h, w in zip(head, widths))
  print(line)
  print("-" * len(line))
  for row in rows:
    print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def _si(x, unit=""):
  if x is None:
    return "-"
  for div, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                      (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}"


def print_table(report: dict[str, Any]) -> None:
  peak = (report.get("matmul_peak") or {}).get("peak_flops_per_s")
  print()
  print(f"GAN training step on {report['platform']} "
        f"({report['device_kind']}, {report['num_devices']} device(s)), "
        f"jax {report['jax_version']}")
  if peak:
    mm = report["matmul_peak"]
    print(f"fp32 matmul peak ({mm['n']}x{mm['n']}, HIGHEST): "
          f"{_si(peak, 'FLOP/s')}" +
          (f"; default precision {_si(mm['default']['flops_per_s_best'], 'FLOP/s')}"
           if "default" in mm else ""))
  head = ("config", "refiner", "dtype", "remat", "dev", "batch/dev", "stages",
          "compile s", "s/iter", "img/s", "FLOP/iter", "FLOP/dev", "FLOP/s",
          "% peak", "XLA temp MiB", "host MiB", "dev MiB", "G params")
  rows = []
  for r in report["results"]:
    if "error" in r:
      rows.append((r["config"], r.get("refiner", "-"), "-", "-", "-", "-",
                   "-", "-", "ERROR: " + r["error"][-60:], *[""] * 9))
      continue
    dev = r.get("device_memory") or {}
    ach = r.get("achieved_flops_per_s")
    mem = r.get("xla_memory_analysis") or {}
    rows.append((
        r["config"], r["refiner"], r.get("compute_dtype", "-"),
        r.get("remat", "-"), str(r["num_devices"]),
        str(r.get("batch_per_device", "-")),
        "/".join(str(s) for s in r["stage_sizes"]),
        _fmt(r["timings"]["compile_s"], spec=".1f"),
        _fmt(r.get("s_per_iter_median"), spec=".3f"),
        _fmt(r.get("images_per_s"), spec=".2f"),
        _si(r["flops_per_iter"]), _si(r.get("flops_per_iter_per_device")),
        _si(ach),
        _fmt(100 * r["fraction_of_peak"], spec=".1f")
        if "fraction_of_peak" in r else "-",
        _fmt(mem.get("temp_size_in_bytes"), 2**20, ".0f"),
        _fmt(r["host_peak_rss_bytes"], 2**20, ".0f"),
        _fmt(dev.get("peak_bytes_in_use"), 2**20, ".0f"),
        f"{r['params']['generator']:,}"))
  print_rows(head, rows)
  for r in report["results"]:
    if "error" in r or r.get("compile_only"):
      continue
    steps = ", ".join(f"{t:.3f}" for t in r["step_s"])
    print(f"  {r['config']}/{r['refiner']}: steps [{steps}] s (mean {r['s_per_iter_mean']:.3f}, "
          f"min {r['s_per_iter_min']:.3f}); load avg "
          f"{_fmt(r['host_loadavg_1m']['start'], spec='.1f')}->"
          f"{_fmt(r['host_loadavg_1m']['end'], spec='.1f')}; lower {r['timings']['lower_s']:.1f} s,"
          f" init {r['timings']['init_s']:.1f} s; finite losses: {r['finite']}")
    ref = r.get("reference")
    if ref and r.get("flops_per_iter"):
      print(f"    FLOPs/iter: ours {_si(r['flops_per_iter'], 'FLOP')} vs "
            f"{_si(ref['flops_per_iter'], 'FLOP')} ({ref['note']}); "
            f"ratio {r['flops_per_iter'] / ref['flops_per_iter']:.2f}")
    if r.get("conv_weight_grad_resolved") == "per_tap":
      print("    note: with per-tap kernel gradients (a lax.scan over the taps) "
            "XLA's cost analysis counts each scan body once, so FLOP/iter, "
            "FLOP/s and % peak are under-counted; take FLOP/iter from a "
            "--conv_weight_grad=xla run (the same sums)")
    mem = r.get("xla_memory_analysis")
    if mem:
      print(f"    XLA memory analysis: args "
            f"{mem.get('argument_size_in_bytes', 0) / 2**20:.0f} MiB, temp "
            f"{mem.get('temp_size_in_bytes', 0) / 2**20:.0f} MiB, out "
            f"{mem.get('output_size_in_bytes', 0) / 2**20:.0f} MiB")
  print()


# ----------------------------------------------------------------- main
def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", default=",".join(CONFIGS),
                 help=f"comma-separated subset of {','.join(CONFIGS)}")
  p.add_argument("--refiners", default=",".join(FAMILIES),
                 help="comma-separated generator families (model.refiner) of "
                      f"{','.join(FAMILIES)}; each config runs once per family")
  p.add_argument("--steps", type=int, default=0,
                 help="timed iterations (0: 3 for bird and 10 otherwise on CPU,"
                      " 20 on accelerators)")
  p.add_argument("--warmup", type=int, default=-1,
                 help="untimed iterations after compiling (-1: 1 for bird on "
                      "CPU, else 2)")
  p.add_argument("--num_devices", type=int, default=0,
                 help="devices of the data mesh (0: all)")
  p.add_argument("--devices", default="",
                 help="comma-separated sweep of mesh sizes (overrides "
                      "--num_devices); on CPU the child processes get that "
                      "many fake host devices")
  p.add_argument("--dtypes", default="auto",
                 help=f"comma-separated config.dtype values of {','.join(DTYPES)}")
  p.add_argument("--remats", default="none",
                 help=f"comma-separated config.remat values of {','.join(REMATS)}")
  p.add_argument("--compile_only", action="store_true",
                 help="lower + compile from abstract shapes; report XLA cost "
                      "and memory analysis only (no iteration is run)")
  p.add_argument("--batch_size", type=int, default=0,
                 help="global batch override (0: the config's)")
  p.add_argument("--conv_weight_grad", default="",
                 help="config.model.conv_weight_grad for every run "
                      "('xla' | 'per_tap'; '': the config's)")
  p.add_argument("--small_map_conv", default="",
                 help="config.model.small_map_conv for every run "
                      "('xla' | 'matmul'; '': the config's)")
  p.add_argument("--matmul_size", type=int, default=0,
                 help="peak matmul size (0: 2048 on CPU, 8192 elsewhere)")
  p.add_argument("--out_dir", default=os.path.join(_ROOT, "bench", "results"))
  p.add_argument("--isolate", action=argparse.BooleanOptionalAction,
                 default=True, help="one child process per config")
  p.add_argument("--_child", default="", help=argparse.SUPPRESS)
  p.add_argument("--_child_out", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
  for c in args.config_list:
    if c not in CONFIGS:
      p.error(f"unknown config {c!r}; choose from {','.join(CONFIGS)}")
  args.refiner_list = [r.strip() for r in args.refiners.split(",") if r.strip()]
  for r in args.refiner_list:
    if r not in FAMILIES:
      p.error(f"unknown refiner {r!r}; choose from {','.join(FAMILIES)}")
  args.dtype_list = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  args.remat_list = [d.strip() for d in args.remats.split(",") if d.strip()]
  for v, allowed, flag in ((args.dtype_list, DTYPES, "dtype"),
                           (args.remat_list, REMATS, "remat")):
    for x in v:
      if x not in allowed:
        p.error(f"unknown {flag} {x!r}; choose from {','.join(allowed)}")
  args.device_list = ([int(d) for d in args.devices.split(",") if d.strip()]
                      or [args.num_devices])
  return args


def _task_name(config: str, refiner: str, dtype: str = "auto",
               remat: str = "none", devices: int = 0) -> str:
  return f"{config}:{refiner}:{dtype}:{remat}:{devices}"


def _run_task(task: str, args) -> dict[str, Any]:
  if task == "peak":
    return measure_matmul_peak(args.matmul_size)
  name, refiner, dtype, remat, devices = task.split(":")
  return run_config(name, refiner=refiner, steps=args.steps, warmup=args.warmup,
                    num_devices=int(devices), batch_size=args.batch_size,
                    dtype=dtype, remat=remat, compile_only=args.compile_only,
                    conv_weight_grad=args.conv_weight_grad,
                    small_map_conv=args.small_map_conv)


def _environment() -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  devs = jax.devices()
  return {"platform": jax.default_backend(),
          "device_kind": devs[0].device_kind,
          "devices_available": len(devs),
          "jax_version": jax.__version__}


def _run_child(task: str, args) -> dict[str, Any]:
  """Runs one task in a fresh interpreter; its JSON comes back via a file."""
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  cmd = [sys.executable, os.path.abspath(__file__), f"--configs={args.configs}",
         f"--refiners={args.refiners}", f"--steps={args.steps}", f"--warmup={args.warmup}",
         f"--num_devices={args.num_devices}",
         f"--batch_size={args.batch_size}",
         f"--matmul_size={args.matmul_size}",
         f"--conv_weight_grad={args.conv_weight_grad}",
         f"--small_map_conv={args.small_map_conv}",
         f"--_child={task}", f"--_child_out={out}"]
  if args.compile_only:
    cmd.append("--compile_only")
  env = dict(os.environ)
  devices = int(task.split(":")[-1]) if task != "peak" else 0
  if devices > 1 and "xla_force_host_platform_device_count" not in env.get(
      "XLA_FLAGS", ""):
    # Fake host devices (used only when the backend is CPU).
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}")
  try:
    proc = subprocess.run(cmd, cwd=_ROOT, check=False, env=env)
    if proc.returncode != 0:
      return {"error": f"child exited with status {proc.returncode}"}
    with open(out) as f:
      return json.load(f)
  finally:
    if os.path.exists(out):
      os.remove(out)


def main(argv=None) -> dict[str, Any]:
  args = _parse(sys.argv[1:] if argv is None else argv)
  if args._child:  # pylint: disable=protected-access
    payload = {"env": _environment(), "result": _run_task(args._child, args)}  # pylint: disable=protected-access
    with open(args._child_out, "w") as f:  # pylint: disable=protected-access
      json.dump(payload, f)
    return payload

  started = time.time()
  stamp = time.strftime("%Y%m%d_%H%M%S")
  runs = [(c, r, d, m, n) for c in args.config_list for r in args.refiner_list
          for d in args.dtype_list for m in args.remat_list
          for n in args.device_list]
  tasks = ([] if args.compile_only else ["peak"]) + [_task_name(*run)
                                                     for run in runs]
  outputs: dict[str, Any] = {}
  env = None
  for task in tasks:
    print(f"[train_step bench] {task} ...", flush=True)
    t0 = time.perf_counter()
    if args.isolate:
      payload = _run_child(task, args)
    else:
      try:
        payload = {"env": _environment(), "result": _run_task(task, args)}
      except Exception as e:  # pylint: disable=broad-except
        payload = {"error": f"{type(e).__name__}: {e}"}
    if "error" in payload:
      name, refiner = (task.split(":") + [None])[:2]
      outputs[task] = {"config": name, "refiner": refiner,
                       "error": payload["error"]}
    else:
      env = env or payload["env"]
      outputs[task] = payload["result"]
    print(f"[train_step bench] {task} done in {time.perf_counter() - t0:.1f} s",
          flush=True)

  env = env or {"platform": "unknown", "device_kind": "unknown",
                "devices_available": 0, "jax_version": "unknown"}
  results = [outputs[_task_name(*run)] for run in runs]
  num_devices = next((r["num_devices"] for r in results if "num_devices" in r),
                     args.num_devices or env["devices_available"])
  peak = outputs.get("peak")
  if peak and "error" not in peak:
    for r in results:
      ach = r.get("achieved_flops_per_s")
      # The matmul runs on one device; the step on num_devices of them
      # (fake CPU devices share the host's cores: the peak is the host's).
      if ach:
        n = 1 if env["platform"] == "cpu" else r["num_devices"]
        r["fraction_of_peak"] = ach / (peak["peak_flops_per_s"] * n)
  else:
    peak = None
  report = {
      **env,
      "num_devices": num_devices,
      "timestamp": stamp,
      "command": " ".join([sys.executable] + sys.argv),
      "host": {"machine": platform_lib.machine(), "cpu_count": os.cpu_count(),
               "python": platform_lib.python_version()},
      "isolated_processes": args.isolate,
      "matmul_peak": peak,
      "results": results,
      "wall_s": time.time() - started,
  }
  print_table(report)
  from bench import report as bench_report  # pylint: disable=g-import-not-at-top
  bench_report.write_report(
      args.out_dir, f"train_step_{env['platform']}_{stamp}.json", report,
      indent=2)
  return report


if __name__ == "__main__":
  main()
