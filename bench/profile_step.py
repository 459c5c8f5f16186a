"""Where the GAN training iteration's time goes: per-HLO-op profile of the step.

Builds and compiles the real ``gan_lib.train_step`` exactly as
``bench/train_step.py`` does (same config, synthetic batch, random DAMSM
encoders, state donated), warms it up, then traces ``--steps`` iterations with
``jax.profiler`` and joins the per-op events of the trace with the optimised
HLO of the compiled step (``compiled.as_text()``):

* time: every executed HLO instruction (a fusion, a YNNPACK ``ynn_fusion``, a
  plain ``dot``, a ``while`` ...) is an event with its ``hlo_op`` name; its
  *self* time is its duration minus that of the events nested in it on the
  same thread (a ``while`` loop's body ops are their own events), so the
  self times of a step add up to the op time without double counting. The
  XLA CPU thunk executor can run independent ops on several threads at once,
  so the summed op time and the step's wall time are both reported.
* FLOPs, from the HLO shapes of the convolutions and dots inside each op:
  ``2 * out_elems * prod(window) * Cin_per_group`` for a convolution (``Cin``
  the kernel's input-feature dimension, i.e. already divided by
  ``feature_group_count``; divided by ``prod(lhs_dilate)`` for transposed /
  input-gradient convolutions of strided convolutions, whose dilation holes
  do no useful work) and ``2 * out_elems * prod(contracting dims)`` for a dot.
* category: convolution forward / input-gradient / filter-gradient (from the
  ``op_name`` metadata, ``transpose(jvp(...))`` marking the backward pass, and
  from the window: a filter gradient's window spans the activation and is
  larger than its output, the kernel), dot/einsum, pooling
  (reduce-window / select-and-scatter), reduction fusions (BatchNorm
  statistics, softmax, losses), transposes/copies (layout changes and data
  movement), elementwise fusions, ops inside a ``while`` body (the text
  encoder's LSTM scan), and other.

For the ``--standalone`` largest conv/dot ops it also times the same
convolution / dot alone (a jitted ``lax.conv_general_dilated`` /
``lax.dot_general`` rebuilt from the HLO shapes), so a slow op can be told
apart as a slow kernel (slow standalone too) or a slow in-step context
(memory traffic, threads busy elsewhere). The fp32 matmul peak is
``bench/train_step.measure_matmul_peak`` measured in the same process.

  python bench/profile_step.py --config=tiny --refiner=memory --steps=2
  python bench/profile_step.py --config=bird --refiner=memory --steps=1

Prints a category table (share of op time, GFLOP, GFLOP/s, % of the matmul
peak), the top ``--top`` ops with their shapes, and the utilisation bounds;
writes JSON to ``bench/results/profile_<config>_<timestamp>.json``.
"""

import argparse
import collections
import functools
import glob
import math
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Iterable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from bench import report as bench_report  # noqa: E402  pylint: disable=g-import-not-at-top
from bench import timing  # noqa: E402  pylint: disable=g-import-not-at-top
from bench import train_step as bench_train_step  # noqa: E402  pylint: disable=g-import-not-at-top

CATEGORIES = ("conv_fwd", "conv_bwd_input", "conv_bwd_filter", "dot",
              "pooling", "reduction", "transpose_copy", "elementwise",
              "while_body", "other")
# Opcodes that only move or re-lay out data (no arithmetic).
_MOVE_OPS = frozenset((
    "parameter", "constant", "bitcast", "copy", "transpose", "reshape",
    "broadcast", "slice", "dynamic-slice", "dynamic-update-slice",
    "concatenate", "pad", "reverse", "get-tuple-element", "tuple", "iota",
    "gather", "scatter", "bitcast-convert", "copy-start", "copy-done"))
_POOL_OPS = frozenset(("reduce-window", "select-and-scatter"))


# ------------------------------------------------------------ HLO parsing
_INSTR_RE = re.compile(
    r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.*?)\s+"
    r"(?P<opcode>[a-z][a-z0-9\-_]*)\((?P<rest>.*)$")
_COMP_RE = re.compile(r"^(?P<entry>ENTRY\s+)?%(?P<name>[\w.\-]+)\s.*\{\s*$")
_ARRAY_RE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def _split_operands(rest: str) -> tuple[str, str]:
  """Splits 'a, b), attrs' at the paren closing the operand list."""
  depth = 1
  for i, ch in enumerate(rest):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
      if depth == 0:
        return rest[:i], rest[i + 1:]
  return rest, ""


def parse_shape(shape: str) -> tuple[str, tuple[int, ...]] | None:
  """'f32[4,32,32,16]{3,2,1,0}' -> ('f32', (4, 32, 32, 16)); tuples -> None."""
  shape = shape.strip()
  if shape.startswith("("):
    return None
  m = _ARRAY_RE.match(shape)
  if not m:
    return None
  dims = tuple(int(d) for d in m.group(2).split(",") if d)
  return m.group(1), dims


def parse_hlo(text: str) -> dict[str, Any]:
  """Optimised HLO text -> {'module', 'entry', 'computations', 'instructions'}.

  ``computations`` maps a computation name to its instruction names;
  ``instructions`` maps every instruction name (unique in a module) to a dict
  with its computation, opcode, shape, operand names and attribute text.
  """
  module = None
  entry = None
  comps: dict[str, list[str]] = {}
  instrs: dict[str, dict[str, Any]] = {}
  current = None
  for line in text.splitlines():
    if line.startswith("HloModule "):
      module = line.split()[1].rstrip(",")
      continue
    if current is None:
      m = _COMP_RE.match(line)
      if m and "=" not in line.split("(")[0]:
        current = m.group("name")
        comps[current] = []
        if m.group("entry"):
          entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTR_RE.match(line)
    if not m:
      continue
    operand_text, attrs = _split_operands(m.group("rest"))
    name = m.group("name")
    instrs[name] = {
        "name": name, "computation": current, "opcode": m.group("opcode"),
        "shape": m.group("shape"),
        "operands": re.findall(r"%([\w.\-]+)", operand_text),
        "attrs": attrs,
    }
    comps[current].append(name)
  if module is None or entry is None:
    raise ValueError("not an HLO module text: no 'HloModule' line or no "
                     "ENTRY computation")
  return {"module": module, "entry": entry, "computations": comps,
          "instructions": instrs}


