"""t2igan_jax/generation.py (generate / interpolate with given noise) and the
job=sample options sample.fixed_noise and sample.interpolate.

The workdir is gan_fixtures.trained_workdir: the tiny DM-GAN trained once per
session (shared with test_sample.py and test_evaluate.py).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from t2igan_jax import config_validation
from t2igan_jax import gan_lib
from t2igan_jax import generation
from t2igan_jax import metric_writer
from t2igan_jax import sample as sample_lib
from t2igan_jax import train
from t2igan_jax.errors import ConfigError

from gan_fixtures import job_config, trained_workdir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RED = "a red circle in the middle"      # 6 known words each: the sample job
BLUE = "a blue square in the middle"    # pads them to the same length
SHORT = "a green star"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def restored(workdir):
  return gan_lib.restore_generator(job_config("sample"), workdir)


def _last_grid(png_path, grid_shape):
  """The image grid at the bottom-left of a captioned PNG (below the header)."""
  image = np.asarray(Image.open(png_path))
  h, w = grid_shape[:2]
  return image[image.shape[0] - h:, :w]


@pytest.fixture(scope="module")
def fixed_run(workdir, tmp_path_factory):
  """job=sample with sample.fixed_noise and sample.interpolate=4 on RED, BLUE, RED."""
  out = tmp_path_factory.mktemp("fixed")
  captions = out / "captions.txt"
  captions.write_text(f"{RED}\n{BLUE}\n{RED}\n")
  c = job_config("sample")
  c.sample.captions_file = str(captions)
  c.sample.output_dir = str(out / "out")
  c.sample.num_per_caption = 2
  c.sample.seed = 5
  c.sample.fixed_noise = True
  c.sample.interpolate = 4
  return train.run(c, workdir), out / "out", c


def test_generate_equals_the_sample_job_for_the_same_noise(restored, fixed_run):
  report, out, c = fixed_run
  assert report["fixed_noise"] is True
  z, eps = generation.draw_noise(jax.random.key(c.sample.seed), 2, restored)
  got = generation.generate(restored, [RED, RED], z=z, eps=eps)
  np.testing.assert_array_equal(got.z, z)
  np.testing.assert_array_equal(got.eps, eps)
  grid = sample_lib.stage_grid([np.asarray(im) for im in got.images])
  np.testing.assert_array_equal(_last_grid(out / "caption_001.png", grid.shape),
                                grid)
  blue = generation.generate(restored, [BLUE, BLUE], z=z, eps=eps)
  grid = sample_lib.stage_grid([np.asarray(im) for im in blue.images])
  np.testing.assert_array_equal(_last_grid(out / "caption_002.png", grid.shape),
                                grid)


def test_fixed_noise_lines_differ_only_by_text(fixed_run):
  _, out, _ = fixed_run
  red1, blue, red3 = (np.asarray(Image.open(out / f"caption_{k:03d}.png"))
                      for k in (1, 2, 3))
  np.testing.assert_array_equal(red1, red3)      # same caption, same noise
  assert red1.shape == blue.shape and (red1 != blue).any()


def test_per_line_noise_by_default(workdir, tmp_path):
  captions = tmp_path / "captions.txt"
  captions.write_text(f"{RED}\n{RED}\n")
  c = job_config("sample")
  c.sample.captions_file = str(captions)
  c.sample.output_dir = str(tmp_path / "out")
  c.sample.num_per_caption = 2
  report = train.run(c, workdir)
  assert report["fixed_noise"] is False and report["interpolations"] == []
  a, b = (np.asarray(Image.open(tmp_path / "out" / f"caption_{k:03d}.png"))
          for k in (1, 2))
  assert (a != b).any()
  assert not any(f.startswith("interpolation_")
                 for f in os.listdir(tmp_path / "out"))


def test_generate_fixed_noise_in_one_batch(restored):
  z, eps = generation.draw_noise(jax.random.key(0), 1, restored)
  out = generation.generate(restored, [RED, BLUE, RED], z=jnp.tile(z, (3, 1)),
                            eps=jnp.tile(eps, (3, 1)))
  last = np.asarray(out.images[-1])
  np.testing.assert_array_equal(last[0], last[2])
  assert not np.allclose(last[0], last[1])
  # Token ids give the same images as the strings.
  ids = [generation.caption_ids(t, restored.vocab) for t in (RED, BLUE, RED)]
  again = generation.generate(restored, ids, z=out.z, eps=out.eps)
  np.testing.assert_array_equal(np.asarray(again.images[-1]), last)


def test_key_draws_what_is_missing(restored):
  a = generation.generate(restored, [RED], key=jax.random.key(3))
  b = generation.generate(restored, [RED], key=jax.random.key(3))
  np.testing.assert_array_equal(a.images[-1], b.images[-1])
  z, eps = generation.draw_noise(jax.random.key(3), 1, restored)
  np.testing.assert_array_equal(a.z, z)
  np.testing.assert_array_equal(a.eps, eps)
  # Replaying with the returned noise needs no key.
  c = generation.generate(restored, [RED], z=a.z, eps=a.eps)
  np.testing.assert_array_equal(a.images[-1], c.images[-1])
  # Another eps with the same z: another image (the CA samples at eval).
  d = generation.generate(restored, [RED], z=a.z, key=jax.random.key(4))
  assert not np.allclose(a.images[-1], d.images[-1])


def test_eps_none_reproduces_the_sample_step(restored):
  """eps=None draws the CA epsilon from the 'noise' stream: the numbers of the
  pre-API sampling step (gan_lib.sample_step), bit for bit."""
  captions, lengths = generation.token_batch([RED, SHORT], restored.vocab)
  z = jax.random.normal(jax.random.key(1), (2, restored.models.config.model.z_dim))
  key = jax.random.key(2)
  images, attention = generation.generate_ids(restored, captions, lengths, z,
                                              noise_key=key)
  step = jax.jit(lambda *a: gan_lib.sample_step(*a, models=restored.models))
  want_images, want_attention = step(
      restored.g_params, restored.g_stats,
      {"captions": captions, "caption_lens": lengths}, restored.enc, z, key)
  for got, want in zip(list(images) + list(attention),
                       list(want_images) + list(want_attention)):
    np.testing.assert_array_equal(got, want)


def test_interpolation_endpoints_are_the_captions(restored):
  row = generation.interpolate(restored, SHORT, BLUE, 4, key=jax.random.key(7))
  assert row.images[-1].shape[0] == 4 and row.z.shape[0] == 1
  ends = [generation.generate(restored, [c], z=row.z, eps=row.eps).images
          for c in (SHORT, BLUE)]
  for k, stage in enumerate(row.images):
    np.testing.assert_allclose(stage[:1], ends[0][k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stage[3:], ends[1][k], rtol=1e-5, atol=1e-5)
  # The two ends are told apart at this tolerance; the steps are new images.
  assert not np.allclose(ends[0][-1], ends[1][-1], rtol=1e-5, atol=1e-5)
  last = np.asarray(row.images[-1], np.float64)
  assert min(np.abs(last[i] - last[i + 1]).mean() for i in range(3)) > 1e-7


def test_equal_length_captions_interpolate_continuously(restored):
  """Same length, same mask all the way: the steps lie on the way from one
  caption's image to the other's (the tiny 4-step G's images are small:
  compare mean distances)."""
  row = generation.interpolate(restored, RED, BLUE, 5, key=jax.random.key(8))
  last = np.asarray(row.images[-1], np.float64)
  dist = lambda i, j: np.abs(last[i] - last[j]).mean()
  assert min(dist(i, i + 1) for i in range(4)) > 1e-7
  assert dist(0, 1) < dist(0, 2) < dist(0, 3) < dist(0, 4)
  assert dist(4, 3) < dist(4, 2) < dist(4, 1) < dist(4, 0)


def test_sample_job_writes_interpolation_rows(restored, fixed_run):
  report, out, c = fixed_run
  assert [(r["from_line"], r["to_line"]) for r in report["interpolations"]] == [
      (1, 2), (2, 3)]
  with open(out / "report.json") as f:
    assert json.load(f)["interpolations"] == report["interpolations"]
  z, eps = generation.draw_noise(jax.random.key(c.sample.seed), 2, restored)
  row = generation.interpolate(restored, RED, BLUE, 4, z=z[:1], eps=eps[:1])
  grid = metric_writer.image_grid(np.asarray(row.images[-1]), ncols=4)
  np.testing.assert_array_equal(
      _last_grid(out / report["interpolations"][0]["file"], grid.shape), grid)


def test_bad_inputs_are_named(restored):
  with pytest.raises(ValueError, match="pass z and eps, or a key"):
    generation.generate(restored, [RED])
  with pytest.raises(ValueError, match="'zorblax flibber': none of its words"):
    generation.generate(restored, ["zorblax flibber"], key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"z \(1, 3\)"):
    generation.generate(restored, [RED], z=jnp.zeros((1, 3)),
                        key=jax.random.key(0))
  with pytest.raises(TypeError, match="list of captions"):
    generation.generate(restored, RED, key=jax.random.key(0))
  with pytest.raises(ValueError, match="steps >= 2"):
    generation.interpolate(restored, RED, BLUE, 1, key=jax.random.key(0))
  c = job_config("sample")
  c.sample.interpolate = 1
  with pytest.raises(ConfigError, match="sample.interpolate"):
    config_validation.validate(c)
