"""Bad input: each case gets an error naming the file, or the reference's
handling; ``on_bad_example='skip'`` logs, counts and goes on."""

import json
import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest

import attngan_layout
from configs import dmgan_bird
from input_pipeline import attngan
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import text as text_lib
from input_pipeline import tfds_builders
from t2igan_jax import config_validation
from t2igan_jax import damsm_lib
from t2igan_jax import json_files
from t2igan_jax import metric_writer
from t2igan_jax.errors import ConfigError

CPI = attngan_layout.BIRDS_CAPTIONS_PER_IMAGE
ALBATROSS = attngan_layout.ALBATROSS
CORMORANT = attngan_layout.CORMORANT
_image = attngan_layout.image_path


def _iterator(src, **kw):
  return pipeline.create_iterator(
      src, global_batch_size=3, image_sizes=(16, 32), words_num=8, seed=0,
      truncation="random_subset", **kw)


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


# ------------------------------------------------------------------ images

def test_corrupt_and_truncated_jpeg_are_named(birds):
  src = attngan.AttnGANSource(birds, "test", "birds", CPI)
  i = src.keys.index(ALBATROSS)
  path = _image(birds, ALBATROSS)
  _truncate(path)
  with pytest.raises(errors.BadExampleError) as e:
    src[i]
  msg = str(e.value)
  assert str(path) in msg and repr(ALBATROSS) in msg
  assert "truncated" in msg
  path.write_bytes(b"this is not a JPEG" * 10)
  with pytest.raises(errors.BadExampleError,
                     match=re.escape(str(path)) + ": not a readable image"):
    src[i]
  os.remove(path)
  with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
    src[i]


def test_greyscale_and_cmyk_become_rgb_as_the_reference(birds):
  """The reference's Image.open(path).convert('RGB'), bbox crop after."""
  src = attngan.AttnGANSource(birds, "test", "birds", CPI)
  i = src.keys.index(ALBATROSS)
  path = _image(birds, ALBATROSS)
  box = attngan.transforms.bbox_crop_box(src.bbox(i), 216, 136)
  for mode in ("L", "CMYK"):
    with Image.open(attngan_layout.pathlib.Path(path)) as img:
      img.convert("RGB").convert(mode).save(path, quality=95)
    with Image.open(path) as img:
      assert img.mode == mode
      expected = np.asarray(img.convert("RGB").crop(box))
    got = src[i]["image"]
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert got.shape[2] == 3
    np.testing.assert_array_equal(got, expected)
    if mode == "L":
      np.testing.assert_array_equal(got[..., 0], got[..., 1])


def test_skip_replaces_counts_and_resumes(birds, caplog):
  src = attngan.AttnGANSource(birds, "train", "birds", CPI)
  _truncate(_image(birds, CORMORANT))
  # 'error' (default) stops at the bad image, naming it.
  it = _iterator(src)
  with pytest.raises(errors.BadExampleError, match="Red_Faced_Cormorant_0042"):
    for _ in range(2):
      next(it)
  # 'skip': full batches, the bad image never appears, each skip logged and
  # counted; the count is part of the resumable state.
  it = _iterator(src, on_bad_example="skip")
  batches = [next(it) for _ in range(4)]  # 2 epochs of 2 batches
  assert all(b["images"][1].shape == (3, 32, 32, 3) for b in batches)
  assert all(CORMORANT not in b["keys"].tolist() for b in batches)
  assert it.num_skipped == 2  # once per epoch
  assert it.get_state()["num_skipped"] == 2
  assert sum("skipped a bad example" in r.message and "truncated" in r.message
             for r in caplog.records) == 2
  state = it.get_state()
  resumed = _iterator(src, on_bad_example="skip")
  resumed.set_state(state)
  assert resumed.num_skipped == 2
  fresh = _iterator(src, on_bad_example="skip")
  for _ in range(4):
    next(fresh)
  np.testing.assert_array_equal(next(resumed)["keys"], next(fresh)["keys"])
  # A source built with on_bad_example='skip' passes it to its iterators.
  skip_src = attngan.AttnGANSource(birds, "train", "birds", CPI,
                                   on_bad_example="skip")
  it = _iterator(skip_src)
  for _ in range(2):
    next(it)
  assert it.num_skipped == 1