def _attr(attrs: str, key: str) -> str | None:
  m = re.search(r"(?:^|[\s,{])" + re.escape(key) + r"=([^\s,}]+)", attrs)
  return m.group(1) if m else None


def _op_name(attrs: str) -> str:
  m = re.search(r'op_name="([^"]*)"', attrs)
  return m.group(1) if m else ""


def _called(attrs: str) -> list[str]:
  """Computations an instruction calls (fusion, while, call, conditional)."""
  out = []
  for key in ("calls", "body", "condition", "to_apply"):
    v = _attr(attrs, key)
    if v:
      out.extend(x.lstrip("%") for x in v.split(",") if x)
  m = re.search(r"branch_computations=\{([^}]*)\}", attrs)
  if m:
    out.extend(x.strip().lstrip("%") for x in m.group(1).split(",") if x.strip())
  return out


def _window(attrs: str) -> dict[str, tuple[int, ...]]:
  """window={size=3x3 stride=2x2 pad=1_1x1_1 lhs_dilate=2x2} -> ints."""
  m = re.search(r"window=\{([^}]*)\}", attrs)
  out: dict[str, Any] = {}
  if not m:
    return out
  for item in m.group(1).split():
    key, _, value = item.partition("=")
    if key == "pad":
      out[key] = tuple(tuple(int(p) for p in d.split("_"))
                       for d in value.split("x"))
    else:
      out[key] = tuple(int(v) for v in value.split("x"))
  return out


