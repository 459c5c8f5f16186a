"""The command line: --help, --print_config, config files and variants, and
every config field checked before anything is built (one line each)."""

import importlib
import os
import subprocess
import sys

import jax
import pytest

import gan_fixtures

import configs
from configs import base
from configs import damsm
from configs import damsm_shapes
from configs import dmgan_shapes
from configs import gan
from input_pipeline import datasets
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
  assert "configs/gan.py              train_gan       GAN presets" in out
  assert ":tiny" in out and "--print_config" in out
  assert "--config.<field>=<value>" in out
  assert "configs/gan.py:<family>,<dataset>[,<size>]" in out
  assert ("  family   dmgan, ffgan, attngan, dfgan (model.refiner: memory, "
          "ffblock, attention, model.architecture=dfgan)") in out
  assert "  dataset  bird, coco, shapes (data.name: birds, coco, shapes)" in out
  quirks = out[out.index("reference quirks"):]
  assert all(path in quirks for path in base.QUIRK_FLAGS)
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
  assert ("model.attn_mask_mode = 'per_caption'  # configs/base.py: 'rolled'; "
          "reference quirk") in lines
  assert "gan.bce = 'torch_clamped'  # reference quirk" in lines
  assert sum(l.endswith("reference quirk") for l in lines) == len(
      base.QUIRK_FLAGS)
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
  proc = _main("--config=configs/gan.py:dmgan,bird,tiy",
               f"--workdir={tmp_path}")
  assert proc.returncode == 1
  assert _error_line(proc) == (
      "error: --config=configs/gan.py:dmgan,bird,tiy: unknown config variant "
      "'tiy'; configs/gan.py:<family>,<dataset>[,<size>] takes family "
      "'dmgan' | 'ffgan' | 'attngan' | 'dfgan'; dataset 'bird' | 'coco' | "
      "'shapes'; size 'tiny'")
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
  # An alias takes a size only: its family and dataset are its name.
  with pytest.raises(base.UnknownVariantError, match=r"unknown config "
                     r"variant 'coco'; the variants are 'tiny'"):
    dmgan_shapes.get_config("coco")
  bad = {"": r"configs/gan.py needs a family and a dataset preset; ",
         "tiny,shapes": r"configs/gan.py needs a family preset; ",
         "dmgan,bird,coco": r"names two dataset presets \('bird' and 'coco'\)",
         "dmgan,bird,": None,  # an empty part is no preset
         "ffgan, coco ,tiny": None}
  for variant, message in bad.items():
    if message is None:
      gan.get_config(variant)
      continue
    with pytest.raises(base.UnknownVariantError, match=message) as e:
      gan.get_config(variant)
    assert "\n" not in str(e.value)
    assert "family 'dmgan' | 'ffgan' | 'attngan'" in str(e.value)
  with pytest.raises(base.UnknownVariantError,
                     match=r"^configs/damsm.py needs a dataset preset; "
                     r"configs/damsm.py:<dataset>\[,<size>\] takes dataset "
                     r"'bird' \| 'coco' \| 'shapes'; size 'tiny'$"):
    damsm.get_config("tiny")


def test_the_jobs_are_listed_once():
  assert config_validation.CHOICES["job"] is base.JOBS
  assert tuple(train.JOB_FUNCTIONS) == base.JOBS
  assert tuple(base.JOB_DESCRIPTIONS) == base.JOBS


# ----------------------------------------------------------------- presets

# configs/<file>.py -> its preset (configs/gan.py or configs/damsm.py).
ALIASES = {f"{family}_{dataset}": (gan, f"{family},{dataset}")
           for family in gan.FAMILIES for dataset in gan.DATASETS}
ALIASES.update({f"damsm_{dataset}": (damsm, dataset)
                for dataset in damsm.DATA})


def test_every_alias_file_is_its_preset():
  assert sorted(ALIASES) == sorted(
      set(configs.config_names()) - set(configs.EXAMPLE_VARIANTS))
  for name, (module, preset) in ALIASES.items():
    alias = importlib.import_module(f"configs.{name}")
    for size in (None, "tiny"):
      variant = preset if size is None else f"{preset},{size}"
      want = module.get_config(variant).to_dict()
      assert alias.get_config(*([size] if size else [])).to_dict() == want, (
          name, size)
    assert alias.get_config().job == (
        "train_gan" if module is gan else "pretrain_damsm")
  # The presets differ where they should (a real check, not all one config).
  assert gan.get_config("ffgan,bird").model.refiner == "ffblock"
  assert gan.get_config("attngan,coco").model.refiner == "attention"


