"""Parameters and XLA FLOPs of one training iteration, per GAN family (CUB birds).

For the bird configs of the four families

* ``dmgan``: DM-GAN, ``configs/dmgan_bird.py`` (batch 10),
* ``ffgan``: FF-GAN, ``configs/ffgan_bird.py`` (batch 4),
* ``attngan``: AttnGAN's refinement stage, ``configs/attngan_bird.py`` (batch 10),
* ``dfgan``: DF-GAN, ``dfgan_lib`` with the DfganConfig of
  ``configs/dfgan_bird.py`` (= ``dfgan_lib.BIRD``; batch 32),

it builds one training iteration from abstract shapes only (``jax.eval_shape``
and ``jax.ShapeDtypeStruct``: no data files, no parameters allocated), lowers
and compiles it, and reports

* generator and discriminator parameter counts (stacked families: all stage
  discriminators together and per stage; DF-GAN: NetD and NetC apart, and
  NetD's ``conv_s`` of the fin == fout DBlocks, which are built, counted by
  ``sum(p.numel())`` in the reference, and never used), plus the frozen DAMSM
  encoders';
* XLA FLOPs of ONE iteration (``compiled.cost_analysis()['flops']``) at the
  family's own batch size, and per image (FLOPs / batch), so they compare.

The iteration is what a training step computes, including the frozen DAMSM
encoders: stacked families run ``gan_lib.train_step`` (text encoder forward,
every stage's D update, G update whose DAMSM loss runs the image encoder on
the last stage's fakes, EMA); DF-GAN runs the DAMSM text encoder forward
(sentence vector, no gradient), then ``dfgan_lib.train_step`` (D + C update
with MA-GP, G update). DF-GAN's reference iteration has no image encoder.

  python bench/family_costs.py                              # ~1-3 min per family on 2 CPU cores
  python bench/family_costs.py --families=dmgan,dfgan --batch=10
  python bench/family_costs.py --tiny --out=/tmp/tiny.json  # the :tiny configs (smoke test)

The convolutions are XLA's own (``model.conv_weight_grad`` and
``model.small_map_conv`` set to 'xla'; their CPU 'auto' choices compute the same
sums, but the per-tap kernel gradient is a scan that the cost analysis would
count once). Caveat: XLA's cost analysis counts a ``while`` body once, so the
LSTM text encoder's scan over the words is counted for one word (a tiny part
of every family's step).

Prints a table and writes JSON (``--out``, default
``bench/results/family_costs.json``) with the command and machine facts.
"""

import argparse
import functools
import importlib
import os
import platform as platform_lib
import sys
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# family -> (config module, description)
FAMILIES = {
    "dmgan": ("configs.dmgan_bird", "DM-GAN"),
    "ffgan": ("configs.ffgan_bird", "FF-GAN"),
    "attngan": ("configs.attngan_bird", "AttnGAN refiner"),
    "dfgan": ("configs.dfgan_bird", "DF-GAN"),
}
BIRD_N_WORDS = 5450       # CUB vocabulary of the reference captions
BIRD_NUM_CLASSES = 200
TINY_N_WORDS = 40
# model fields fixed to 'xla' so the FLOPs are the plain convolutions' on any
# backend (load_config)
CONV_IMPL_FIELDS = ("conv_weight_grad", "small_map_conv")