def conv_info(instr: dict[str, Any],
              instrs: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Shapes, FLOPs and a readable description of one HLO convolution."""
  dim_labels = _attr(instr["attrs"], "dim_labels") or ""
  lhs_l, rest = dim_labels.split("_", 1)
  rhs_l, out_l = rest.split("->")
  lhs = parse_shape(instrs[instr["operands"][0]]["shape"])[1]
  rhs = parse_shape(instrs[instr["operands"][1]]["shape"])[1]
  out = parse_shape(instr["shape"])[1]
  win = _window(instr["attrs"])
  spatial_rhs = [rhs[i] for i, c in enumerate(rhs_l) if c.isdigit()]
  kernel = tuple(win.get("size", spatial_rhs))
  cin = rhs[rhs_l.index("i")]
  cout = rhs[rhs_l.index("o")]
  out_spatial = tuple(out[out_l.index(str(k))] for k in range(len(kernel)))
  lhs_spatial = tuple(lhs[lhs_l.index(str(k))] for k in range(len(kernel)))
  out_elems = math.prod(out)
  lhs_dilate = math.prod(win.get("lhs_dilate", (1,)))
  flops = 2.0 * out_elems * math.prod(kernel) * cin / lhs_dilate
  fgc = int(_attr(instr["attrs"], "feature_group_count") or 1)
  bgc = int(_attr(instr["attrs"], "batch_group_count") or 1)
  return {
      "opcode": "convolution", "dim_labels": dim_labels,
      "lhs": list(lhs), "rhs": list(rhs), "out": list(out),
      "batch": out[out_l.index("b")], "in_spatial": list(lhs_spatial),
      "out_spatial": list(out_spatial), "cin": cin, "cout": cout,
      "kernel": list(kernel), "window": {k: list(v) for k, v in win.items()},
      "feature_group_count": fgc, "batch_group_count": bgc,
      "flops": flops, "op_name": _op_name(instr["attrs"]),
  }


def dot_info(instr: dict[str, Any],
             instrs: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Shapes and FLOPs (2 * out_elems * contracted size) of one HLO dot."""
  lhs = parse_shape(instrs[instr["operands"][0]]["shape"])[1]
  rhs = parse_shape(instrs[instr["operands"][1]]["shape"])[1]
  out = parse_shape(instr["shape"])[1]
  def dims(key):
    v = re.search(key + r"=\{([0-9,]*)\}", instr["attrs"])
    return [int(d) for d in v.group(1).split(",") if d] if v else []
  lc, rc = dims("lhs_contracting_dims"), dims("rhs_contracting_dims")
  lb, rb = dims("lhs_batch_dims"), dims("rhs_batch_dims")
  k = math.prod(lhs[d] for d in lc)
  return {"opcode": "dot", "lhs": list(lhs), "rhs": list(rhs),
          "out": list(out), "lhs_contracting_dims": lc,
          "rhs_contracting_dims": rc, "lhs_batch_dims": lb,
          "rhs_batch_dims": rb, "k": k,
          "flops": 2.0 * math.prod(out) * k,
          "op_name": _op_name(instr["attrs"])}


def _while_computations(hlo: dict[str, Any]) -> set[str]:
  """Computations run inside some while loop (bodies, conditions, callees)."""
  instrs = hlo["instructions"]
  roots = set()
  for ins in instrs.values():
    if ins["opcode"] == "while":
      roots.update(_called(ins["attrs"]))
  out, todo = set(), list(roots)
  while todo:
    c = todo.pop()
    if c in out or c not in hlo["computations"]:
      continue
    out.add(c)
    for n in hlo["computations"][c]:
      todo.extend(_called(instrs[n]["attrs"]))
  return out


def _contained(name: str, hlo: dict[str, Any]) -> list[dict[str, Any]]:
  """The instruction itself plus, for a fusion / call, its callee's ops."""
  instrs = hlo["instructions"]
  ins = instrs[name]
  out = [ins]
  if ins["opcode"] in ("fusion", "call", "async-start", "custom-call"):
    for comp in _called(ins["attrs"]):
      for n in hlo["computations"].get(comp, []):
        out.extend(_contained(n, hlo) if instrs[n]["opcode"] == "fusion"
                   else [instrs[n]])
  return out


def _context(hlo: dict[str, Any]) -> dict[str, Any]:
  """Module-wide facts classify() needs: while-loop computations and the
  shapes (as sorted dims) of the entry computation's 4-D parameters that are
  not shaped like a forward convolution's output (those are kernels and
  their optimiser moments, not images)."""
  instrs = hlo["instructions"]
  entry = hlo["computations"][hlo["entry"]]
  params = set()
  for n in entry:
    ins = instrs[n]
    shape = parse_shape(ins["shape"]) if ins["opcode"] == "parameter" else None
    if shape and len(shape[1]) == 4:
      params.add(tuple(sorted(shape[1])))
  for ins in instrs.values():
    if (ins["opcode"] == "convolution" and
        "transpose(" not in _op_name(ins["attrs"])):
      shape = parse_shape(ins["shape"])
      if shape:
        params.discard(tuple(sorted(shape[1])))
  return {"while_comps": _while_computations(hlo), "param_shapes": params}


def classify(name: str, hlo: dict[str, Any],
             ctx: dict[str, Any] | None = None) -> dict[str, Any]:
  """Category, FLOPs and shapes of one executed (top-level) HLO instruction.

  A convolution is backward when its op_name says ``transpose(`` (or it has
  none); a backward one is a filter gradient when its output, as a multiset
  of dims, has the shape of a 4-D parameter of the step (a kernel; the
  layout may be permuted), else an input gradient. Without a matching
  parameter (kernels computed in the step) a window larger than the output
  marks a filter gradient. (Kernel-shaped activations would be taken for
  kernels; the category is a heuristic, the FLOPs are exact.)
  """
  instrs = hlo["instructions"]
  if name not in instrs:
    return {"category": "other", "flops": 0.0, "opcodes": [], "ops": [],
            "op_name": "", "in_hlo": False, "engine": "-"}
  ins = instrs[name]
  ctx = ctx or _context(hlo)
  while_comps = ctx["while_comps"]
  body = _contained(name, hlo)
  opcodes = sorted({b["opcode"] for b in body} - {"parameter"})
  ops = []
  for b in body:
    if b["opcode"] == "convolution":
      ops.append(conv_info(b, instrs))
    elif b["opcode"] == "dot":
      ops.append(dot_info(b, instrs))
  op_name = _op_name(ins["attrs"]) or next(
      (o["op_name"] for o in ops if o["op_name"]), "") or next(
          (_op_name(b["attrs"]) for b in body if _op_name(b["attrs"])), "")
  convs = [o for o in ops if o["opcode"] == "convolution"]
  if ins["computation"] in while_comps:
    category = "while_body"
  elif convs:
    c = convs[0]
    names = " ".join(filter(None, [c["op_name"], _op_name(ins["attrs"])]))
    backward = "transpose(" in names or not names
    if not backward:
      category = "conv_fwd"
    elif tuple(sorted(c["out"])) in ctx["param_shapes"] or (
        math.prod(c["kernel"]) > math.prod(c["out_spatial"])):
      category = "conv_bwd_filter"
    else:
      category = "conv_bwd_input"
  elif ops:
    category = "dot"
  elif ins["opcode"] == "while":
    category = "while_body"
  elif set(opcodes) & _POOL_OPS:
    category = "pooling"
  elif "reduce" in opcodes:
    category = "reduction"
  elif not set(opcodes) - _MOVE_OPS - {"fusion"}:
    category = "transpose_copy"
  elif ins["opcode"] in ("fusion",) or set(opcodes) <= (
      _MOVE_OPS | {"add", "multiply", "subtract", "divide", "maximum",
                   "minimum", "select", "compare", "exponential", "log",
                   "tanh", "logistic", "negate", "rsqrt", "sqrt", "convert",
                   "abs", "power", "and", "or", "not", "clamp", "sign",
                   "floor", "ceil", "exponential-minus-one", "log-plus-one"}):
    category = "elementwise"
  else:
    category = "other"
  out_shape = parse_shape(ins["shape"])
  if "__ynn_fusion" in ins["attrs"]:
    engine = "ynnpack"          # XLA CPU's YNNPACK-lowered fusion
  elif ops:
    engine = "xla"              # XLA's own conv / dot thunk (Eigen)
  else:
    engine = "-"
  return {"category": category, "opcode": ins["opcode"], "engine": engine,
          "flops": float(sum(o["flops"] for o in ops)),
          "opcodes": opcodes, "ops": ops, "op_name": op_name,
          "out_shape": list(out_shape[1]) if out_shape else ins["shape"],
          "in_hlo": True}


# ------------------------------------------------------------- trace data
def control_flow_ops(hlo: dict[str, Any]) -> set[str]:
  """Instructions whose events contain other ops' events (while, call, ...)."""
  return {n for n, i in hlo["instructions"].items()
          if i["opcode"] in ("while", "conditional", "call")}


def trace_events(trace_dir: str, module: str,
                 containers: set[str] | None = None) -> list[dict[str, Any]]:
  """Per-HLO-op events of ``module`` in a jax.profiler trace directory.

  Returns dicts with hlo_op, run_id, thread (line name), start_ns,
  duration_ns and self_ns: the duration minus that of the events nested in
  it on its line when it is one of ``containers`` (control-flow ops, see
  control_flow_ops(); None: any op). Other ops keep their whole duration: a
  thread waiting inside a conv may run another op's work meanwhile, which
  is not the conv's child.
  """
  import jax  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                    recursive=True)
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}: did "
                            "jax.profiler.start_trace/stop_trace run?")
  events = []
  for path in paths:
    data = jax.profiler.ProfileData.from_file(path)
    for plane in data.planes:
      for line in plane.lines:
        line_events = []
        for e in line.events:
          stats = dict(e.stats)
          if stats.get("hlo_module") != module or "hlo_op" not in stats:
            continue
          line_events.append({
              "hlo_op": str(stats["hlo_op"]),
              "run_id": stats.get("run_id"),
              "thread": f"{plane.name}:{line.name}",
              "start_ns": float(e.start_ns),
              "duration_ns": float(e.duration_ns)})
        _self_times(line_events, containers)
        events.extend(line_events)
  return events


