"""One importable function per job; ``run`` dispatches on ``config.job``.

Colab, tests and ``main.py`` all call these:

  from t2igan_jax import train
  train.run(config, workdir)                 # whatever config.job says
  train.pretrain_damsm(config, workdir)      # DAMSM encoders

``train_gan`` without ``config.gan.damsm_dir`` gets its DAMSM here
(:func:`damsm_phase`): a converted one in ``workdir/damsm``, or one pretrained
there first with ``gan.pretrain_damsm_if_missing`` and
``gan.damsm_budget_share`` of ``max_train_seconds``.
"""

import functools
import logging
import os
import shutil
import time

import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections

from t2igan_jax import config_validation
from t2igan_jax import metric_writer
from t2igan_jax import preemption
from t2igan_jax import sharding
from t2igan_jax import time_budget
from t2igan_jax import workdir_lock
from t2igan_jax.errors import WorkdirError


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of orbax (a line per save thread); keeps warnings."""

  def filter(self, record):
    return record.levelno > logging.INFO or "/orbax/" not in record.pathname


def _initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` with the config's explicit topology."""
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(
      coordinator_address=config.coordinator_address or None,
      num_processes=config.num_processes or None,
      process_id=config.process_id if config.process_id >= 0 else None)


def check_workdir(workdir: str, min_free_gb: float) -> None:
  """Creates ``workdir`` and fails now (WorkdirError naming it) when it
  cannot be written or has less than ``min_free_gb`` GiB free."""
  if "://" in workdir:  # gs:// etc.: orbax/tensorstore write there
    logging.info("workdir %s is remote: not probing it", workdir)
    return
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir} cannot be created: "
                       f"{e.strerror or e}") from e
  probe = os.path.join(workdir, f".write_probe_{jax.process_index()}_"
                       f"{os.getpid()}")
  try:
    with open(probe, "wb") as f:
      f.write(b"t2igan-jax")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir} is not writable: "
                       f"{e.strerror or e}") from e
  free_gb = shutil.disk_usage(workdir).free / 2**30
  if free_gb < min_free_gb:
    raise WorkdirError(
        f"--workdir={workdir} has {free_gb:.2f} GiB free, less than "
        f"config.min_free_disk_gb={min_free_gb}: free some space, choose "
        "another --workdir, or lower config.min_free_disk_gb")


def _batch_fields(config: ml_collections.ConfigDict) -> list[str]:
  """The global batch sizes (config paths) the job will split over devices."""
  if config.job == "pretrain_damsm":
    return ["damsm.batch_size"]
  if config.job == "train_gan":
    fields = ["gan.batch_size"]
    if not config.gan.damsm_dir and config.gan.pretrain_damsm_if_missing:
      fields.append("damsm.batch_size")
    return fields
  return []


def check_devices(config: ml_collections.ConfigDict) -> None:
  """ConfigError (before anything is built or compiled) when the data mesh
  cannot be made or a global batch does not split evenly over it."""
  mesh = sharding.make_mesh(config.num_devices)
  for path in _batch_fields(config):
    section, name = path.split(".")
    sharding.check_batch_size(config[section][name], mesh, f"config.{path}")


def configure_compilation_cache(cache_dir: str) -> str | None:
  """Points JAX's persistent compilation cache at ``cache_dir`` (before
  anything compiles); returns the cache directory in force (None: no cache).

  '' leaves JAX's own setting alone, and so does a directory JAX already has
  (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config`` set by the caller): that
  one takes precedence over the config's default.
  """
  current = jax.config.jax_compilation_cache_dir
  if cache_dir and not current:
    cache_dir = os.path.expanduser(cache_dir)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # A cache JAX initialised earlier in this process (with no directory)
    # would otherwise stay in use.
    compilation_cache.reset_cache()
    current = cache_dir
  if current:
    logging.info("persistent compilation cache: %s (programs that take over "
                 "%g s to compile are kept)", current,
                 jax.config.jax_persistent_cache_min_compile_time_secs)
  return current


