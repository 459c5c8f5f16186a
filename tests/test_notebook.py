"""notebooks/t2igan_colab.ipynb: generated, output-free, and runs top to bottom.

The notebook is executed once per module, headless (nbclient, the ``python3``
kernel of ipykernel started with this interpreter), in tiny mode
(``T2I_NOTEBOOK_MODE=tiny``: the tiny configs, 2 steps per training job) with
a temporary work directory, one CPU device and the session's persistent
compilation cache. The tests then check what it produced: no error output,
the sample grids and attention maps written *and* displayed, and an
``eval_<step>.json`` with a finite R-precision for both families.
"""

import base64
import importlib.util
import json
import math
import os
import pathlib
import sys

import ipykernel  # noqa: F401  (the kernel nbclient starts; requirements.txt)
import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "t2igan_colab.ipynb"
_spec = importlib.util.spec_from_file_location(
    "make_notebook", ROOT / "notebooks" / "make_notebook.py")
make_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_notebook)

FAMILIES = ("dmgan", "ffgan")
TINY_STEPS = 2          # base.tiny: max_steps


def _kernel_env(workdir: pathlib.Path) -> dict[str, str]:
  """This process's environment for the kernel: tiny mode, one CPU device."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env.update({"T2I_NOTEBOOK_MODE": "tiny",
              "T2I_NOTEBOOK_WORKDIR": str(workdir),
              "JAX_PLATFORMS": "cpu",
              "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
  # tests/conftest.py sets JAX_COMPILATION_CACHE_DIR: reruns compile less.
  return env


def _cell(nb, tag: str):
  cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
  assert len(cells) == 1, f"expected one cell tagged {tag!r}, got {len(cells)}"
  return cells[0]


def _stdout(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs
                 if o.output_type == "stream" and o.name == "stdout")


def _execute(nb, workdir: pathlib.Path) -> None:
  """Runs every cell of ``nb`` in place (cwd notebooks/); a cell that raises
  fails the test with that cell's source and traceback."""
  client = nbclient.NotebookClient(
      nb, kernel_name="python3", timeout=600, startup_timeout=120,
      resources={"metadata": {"path": str(ROOT / "notebooks")}})
  try:
    client.execute(env=_kernel_env(workdir))  # the kernel process's environment
  except nbclient.exceptions.CellExecutionError as e:
    # str(e) holds the failing cell's source and its traceback.
    pytest.fail(f"a notebook cell failed:\n{e}", pytrace=False)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(executed notebook, its work directory)."""
  workdir = tmp_path_factory.mktemp("notebook_workdir")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  _execute(nb, workdir)
  return nb, workdir


def test_a_failing_cell_fails_with_its_source_and_error(tmp_path):
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell("x = 1"),
              nbformat.v4.new_code_cell("y = x + 1\nz = y / (x - 1)"),
              nbformat.v4.new_code_cell("never = True")]
  with pytest.raises(pytest.fail.Exception) as e:
    _execute(nb, tmp_path)
  message = str(e.value)
  assert "a notebook cell failed" in message
  assert "z = y / (x - 1)" in message and "ZeroDivisionError" in message
  assert nb.cells[2].get("execution_count") is None  # stopped at the error


def test_committed_notebook_is_the_generator_output_without_outputs():
  with open(NOTEBOOK) as f:
    text = f.read()
  assert text == make_notebook.render(), (
      "notebooks/t2igan_colab.ipynb differs from notebooks/make_notebook.py's "
      "output: run python notebooks/make_notebook.py")
  nb = nbformat.reads(text, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(c.outputs == [] and c.execution_count is None
                      for c in code)
  assert _cell(nb, "parameters") is code[0]


def test_every_cell_ran_without_errors_in_this_interpreter(executed):
  nb, _ = executed
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  for c in code:
    errors = [o for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cell {c.metadata.get('tags')}: {errors}"
  assert "MODE=tiny" in _stdout(_cell(nb, "parameters"))
  install = _stdout(_cell(nb, "install"))
  assert f"python: {sys.executable}\n" in install, install
  assert "backend: cpu" in install


def test_training_cells_trained_every_job(executed):
  nb, workdir = executed
  damsm = _stdout(_cell(nb, "damsm"))
  assert f"DAMSM step {TINY_STEPS}: test retrieval top-1" in damsm, damsm
  train = _stdout(_cell(nb, "train"))
  for label in ("DM-GAN", "FF-GAN"):
    assert f"{label}: step {TINY_STEPS} after" in train, train
  for run in ("damsm",) + FAMILIES:
    assert (workdir / run / "checkpoints" / str(TINY_STEPS)).is_dir(), run


def test_sample_grids_and_attention_maps_are_written_and_displayed(executed):
  nb, workdir = executed
  cell = _cell(nb, "sample")
  shown = [base64.b64decode(o.data["image/png"]) for o in cell.outputs
           if o.output_type == "display_data" and "image/png" in o.data]
  expected = []
  for family in FAMILIES:
    # samples_<step> for the EMA, samples_<step>_<weights> otherwise.
    out, = (workdir / family).glob(f"samples_{TINY_STEPS}*")
    with open(out / "report.json") as f:
      report = json.load(f)
    line = report["lines"][0]
    assert report["num_sampled"] == 1 and line["ok"], line
    assert line["text"] == "a large red circle in the middle"
    assert line["used_words"], line
    pngs = [n for n in line["files"] if n.endswith(".png")]
    # The 2-stage tiny model: one grid, one attention map (stage 2).
    assert pngs == ["caption_001.png", "caption_001_attention_stage2.png"]
    expected += [(out / n).read_bytes() for n in pngs]
  assert all(b.startswith(b"\x89PNG\r\n\x1a\n") for b in expected)
  assert shown == expected  # each file displayed once, in order


def test_metrics_cell_writes_finite_r_precision_for_both_families(executed):
  nb, workdir = executed
  table = _stdout(_cell(nb, "metrics"))
  for family, label, refiner in (("dmgan", "DM-GAN", "memory"),
                                 ("ffgan", "FF-GAN", "ffblock")):
    # SAMPLE_WEIGHTS = 'raw': the trained G's results, eval_<step>_raw.json.
    with open(workdir / family / f"eval_{TINY_STEPS}_raw.json") as f:
      r = json.load(f)
    assert r["refiner"] == refiner and r["num_samples"] == 16
    assert r["generator_weights"] == "raw"
    assert math.isfinite(r["r_precision_mean"])
    assert 0.0 <= r["r_precision_mean"] <= 1.0
    assert math.isfinite(r["is_mean"]) and r["is_mean"] >= 1.0 - 1e-6
    assert r["fid"] is None  # RUN_FID = False
    row = next(l for l in table.splitlines() if l.startswith(label))
    assert f"{r['r_precision_mean']:.3f} ± {r['r_precision_std']:.3f}" in row
  # One shared IS classifier for both families.
  assert (workdir / "shapes_classifier").is_dir()


def test_devices_cell_reports_the_runtime(executed):
  nb, _ = executed
  out = _stdout(_cell(nb, "devices"))
  assert "1 devices" in out and "float32" in out, out
  assert "batch 8 over 1 device(s) = 8 per device" in out, out
