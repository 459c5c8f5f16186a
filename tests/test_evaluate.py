"""job=evaluate on a tiny trained GAN: FID, IS, R-precision, the watch mode.

The Frechet distance of 2048-d statistics through ``scipy.linalg.sqrtm`` takes
minutes on 2 CPU cores, so this module computes the same quantity with the
symmetric form ``Tr sqrtm(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))`` (checked
against ``fid.frechet_distance`` on small matrices below); the FID code
itself is tested in test_fid.py.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2igan_jax import evaluate as evaluate_lib
from t2igan_jax import gan_lib
from t2igan_jax import train
from t2igan_jax.evaluation import fid as fid_lib

from gan_fixtures import job_config, trained_workdir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def eval_config(num_devices=8):
  c = job_config("evaluate", num_devices)
  c.eval.num_samples = 12        # 2 batches of 8, the last one cut to 4
  c.eval.watch = True
  c.eval.watch_timeout_s = 0.5
  c.eval.watch_poll_s = 0.1
  return c


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  """Watch mode over the tiny run's two checkpoints (steps 2 and 4)."""
  source = trained_workdir(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp("eval") / "w")
  shutil.copytree(source, workdir)
  evaluator = evaluate_lib.Evaluator(eval_config(), workdir)
  results = evaluate_lib.watch(evaluator)
  return workdir, results, evaluator


def test_quantize_matches_numpy_png_conversion():
  x = np.linspace(-1.2, 1.2, 1001, dtype=np.float32)
  trunc = np.clip((x + 1) * 127.5, 0, 255).astype(np.uint8)   # reference
  got = np.asarray(evaluate_lib.quantize(jnp.asarray(x), "truncate"))
  np.testing.assert_array_equal(evaluate_lib._to_uint8(got), trunc)
  rounded = np.round(np.clip((x + 1) * 127.5, 0, 255)).astype(np.uint8)
  got = np.asarray(evaluate_lib.quantize(jnp.asarray(x), "round"))
  np.testing.assert_array_equal(evaluate_lib._to_uint8(got), rounded)