def _setup(config: ml_collections.ConfigDict, workdir: str) -> None:
  config_validation.validate(config)
  configure_compilation_cache(config.compilation_cache_dir)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
      handler.addFilter(_QuietLibraries())
  if config.distributed:
    _initialize_distributed(config)
  logging.info("t2igan-jax job %s, workdir %s", config.job, workdir)
  logging.info("topology: %s", sharding.describe_topology())
  check_devices(config)
  check_workdir(workdir, config.min_free_disk_gb)


# Written into workdir/damsm when its pretraining (the first phase of a
# train_gan command) stopped at its share of the time budget: later starts
# keep those encoders (the GAN's checkpoints were trained against them).
DAMSM_BUDGET_STOP_FILE = "stopped_by_time_budget.json"
_DAMSM_CONFIGS = {"birds": ("damsm_bird", "bird"), "coco": ("damsm_coco", "coco"),
                  "shapes": ("damsm_shapes", "shapes")}


def missing_damsm_error(config) -> FileNotFoundError:
  """The two ways to get the DAMSM encoders a GAN trains against."""
  damsm_config, folder = _DAMSM_CONFIGS.get(config.data.name,
                                            ("damsm_<dataset>", "<dataset>"))
  return FileNotFoundError(
      "config.gan.damsm_dir is empty: the GAN trains against frozen DAMSM "
      "encoders. Either pretrain them (python main.py "
      f"--config=configs/{damsm_config}.py --workdir=<damsm_dir> ..., then "
      "--config.gan.damsm_dir=<damsm_dir>), or convert AttnGAN's released "
      "ones (python -m t2igan_jax.convert --config=<this config> "
      f"--text_encoder=DAMSMencoders/{folder}/text_encoder200.pth "
      "--workdir=<this workdir>: writes <this workdir>/damsm, which this job "
      "then uses)")


def pretrains_damsm(config, workdir) -> bool:
  """Whether this train_gan command pretrains (or resumes) its DAMSM first."""
  damsm_dir = os.path.join(workdir, "damsm")
  return bool(not config.gan.damsm_dir and config.gan.pretrain_damsm_if_missing
              and not os.path.isfile(os.path.join(damsm_dir, "converted.json"))
              and not os.path.isfile(os.path.join(damsm_dir,
                                                  DAMSM_BUDGET_STOP_FILE)))


def resolve_damsm_dir(config, workdir) -> str | None:
  """The DAMSM workdir; pretrains one into workdir/damsm when asked.

  With ``max_train_seconds`` the pretraining gets ``gan.damsm_budget_share``
  of it; stopped there, its encoders are final for this workdir. None: the
  pretraining was preempted (the GAN job stops too).
  """
  if config.gan.damsm_dir:
    return config.gan.damsm_dir
  damsm_dir = os.path.join(workdir, "damsm")
  if os.path.isfile(os.path.join(damsm_dir, "converted.json")):
    return damsm_dir  # written by t2igan_jax.convert
  stop_file = os.path.join(damsm_dir, DAMSM_BUDGET_STOP_FILE)
  if os.path.isfile(stop_file):
    logging.info("the DAMSM pretraining of this workdir stopped at its share "
                 "of the time budget (%s): the GAN keeps those encoders",
                 stop_file)
    return damsm_dir
  if not config.gan.pretrain_damsm_if_missing:
    raise missing_damsm_error(config)
  damsm_config = ml_collections.ConfigDict(config.to_dict())
  damsm_config.job = "pretrain_damsm"
  damsm_config.debug_nonfinite_step = -1  # a GAN loss term is not DAMSM's
  damsm_config.max_train_seconds = time_budget.split_for_damsm(
      config.max_train_seconds, config.gan.damsm_budget_share)
  logging.info("no config.gan.damsm_dir: pretraining DAMSM into %s first",
               damsm_dir)
  if config.max_train_seconds > 0:
    logging.info(
        "time budget in force for the whole command: config.max_train_seconds"
        "=%g s (%s): the DAMSM pretraining gets up to %.0f s "
        "(gan.damsm_budget_share=%g), the GAN loop what is left",
        config.max_train_seconds,
        metric_writer.format_eta(config.max_train_seconds),
        damsm_config.max_train_seconds, config.gan.damsm_budget_share)
  os.makedirs(damsm_dir, exist_ok=True)
  result = pretrain_damsm(damsm_config, damsm_dir)
  if result.get("preempted"):
    return None  # the GAN job stops too; the next start resumes DAMSM
  if result.get("time_budget_reached"):
    logging.warning(
        "DAMSM pretraining stopped at its share of the time budget after step "
        "%d; the GAN trains against these encoders, which stay fixed for this "
        "workdir (for the full schedule pretrain with job=pretrain_damsm into "
        "its own workdir and pass config.gan.damsm_dir)", result["step"])
    if jax.process_index() == 0:
      from t2igan_jax import damsm_lib  # pylint: disable=g-import-not-at-top
      damsm_lib.write_json(stop_file, {
          "step": int(result["step"]),
          "seconds": damsm_config.max_train_seconds})
  return damsm_dir