def _self_times(line_events: list[dict[str, Any]],
                containers: set[str] | None = None) -> None:
  """Sets self_ns: duration minus that of directly nested events (one line),
  for events of ``containers`` only (None: all)."""
  line_events.sort(key=lambda e: (e["start_ns"], -e["duration_ns"]))
  stack: list[dict[str, Any]] = []
  for e in line_events:
    e["self_ns"] = e["duration_ns"]
    end = e["start_ns"] + e["duration_ns"]
    while stack and stack[-1]["start_ns"] + stack[-1]["duration_ns"] < end:
      stack.pop()
    if stack and (containers is None or stack[-1].get("hlo_op") in containers):
      stack[-1]["self_ns"] -= e["duration_ns"]
    stack.append(e)
  for e in line_events:
    e["self_ns"] = max(e["self_ns"], 0.0)


def aggregate(events: Iterable[dict[str, Any]], hlo: dict[str, Any],
              num_steps: int) -> dict[str, Any]:
  """Per-op and per-category time (per step), FLOPs and FLOP/s."""
  events = list(events)
  ctx = _context(hlo)
  per_op: dict[str, dict[str, Any]] = {}
  for e in events:
    op = per_op.setdefault(e["hlo_op"], {"name": e["hlo_op"], "calls": 0,
                                         "self_ns": 0.0})
    op["calls"] += 1
    op["self_ns"] += e["self_ns"]
  total_ns = sum(op["self_ns"] for op in per_op.values())
  cats = {c: {"category": c, "time_s": 0.0, "flops": 0.0, "ops": 0}
          for c in CATEGORIES}
  by_engine: dict[str, dict[str, Any]] = {}   # '<category>/<engine>'
  for op in per_op.values():
    info = classify(op["name"], hlo, ctx)
    op.update(info)
    op["calls_per_step"] = op["calls"] / num_steps
    op["time_s"] = op["self_ns"] / num_steps * 1e-9
    op["share"] = op["self_ns"] / total_ns if total_ns else 0.0
    # FLOPs per step: per execution times executions (while bodies repeat).
    op["flops_per_step"] = info["flops"] * op["calls_per_step"]
    op["flops_per_s"] = (op["flops_per_step"] / op["time_s"]
                         if op["time_s"] > 0 else None)
    cat = cats[info["category"]]
    cat["time_s"] += op["time_s"]
    cat["flops"] += op["flops_per_step"]
    cat["ops"] += 1
    if info["flops"]:
      eng = by_engine.setdefault(f"{info['category']}/{info['engine']}", {
          "time_s": 0.0, "flops": 0.0, "ops": 0})
      eng["time_s"] += op["time_s"]
      eng["flops"] += op["flops_per_step"]
      eng["ops"] += 1
  for eng in by_engine.values():
    eng["flops_per_s"] = eng["flops"] / eng["time_s"] if eng["time_s"] else None
  for cat in cats.values():
    cat["share"] = (cat["time_s"] / (total_ns * 1e-9 / num_steps)
                    if total_ns else 0.0)
    cat["flops_per_s"] = cat["flops"] / cat["time_s"] if cat["time_s"] else None
  runs = collections.defaultdict(list)
  for e in events:
    runs[e["run_id"]].append(e)
  run_ids = sorted(runs, key=lambda r: min(e["start_ns"] for e in runs[r]))
  spans = [max(e["start_ns"] + e["duration_ns"] for e in runs[r]) -
           min(e["start_ns"] for e in runs[r]) for r in run_ids]
  run_op = [sum(e["self_ns"] for e in runs[r]) for r in run_ids]
  return {"ops": sorted(per_op.values(), key=lambda o: -o["self_ns"]),
          "categories": [cats[c] for c in CATEGORIES],
          "by_engine": dict(sorted(by_engine.items())),
          "op_time_per_step_s": total_ns * 1e-9 / num_steps,
          "flops_per_step": sum(c["flops"] for c in cats.values()),
          "runs": len(runs),
          # per run (= step), in order: first op start to last op end, and
          # the summed op self time
          "run_span_s": [s * 1e-9 for s in spans],
          "run_op_time_s": [s * 1e-9 for s in run_op]}