# ------------------------------------------------------------- file lists

def test_key_without_image(birds):
  os.remove(_image(birds, CORMORANT))
  with pytest.raises(FileNotFoundError) as e:
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  msg = str(e.value)
  assert "1 of the 6 keys in" in msg and "train/filenames.pickle" in msg
  assert repr(CORMORANT) in msg and "on_bad_example=skip" in msg
  src = attngan.AttnGANSource(birds, "train", "birds", CPI,
                              on_bad_example="skip")
  assert len(src) == 5 and CORMORANT not in src.keys
  assert [k for k, _ in src.skipped] == [CORMORANT]
  assert src.class_ids.tolist() == [24, 24, 191, 191, 191]
  # Captions still belong to their images after the gap.
  full = attngan.AttnGANSource(birds, "test", "birds", CPI)
  assert src.vocab == full.vocab
  raw = (birds / "text" / "191.Red_headed_Woodpecker").glob("*.txt")
  first = sorted(raw)[0]
  line = first.read_text().split("\n")[0].lower()
  j = src.keys.index(f"191.Red_headed_Woodpecker/{first.stem}")
  assert src.captions_text(j)[0] == " ".join(re.findall(r"\w+", line))


def test_missing_metadata_files_are_named(birds):
  os.remove(birds / "CUB_200_2011" / "bounding_boxes.txt")
  with pytest.raises(FileNotFoundError, match=r"bounding_boxes\.txt not found"):
    attngan.AttnGANSource(birds, "train", "birds", CPI)


def test_pickles_from_another_dataset(birds, shared_data, tmp_path):
  coco = attngan_layout.make_coco_layout(shared_data, tmp_path / "coco")
  # COCO keys in a birds filenames.pickle.
  shutil.copyfile(coco / "train" / "filenames.pickle",
                  birds / "train" / "filenames.pickle")
  with pytest.raises(ValueError, match=r"train/filenames\.pickle holds coco "
                     r"keys such as 'COCO_val2014_\d+'.*but the data set is "
                     r"'birds'"):
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  # The real CUB class_info.pickle (8,855 ids) with the sample's 6 keys.
  birds2 = attngan_layout.make_birds_layout(shared_data, tmp_path / "b2")
  real = shared_data / "cub" / "attngan_split" / "train" / "class_info.pickle"
  (birds2 / "train" / "class_info.pickle").write_bytes(real.read_bytes())
  with pytest.raises(ValueError, match=r"class_info\.pickle holds 8855 class "
                     r"ids but train/filenames\.pickle lists 6 images"):
    attngan.AttnGANSource(birds2, "train", "birds", CPI)
  # A captions.pickle built for the COCO sample, put into the birds layout.
  shutil.copyfile(birds2 / "train" / "filenames.pickle",
                  birds / "train" / "filenames.pickle")
  attngan.AttnGANSource(coco, "test", "coco", 1)
  os.replace(coco / "captions.pickle", birds / "captions.pickle")
  with pytest.raises(ValueError, match=r"captions\.pickle holds 3 test "
                     r"captions but test/filenames\.pickle lists 3 images x "
                     r"captions_per_image=10 = 30.*another file list, data "
                     r"set"):
    attngan.AttnGANSource(birds, "test", "birds", CPI)
  # Not a pickle at all (e.g. a truncated download).
  (birds / "captions.pickle").write_bytes(b"\x80\x02]q\x00(")
  with pytest.raises(ValueError, match=r"cannot read .*captions\.pickle"):
    attngan.AttnGANSource(birds, "test", "birds", CPI)


# ---------------------------------------------------------------- captions