def _param_count(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def load_config(family: str, tiny: bool, batch: int):
  """The family's bird config (``:tiny`` if asked), batch overridden if > 0.

  Convolutions as XLA's own ops (``model.conv_weight_grad`` and
  ``model.small_map_conv`` = 'xla'): 'auto' picks CPU-only variants, and the
  per-tap kernel gradient is a ``lax.scan`` whose body XLA's cost analysis
  counts once (the same sums, under-counted).
  """
  module = importlib.import_module(FAMILIES[family][0])
  config = module.get_config("tiny" if tiny else None)
  for field in CONV_IMPL_FIELDS:
    if field in config.model:
      config.model[field] = "xla"
  if batch:
    config.gan.batch_size = batch
  return config


def _abstract(fn, *args):
  """``jax.eval_shape`` of ``fn(*args)`` under jit: shapes only."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(jax.jit(fn), *args)


def _caption_shapes(config):
  """Abstract (captions [B, words_num], caption_lens [B]) of the batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b, t = config.gan.batch_size, config.data.words_num
  return (jax.ShapeDtypeStruct((b, t), jnp.int32),
          jax.ShapeDtypeStruct((b,), jnp.int32))


def _cost(compiled) -> dict[str, Any]:
  """XLA's FLOPs (summed over modules) and temp memory of a compiled step."""
  from bench import train_step as ts  # pylint: disable=g-import-not-at-top
  mem = ts._memory_analysis(compiled) or {}  # pylint: disable=protected-access
  return {"flops_per_iter": ts._cost_flops(compiled),  # pylint: disable=protected-access
          "xla_temp_bytes": mem.get("temp_size_in_bytes")}


def stacked_family(config, n_words: int) -> tuple[Any, tuple, dict]:
  """(step, abstract args, params) of a DM-GAN / FF-GAN / AttnGAN bird step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top

  text_model, image_model = damsm_lib.build_models(config, n_words)
  dstate = _abstract(lambda k: damsm_lib.create_state(
      config, text_model, image_model, k), jax.random.key(1))
  enc = gan_lib.Encoders.from_damsm_state(dstate)
  models = gan_lib.GanModels(config, text_model, image_model)
  state = _abstract(functools.partial(gan_lib.create_state, models),
                    jax.random.key(config.seed))
  b = config.gan.batch_size
  captions, lens = _caption_shapes(config)
  batch = {"images": tuple(jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32)
                           for s in pipeline.stage_sizes(config)),
           "captions": captions, "caption_lens": lens,
           "class_ids": jax.ShapeDtypeStruct((b,), jnp.int32)}
  params = {
      "generator": _param_count(state.g_params),
      "discriminator": _param_count(state.d_params),
      "discriminator_per_stage": [_param_count(p) for p in state.d_params],
      "text_encoder": _param_count(enc.text_params),
      "image_encoder": _param_count(enc.image_vars["params"]),
  }
  step = functools.partial(gan_lib.train_step, models=models)
  return step, (state, batch, enc), params


def dfgan_config(config):
  """The ``DfganConfig`` of a ``configs/dfgan_*.py`` config (nf = model.ngf,
  cond_dim = the DAMSM embedding, imsize = data.base_size)."""
  from t2igan_jax import dfgan_lib  # pylint: disable=g-import-not-at-top
  return dfgan_lib.DfganConfig(
      nf=config.model.ngf, z_dim=config.model.z_dim,
      cond_dim=config.text_encoder.embedding_dim,
      imsize=config.data.base_size)


def dead_conv_s(d_params) -> int:
  """Parameters of NetD's ``conv_s`` in the DBlocks with fin == fout (built,
  never applied: the shortcut is the identity there)."""
  net_d, n = d_params["netD"], 0
  for name, block in net_d.items():
    if name.startswith("DBlocks_"):
      fin, fout = block["conv_r_0"]["kernel"].shape[-2:]
      if fin == fout:
        n += _param_count(block["conv_s"])
  return n


def dfgan_family(config, n_words: int) -> tuple[Any, tuple, dict]:
  """(step, abstract args, params): DAMSM text encoder forward + DF-GAN step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import dfgan_lib  # pylint: disable=g-import-not-at-top

  cfg = dfgan_config(config)
  text_model, _ = damsm_lib.build_models(config, n_words)
  captions, lens = _caption_shapes(config)
  text_params = _abstract(lambda k: text_model.init(
      {"params": k}, jnp.zeros(captions.shape, jnp.int32),
      jnp.full(lens.shape, captions.shape[1], jnp.int32),
      train=False)["params"], jax.random.key(1))
  state = _abstract(functools.partial(dfgan_lib.create_state, cfg),
                    jax.random.key(config.seed))
  b = config.gan.batch_size
  images = jax.ShapeDtypeStruct((b, cfg.imsize, cfg.imsize, cfg.ch_size),
                                jnp.float32)
  key = jax.eval_shape(lambda: jax.random.key(0))

  def step(state, text_params, captions, lens, images, key):
    _, sent = text_model.apply({"params": text_params}, captions, lens,
                               train=False)
    return dfgan_lib.train_step(state, images, jax.lax.stop_gradient(sent),
                                key, config=cfg)

  params = {
      "generator": _param_count(state.g_params),
      "discriminator": _param_count(state.d_params),
      "netD": _param_count(state.d_params["netD"]),
      "netC": _param_count(state.d_params["netC"]),
      "netD_unused_conv_s": dead_conv_s(state.d_params),
      "text_encoder": _param_count(text_params),
      "image_encoder": 0,
  }
  if cfg == dfgan_lib.BIRD:
    params["dfgan_config"] = "dfgan_lib.BIRD"
  else:
    params["dfgan_config"] = repr(cfg)
  return step, (state, text_params, captions, lens, images, key), params


def run_family(family: str, *, tiny: bool = False, batch: int = 0
               ) -> dict[str, Any]:
  """Builds, lowers and compiles one family's iteration; its costs."""
  import jax  # pylint: disable=g-import-not-at-top
  config = load_config(family, tiny, batch)
  b = config.gan.batch_size
  if b <= 0:
    raise ValueError(f"--batch / config.gan.batch_size must be positive, got {b}")
  n_words = TINY_N_WORDS if tiny else BIRD_N_WORDS
  build = dfgan_family if family == "dfgan" else stacked_family
  t0 = time.perf_counter()
  step, args, params = build(config, n_words)
  lowered = jax.jit(step).lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  cost = _cost(compiled)
  flops = cost["flops_per_iter"]
  sizes = [config.data.base_size * 2**i for i in range(config.data.branch_num)]
  if family == "dfgan":
    sizes = [config.data.base_size]
  result = {
      "family": family, "name": FAMILIES[family][1],
      "config": FAMILIES[family][0].replace(".", "/") + ".py"
                + (":tiny" if tiny else ""),
      "batch_size": b, "stage_sizes": sizes,
      "words_num": config.data.words_num, "n_words": n_words,
      "image_backbone": (config.image_encoder.backbone
                         if family != "dfgan" else None),
      # DF-GAN's nets use plain nn.Conv (no conv_weight_grad/small_map_conv)
      "conv_impl": (None if family == "dfgan" else
                    {f: config.model.get(f) for f in CONV_IMPL_FIELDS}),
      "params": params,
      **cost,
      "flops_per_image": flops / b if flops else None,
      "lower_s": t1 - t0, "compile_s": t2 - t1,
  }
  del compiled, lowered
  jax.clear_caches()
  return result