def trace_compiled(fn, args_fn, steps: int, trace_dir: str):
  """Runs ``fn(*args_fn())`` ``steps`` times under jax.profiler; wall times.

  ``args_fn(prev_out)`` gives the next call's arguments (for donated state).
  Returns (step wall times, last output).
  """
  import jax  # pylint: disable=g-import-not-at-top
  out = None
  times = []
  jax.profiler.start_trace(trace_dir)
  try:
    for _ in range(steps):
      args = args_fn(out)
      t0 = time.perf_counter()
      out = fn(*args)
      jax.block_until_ready(out)
      times.append(time.perf_counter() - t0)
  finally:
    jax.profiler.stop_trace()
  return times, out


# ------------------------------------------------- standalone op timing
_LHS_MAP = {"b": "N", "f": "C"}
_RHS_MAP = {"i": "I", "o": "O"}
_SPATIAL = "HWDXYZ"


def _conv_spec(labels: str, mapping: dict[str, str]) -> str:
  return "".join(mapping.get(c, _SPATIAL[int(c)] if c.isdigit() else c)
                 for c in labels)


def standalone_fn(info: dict[str, Any]):
  """A jitted function + float32 inputs computing the same conv / dot alone."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ka, kb = jax.random.split(jax.random.key(0))
  lhs = jax.random.normal(ka, info["lhs"], jnp.float32)
  rhs = jax.random.normal(kb, info["rhs"], jnp.float32)
  if info["opcode"] == "dot":
    dims = ((info["lhs_contracting_dims"], info["rhs_contracting_dims"]),
            (info["lhs_batch_dims"], info["rhs_batch_dims"]))
    fn = jax.jit(functools.partial(jax.lax.dot_general, dimension_numbers=dims,
                                   precision=jax.lax.Precision.HIGHEST))
    return fn, (lhs, rhs)
  lhs_l, rest = info["dim_labels"].split("_", 1)
  rhs_l, out_l = rest.split("->")
  dn = (_conv_spec(lhs_l, _LHS_MAP), _conv_spec(rhs_l, _RHS_MAP),
        _conv_spec(out_l, _LHS_MAP))
  win = info["window"]
  nd = len(info["kernel"])
  fn = jax.jit(functools.partial(
      jax.lax.conv_general_dilated,
      window_strides=tuple(win.get("stride", [1] * nd)),
      padding=[tuple(p) for p in win.get("pad", [(0, 0)] * nd)],
      lhs_dilation=tuple(win.get("lhs_dilate", [1] * nd)),
      rhs_dilation=tuple(win.get("rhs_dilate", [1] * nd)),
      dimension_numbers=dn,
      feature_group_count=info["feature_group_count"],
      batch_group_count=info["batch_group_count"],
      precision=jax.lax.Precision.HIGHEST))
  return fn, (lhs, rhs)


def time_standalone(info: dict[str, Any], reps: int = 3) -> dict[str, Any]:
  """Best-of-``reps`` wall time of the op alone; checks the output shape."""
  import jax  # pylint: disable=g-import-not-at-top
  fn, args = standalone_fn(info)
  out = jax.block_until_ready(fn(*args))
  if list(out.shape) != list(info["out"]):
    raise ValueError(f"standalone {info['opcode']} gives shape "
                     f"{list(out.shape)}, the HLO says {info['out']}")
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  best = min(times)
  return {"best_s": best, "flops_per_s": info["flops"] / best}


# ------------------------------------------- strided-conv reformulation
def space_to_depth_conv(x, w):
  """4x4 / stride 2 / pad 1 conv as pad + 2x2 space-to-depth + 2x2 stride-1
  VALID conv: the same sums (ky = 2a + dy), in another order.

  x: [B, H, W, C] (H, W even), w: [4, 4, C, O] -> [B, H/2, W/2, O].
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b, h, wd, c = x.shape
  o = w.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  hp, wp = (h + 2) // 2, (wd + 2) // 2
  xs = xp.reshape(b, hp, 2, wp, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
      b, hp, wp, 4 * c)
  ws = w.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(
      2, 2, 4 * c, o)
  return jax.lax.conv_general_dilated(
      xs, ws, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)


