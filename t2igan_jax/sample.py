"""Images for every line of a captions file (``config.job = 'sample'``).

For each line of ``config.sample.captions_file`` (one caption per line, as
``docs/example_captions/*.txt``):

1. tokenised with the project tokenizer (``input_pipeline.text.tokenize``);
   words outside the DAMSM vocabulary are reported and dropped (the reference
   ``gen_example`` drops them silently); no WORDS_NUM truncation (as
   ``gen_example``);
2. ``config.sample.num_per_caption`` samples of the EMA generator in eval mode
   (BN running statistics, SPEC-dmgan §8.5; ``generation.generate_ids``),
   z ~ N(0, I) from ``fold_in(key(sample.seed), line)`` so a line's images do
   not depend on the other lines, or with ``sample.fixed_noise`` the same z and
   CA epsilon for every line (lines then differ only by their text);
   ``sample.weights`` picks the weights
   (``gan_lib.generator_weights``;
   the log, the report and the overview say which were used);
3. written to ``output_dir`` (default ``workdir/samples_<step>`` for the EMA,
   ``workdir/samples_<step>_<weights>`` for 'raw' / 'ema_debiased')::

     caption_<LLL>.png                    grid: one row per sample, one column
                                          per stage (upsampled to the last
                                          size), the caption above it
     caption_<LLL>_attention_stage<k>.png per refinement stage k (k = 2..): the
                                          final image, then one word-attention
                                          map per used word over it (the first
                                          data.words_num words), per sample
     caption_<LLL>.txt                    the caption, used and unknown words,
                                          or the error for this line
     overview.png                         the first OVERVIEW_MAX_LINES sampled
                                          lines' grids (captions above each),
                                          in file order, OVERVIEW_COLUMNS per
                                          row, under a title naming the step,
                                          weights and seed
     interpolation_<LLL>_<MMM>.png        with ``sample.interpolate`` = k > 0,
                                          for each consecutive pair of sampled
                                          lines: k images from line LLL's
                                          caption to line MMM's, fixed noise
                                          (``generation.interpolate``)
     report.json                          step, weights, seed, what the
                                          overview shows, every line's outcome
                                          and files

   (``LLL`` = the 1-based line number, zero-padded to 3 digits).

An empty line or a line with no known word is an error *for that line*: it is
recorded (report and log) and the other lines are still sampled. The job
raises only when no line could be sampled.

Captions of one file are padded to the file's longest caption so that one
compiled generator serves every line; padded word slots are masked (for
DM-GAN they change nothing, see ``models/refiners.py``).

``gan_lib.restore_generator`` (also used by ``job = evaluate``) loads the
generator of a ``train_gan`` (or converted) checkpoint with its frozen DAMSM
encoders and vocabulary.
"""

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from PIL import Image

from input_pipeline.text import Vocabulary, tokenize
from t2igan_jax import gan_lib
from t2igan_jax import generation
from t2igan_jax import image_text
from t2igan_jax import metric_writer
from t2igan_jax.errors import ConfigError

REPORT_FILE = "report.json"
OVERVIEW_FILE = "overview.png"
OVERVIEW_COLUMNS = 4
# overview.png tiles at most this many lines' grids (the first ones): its
# canvas, held in memory, stays bounded for any captions file.
OVERVIEW_MAX_LINES = 32


# -------------------------------------------------------------- captions
@dataclasses.dataclass
class CaptionLine:
  """One line of the captions file and what became of it."""
  line: int                      # 1-based line number
  text: str
  ids: list[int]
  used_words: list[str]
  unknown_words: list[str]
  error: str = ""

  @property
  def ok(self) -> bool:
    return not self.error


def parse_captions(text: str, vocab: Vocabulary) -> list[CaptionLine]:
  """Every line of a captions file -> CaptionLine (errors recorded, not raised)."""
  out = []
  for i, line in enumerate(text.splitlines(), start=1):
    tokens = tokenize(line)
    used = [t for t in tokens if vocab.wordtoix.get(t, 0) > 0]
    unknown = [t for t in tokens if vocab.wordtoix.get(t, 0) <= 0]
    entry = CaptionLine(i, line, [vocab.wordtoix[t] for t in used], used,
                        unknown)
    if not line.strip():
      entry.error = "empty line"
    elif not tokens:
      entry.error = "no words (only punctuation or non-ASCII characters)"
    elif not used:
      entry.error = (f"none of its words is in the vocabulary "
                     f"({vocab.n_words} words): {' '.join(unknown)}")
    out.append(entry)
  return out


