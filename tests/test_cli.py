"""The command line: --help, --print_config, config files and variants, and
every config field checked before anything is built (one line each)."""

import os
import subprocess
import sys

import jax
import pytest

import gan_fixtures

import configs
from configs import base
from configs import damsm_shapes
from configs import dmgan_shapes
from t2igan_jax import config_validation
from t2igan_jax import train
from t2igan_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs main.py in this interpreter's subprocess and reports whether JAX was
# imported (``--help`` and ``--print_config`` must not initialise it).
_RUN_MAIN = """
import runpy, sys
sys.argv = ["main.py"] + sys.argv[1:]
try:
  runpy.run_path("main.py", run_name="__main__")
finally:
  print("JAX imported:", "jax" in sys.modules, file=sys.stderr)
"""


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", _RUN_MAIN, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def _error_line(proc):
  """The last line of stderr (besides the JAX-import note), with no
  traceback before it."""
  lines = [l for l in proc.stderr.strip().splitlines()
           if not l.startswith("JAX imported:")]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return lines[-1]


# ---------------------------------------------------------------- discovery

def test_help_lists_jobs_configs_and_how_to_print_fields():
  proc = _main("--help")
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  for job in base.JOBS:
    assert job in out
  for path in configs.config_paths():
    assert path in out
  assert "configs/dmgan_shapes.py     train_gan       DM-GAN on the " in out
  assert ":tiny" in out and "--print_config" in out
  assert "--config.<field>=<value>" in out
  assert "JAX imported: False" in proc.stderr


def test_print_config_shows_every_field_with_overrides_without_jax():
  proc = _main("--config=configs/dmgan_shapes.py:tiny",
               "--config.gan.g_lr=0.001", "--print_config")
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert "gan.batch_size = 8  # configs/base.py: 10" in lines
  assert "gan.g_lr = 0.001  # configs/base.py: 0.0002" in lines
  assert "job = 'train_gan'  # configs/base.py: 'pretrain_damsm'" in lines
  assert "gan.beta1 = 0.5" in lines
  fields = [l for l in lines if not l.startswith("#")]
  n_fields = sum(1 for _ in _flat(base.get_config()))
  assert len(fields) == n_fields
  assert "JAX imported: False" in proc.stderr
  # An invalid value: the fields, then the one-line error.
  proc = _main("--config=configs/dmgan_shapes.py:tiny",
               "--config.gan.beta2=1.0", "--print_config")
  assert proc.returncode == 1
  assert _error_line(proc) == ("error: config.gan.beta2=1.0 must be in "
                               "[0, 1) (an Adam beta)")


def test_typo_unknown_variant_and_missing_file_are_one_clean_line(tmp_path):
  proc = _main("--config=configs/dmgan_shapes.py:tiny",
               "--config.batchsize=3", f"--workdir={tmp_path}")
  assert proc.returncode == 1
  line = _error_line(proc)
  assert line.startswith(
      "error: unknown config field 'batchsize' (--config.batchsize=3); did "
      "you mean gan.batch_size or "), line
  assert "\\n" not in line and "--print_config lists every field" in line
  proc = _main("--config=configs/dmgan_shapes.py:tiy", f"--workdir={tmp_path}")
  assert proc.returncode == 1
  assert _error_line(proc) == (
      "error: --config=configs/dmgan_shapes.py:tiy: unknown config variant "
      "'tiy'; the variants are 'tiny' (or none: the full config)")
  proc = _main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert proc.returncode == 1
  line = _error_line(proc)
  assert line.startswith("error: --config=configs/nope.py: configs/nope.py "
                         "does not exist; the config files are "), line
  assert all(path in line for path in configs.config_paths())
  assert not os.listdir(tmp_path)  # nothing ran


def test_unknown_variant_in_python():
  with pytest.raises(base.UnknownVariantError, match=r"'tiy'; the variants "
                     r"are 'tiny'"):
    dmgan_shapes.get_config("tiy")
  assert dmgan_shapes.get_config("").gan.batch_size == 16
  assert dmgan_shapes.get_config("tiny").gan.batch_size == 8


def test_the_jobs_are_listed_once():
  assert config_validation.CHOICES["job"] is base.JOBS
  assert tuple(train.JOB_FUNCTIONS) == base.JOBS
  assert tuple(base.JOB_DESCRIPTIONS) == base.JOBS


# ------------------------------------------------------------- validation