def damsm_phase(config: ml_collections.ConfigDict,
                workdir: str) -> tuple[str | None, float | None]:
  """``(damsm_dir, seconds)`` for ``train_gan``: the DAMSM it trains against
  (:func:`resolve_damsm_dir`) and how long this command spent pretraining it
  (None: it did not pretrain)."""
  pretrains = pretrains_damsm(config, workdir)
  start = time.monotonic()
  damsm_dir = resolve_damsm_dir(config, workdir)
  return damsm_dir, (time.monotonic() - start) if pretrains else None


def pretrain_damsm(config: ml_collections.ConfigDict, workdir: str):
  """Pretrains the DAMSM text and image encoders (config.job='pretrain_damsm')."""
  from t2igan_jax import damsm_pretrain  # pylint: disable=g-import-not-at-top
  return damsm_pretrain.pretrain(config, workdir)


def train_gan(config: ml_collections.ConfigDict, workdir: str):
  """Trains the text-to-image GAN (config.job='train_gan')."""
  from t2igan_jax import gan_train  # pylint: disable=g-import-not-at-top
  return gan_train.train(config, workdir,
                         damsm=functools.partial(damsm_phase, config, workdir))


def evaluate(config: ml_collections.ConfigDict, workdir: str):
  """FID, IS and R-precision of a checkpoint (config.job='evaluate')."""
  from t2igan_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  return evaluate_lib.evaluate(config, workdir)


def sample(config: ml_collections.ConfigDict, workdir: str):
  """Images for every line of a captions file (config.job='sample')."""
  from t2igan_jax import sample as sample_lib  # pylint: disable=g-import-not-at-top
  return sample_lib.sample(config, workdir)


JOB_FUNCTIONS = {
    "pretrain_damsm": pretrain_damsm,
    "train_gan": train_gan,
    "evaluate": evaluate,
    "sample": sample,
}


# Jobs that write checkpoints and logs into the workdir: one at a time.
# (evaluate and sample only add their own files and may watch a training run.)
LOCKED_JOBS = ("pretrain_damsm", "train_gan")


def run(config: ml_collections.ConfigDict, workdir: str):
  """Validates the config, sets up the process and runs ``config.job``.

  For the training jobs, a SIGTERM from here on (set-up, imports of the
  job's modules, data, restore, compiling) is noted by a preemption watcher
  and honoured before the first step (the job's own watcher inherits it).
  Training jobs hold the workdir's lock (``workdir_lock.WorkdirLock``,
  process 0 only) while they run.
  """
  training = config.job in LOCKED_JOBS
  with preemption.PreemptionWatcher(enabled=training):
    _setup(config, workdir)
    with workdir_lock.WorkdirLock(
        workdir, config.job, enabled=training and jax.process_index() == 0):
      return JOB_FUNCTIONS[config.job](config, workdir)


# flax-examples style alias: the default job of a config.
train_and_evaluate = run