# SPEC.md section 3 (DM-GAN code/cfg/*_DMGAN.yml, AttnGAN cfg/DAMSM/*.yml).
REFERENCE = {
    "bird": {"data.name": "birds", "data.captions_per_image": 10,
             "data.words_num": 18, "data.eval_words_num": 25,
             "damsm.words_num": 18, "model.r_num": 2, "gan.batch_size": 10,
             "gan.epochs": 800, "gan.lambda_damsm": 5.0,
             "gan.snapshot_interval": 25},
    "coco": {"data.name": "coco", "data.captions_per_image": 5,
             "data.words_num": 12, "data.eval_words_num": 20,
             "damsm.words_num": 15, "model.r_num": 3, "gan.batch_size": 16,
             "gan.epochs": 200, "gan.lambda_damsm": 50.0,
             "gan.snapshot_interval": 5},
}
DAMSM_REFERENCE = {"bird": (48, 600, 50), "coco": (48, 600, 5)}


def _at(config, path):
  for part in path.split("."):
    config = config[part]
  return config


# The families of the stacked architecture (DM-GAN's recipe; DF-GAN has its own).
STACKED_FAMILIES = sorted(f for f, v in gan.FAMILIES.items()
                          if v.get("model.architecture", "stacked") == "stacked")


@pytest.mark.parametrize("family", STACKED_FAMILIES)
@pytest.mark.parametrize("dataset", sorted(REFERENCE))
def test_presets_hold_the_reference_values(family, dataset):
  c = gan.get_config(f"{family},{dataset}")
  for path, value in REFERENCE[dataset].items():
    if (family, dataset) == ("ffgan", "bird") and path == "gan.batch_size":
      value = 4  # FF-GAN's bird YAML (SPEC-ffgan §5)
    assert _at(c, path) == value, (path, _at(c, path))
  for path, value in base.QUIRK_FLAGS.items():
    if path != "data.eval_words_num":
      assert _at(c, path) == value, path  # the reference behaviour
  d = damsm.get_config(dataset)
  assert (d.job, d.data.name) == ("pretrain_damsm", REFERENCE[dataset][
      "data.name"])
  assert (d.damsm.batch_size, d.damsm.epochs,
          d.damsm.snapshot_interval) == DAMSM_REFERENCE[dataset]


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_tiny_shrinks_the_models_and_keeps_the_data(name):
  module, preset = ALIASES[name]
  full, small = module.get_config(preset), module.get_config(f"{preset},tiny")
  for field in ("name", "source", "data_dir", "tfds_data_dir",
                "shapes_scenes", "on_bad_example"):
    assert small.data[field] == full.data[field], field
  if full.data.name != "shapes":  # how its caption files are read
    assert small.data.captions_per_image == full.data.captions_per_image
  assert small.model.ngf < full.model.ngf and small.max_steps == 2
  # An override of the source is kept (it used to train on shapes data).
  c = module.get_config(f"{preset},tiny")
  if c.data.name != "shapes":
    c.data.source = "tfds"
    c.data.tfds_data_dir = "/no/tfds"
    config_validation.validate(c)
    assert datasets.source(c.data) is datasets.SOURCES["tfds"]


# tobran/DF-GAN at HEAD (SPEC-dfgan): code/cfg/{bird,coco}.yml, src/train.py,
# scripts/train.sh, lib/perpare.py.
DFGAN_REFERENCE = {
    "model.architecture": "dfgan", "model.ngf": 32, "model.z_dim": 100,
    "text_encoder.embedding_dim": 256, "data.base_size": 256,
    "data.branch_num": 1, "gan.batch_size": 32, "gan.g_lr": 1e-4,
    "gan.d_lr": 4e-4, "gan.beta1": 0.0, "gan.beta2": 0.9,
    "sample.weights": "raw", "sample.truncation": 0.88}


@pytest.mark.parametrize("dataset", sorted(REFERENCE))
def test_dfgan_presets_hold_the_official_values(dataset):
  c = gan.get_config(f"dfgan,{dataset}")
  for path, value in DFGAN_REFERENCE.items():
    assert _at(c, path) == value, (path, _at(c, path))
  assert (c.gan.epochs, c.gan.snapshot_interval) == {
      "bird": (1300, 10), "coco": (300, 10)}[dataset]
  assert c.data.name == REFERENCE[dataset]["data.name"]