def strided_conv(x, w):
  """The reference form: 4x4 / stride 2 / pad 1 conv (D's down-sampling)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.lax.conv_general_dilated(
      x, w, (2, 2), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)


def compare_strided_conv(shapes, reps: int = 3) -> list[dict[str, Any]]:
  """Forward + both gradients of the 4x4/2 conv, reference vs space-to-depth.

  ``shapes``: (B, H, Cin, Cout) tuples. Checks the two agree, times both.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = []
  for b, h, cin, cout in shapes:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, h, h, cin)).astype(np.float32)
    w = (rng.standard_normal((4, 4, cin, cout)) / (16 * cin) ** 0.5).astype(
        np.float32)
    g = rng.standard_normal((b, h // 2, h // 2, cout)).astype(np.float32)
    row = {"shape": [b, h, cin, cout],
           "flops_fwd_bwd": 3 * 2.0 * b * (h // 2) ** 2 * cout * 16 * cin}
    outs = {}
    for name, fn in (("strided", strided_conv),
                     ("space_to_depth", space_to_depth_conv)):
      f = jax.jit(lambda x, w, g, fn=fn: jax.vjp(fn, x, w)[1](g) +
                  (fn(x, w),))
      outs[name], _, times = timing.time_calls(
          lambda f=f: f(x, w, g), reps)
      row[name + "_s"] = min(times)
    row["max_rel_diff"] = max(
        float(np.max(np.abs(a - c)) / (np.max(np.abs(a)) + 1e-30))
        for a, c in zip(outs["strided"], outs["space_to_depth"]))
    row["speedup"] = row["strided_s"] / row["space_to_depth_s"]
    rows.append(row)
  return rows


def conv3x3(x, w):
  """3x3 / stride 1 / SAME conv, NHWC x HWIO (G's and D's 3x3 blocks)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)


def filter_grad_per_tap(x, g, kh: int = 3, kw: int = 3):
  """dL/dw of a kh x kw / stride 1 / SAME conv as one dot per kernel tap:

      dw[ky, kx, i, o] = sum_{b,y,x} xpad[b, y+ky, x+kx, i] * g[b, y, x, o]

  each tap an einsum 'bhwi,bhwo->io' contracting over B*H*W (a tall-skinny
  matmul) instead of XLA's filter-gradient convolution (a conv whose window
  is the whole image and whose contraction is the batch).
  x: [B, H, W, Cin], g: [B, H, W, Cout] -> [kh, kw, Cin, Cout].
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  _, h, w, _ = x.shape
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  return jnp.stack([
      jnp.stack([jnp.einsum("bhwi,bhwo->io", xp[:, ky:ky + h, kx:kx + w], g,
                            precision=jax.lax.Precision.HIGHEST)
                 for kx in range(kw)]) for ky in range(kh)])


def compare_filter_grad(shapes, reps: int = 2) -> list[dict[str, Any]]:
  """XLA's filter gradient of a 3x3 conv vs ``filter_grad_per_tap``.

  ``shapes``: (B, H, Cin, Cout). Checks they agree, times both (best of reps).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = []
  for b, h, cin, cout in shapes:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, h, h, cin)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal((b, h, h, cout)).astype(np.float32))
    w = jnp.zeros((3, 3, cin, cout), jnp.float32)
    fns = {"xla_conv": jax.jit(lambda x, g, w: jax.vjp(
               lambda w: conv3x3(x, w), w)[1](g)[0]),
           "per_tap_dot": jax.jit(lambda x, g, w: filter_grad_per_tap(x, g))}
    row = {"shape": [b, h, cin, cout],
           "flops": 2.0 * b * h * h * cout * 9 * cin}
    outs = {}
    for name, f in fns.items():
      out, _, times = timing.time_calls(lambda f=f: f(x, g, w), reps)
      outs[name] = np.asarray(out)
      row[name + "_s"] = min(times)
      row[name + "_flops_per_s"] = row["flops"] / min(times)
    ref = outs["xla_conv"]
    row["max_rel_diff"] = float(np.max(np.abs(outs["per_tap_dot"] - ref)) /
                                np.max(np.abs(ref)))
    row["speedup"] = row["xla_conv_s"] / row["per_tap_dot_s"]
    rows.append(row)
  return rows


# ------------------------------------------------------- the train step
def build_step(name: str, refiner: str, batch_size: int = 0):
  """(compiled step, state, batch, encoders, meta) as bench/train_step builds it."""
  import jax  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from t2igan_jax import config_validation  # pylint: disable=g-import-not-at-top
  from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import gan_lib  # pylint: disable=g-import-not-at-top
  from t2igan_jax import sharding  # pylint: disable=g-import-not-at-top

  config = bench_train_step.load_config(name, refiner)
  config.num_devices = 1          # one device: one executable, one op stream
  if batch_size:
    config.gan.batch_size = batch_size
  if config.data.name != "shapes" and not config.data.data_dir:
    config.data.data_dir = "<synthetic>"    # only to satisfy validation
  config_validation.validate(config)
  mesh = sharding.make_mesh(1)
  repl = sharding.replicated(mesh)
  n_words, num_classes = bench_train_step._vocab_and_classes(name, config)  # pylint: disable=protected-access
  text_model, image_model = damsm_lib.build_models(config, n_words)
  dstate = jax.jit(lambda: damsm_lib.create_state(
      config, text_model, image_model, jax.random.key(1)),
                   out_shardings=repl)()
  enc = gan_lib.Encoders.from_damsm_state(dstate)
  del dstate
  models = gan_lib.GanModels(config, text_model, image_model, mesh=mesh)
  state = jax.jit(lambda: gan_lib.create_state(
      models, jax.random.key(config.seed)), out_shardings=repl)()
  host_batch = bench_train_step.synthetic_batch(
      config, config.gan.batch_size, n_words, num_classes)
  batch = sharding.device_batch(host_batch, mesh)
  step_fn = jax.jit(functools.partial(gan_lib.train_step, models=models),
                    donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, enc).compile()
  meta = {"compile_s": time.perf_counter() - t0,
          "batch_size": config.gan.batch_size,
          "stage_sizes": list(pipeline.stage_sizes(config)),
          "xla_flops": bench_train_step._cost_flops(compiled),  # pylint: disable=protected-access
          "xla_memory_analysis":
              bench_train_step._memory_analysis(compiled)}  # pylint: disable=protected-access
  return compiled, state, batch, enc, meta


def utilisation_bounds(agg: dict[str, Any], peak: float,
                       step_s: float) -> dict[str, Any]:
  """What the step's FLOP rate would be if some op classes took no time / ran
  at their standalone rate (upper bounds; concurrency ignored)."""
  flops = agg["flops_per_step"]
  mm_cats = ("conv_fwd", "conv_bwd_input", "conv_bwd_filter", "dot")
  cats = {c["category"]: c for c in agg["categories"]}
  mm_time = sum(cats[c]["time_s"] for c in mm_cats)
  op_time = agg["op_time_per_step_s"]
  out = {
      "measured": flops / step_s / peak,
      "measured_op_time": flops / op_time / peak,
      "if_non_matmul_ops_free": flops / mm_time / peak if mm_time else None,
  }
  # Standalone rates where measured, in-step rates elsewhere.
  t_alone = 0.0
  for op in agg["ops"]:
    if op["category"] not in mm_cats and not (
        op["category"] == "while_body" and op["flops"]):
      continue
    alone = op.get("standalone")
    t_alone += (op["flops_per_step"] / alone["flops_per_s"]
                if alone and alone["flops_per_s"] else op["time_s"])
  non_mm = op_time - mm_time - sum(
      o["time_s"] for o in agg["ops"]
      if o["category"] == "while_body" and o["flops"])
  if t_alone:
    out["matmul_ops_at_standalone_rate"] = flops / (t_alone + non_mm) / peak
    out["matmul_ops_at_standalone_rate_non_matmul_free"] = (
        flops / t_alone / peak)
  return out


# ------------------------------------------------------------- reporting
def _shape_text(op: dict[str, Any]) -> str:
  parts = []
  for o in op.get("ops", [])[:2]:
    if o["opcode"] == "convolution":
      k = "x".join(str(v) for v in o["kernel"])
      hw = "x".join(str(v) for v in o["in_spatial"])
      ohw = "x".join(str(v) for v in o["out_spatial"])
      extra = "".join(f" {key}={'x'.join(map(str, v))}"
                      for key, v in o["window"].items()
                      if key in ("stride", "lhs_dilate", "rhs_dilate"))
      parts.append(f"conv b={o['batch']} {hw}->{ohw} {o['cin']}->{o['cout']}"
                   f" k={k}{extra}")
    else:
      parts.append(f"dot {o['lhs']}x{o['rhs']}->{o['out']} K={o['k']}")
  if not parts:
    parts.append(f"{op.get('out_shape')} {','.join(op.get('opcodes', [])[:4])}")
  return "; ".join(parts)


def print_report(rep: dict[str, Any], top: int) -> None:
  peak = rep["matmul_peak_flops_per_s"]
  agg = rep["aggregate"]
  print()
  print(f"profile of {rep['config']}/{rep['refiner']} train_step, batch "
        f"{rep['batch_size']}, stages {rep['stage_sizes']}, {rep['steps']} "
        f"traced step(s); jax {rep['jax_version']}, load avg "
        f"{rep['loadavg']}")
  print(f"step wall {statistics.median(rep['step_s']):.3f} s (median); "
        f"summed op self time {agg['op_time_per_step_s']:.3f} s/step "
        f"({agg['op_time_per_step_s'] / statistics.median(rep['step_s']):.2f}"
        f"x wall: >1 means ops overlapped on threads); fp32 matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s")
  print(f"conv+dot FLOPs from HLO shapes {agg['flops_per_step'] / 1e9:.2f} "
        f"GFLOP/step; XLA cost analysis {(rep['xla_flops'] or 0) / 1e9:.2f} "
        f"GFLOP (its while bodies counted once)")
  head = ("category", "ops", "time s", "share %", "GFLOP", "GFLOP/s",
          "% peak")
  print()
  print("  ".join(f"{h:>16}" if i == 0 else f"{h:>9}"
                  for i, h in enumerate(head)))
  for c in sorted(agg["categories"], key=lambda c: -c["time_s"]):
    if not c["ops"]:
      continue
    rate = c["flops_per_s"]
    print(f"{c['category']:>16}  {c['ops']:>9}  {c['time_s']:>9.3f}  "
          f"{100 * c['share']:>9.1f}  {c['flops'] / 1e9:>9.2f}  "
          f"{(rate or 0) / 1e9:>9.1f}  "
          f"{(100 * rate / peak if rate else 0):>9.1f}")
  print()
  print("conv/dot ops by engine (ynnpack = YNNPACK fusion, xla = XLA's own "
        "conv/dot thunk):")
  for key, e in agg["by_engine"].items():
    rate = e["flops_per_s"] or 0
    print(f"{key:>28}  {e['ops']:>5} ops  {e['time_s']:>8.3f} s  "
          f"{e['flops'] / 1e9:>8.2f} GFLOP  {rate / 1e9:>7.1f} GFLOP/s  "
          f"{100 * rate / peak:>5.1f} % peak")
  print()
  print(f"top {top} ops by self time (per step):")
  print(f"{'op':>28} {'category':>15} {'eng':>7} {'calls':>5} {'ms':>8} {'share%':>6} "
        f"{'GFLOP':>7} {'GFLOP/s':>8} {'%pk':>5} {'alone%pk':>8}  shapes")
  for op in agg["ops"][:top]:
    rate = op["flops_per_s"]
    alone = op.get("standalone")
    print(f"{op['name'][:28]:>28} {op['category']:>15} {op['engine']:>7} "
          f"{op['calls_per_step']:>5g} {1e3 * op['time_s']:>8.1f} "
          f"{100 * op['share']:>6.2f} {op['flops_per_step'] / 1e9:>7.2f} "
          f"{(rate or 0) / 1e9:>8.1f} "
          f"{(100 * rate / peak if rate else 0):>5.1f} "
          f"{(100 * alone['flops_per_s'] / peak if alone else float('nan')):>8.1f}"
          f"  {_shape_text(op)}")
  print()
  print("utilisation (fraction of the matmul peak):")
  for k, v in rep["bounds"].items():
    print(f"  {k:>48}: {'-' if v is None else f'{100 * v:.1f} %'}")
  print()


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="tiny",
                 choices=bench_train_step.CONFIGS)
  p.add_argument("--refiner", default="memory",
                 choices=tuple(bench_train_step.FAMILIES))
  p.add_argument("--steps", type=int, default=2, help="traced iterations")
  p.add_argument("--warmup", type=int, default=1,
                 help="untraced iterations after compiling")
  p.add_argument("--batch_size", type=int, default=0,
                 help="global batch override (0: the config's)")
  p.add_argument("--top", type=int, default=25, help="ops listed")
  p.add_argument("--standalone", type=int, default=12,
                 help="time this many of the slowest conv/dot ops alone")
  p.add_argument("--matmul_size", type=int, default=0,
                 help="peak matmul size (0: train_step's default)")
  p.add_argument("--strided_conv_check", action="store_true",
                 help="only compare D's 4x4/2 conv with its space-to-depth "
                      "form (fwd + both grads) at the bird D shapes")
  p.add_argument("--filter_grad_check", action="store_true",
                 help="only compare XLA's 3x3-conv filter gradient with the "
                      "per-tap dot form at bird G shapes")
  p.add_argument("--trace_dir", default="",
                 help="keep the trace here (default: a removed temp dir)")
  p.add_argument("--out_dir", default=os.path.join(_ROOT, "bench", "results"))
  return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
  args = _parse(sys.argv[1:] if argv is None else argv)
  import jax  # pylint: disable=g-import-not-at-top

  stamp = time.strftime("%Y%m%d_%H%M%S")
  if args.strided_conv_check:
    # bird D: 4 x [4x4/2] layers from 256 px, ndf 32, batch 10
    rows = compare_strided_conv([(10, 256, 3, 32), (10, 128, 32, 64),
                                 (10, 64, 64, 128), (10, 32, 128, 256),
                                 (10, 16, 256, 512)])
    for r in rows:
      print(f"  B,H,Cin,Cout={r['shape']}: strided {r['strided_s']:.3f} s, "
            f"space-to-depth {r['space_to_depth_s']:.3f} s "
            f"(x{r['speedup']:.2f}; {r['flops_fwd_bwd'] / 1e9:.2f} GFLOP); "
            f"max rel diff {r['max_rel_diff']:.1e}")
    return {"strided_conv_check": rows}
  if args.filter_grad_check:
    rows = compare_filter_grad([(10, 256, 128, 128), (10, 128, 128, 256),
                                (10, 128, 128, 128), (10, 64, 128, 256)])
    for r in rows:
      print(f"  B,H,Cin,Cout={r['shape']}: XLA conv filter grad "
            f"{r['xla_conv_s']:.3f} s ({r['xla_conv_flops_per_s'] / 1e9:.1f} "
            f"GFLOP/s), per-tap dots {r['per_tap_dot_s']:.3f} s "
            f"({r['per_tap_dot_flops_per_s'] / 1e9:.1f} GFLOP/s): "
            f"x{r['speedup']:.2f}; max rel diff {r['max_rel_diff']:.1e}")
    return {"filter_grad_check": rows}
  print("[profile_step] matmul peak ...", flush=True)
  peak = bench_train_step.measure_matmul_peak(args.matmul_size)
  print(f"[profile_step] peak {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s; "
        f"building {args.config}/{args.refiner} ...", flush=True)
  compiled, state, batch, enc, meta = build_step(args.config, args.refiner,
                                                 args.batch_size)
  print(f"[profile_step] compiled in {meta['compile_s']:.1f} s", flush=True)
  hlo_text = compiled.as_text()
  hlo = parse_hlo(hlo_text)
  warm = []
  for _ in range(args.warmup):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, enc)
    jax.block_until_ready((state, metrics))
    warm.append(time.perf_counter() - t0)
  print(f"[profile_step] warm-up {[round(t, 2) for t in warm]} s; tracing "
        f"{args.steps} step(s) ...", flush=True)
  holder = {"state": state}

  def args_fn(prev):
    if prev is not None:
      holder["state"] = prev[0]
    return holder["state"], batch, enc

  tmp = None
  trace_dir = args.trace_dir
  if not trace_dir:
    tmp = tempfile.TemporaryDirectory(prefix="profile_step_")
    trace_dir = tmp.name
  load_start = os.getloadavg()[0]
  times, _ = trace_compiled(compiled, args_fn, args.steps, trace_dir)
  load_end = os.getloadavg()[0]
  events = trace_events(trace_dir, hlo["module"], control_flow_ops(hlo))
  if tmp is not None:
    tmp.cleanup()
  else:
    with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
      f.write(hlo_text)     # with the trace: re-aggregate offline
  if not events:
    raise RuntimeError(f"the trace has no events of HLO module "
                       f"{hlo['module']!r}")
  agg = aggregate(events, hlo, args.steps)
  print(f"[profile_step] {len(events)} op events; timing the "
        f"{args.standalone} slowest conv/dot ops alone ...", flush=True)
  done = 0
  for op in agg["ops"]:
    if done >= args.standalone:
      break
    if len(op.get("ops", [])) != 1 or op["category"] == "while_body":
      continue
    try:
      op["standalone"] = time_standalone(op["ops"][0])
    except Exception as e:  # pylint: disable=broad-except
      op["standalone_error"] = f"{type(e).__name__}: {e}"[:300]
    done += 1
  step_s = statistics.median(times)
  report = {
      "config": args.config, "refiner": args.refiner,
      "command": " ".join([sys.executable] + sys.argv),
      "timestamp": stamp, "jax_version": jax.__version__,
      "platform": jax.default_backend(), "cpu_count": os.cpu_count(),
      "steps": args.steps, "warmup_s": warm, "step_s": times,
      "loadavg": f"{load_start:.1f}->{load_end:.1f}",
      "matmul_peak": peak, "matmul_peak_flops_per_s": peak["peak_flops_per_s"],
      "hlo_module": hlo["module"], "events": len(events),
      **meta, "aggregate": agg,
      "bounds": utilisation_bounds(agg, peak["peak_flops_per_s"], step_s),
  }
  print_report(report, args.top)
  bench_report.write_report(args.out_dir,
                            f"profile_{args.config}_{stamp}.json", report)
  return report


if __name__ == "__main__":
  main()
