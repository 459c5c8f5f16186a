"""job=sample: a captions file -> grids, attention maps and a report.

The workdir is gan_fixtures.trained_workdir (shared with test_evaluate.py): the
tiny DM-GAN trained once per session, 4 GAN steps with checkpoints at steps 2
and 4.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from input_pipeline.text import Vocabulary
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
  assert view.shape == (h, 3 * w + 2 * gap, 3)
  for i, g in enumerate(grids):
    np.testing.assert_array_equal(view[:, i * (w + gap):i * (w + gap) + w], g)
  assert (view[:, w:w + gap] == 255).all()
  # Five grids at 4 per row wrap into a second row.
  more = sample_lib.overview([Image.fromarray(g) for g in grids + grids[:2]])
  assert more.size == (4 * w + 3 * gap, 2 * h + gap)


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
  sample_lib._check_meta(c, meta, "ckpt")
  meta["model"] = dict(saved, r_num=saved["r_num"] + 1)
  with pytest.raises(CheckpointError, match=r"config\.model\.r_num="):
    sample_lib._check_meta(c, meta, "ckpt")


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
