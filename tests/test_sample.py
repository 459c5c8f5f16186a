"""job=sample: a captions file -> grids, attention maps and a report.

The workdir is gan_fixtures.trained_workdir (shared with test_evaluate.py): the
tiny DM-GAN trained once per session, 4 GAN steps with checkpoints at steps 2
and 4.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from input_pipeline.text import Vocabulary
from t2igan_jax import gan_lib
from t2igan_jax import metric_writer
from t2igan_jax import sample as sample_lib
from t2igan_jax import train

from gan_fixtures import job_config, trained_workdir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_workdir(tmp_path_factory)


CAPTIONS = ("a red circle in the middle\n"
            "the zorblax is a blue square\n"
            "\n"
            "flibber gronk\n"
            "a big green star, in the center!\n")


@pytest.fixture(scope="module")
def sampled(workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp("samples")
  captions = out / "captions.txt"
  captions.write_text(CAPTIONS)
  c = job_config("sample")
  c.sample.captions_file = str(captions)
  c.sample.output_dir = str(out / "out")
  c.sample.num_per_caption = 3
  report = train.run(c, workdir)
  return report, out / "out"


def test_writes_exactly_the_expected_files(sampled):
  report, out = sampled
  expected = {"report.json"}
  for line in (1, 2, 5):
    expected |= {f"caption_{line:03d}.png", f"caption_{line:03d}.txt",
                 f"caption_{line:03d}_attention_stage2.png"}
  expected |= {"caption_003.txt", "caption_004.txt", "overview.png"}
  assert set(os.listdir(out)) == expected
  assert report["num_lines"] == 5 and report["num_sampled"] == 3
  assert report["checkpoint_step"] == 4
  with open(out / "report.json") as f:
    assert json.load(f) == json.loads(json.dumps(report))


def test_overview_tiles_the_sampled_grids(sampled):
  _, out = sampled
  grids = [np.asarray(Image.open(out / f"caption_{k:03d}.png")) for k in (1, 2, 5)]
  assert len({g.shape for g in grids}) == 1   # same size: no padding needed
  h, w = grids[0].shape[:2]
  view = np.asarray(Image.open(out / "overview.png"))
  gap = 8
  title = 2 * 14 + 4          # step/weights/seed, then what is shown
  assert view.shape == (title + h, 3 * w + 2 * gap, 3)
  assert view[:title].min() < 128 < view[:title].max()    # text on white
  view = view[title:]
  for i, g in enumerate(grids):
    np.testing.assert_array_equal(view[:, i * (w + gap):i * (w + gap) + w], g)
  assert (view[:, w:w + gap] == 255).all()
  # Five grids at 4 per row wrap into a second row.
  more = sample_lib.overview([Image.fromarray(g) for g in grids + grids[:2]])
  assert more.size == (4 * w + 3 * gap, 2 * h + gap)


LONG_LINE = ("a big green star in the center a red circle in the middle "
             "a blue square")        # 16 known words; tiny words_num is 8


@pytest.fixture(scope="module")
def per_weights(workdir, tmp_path_factory, monkeypatch_module):
  """job=sample twice into the default output directories of a copy of the
  run: sample.weights='ema' then 'raw', with the overview bounded to 2 lines."""
  root = tmp_path_factory.mktemp("per_weights")
  copy = root / "w"
  shutil.copytree(workdir, copy)
  captions = root / "captions.txt"
  captions.write_text(f"a red circle in the middle\n{LONG_LINE}\n"
                      "a big green star, in the center!\n")
  monkeypatch_module.setattr(sample_lib, "OVERVIEW_MAX_LINES", 2)
  reports = {}
  for weights in ("ema", "raw"):
    c = job_config("sample")
    c.sample.captions_file = str(captions)
    c.sample.num_per_caption = 2
    c.sample.seed = 3
    c.sample.weights = weights
    reports[weights] = train.run(c, str(copy))
  return copy, reports


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as mp:
    yield mp


def test_one_directory_per_step_and_weights(per_weights):
  copy, reports = per_weights
  ema_dir, raw_dir = copy / "samples_4", copy / "samples_4_raw"
  for d, weights, used in ((ema_dir, "ema", "ema_debiased"),
                           (raw_dir, "raw", "raw")):
    with open(d / "report.json") as f:
      report = json.load(f)
    assert report == json.loads(json.dumps(reports[weights]))
    assert (report["weights"], report["weights_used"]) == (weights, used)
    assert report["step"] == report["checkpoint_step"] == 4
    assert report["seed"] == 3
    assert report["output_dir"] == str(d)
  # dmgan_shapes trains a bias-corrected EMA: its report says so.
  assert "bias-corrected EMA" in reports["ema"]["weights_description"]
  a = np.asarray(Image.open(ema_dir / "caption_001.png"))
  b = np.asarray(Image.open(raw_dir / "caption_001.png"))
  assert a.shape == b.shape and (a != b).any()


def test_overview_is_bounded_and_says_so(per_weights):
  copy, reports = per_weights
  report = reports["ema"]
  assert report["num_sampled"] == 3
  assert report["overview"]["lines"] == [1, 2]
  assert "first 2 of 3" in report["overview"]["description"]
  grids = [np.asarray(Image.open(copy / "samples_4" / f"caption_{k:03d}.png"))
           for k in (1, 2)]
  view = np.asarray(Image.open(copy / "samples_4" / "overview.png"))
  width = sum(g.shape[1] for g in grids) + 8
  assert view.shape[1] == width      # two grids, not three


def test_attention_tiles_stop_at_words_num(per_weights):
  copy, reports = per_weights
  lines = {e["line"]: e for e in reports["ema"]["lines"]}
  assert len(lines[2]["used_words"]) == 16
  assert lines[2]["attention_words"] == 8 == job_config("sample").data.words_num
  assert lines[1]["attention_words"] == 6
  att = np.asarray(Image.open(copy / "samples_4" /
                              "caption_002_attention_stage2.png"))
  assert att.shape[1] == (8 + 1) * 66 + 2


def test_training_sample_grids_show_captions(workdir):
  """The training run's written sample grids (also its TensorBoard images)
  have each image's caption under it."""
  captions = open(os.path.join(workdir, "sample_captions.txt")).read().split("\n")
  path = os.path.join(workdir, "samples",
                      "step0000004_samples_stage1_64px.png")
  grid = np.asarray(Image.open(path))
  ncols = int(np.ceil(np.sqrt(len([c for c in captions if c]))))
  cell, text_h = 128, 3 * 14 + 2          # image_text.captioned_grid
  assert grid.shape[1] == ncols * cell + 2
  band = grid[66 + 2:66 + 2 + text_h, 2:cell]   # under the first image
  assert band.min() < 128 < band.max()    # its caption, black on white
  assert grid.shape[0] > 66 * ncols + 2