def test_dfgan_shapes_and_tiny_presets():
  """Shapes: the bird values at the data's 64 px; tiny: one small stage."""
  shapes = gan.get_config("dfgan,shapes")
  for path, value in DFGAN_REFERENCE.items():
    if path not in ("data.base_size", "text_encoder.embedding_dim"):
      assert _at(shapes, path) == value, path
  assert (shapes.data.base_size, shapes.data.branch_num) == (64, 1)
  assert shapes.max_train_seconds == gan.get_config(
      "dmgan,shapes").max_train_seconds
  tiny = gan.get_config("dfgan,shapes,tiny")
  assert (tiny.data.base_size, tiny.data.branch_num, tiny.model.ngf,
          tiny.model.z_dim, tiny.text_encoder.embedding_dim) == (32, 1, 8, 8, 32)
  config_validation.validate(tiny)
  for field, value, message in (
      ("data.branch_num", 2, r"^config\.data\.branch_num=2, config\.data\."
       r"base_size=32: model\.architecture='dfgan' generates one stage"),
      ("sample.weights", "ema", r"^config\.sample\.weights='ema': model\."
       r"architecture='dfgan' keeps no EMA of G; use 'raw'$"),
      ("sample.truncation", -1.0, r"^config\.sample\.truncation=-1\.0 must "
       r"be 0 \(off\) or the truncation rate > 0$"),
      ("model.architecture", "dfgann", r"^config\.model\.architecture="
       r"'dfgann' is not one of \('stacked', 'dfgan'\)$")):
    c = gan.get_config("dfgan,shapes,tiny")
    base.override(c, {field: value})
    with pytest.raises(ConfigError, match=message):
      config_validation.validate(c)


def test_preset_values_are_fields():
  """A preset naming no field of configs/base.py is an error, not a new field."""
  with pytest.raises(KeyError, match=r"config\.gan\.batchsize is not a field"):
    base.override(base.get_config(), {"gan.batchsize": 3})
  with pytest.raises(KeyError, match=r"config\.gann\.batch_size: no section"):
    base.override(base.get_config(), {"gann.batch_size": 3})
  for values in (*gan.FAMILIES.values(), *gan.DATASETS.values(),
                 *damsm.DATA.values(), *damsm.SCHEDULES.values(),
                 *gan.FAMILY_ON_DATASET.values(),
                 *gan.FAMILY_ON_SIZE.values()):
    base.override(base.get_config(), values)
  assert tuple(damsm.DATA) == tuple(gan.DATASETS) == tuple(damsm.SCHEDULES)


def test_allowed_values_come_from_the_registries():
  from t2igan_jax.evaluation import inception_score
  from t2igan_jax.models import families
  choices = config_validation.CHOICES
  assert choices["data.name"] == tuple(datasets.DATASETS)
  assert choices["data.source"] == tuple(datasets.SOURCES)
  assert choices["model.refiner"] == tuple(families.REFINER_FAMILIES)
  assert choices["model.architecture"] == tuple(families.ARCHITECTURES)
  assert set(inception_score.PROTOCOLS) <= set(datasets.IS_PROTOCOLS)
  assert set(choices["eval.is_protocol"]) == {"auto", *datasets.IS_PROTOCOLS}
  for values in gan.FAMILIES.values():
    assert values.get("model.refiner", "memory") in families.REFINER_FAMILIES
    assert values.get("model.architecture",
                      "stacked") in families.ARCHITECTURES


def test_dataset_and_source_must_fit():
  c = dmgan_shapes.get_config("tiny")
  c.data.source = "tfds"
  with pytest.raises(ConfigError, match=r"^config\.data\.source='tfds': "
                     r"dataset 'shapes' is generated in memory and reads no "
                     r"source"):
    config_validation.validate(c)
  c = gan.get_config("dmgan,bird,tiny")
  with pytest.raises(ConfigError, match=r"^config\.data\.data_dir is empty: "
                     r"source 'attngan' of dataset 'birds' reads the AttnGAN"):
    config_validation.validate(c)
  c.data.data_dir = "/data/birds"
  c.data.source = "coco_json"
  with pytest.raises(ConfigError, match=r"^config\.data\.source='coco_json' "
                     r"reads MS-COCO caption files .*not a source of dataset "
                     r"'birds' \(its sources: 'attngan', 'tfds'\)$"):
    config_validation.validate(c)
  c.data.source = "tfds"
  c.data.data_dir = ""
  config_validation.validate(c)  # tfds_data_dir '' = tfds' default


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