# ---------------------------------------------------------------- images
def _upsample(images: np.ndarray, size: int) -> np.ndarray:
  """[N, h, w, C] -> [N, size, size, C] by pixel repetition (h divides size)."""
  f = size // images.shape[1]
  return np.repeat(np.repeat(images, f, axis=1), f, axis=2)


def stage_grid(images: list[np.ndarray]) -> np.ndarray:
  """Stage outputs [N, s_k, s_k, 3] -> uint8 grid, a row per sample."""
  size = images[-1].shape[1]
  stacked = np.stack([_upsample(np.asarray(im), size) for im in images], 1)
  n, s = stacked.shape[:2]
  return metric_writer.image_grid(stacked.reshape((n * s,) + stacked.shape[2:]),
                                  ncols=s)


def attention_grid(final: np.ndarray, attention: np.ndarray,
                   num_words: int) -> np.ndarray:
  """Final images [N,S,S,3] and attention [N,T,h,w] -> uint8 grid.

  Row n: the image, then for each of the first ``num_words`` words the image
  dimmed where the word is not attended: ``x' = (x+1)(0.15 + 0.85 a) - 1``
  with ``a`` the word's map scaled to max 1 (per sample and word).
  """
  final = np.asarray(final, np.float32)
  att = np.asarray(attention, np.float32)[:, :num_words]
  att = att / np.maximum(att.max(axis=(2, 3), keepdims=True), 1e-8)
  size = final.shape[1]
  n = final.shape[0]
  maps = _upsample(att.reshape((n * num_words,) + att.shape[2:] + (1,)), size)
  maps = maps.reshape(n, num_words, size, size, 1)
  over = (final[:, None] + 1.0) * (0.15 + 0.85 * maps) - 1.0
  tiles = np.concatenate([final[:, None], over], axis=1)
  return metric_writer.image_grid(
      tiles.reshape((n * (num_words + 1),) + tiles.shape[2:]),
      ncols=num_words + 1)