def test_result_json_and_tensorboard(evaluated):
  workdir, results, _ = evaluated
  result = results[-1]
  with open(os.path.join(workdir, "eval_4.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(result))
  assert saved["step"] == 4 and saved["num_samples"] == 12
  assert np.isfinite(saved["fid"]) and saved["fid"] > 1.0
  assert saved["fid_protocol"]["paper_comparable"] is False
  # 56-way shapes classifier, 2 splits of 6: 1 <= IS <= 6.
  assert 1.0 - 1e-6 <= saved["is_mean"] <= 6.0 and np.isfinite(saved["is_std"])
  assert saved["is_protocol"]["protocol"] == "shapes"
  assert 0.0 <= saved["is_protocol"]["classifier_test_accuracy"] <= 1.0
  agree = saved["shapes_caption_agreement"]
  assert agree["samples"]["num_images"] == 12
  assert agree["real_test_images"]["num_images"] == 32   # tiny test split
  for who in ("samples", "real_test_images"):
    a = agree[who]
    assert 0.0 <= a["class"] <= min(a["kind"], a["colour"]) <= 1.0, a
  # Measured on the very images (and classifier) of its test accuracy.
  assert agree["real_test_images"]["class"] == pytest.approx(
      saved["is_protocol"]["classifier_test_accuracy"])
  assert 0.0 <= saved["r_precision_mean"] <= 1.0
  assert len(saved["r_precision_per_fold"]) == 2
  assert saved["r_precision_fold_slicing"] == "full"
  assert np.isclose(np.mean(saved["r_precision_per_fold"]),
                    saved["r_precision_mean"])
  events = [f for f in os.listdir(workdir) if f.startswith("events.out")]
  blob = b"".join(open(os.path.join(workdir, f), "rb").read() for f in events)
  for tag in (b"eval/fid", b"eval/is_mean", b"eval/r_precision_mean",
              b"eval/samples"):
    assert tag in blob, tag
  assert os.path.isfile(os.path.join(workdir, "fid_stats_shapes_64.npz"))
  assert os.path.isfile(os.path.join(workdir, "shapes_classifier",
                                     "classifier.msgpack"))


def test_real_against_real_statistics_is_zero(evaluated):
  """Real test images through the evaluation's feature path vs the cache."""
  _, results, ev = evaluated
  result = results[-1]
  mu, sigma = fid_lib.load_statistics(ev.stats_path())     # the cache file
  feats = ev.features(ev.real_images())
  assert feats.shape == (32, 2048)
  mu2, sigma2 = fid_lib.statistics(feats)
  real_fid = fid_lib.frechet_distance(mu2, sigma2, mu, sigma)
  assert abs(real_fid) < 1e-3 * result["fid"]
  assert abs(real_fid) < 0.05


def test_eval_captions_follow_the_reference_loader(evaluated):
  _, _, ev = evaluated
  a, b = ev.batch_captions(5), ev.batch_captions(5)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  lens = a["caption_lens"]
  assert np.all(np.diff(lens) <= 0)                       # sorted, descending
  assert a["captions"].shape == (8, 10)                     # eval_words_num
  assert np.all((a["captions"] > 0) == (np.arange(10) < lens[:, None]))
  # One pass = 4 batches of the 32 test images: each image once per pass.
  seen = np.concatenate([ev.batch_captions(k)["class_ids"] for k in range(4)])
  assert sorted(seen.tolist()) == sorted(ev.class_ids.tolist())


def test_watch_evaluates_every_checkpoint_then_times_out(evaluated):
  workdir, results, _ = evaluated
  assert [r["step"] for r in results] == [2, 4]
  for step in (2, 4):
    with open(os.path.join(workdir, f"eval_{step}.json")) as f:
      assert json.load(f)["step"] == step
  # Through the job entry point: nothing new, so it evaluates nothing and stops.
  assert train.run(eval_config(), workdir) == []


def test_fid_off_and_raw_generator_weights(evaluated):
  """config.eval.fid=False: no FID network, same IS and R-precision; then
  config.sample.weights='raw': the trained G, into eval_<step>_raw.json."""
  workdir, results, _ = evaluated
  c = eval_config()
  c.eval.watch = False
  c.eval.fid = False
  ev = evaluate_lib.Evaluator(c, workdir)
  assert ev.fid_fn is None
  result = ev.run(4)
  assert result["fid"] is None and "skipped" in result["fid_protocol"]
  full = results[-1]
  assert result["r_precision_per_fold"] == full["r_precision_per_fold"]
  assert result["is_mean"] == pytest.approx(full["is_mean"], rel=1e-5)
  assert result["generator_weights"] == full["generator_weights"] == "ema"
  # dmgan_shapes trains a bias-corrected EMA (gan.ema_debias); 'ema' says so.
  assert result["generator_weights_used"] == "ema_debiased"
  assert "bias-corrected" in result["generator_weights_description"]
  with open(os.path.join(workdir, "eval_4.json")) as f:
    assert json.load(f)["fid"] is None

  c.sample.weights = "raw"          # the same evaluator, the raw generator
  raw_result = ev.run(4)
  assert raw_result["generator_weights"] == "raw"
  assert raw_result["generator_weights_used"] == "raw"
  with open(os.path.join(workdir, "eval_4_raw.json")) as f:
    assert json.load(f)["generator_weights"] == "raw"
  with open(os.path.join(workdir, "eval_4.json")) as f:
    assert json.load(f)["generator_weights"] == "ema"   # not overwritten
  # The evaluated parameters are the raw ones (after 4 steps they differ from
  # the EMA's by far more than rounding).
  raw = gan_lib.restore_generator(c, workdir, 4).g_params
  c.sample.weights = "ema"
  ema = gan_lib.restore_generator(c, workdir, 4).g_params
  diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree.leaves(raw), jax.tree.leaves(ema))]
  assert max(diffs) > 1e-4