def test_empty_caption_file(birds):
  txt = birds / "text" / f"{CORMORANT}.txt"
  txt.write_text("\n\n  \n")
  with pytest.raises(errors.BadExampleError) as e:
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  assert f"caption file {txt} is empty" in str(e.value)
  assert repr(CORMORANT) in str(e.value)
  assert not (birds / "captions.pickle").exists()
  # 'skip': left out (logged, listed), and captions.pickle is not written
  # since it would not match filenames.pickle.
  src = attngan.AttnGANSource(birds, "train", "birds", CPI,
                              on_bad_example="skip")
  assert len(src) == 5 and [k for k, _ in src.skipped] == [CORMORANT]
  assert "is empty" in src.skipped[0][1]
  assert not (birds / "captions.pickle").exists()
  assert next(_iterator(src))["images"][0].shape == (3, 16, 16, 3)


def test_caption_with_only_out_of_vocabulary_words(birds):
  """A line whose words the tokenizer drops (non-ASCII, punctuation) is not a
  caption: skipped as the reference skips it; if too few remain, named."""
  txt = birds / "text" / f"{CORMORANT}.txt"
  lines = txt.read_text(encoding="utf-8").split("\n")
  txt.write_text("\n".join(["日本語の説明", "?!? ..."] + lines),
                 encoding="utf-8")
  src = attngan.AttnGANSource(birds, "train", "birds", CPI)
  i = src.keys.index(CORMORANT)
  assert src.captions_text(i)[0] == " ".join(
      re.findall(r"\w+", lines[0].lower()))
  os.remove(birds / "captions.pickle")
  txt.write_text("\n".join(["日本語の説明", "?!? ..."] + lines[:8]),
                 encoding="utf-8")
  with pytest.raises(errors.BadExampleError) as e:
    attngan.AttnGANSource(birds, "train", "birds", CPI)
  msg = str(e.value)
  assert f"caption file {txt} has 8 valid captions, fewer than " in msg
  assert "2 caption(s) have no word the AttnGAN tokenizer keeps" in msg
  assert "1: '日本語の説明'" in msg


# ------------------------------------------------------------ tfds, config

def test_tfds_bad_stored_image_is_named_and_skippable(birds, tmp_path):
  _truncate(_image(birds, ALBATROSS))
  data_dir = tmp_path / "tfds"
  tfds_builders.prepare("birds", str(birds), str(data_dir), CPI)
  src = tfds_builders.TfdsSource(str(data_dir), "birds", "test", CPI)
  bad = next(j for j in range(3) if src.record(j)["key"].decode() == ALBATROSS)
  with pytest.raises(errors.BadExampleError) as e:
    src[bad]
  assert src.data_path in str(e.value) and repr(ALBATROSS) in str(e.value)
  assert "truncated" in str(e.value)
  it = _iterator(src, on_bad_example="skip")
  assert ALBATROSS not in next(it)["keys"].tolist()
  assert it.num_skipped == 1


def test_on_bad_example_config_field():
  c = dmgan_bird.get_config("tiny")
  c.data.on_bad_example = "ignore"
  with pytest.raises(ConfigError, match=r"config\.data\.on_bad_example="
                     r"'ignore' is not one of \('error', 'skip'\)"):
    config_validation.validate(c)
  c.data.on_bad_example = "skip"
  c.data.source = "hdf5"
  with pytest.raises(ConfigError, match=r"config\.data\.source='hdf5'"):
    config_validation.validate(c)
  with pytest.raises(ValueError, match="config.data.on_bad_example"):
    errors.check_on_bad_example("ignore")


# -------------------------------------------- the project's own files, damaged

def _step_lines(*steps):
  return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                 for s in steps)