# ------------------------------------------------------------ reporting
def print_table(report: dict[str, Any]) -> None:
  from bench.train_step import _si, print_rows  # pylint: disable=g-import-not-at-top
  print()
  print(f"One training iteration per GAN family, CUB birds"
        f"{' (:tiny configs)' if report['tiny'] else ''}; XLA cost analysis on "
        f"{report['platform']} ({report['device_kind']}), jax "
        f"{report['jax_version']}")
  head = ("family", "batch", "stages", "G params", "D params", "FLOP/iter",
          "FLOP/image", "vs dmgan", "XLA temp MiB", "compile s")
  ref = next((r["flops_per_image"] for r in report["results"]
              if r.get("family") == "dmgan" and r.get("flops_per_image")), None)
  rows = []
  for r in report["results"]:
    if "error" in r:
      rows.append((r["family"], "ERROR: " + r["error"][-80:]) + ("",) * 8)
      continue
    p = r["params"]
    rows.append((
        r["family"], str(r["batch_size"]),
        "/".join(str(s) for s in r["stage_sizes"]),
        f"{p['generator']:,}", f"{p['discriminator']:,}",
        _si(r["flops_per_iter"]), _si(r["flops_per_image"]),
        f"{r['flops_per_image'] / ref:.2f}" if ref and r["flops_per_image"]
        else "-",
        "-" if r["xla_temp_bytes"] is None
        else f"{r['xla_temp_bytes'] / 2**20:.0f}",
        f"{r['compile_s']:.1f}"))
  print_rows(head, rows)
  for r in report["results"]:
    if "error" in r:
      continue
    p = r["params"]
    if r["family"] == "dfgan":
      print(f"  dfgan: D = NetD {p['netD']:,} + NetC {p['netC']:,}; NetD "
            f"includes {p['netD_unused_conv_s']:,} never-used conv_s params "
            f"(fin == fout DBlocks); text encoder {p['text_encoder']:,} "
            f"(frozen, forward only)")
    else:
      per = " + ".join(f"{n:,}" for n in p["discriminator_per_stage"])
      print(f"  {r['family']}: D per stage {per}; frozen DAMSM text "
            f"{p['text_encoder']:,}, image ({r['image_backbone']}) "
            f"{p['image_encoder']:,}")
  print()


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--families", default=",".join(FAMILIES),
                 help=f"comma-separated subset of {','.join(FAMILIES)}")
  p.add_argument("--batch", type=int, default=0,
                 help="batch size for every family (0: each family's own: "
                      "dmgan 10, ffgan 4, attngan 10, dfgan 32)")
  p.add_argument("--tiny", action="store_true",
                 help="the configs' :tiny variants (fast smoke test)")
  p.add_argument("--out", default=os.path.join(_ROOT, "bench", "results",
                                               "family_costs.json"),
                 help="JSON output path")
  args = p.parse_args(argv)
  args.family_list = [f.strip() for f in args.families.split(",") if f.strip()]
  for f in args.family_list:
    if f not in FAMILIES:
      p.error(f"--families: unknown family {f!r}; choose from "
              f"{','.join(FAMILIES)}")
  if args.batch < 0:
    p.error(f"--batch must be >= 0 (0 = each family's own), got {args.batch}")
  return args


def main(argv=None) -> dict[str, Any]:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = _parse(argv)
  from bench import report as bench_report  # pylint: disable=g-import-not-at-top
  from bench.train_step import _environment  # pylint: disable=g-import-not-at-top
  started = time.time()
  results = []
  for family in args.family_list:
    print(f"[family_costs] {family} ...", flush=True)
    try:
      results.append(run_family(family, tiny=args.tiny, batch=args.batch))
    except Exception as e:  # pylint: disable=broad-except
      results.append({"family": family, "error": f"{type(e).__name__}: {e}"})
    print(f"[family_costs] {family} done", flush=True)
  report = {
      **_environment(),
      "timestamp": time.strftime("%Y%m%d_%H%M%S"),
      "command": " ".join([sys.executable, os.path.relpath(__file__, _ROOT)]
                          + argv),
      "host": {"machine": platform_lib.machine(), "cpu_count": os.cpu_count(),
               "python": platform_lib.python_version()},
      "tiny": args.tiny, "batch_override": args.batch,
      "results": results,
      "wall_s": time.time() - started,
  }
  print_table(report)
  out_dir, name = os.path.split(os.path.abspath(args.out))
  bench_report.write_report(out_dir, name, report, indent=2)
  return report


if __name__ == "__main__":
  main()
