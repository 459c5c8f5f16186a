"""t2igan-jax entry point.

  python main.py --config=configs/damsm_shapes.py --workdir=/tmp/damsm
  python main.py --config=configs/dmgan_coco.py --workdir=/ckpt \
      --config.data.data_dir=/data/coco

The job (DAMSM pretraining, GAN training, evaluation, sampling) is chosen by
``config.job``; every job is an importable function (``t2igan_jax.train``) so
Colab and the tests run exactly the same code.
"""

import logging as std_logging
import signal
import sys

# SIGTERM before the job's preemption watcher exists (imports, flag parsing)
# only records the notice; main() then stops before doing anything.
_EARLY_SIGTERM = []


def _record_sigterm(signum, frame):
  del frame
  _EARLY_SIGTERM.append(signum)


if __name__ == "__main__":
  signal.signal(signal.SIGTERM, _record_sigterm)

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard "
                    "events and metrics.json; an existing run there resumes.")
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py[:variant]); override fields "
    "with --config.<field>=<value>.", lock_config=True)
flags.DEFINE_bool("print_config", False, "Print every field of --config "
                  "(after the overrides) with its value and exit.")

def _stop_if_terminated_early() -> None:
  if _EARLY_SIGTERM:
    logging.warning("preempted during start-up (SIGTERM while loading); "
                    "nothing was run or saved; exiting 0")
    sys.exit(0)
  # From here on train.run's preemption watcher handles SIGTERM.
  if signal.getsignal(signal.SIGTERM) is _record_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported late so that --help and flag errors do not initialise JAX.
  from t2igan_jax import train  # pylint: disable=g-import-not-at-top
  from t2igan_jax import errors  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().setFormatter(
      std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  _stop_if_terminated_early()
  try:
    config = FLAGS.config
    config.job  # pylint: disable=pointless-statement  (forces the load)
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    sys.exit(f"error: cannot load --config: {lines[-1] if lines else e}")
  try:
    result = train.run(config, FLAGS.workdir)
  except errors.USER_ERRORS as e:
    logging.error("%s: %s", type(e).__name__, e)
    sys.exit(f"error: {e}")
  if isinstance(result, dict) and result.get("preempted"):
    # A clean exit (status 0): the checkpoint of the last step is committed.
    if result.get("before_first_step"):
      logging.warning("preempted before the first step; nothing new saved "
                      "(newest checkpoint: step %s), exiting 0",
                      result.get("step"))
    else:
      logging.warning("preempted after step %s; checkpoint saved, exiting 0",
                      result.get("step"))


def _parse_flags_or_exit(argv):
  """Parses flags first so that --help, --print_config and a bad --config or
  override need no JAX; an error is one line."""
  from t2igan_jax import cli  # pylint: disable=g-import-not-at-top
  if any(a in cli.HELP_ARGS for a in argv[1:]):
    print(cli.usage())
    sys.exit(0)
  spec = cli.config_spec(argv[1:])
  if spec is None:
    sys.exit("error: --config is required (python main.py --help lists the "
             "config files)")
  missing = cli.missing_config_message(spec)
  if missing:
    sys.exit(f"error: {missing}")
  try:
    rest = FLAGS(argv)
  except (AttributeError, KeyError) as e:
    msg = cli.unknown_field_message(spec, argv[1:])
    sys.exit(f"error: {msg or e}")
  except (flags.Error, ValueError, TypeError, OSError, SyntaxError) as e:
    variant = cli.variant_error(e)
    if variant is not None:
      sys.exit(f"error: --config={spec}: {variant}")
    msg = cli.unknown_field_message(spec, argv[1:])
    if msg is None:
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      msg = f"bad flag or config file: {msg}"
    sys.exit(f"error: {msg}")
  if FLAGS.print_config:
    print(cli.format_config(FLAGS.config, spec))
    from t2igan_jax import config_validation  # pylint: disable=g-import-not-at-top
    from t2igan_jax import errors  # pylint: disable=g-import-not-at-top
    try:
      config_validation.validate(FLAGS.config)
    except errors.ConfigError as e:
      sys.exit(f"error: {e}")
    sys.exit(0)
  if FLAGS.workdir is None:
    sys.exit("error: --workdir is required: the directory for checkpoints and "
             "logs (an existing run there resumes)")
  return rest


def _run():
  app.run(main, flags_parser=_parse_flags_or_exit)


if __name__ == "__main__":
  _run()