def test_garbage_line_in_step_log_is_named_or_dropped_past_the_restore(
    tmp_path, caplog):
  path = tmp_path / "losses.jsonl"
  garbage = "\x00\x00garbage{\n"
  path.write_text(_step_lines(1, 2) + garbage + _step_lines(3, 4) + '{"ste')
  # Within the restored steps: named with the line, every restart the same.
  log = metric_writer.StepLog(str(path), enabled=True)
  for _ in range(2):
    with pytest.raises(json_files.DamagedFileError,
                       match=re.escape(str(path)) + r" line 3 is not a step "
                       r"record .*delete or fix that line"):
      log.truncate(4)
  with pytest.raises(json_files.DamagedFileError, match=r"line 3"):
    metric_writer.read_step_log(str(path))
  # Past the restored step: dropped like the lines after it, with a warning.
  log.truncate(2)
  assert [r["step"] for r in metric_writer.read_step_log(str(path))] == [1, 2]
  assert "line 3 is not a step record" in caplog.text
  assert "past the restored step 2" in caplog.text
  # A bad line where the restored step's own record should be is kept an
  # error (it is not past it).
  path.write_text(_step_lines(1) + garbage + _step_lines(3))
  with pytest.raises(json_files.DamagedFileError, match=r"line 2"):
    log.truncate(2)
  log.truncate(0)  # a fresh start keeps nothing
  assert not path.read_text()


def test_damaged_metrics_json_is_named(tmp_path):
  path = tmp_path / "metrics.json"
  metric_writer.append_json_record(str(path), {"step": 1})
  metric_writer.append_json_record(str(path), {"step": 2})
  text = path.read_text()
  path.write_text(text[:len(text) - 9])
  with pytest.raises(json_files.DamagedFileError,
                     match=re.escape(str(path)) + r" is damaged: .* at line "
                     r"\d+ column \d+; move it aside"):
    metric_writer.append_json_record(str(path), {"step": 3})
  path.write_text('{"step": 1}')
  with pytest.raises(json_files.DamagedFileError, match="holds a JSON dict, "
                     "not a list"):
    json_files.read_json_records(str(path))


def test_damaged_damsm_files_are_named(tmp_path):
  c = dmgan_bird.get_config("tiny")
  words = ["<end>", "a", "red", "circle"]
  vocab = tmp_path / damsm_lib.VOCAB_FILE
  enc = tmp_path / damsm_lib.ENCODER_CONFIG_FILE
  text = json.dumps(text_lib.Vocabulary(words).to_json())
  vocab.write_text(text[:len(text) // 2])
  enc.write_text(json.dumps(damsm_lib.encoder_config(c)))
  with pytest.raises(json_files.DamagedFileError,
                     match=re.escape(str(vocab)) + r" is damaged: .* at line 1 "
                     r"column \d+; restore it from a copy, or run "
                     r"job=pretrain_damsm with --workdir="):
    damsm_lib.load_encoders(str(tmp_path))
  vocab.write_text(json.dumps({"words": words, "fingerprint": "0" * 16}))
  with pytest.raises(json_files.DamagedFileError,
                     match=re.escape(str(vocab)) + " is damaged: vocabulary "
                     "JSON fingerprint"):
    damsm_lib.load_encoders(str(tmp_path))
  vocab.write_text(text)
  enc.write_text('{"text_encoder": {"embedding_dim": 32,\n "word_dim": }')
  with pytest.raises(json_files.DamagedFileError,
                     match=re.escape(str(enc)) + r" is damaged: Expecting "
                     r"value at line 2 column 14"):
    damsm_lib.load_encoders(str(tmp_path))


def test_damsm_job_with_damaged_metrics_json_stops_before_training(tmp_path):
  """It died at the first evaluation, after training, before that step's
  checkpoint; now it stops at start, naming the file."""
  from configs import damsm_shapes  # pylint: disable=g-import-not-at-top
  from t2igan_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "metrics.json").write_text('[\n {\n  "step": 4,\n  "test_lo')
  with pytest.raises(json_files.DamagedFileError,
                     match=r"metrics\.json is damaged: .* at line 4"):
    train.run(damsm_shapes.get_config("tiny"), str(workdir))
  assert not os.path.exists(workdir / "losses.jsonl")
  assert not os.listdir(workdir / "checkpoints")