def overview(grids: list[Image.Image], columns: int = OVERVIEW_COLUMNS,
             gap: int = 8, title: list[str] = ()) -> Image.Image:
  """The captions' grids tiled row-major, ``columns`` per row, each cell
  top-left aligned in a cell of the largest grid's size, ``gap`` px apart;
  ``title`` lines (if any) above them."""
  w = max(g.size[0] for g in grids) + gap
  h = max(g.size[1] for g in grids) + gap
  rows = -(-len(grids) // columns)
  canvas = Image.new("RGB", (min(len(grids), columns) * w - gap, rows * h - gap),
                     (255, 255, 255))
  for i, g in enumerate(grids):
    canvas.paste(g, ((i % columns) * w, (i // columns) * h))
  if title:
    canvas = image_text.with_header(np.asarray(canvas), list(title),
                                    min_width=0)
  return canvas


def _write_png(image: Image.Image, path: str) -> None:
  tmp = path + ".tmp.png"
  image.save(tmp)
  os.replace(tmp, path)


# ------------------------------------------------------------------ job
def _batch(entry: CaptionLine, n: int, t: int) -> dict[str, np.ndarray]:
  caption = np.zeros((t,), np.int32)
  caption[:len(entry.ids)] = entry.ids
  return {"captions": np.tile(caption, (n, 1)),
          "caption_lens": np.full((n,), len(entry.ids), np.int32)}


def _caption_report_text(entry: CaptionLine) -> str:
  lines = [f"line {entry.line}: {entry.text}"]
  if entry.ok:
    lines.append(f"used words ({len(entry.used_words)}): "
                 f"{' '.join(entry.used_words)}")
  lines.append("unknown words (dropped): "
               f"{' '.join(entry.unknown_words) or '(none)'}")
  if not entry.ok:
    lines.append(f"error: {entry.error}")
  return "\n".join(lines) + "\n"


def output_dir(config: ml_collections.ConfigDict, workdir: str,
               step: int) -> str:
  """``sample.output_dir``, or ``workdir/samples_<step>`` for the EMA
  (``sample.weights='ema'``) and ``workdir/samples_<step>_<weights>`` for
  the others, so that runs with other weights never overwrite each other."""
  if config.sample.output_dir:
    return config.sample.output_dir
  weights = config.sample.weights
  suffix = "" if weights == "ema" else f"_{weights}"
  return os.path.join(workdir, f"samples_{step}{suffix}")


def _attention_words(entry: CaptionLine, words_num: int) -> int:
  """Attention tiles drawn for a line: its words, at most ``words_num``."""
  n = min(len(entry.ids), words_num)
  if n < len(entry.ids):
    logging.warning("line %d has %d known words; attention maps are drawn for "
                    "the first %d (config.data.words_num, the longest caption "
                    "the generator was trained on)", entry.line,
                    len(entry.ids), n)
  return n


def _line_images(gen, batch, line: int, s) -> tuple[list[Any], list[Any]]:
  """(images, attention) of one caption line's ``num_per_caption`` samples.

  Default: z ~ N(0, I) (truncated with ``sample.truncation`` > 0,
  ``gan_lib.draw_z``) from ``fold_in(key(sample.seed), line)`` and the CA
  epsilon from the rng stream ``fold_in(key(sample.seed + 1), line)``, so a
  line's images do not depend on the other lines. ``sample.fixed_noise``: the
  same z and epsilon for every line (``generation.draw_noise(key(sample.seed),
  num_per_caption)``), so lines differ only by their text.
  """
  n = batch["captions"].shape[0]
  if s.fixed_noise:
    z, eps = generation.draw_noise(jax.random.key(s.seed), n, gen)
    return generation.generate_ids(gen, batch["captions"], batch["caption_lens"],
                                   z, eps=eps)
  z = gan_lib.draw_z(jax.random.fold_in(jax.random.key(s.seed), line), n,
                     generation.model_config(gen).z_dim, s.truncation)
  return generation.generate_ids(
      gen, batch["captions"], batch["caption_lens"], z,
      noise_key=jax.random.fold_in(jax.random.key(s.seed + 1), line))


def _write_line(gen, entry: CaptionLine, batch, s, out_dir: str,
                words_num: int) -> tuple[Image.Image, int, list[str]]:
  """Samples one caption line and writes its grid and attention PNGs.

  Returns (the captioned grid, the attention words drawn, the files written).
  """
  stem = f"caption_{entry.line:03d}"
  images, attention = _line_images(gen, batch, entry.line, s)
  images = [np.asarray(im) for im in images]
  grid = stage_grid(images)
  header = image_text.wrap(entry.text, max(grid.shape[1], 256))
  captioned = image_text.with_header(grid, header)
  _write_png(captioned, os.path.join(out_dir, f"{stem}.png"))
  files = [f"{stem}.png"]
  num_words = _attention_words(entry, words_num)
  for k, att in enumerate(attention):
    grid = attention_grid(images[-1], np.asarray(att), num_words)
    tile = images[-1].shape[1] + 2
    labels = [(2 + (j + 1) * tile, w[:max(tile // 6, 1)])
              for j, w in enumerate(entry.used_words[:num_words])]
    name = f"{stem}_attention_stage{k + 2}.png"
    _write_png(image_text.with_header(grid, header, labels),
               os.path.join(out_dir, name))
    files.append(name)
  logging.info("line %d: %d samples -> %s", entry.line, len(images[-1]),
               os.path.join(out_dir, f"{stem}.png"))
  return captioned, num_words, files


def _write_interpolations(gen, entries: list[CaptionLine], s,
                          out_dir: str) -> list[dict[str, Any]]:
  """``sample.interpolate`` = k > 0: for each consecutive pair of sampled
  lines (a, b), ``interpolation_<aaa>_<bbb>.png``: one row of k final-stage
  images from a's caption to b's (``generation.interpolate``: sentence and
  word embeddings interpolated), with the noise of the first
  ``sample.fixed_noise`` sample. Returns the report entries."""
  steps = int(s.interpolate)
  if not steps:
    return []
  if steps < 2:
    raise ConfigError(f"config.sample.interpolate={steps}: expected 0 (off) or "
                      "the number of images per row, >= 2")
  z, eps = generation.draw_noise(jax.random.key(s.seed), s.num_per_caption, gen)
  out = []
  for a, b in zip(entries, entries[1:]):
    row = generation.interpolate(gen, a.ids, b.ids, steps, z=z[:1], eps=eps[:1])
    grid = metric_writer.image_grid(np.asarray(row.images[-1]), ncols=steps)
    header = image_text.wrap(f"line {a.line}: {a.text}  ->  line {b.line}: "
                             f"{b.text}", max(grid.shape[1], 256))
    name = f"interpolation_{a.line:03d}_{b.line:03d}.png"
    _write_png(image_text.with_header(grid, header), os.path.join(out_dir, name))
    out.append({"from_line": a.line, "to_line": b.line, "steps": steps,
                "file": name})
  logging.info("%d interpolation rows of %d images -> %s", len(out), steps,
               out_dir)
  return out


def sample(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs ``job = sample``; returns the report (also written as report.json)."""
  s = config.sample
  if not s.captions_file:
    raise ConfigError("config.sample.captions_file is empty: name a text file "
                      "with one caption per line (e.g. "
                      "docs/example_captions/birds.txt)")
  if not os.path.isfile(s.captions_file):
    raise FileNotFoundError(
        f"config.sample.captions_file={s.captions_file!r}: no such file")
  if s.num_per_caption < 1:
    raise ConfigError(f"config.sample.num_per_caption={s.num_per_caption} must "
                      "be >= 1")
  gen = gan_lib.restore_generator(config, workdir, s.checkpoint_step)
  out_dir = output_dir(config, workdir, gen.step)
  os.makedirs(out_dir, exist_ok=True)
  with open(s.captions_file, encoding="utf-8", errors="replace") as f:
    entries = parse_captions(f.read(), gen.vocab)
  good = [e for e in entries if e.ok]
  t = max([len(e.ids) for e in good], default=1)
  n = int(s.num_per_caption)
  report_lines, grids, overview_lines = [], [], []
  for entry in entries:
    stem = f"caption_{entry.line:03d}"
    files = [f"{stem}.txt"]
    for word in entry.unknown_words:
      logging.warning("line %d: unknown word %r dropped", entry.line, word)
    if entry.ok:
      captioned, num_words, written = _write_line(
          gen, entry, _batch(entry, n, t), s, out_dir, config.data.words_num)
      files += written
      if len(grids) < OVERVIEW_MAX_LINES:       # bounded memory
        grids.append(captioned)
        overview_lines.append(entry.line)
    else:
      num_words = 0
      logging.error("line %d: %s; skipped", entry.line, entry.error)
    with open(os.path.join(out_dir, f"{stem}.txt"), "w") as f:
      f.write(_caption_report_text(entry))
    report_lines.append({
        "line": entry.line, "text": entry.text, "ok": entry.ok,
        "error": entry.error, "used_words": entry.used_words,
        "unknown_words": entry.unknown_words, "attention_words": num_words,
        "files": files})
  interpolations = _write_interpolations(gen, good, s, out_dir)
  shown = _overview_note(len(overview_lines), len(good))
  if grids:
    title = [f"checkpoint step {gen.step}, {gen.weights_description}, "
             f"sample.seed {s.seed}", shown]
    _write_png(overview(grids, title=title),
               os.path.join(out_dir, OVERVIEW_FILE))
    logging.info("%s -> %s", shown, os.path.join(out_dir, OVERVIEW_FILE))
  report = {"captions_file": os.path.abspath(s.captions_file),
            "checkpoint_step": gen.step, "step": gen.step, "seed": s.seed,
            "weights": gen.weights, "weights_used": gen.weights_used,
            "weights_description": gen.weights_description,
            "num_per_caption": n, "output_dir": os.path.abspath(out_dir),
            "fixed_noise": bool(s.fixed_noise), "interpolations": interpolations,
            "num_lines": len(entries), "num_sampled": len(good),
            "num_errors": len(entries) - len(good),
            "overview": {"file": OVERVIEW_FILE if grids else None,
                         "lines": overview_lines, "description": shown},
            "lines": report_lines}
  with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=1)
  logging.info("sampled %d of %d lines of %s into %s", len(good), len(entries),
               s.captions_file, out_dir)
  if not good:
    raise ValueError(
        f"no line of {s.captions_file} could be sampled ({len(entries)} lines; "
        f"see {os.path.join(out_dir, REPORT_FILE)})")
  return report


def _overview_note(shown: int, sampled: int) -> str:
  if shown == sampled:
    return f"overview: all {sampled} sampled lines"
  return (f"overview: the first {shown} of {sampled} sampled lines "
          f"(OVERVIEW_MAX_LINES; every line has its own caption_<line>.png)")
