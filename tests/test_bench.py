"""bench/profile_step.py: HLO parsing, FLOP counts, trace aggregation;
bench/family_costs.py: the per-family cost report on the :tiny configs."""

import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import family_costs
from bench import profile_step
from tests import np_reference

N, H, W, CIN, COUT, K = 2, 8, 8, 3, 5, 3


def _conv(x, w, stride=1, groups=1):
  return jax.lax.conv_general_dilated(
      x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


def _hlo(fn, *args):
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, profile_step.parse_hlo(compiled.as_text())


def _convs(hlo):
  return [profile_step.conv_info(i, hlo["instructions"])
          for i in hlo["instructions"].values() if i["opcode"] == "convolution"]


@pytest.fixture(scope="module")
def conv_args():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((N, H, W, CIN)).astype(np.float32)
  w = rng.standard_normal((K, K, CIN, COUT)).astype(np.float32)
  return x, w


def test_conv_flops_from_hlo(conv_args):
  x, w = conv_args
  (conv,) = _convs(_hlo(_conv, x, w)[1])
  assert conv["flops"] == 2 * N * H * W * COUT * K * K * CIN
  assert (conv["batch"], conv["cin"], conv["cout"], conv["kernel"]) == (
      N, CIN, COUT, [K, K])
  # stride 2: a quarter of the outputs; groups: Cin per group.
  (conv,) = _convs(_hlo(lambda a, b: _conv(a, b, stride=2), x, w)[1])
  assert conv["flops"] == 2 * N * (H // 2) * (W // 2) * COUT * K * K * CIN
  wg = np.ones((K, K, 2, 4), np.float32)
  xg = np.ones((N, H, W, 4), np.float32)
  (conv,) = _convs(_hlo(lambda a, b: _conv(a, b, groups=2), xg, wg)[1])
  assert conv["feature_group_count"] == 2
  assert conv["flops"] == 2 * N * H * W * 4 * K * K * 2


def test_dot_flops_from_hlo():
  a = jnp.ones((3, 7, 11))
  b = jnp.ones((3, 11, 13))
  _, hlo = _hlo(lambda p, q: jnp.einsum("bmk,bkn->bmn", p, q), a, b)
  dots = [profile_step.dot_info(i, hlo["instructions"])
          for i in hlo["instructions"].values() if i["opcode"] == "dot"]
  assert [d["flops"] for d in dots] == [2 * 3 * 7 * 13 * 11]


def test_standalone_conv_matches_numpy(conv_args):
  """The conv rebuilt from HLO shapes computes what the HLO conv computes."""
  x, w = conv_args
  (conv,) = _convs(_hlo(_conv, x, w)[1])
  fn, _ = profile_step.standalone_fn(conv)
  np.testing.assert_allclose(np.asarray(fn(x, w)),
                             np_reference.np_conv(x, w, pad=1),
                             rtol=1e-4, atol=1e-4)


def test_conv_gradient_categories(conv_args):
  """Image -> conv -> conv -> image (as G's last layers): forward,
  input-gradient and filter-gradient convs are told apart, FLOPs each."""
  x, w = conv_args
  w2 = np.ones((K, K, COUT, CIN), np.float32) * 0.1

  def loss(a, b, c):
    return jnp.sum(jnp.tanh(_conv(jnp.tanh(_conv(a, b)), c)))

  _, hlo = _hlo(jax.grad(loss, argnums=(0, 1, 2)), x, w, w2)
  found = {}
  for name in hlo["computations"][hlo["entry"]]:
    info = profile_step.classify(name, hlo)
    if info["category"].startswith("conv"):
      found.setdefault(info["category"], []).append(info["flops"])
  flops = 2 * N * H * W * COUT * K * K * CIN   # same for both layers
  assert found == {"conv_fwd": [flops] * 2, "conv_bwd_input": [flops] * 2,
                   "conv_bwd_filter": [flops] * 2}


def test_self_times_subtract_nested_events():
  events = [
      {"start_ns": 0.0, "duration_ns": 100.0},     # while: 0..100
      {"start_ns": 10.0, "duration_ns": 30.0},     # body op
      {"start_ns": 50.0, "duration_ns": 20.0},     # body op
      {"start_ns": 120.0, "duration_ns": 5.0},     # next top-level op
  ]
  profile_step._self_times(events)  # pylint: disable=protected-access
  assert [e["self_ns"] for e in events] == [50.0, 30.0, 20.0, 5.0]
  # Only control-flow ops own what runs inside them on their thread.
  for e, name in zip(events, ("while.1", "dot.1", "dot.2", "add.1")):
    e["hlo_op"] = name
  profile_step._self_times(events, {"dot.1"})  # pylint: disable=protected-access
  assert [e["self_ns"] for e in events] == [100.0, 30.0, 20.0, 5.0]


@pytest.fixture(scope="module")
def traced_chain():
  """A chain of dependent matmuls and a while loop of matmuls, traced 3x."""
  n, steps, loops = 384, 3, 4
  rng = np.random.default_rng(1)
  b = jnp.asarray(rng.standard_normal((n, n)).astype(np.float32) / n**0.5)
  a = jnp.asarray(rng.standard_normal((n, n)).astype(np.float32))

  def f(a, b):
    for _ in range(3):
      a = jnp.tanh(a @ b)
    return jax.lax.fori_loop(0, loops, lambda i, c: jnp.tanh(c @ b), a)

  compiled = jax.jit(f).lower(a, b).compile()
  hlo = profile_step.parse_hlo(compiled.as_text())
  jax.block_until_ready(compiled(a, b))
  with tempfile.TemporaryDirectory() as d:
    times, _ = profile_step.trace_compiled(compiled, lambda _: (a, b), steps, d)
    events = profile_step.trace_events(d, hlo["module"],
                                       profile_step.control_flow_ops(hlo))
  agg = profile_step.aggregate(events, hlo, steps)
  return {"agg": agg, "times": times, "n": n, "steps": steps,
          "loops": loops, "hlo": hlo}


def test_trace_aggregation_matches_step(traced_chain):
  agg, n = traced_chain["agg"], traced_chain["n"]
  assert agg["runs"] == traced_chain["steps"]
  # Dependent ops cannot overlap: their summed time is at most the step's
  # wall time, and the dispatch gaps between them are small.
  wall = min(traced_chain["times"])
  op_time = agg["op_time_per_step_s"]
  assert 0.6 * wall < op_time <= 1.02 * max(traced_chain["times"])
  for span, ops in zip(agg["run_span_s"], agg["run_op_time_s"], strict=True):
    assert 0.6 * span < ops <= span * 1.001
  # FLOPs: 3 matmuls outside + `loops` executions of the body's one.
  mm = 2.0 * n**3
  cats = {c["category"]: c for c in agg["categories"]}
  assert cats["dot"]["flops"] == pytest.approx(3 * mm)
  assert cats["while_body"]["flops"] == pytest.approx(traced_chain["loops"] * mm)
  assert agg["flops_per_step"] == pytest.approx((3 + traced_chain["loops"]) * mm)
  body_dots = [o for o in agg["ops"] if o["category"] == "while_body"
               and o["flops"]]
  assert [o["calls_per_step"] for o in body_dots] == [traced_chain["loops"]]
  assert sum(c["share"] for c in agg["categories"]) == pytest.approx(1.0)
  # The matmuls dominate a matmul chain.
  assert (cats["dot"]["time_s"] + cats["while_body"]["time_s"]) > 0.5 * op_time


def test_space_to_depth_conv_matches_numpy():
  """The reformulated 4x4/2 conv is the same conv (NumPy reference)."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
  w = rng.standard_normal((4, 4, 3, 5)).astype(np.float32)
  want = np_reference.np_conv(x, w, stride=2, pad=1)
  np.testing.assert_allclose(np.asarray(profile_step.space_to_depth_conv(x, w)),
                             want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(profile_step.strided_conv(x, w)),
                             want, rtol=1e-4, atol=1e-4)


def test_filter_grad_per_tap_matches_numpy():
  """Per-tap dot filter gradient = NumPy sum over taps of x-patch^T g, and
  = jax's own filter gradient of the conv."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
  g = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.zeros((3, 3, 3, 4))
  for ky in range(3):
    for kx in range(3):
      want[ky, kx] = np.einsum("bhwi,bhwo->io", xp[:, ky:ky + 6, kx:kx + 6], g)
  got = profile_step.filter_grad_per_tap(x, g)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  w = np.zeros((3, 3, 3, 4), np.float32)
  jax_dw = jax.vjp(lambda w: profile_step.conv3x3(x, w), w)[1](g)[0]
  np.testing.assert_allclose(np.asarray(jax_dw), want, rtol=1e-4, atol=1e-4)


def test_family_costs_dead_conv_s_at_bird_size():
  """DF-GAN bird NetD: 3 DBlocks with fin == fout = 256, each a dead 1x1
  conv_s of 256·256 + 256 params (SPEC-dfgan); counted from shapes only."""
  from t2igan_jax import dfgan_lib  # pylint: disable=g-import-not-at-top
  _, d = jax.eval_shape(lambda k: dfgan_lib.init_params(dfgan_lib.BIRD, k),
                        jax.random.key(0))
  assert family_costs.dead_conv_s(d) == 3 * (256 * 256 + 256) == 197_376
  tiny = dfgan_lib.DfganConfig(nf=4, z_dim=8, cond_dim=6, imsize=32)
  _, d = jax.eval_shape(lambda k: dfgan_lib.init_params(tiny, k),
                        jax.random.key(0))
  assert family_costs.dead_conv_s(d) == 0   # 32 px: every DBlock widens


def test_family_costs_tiny_smoke(tmp_path):
  """--tiny over the four families: positive parameter counts and FLOPs in
  the JSON, per image = per iteration / batch, and DF-GAN's D split."""
  out = tmp_path / "costs.json"
  family_costs.main(["--tiny", f"--out={out}"])
  report = json.loads(out.read_text())
  assert report["tiny"] and "--tiny" in report["command"]
  assert [r["family"] for r in report["results"]] == list(family_costs.FAMILIES)
  for r in report["results"]:
    assert "error" not in r, r
    assert r["params"]["generator"] > 0 and r["params"]["discriminator"] > 0
    assert r["flops_per_iter"] > 0
    assert r["flops_per_image"] == pytest.approx(
        r["flops_per_iter"] / r["batch_size"])
  dm, ff, _, df = report["results"]
  p = df["params"]
  assert p["netD"] + p["netC"] == p["discriminator"]
  assert p["text_encoder"] > 0 and p["image_encoder"] == 0
  assert dm["params"]["image_encoder"] > 0
  # FF-GAN's refiner differs from DM-GAN's: different G, same Ds.
  assert ff["params"]["generator"] != dm["params"]["generator"]
  assert ff["params"]["discriminator"] == dm["params"]["discriminator"]