def _flat(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _flat(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def test_every_field_is_classified_once():
  """Each non-bool field of configs/base.py has exactly one kind of check."""
  tables = {
      "CHOICES": set(config_validation.CHOICES),
      "RANGES": set(config_validation.RANGES),
      "FILE_NAMES": set(config_validation.FILE_NAMES),
      "INPUT_PATHS": set(config_validation.INPUT_PATHS),
      "CHECKED_BY_JOB": set(config_validation.CHECKED_BY_JOB),
      "FREE_TEXT": set(config_validation.FREE_TEXT),
  }
  for path, value in _flat(base.get_config()):
    where = [name for name, fields in tables.items() if path in fields]
    if isinstance(value, bool):
      assert not where, path
    else:
      assert len(where) == 1, (path, where)
      if isinstance(value, (int, float)):
        assert where == ["RANGES"], path


BAD_FIELDS = [
    ("image_every_steps", 0, "must be a positive integer"),
    ("gan.snapshot_interval", 0, "must be a positive integer"),
    ("damsm.eval_every_epochs", 0, "must be a positive integer"),
    ("model.memory_dim", 0, "must be a positive integer"),
    ("num_devices", -1, "must be an integer >= 0"),
    ("eval.seed", -1, "must be an integer >= 0"),
    ("max_steps", 0, r"must be -1 \(no limit\) or > 0"),
    ("eval.step", 0, r"must be -1 \(the latest checkpoint\) or a step > 0"),
    ("gan.g_lr", float("nan"), "must be a finite number > 0"),
    ("gan.d_lr", float("inf"), "must be a finite number > 0"),
    ("damsm.lr", 0.0, "must be a finite number > 0"),
    ("max_train_seconds", float("nan"), "must be a finite number >= 0"),
    ("gan.beta2", 1.0, r"must be in \[0, 1\) \(an Adam beta\)"),
    ("gan.beta1", -3.0, r"must be in \[0, 1\)"),
    ("damsm.lr_decay", 1.0, r"must be in \(0, 1\)"),
    ("damsm.lr_floor_div", 0.5, "must be a finite number >= 1"),
    ("text_encoder.dropout", 1.0, r"must be in \[0, 1\)"),
    ("text_encoder.embedding_dim", 33, "must be a positive even integer"),
    ("step_log", "..", "must be a plain file name, written inside the workdir"),
    ("step_log", "checkpoints", "must be a plain file name"),
    ("metrics_json", "../metrics.json", "must be a plain file name"),
    ("metrics_json", "/tmp/metrics.json", "must be a plain file name"),
    ("metrics_json", "losses.jsonl", "must name different files"),
]


def _set(config, path, value):
  *sections, leaf = path.split(".")
  node = config
  for s in sections:
    node = node[s]
  node[leaf] = value


@pytest.mark.parametrize("path,value,message", BAD_FIELDS,
                         ids=[f"{p}={v}" for p, v, _ in BAD_FIELDS])
def test_bad_number_or_path_is_named(path, value, message):
  c = dmgan_shapes.get_config("tiny")
  _set(c, path, value)
  with pytest.raises(ConfigError, match=rf"config\.{path}=.*{message}"):
    config_validation.validate(c)


def test_input_path_of_the_job_must_exist(tmp_path):
  c = damsm_shapes.get_config("tiny")
  c.image_encoder.trunk_weights = str(tmp_path / "inception.npz")
  with pytest.raises(ConfigError, match=r"config\.image_encoder\."
                     r"trunk_weights=.*inception\.npz': no such file"):
    config_validation.validate(c)
  c.job = "sample"  # a job that does not read it
  config_validation.validate(c)
  c.job = "evaluate"
  c.eval.fid_stats = str(tmp_path / "stats.npz")
  with pytest.raises(ConfigError, match=r"config\.eval\.fid_stats=.*no such"):
    config_validation.validate(c)


_CompileCounter = gan_fixtures.CompileCounter


def test_intervals_are_refused_before_compiling(tmp_path):
  """These failed only after compiling and a step (or with a traceback)."""
  counter = _CompileCounter()
  jax.monitoring.register_event_duration_secs_listener(counter)
  try:
    for path, value in (("image_every_steps", 0), ("gan.snapshot_interval", 0),
                        ("num_devices", -1), ("step_log", "..")):
      c = dmgan_shapes.get_config("tiny")
      _set(c, path, value)
      with pytest.raises(ConfigError, match=rf"config\.{path}="):
        train.run(c, str(tmp_path / "w"))
  finally:
    jax.monitoring.unregister_event_duration_listener(counter)
  assert counter.count == 0