def test_weights_of_old_and_plain_checkpoints(workdir):
  """A checkpoint without the EMA key (written before gan.ema_debias, or by a
  plain-EMA run) samples its EMA as stored; 'ema_debiased' corrects it with
  θ_0 re-initialised from the seed; a debiased run divides by 1 - d^t."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from t2igan_jax import ema  # pylint: disable=g-import-not-at-top
  c = job_config("sample")
  gen = gan_lib.restore_generator(c, workdir, 4)
  assert gen.meta[ema.META_KEY] is True and gen.weights_used == "ema_debiased"
  abstract = jax.eval_shape(functools.partial(gan_lib.create_state,
                                              gen.models), jax.random.key(0))
  from t2igan_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(gan_lib.checkpoint_dir(workdir),
                                    max_to_keep=1000, interval=1)
  try:
    state, _, _ = ckpt.restore(abstract, 4)
  finally:
    ckpt.close()
  d = c.gan.ema_decay
  for got, e in zip(jax.tree.leaves(gen.g_params), jax.tree.leaves(state.g_ema)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(e) / (1 - d**4),
                               rtol=1e-6)
  old_meta = {k: v for k, v in gen.meta.items()
              if k not in (ema.META_KEY, "seed", "ema_decay")}
  params, used, text = gan_lib.generator_weights(c, gen.models, state,
                                                    old_meta)
  assert used == "ema" and params is state.g_ema and "reference" in text
  c.sample.weights = "ema_debiased"
  params, used, text = gan_lib.generator_weights(c, gen.models, state,
                                                    old_meta)
  theta0 = jax.jit(functools.partial(gan_lib.create_state, gen.models))(
      jax.random.key(c.seed)).g_params
  want = ema.debias_plain_ema(state.g_ema, theta0, d, 4)
  assert used == "ema_debiased" and "not in the checkpoint" in text
  for got, w in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(w))


def test_resume_with_other_ema_mode_is_refused(workdir, tmp_path):
  from t2igan_jax.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "w"
  shutil.copytree(workdir, copy)
  c = job_config("train_gan")
  c.max_steps = 6
  c.gan.ema_debias = False
  with pytest.raises(CheckpointError, match=r"gan\.ema_debias is True there"):
    train.run(c, str(copy))


def test_report_names_unknown_words_and_line_errors(sampled):
  report, out = sampled
  lines = {entry["line"]: entry for entry in report["lines"]}
  assert [lines[i]["ok"] for i in range(1, 6)] == [True, True, False, False,
                                                   True]
  assert lines[1]["unknown_words"] == []
  assert lines[2]["unknown_words"] == ["zorblax"]
  assert lines[2]["used_words"] == ["the", "is", "a", "blue", "square"]
  assert lines[3]["error"] == "empty line"
  assert "flibber gronk" in lines[4]["error"]
  assert lines[4]["unknown_words"] == ["flibber", "gronk"]
  assert lines[5]["used_words"] == ["a", "big", "green", "star", "in", "the",
                                    "center"]
  text = (out / "caption_002.txt").read_text()
  assert "zorblax" in text and "used words (5)" in text
  assert "error: empty line" in (out / "caption_003.txt").read_text()


def test_grid_layout(sampled):
  _, out = sampled
  # 3 samples x 2 stages of 64 px (2 px borders), a white caption header on top.
  grid = np.asarray(Image.open(out / "caption_001.png"))
  body = 3 * 66 + 2
  assert grid.shape[0] > body and grid.shape[1] == 256
  header = grid[:grid.shape[0] - body]
  assert header.min() < 128 < header.max()          # black text on white
  tiles = grid[grid.shape[0] - body:, :2 * 66 + 2]
  assert tiles[:, :2].max() == 0                       # the grid's border
  assert tiles[2:66, 2:66].std() > 0 or tiles[2:66, 68:132].std() > 0
  # Attention: one column for the image plus one per used word (6 for line 1).
  att = np.asarray(Image.open(out / "caption_001_attention_stage2.png"))
  assert att.shape[1] == 7 * 66 + 2


def test_no_sampleable_line_is_an_error(workdir, tmp_path):
  captions = tmp_path / "bad.txt"
  captions.write_text("\nqwertyuiop\n")
  c = job_config("sample")
  c.sample.captions_file = str(captions)
  c.sample.output_dir = str(tmp_path / "out")
  with pytest.raises(ValueError, match="no line of .*bad.txt could be sampled"):
    train.run(c, workdir)
  with open(tmp_path / "out" / "report.json") as f:
    report = json.load(f)
  assert report["num_sampled"] == 0 and report["num_errors"] == 2


def test_missing_captions_file_is_named(tmp_path):
  c = job_config("sample")
  c.sample.captions_file = str(tmp_path / "nope.txt")
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    train.run(c, str(tmp_path / "w"))
  c.sample.captions_file = ""
  with pytest.raises(ValueError, match="config.sample.captions_file"):
    train.run(c, str(tmp_path / "w"))


def test_missing_checkpoint_is_named(tmp_path):
  captions = tmp_path / "c.txt"
  captions.write_text("a red circle\n")
  c = job_config("sample")
  c.sample.captions_file = str(captions)
  with pytest.raises(FileNotFoundError, match="no GAN checkpoint"):
    train.run(c, str(tmp_path / "empty"))


def test_checkpoint_meta_ignores_execution_only_fields():
  # A run trained with one conv_weight_grad samples under another (e.g.
  # trained on a GPU with 'xla', sampled on a CPU with 'per_tap'); a real
  # model field still refuses, naming it.
  from input_pipeline import pipeline as input_pipeline
  from t2igan_jax.errors import CheckpointError
  c = job_config("sample")
  c.model.conv_weight_grad = "per_tap"
  saved = dict(c.model.to_dict(), conv_weight_grad="xla")
  meta = {"job": "train_gan", "model": saved,
          "stage_sizes": list(input_pipeline.stage_sizes(c))}
  gan_lib.check_meta(c, meta, "ckpt")
  meta["model"] = dict(saved, r_num=saved["r_num"] + 1)
  with pytest.raises(CheckpointError, match=r"config\.model\.r_num="):
    gan_lib.check_meta(c, meta, "ckpt")


def test_parse_captions():
  vocab = Vocabulary(["<end>", "a", "red", "circle"])
  lines = sample_lib.parse_captions("A red, CIRCLE!\n  \nred blob\n...\n",
                                    vocab)
  assert [(e.line, e.ok) for e in lines] == [(1, True), (2, False), (3, True),
                                            (4, False)]
  assert lines[0].ids == [1, 2, 3] and lines[0].unknown_words == []
  assert lines[1].error == "empty line"
  assert lines[2].ids == [2] and lines[2].unknown_words == ["blob"]
  assert lines[3].error.startswith("no words")


def test_attention_grid_matches_numpy():
  rng = np.random.default_rng(0)
  final = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  att = rng.uniform(0, 1, (2, 5, 4, 4)).astype(np.float32)
  grid = sample_lib.attention_grid(final, att, num_words=3)
  # Sample 1, word 2 (column 3): image dimmed by the word's map scaled to max 1.
  a = att[1, 2] / att[1, 2].max()
  a = np.repeat(np.repeat(a, 2, 0), 2, 1)[..., None]
  want = (final[1] + 1) * (0.15 + 0.85 * a) - 1
  want_u8 = np.clip((want + 1) * 127.5, 0, 255).astype(np.uint8)
  r, col = 1, 3
  tile = grid[2 + r * 10:2 + r * 10 + 8, 2 + col * 10:2 + col * 10 + 8]
  np.testing.assert_array_equal(tile, want_u8)
  first = grid[2 + r * 10:2 + r * 10 + 8, 2:10]
  np.testing.assert_array_equal(first, metric_writer.image_grid(final[1:])[2:10, 2:10])
