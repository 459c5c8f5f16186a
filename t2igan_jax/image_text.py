"""Text on image grids (PIL's default font): captions under samples, headers.

Used by ``job = sample`` (caption headers, the overview) and by the GAN's
training grids (TensorBoard and ``workdir/samples/``), so that a grid shows
the caption each image was made from.
"""

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LINE_HEIGHT = 14      # px per text line of the default font
CHAR_WIDTH = 6        # px per character of the default font (approx.)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def font():
  return ImageFont.load_default()


def wrap(text: str, width_px: int, min_chars: int = 16) -> list[str]:
  """``text`` broken into lines of about ``width_px`` of the default font."""
  return textwrap.wrap(text, max(width_px // CHAR_WIDTH, min_chars)) or [""]


def with_header(grid: np.ndarray, lines: list[str],
                labels: list[tuple[int, str]] = (),
                min_width: int = 256) -> Image.Image:
  """Puts text lines (and per-column labels at x offsets) above ``grid``."""
  label_rows = 1 if labels else 0
  top = LINE_HEIGHT * (len(lines) + label_rows) + 4
  h, w = grid.shape[:2]
  canvas = Image.new("RGB", (max(w, min_width), h + top), WHITE)
  canvas.paste(Image.fromarray(grid), (0, top))
  draw = ImageDraw.Draw(canvas)
  f = font()
  for i, text in enumerate(lines):
    draw.text((2, 2 + i * LINE_HEIGHT), text, fill=BLACK, font=f)
  for x, text in labels:
    draw.text((x, 2 + len(lines) * LINE_HEIGHT), text, fill=BLACK, font=f)
  return canvas


def captioned_grid(grid: np.ndarray, tile: int, captions: list[str],
                   ncols: int, min_cell_width: int = 128,
                   max_lines: int = 3) -> np.ndarray:
  """A ``metric_writer.image_grid`` with each image's caption under it.

  Args:
    grid: uint8 [rows·(tile+2)+2, ncols·(tile+2)+2, 3], the images in
      row-major order with 2 px borders (``metric_writer.image_grid``).
    tile: the image size in px.
    captions: one per image, in the grid's order (extra images unlabelled).
    ncols: the grid's columns.
    min_cell_width: cells are at least this wide so the text stays legible.
    max_lines: caption lines kept per image (the last one ends in '...' when
      the caption is longer).

  Returns:
    uint8 [rows·(tile+2+text)+2, ncols·cell+2, 3]: every image where the grid
    had it, above ``max_lines`` lines of its caption, on white.
  """
  step = tile + 2
  rows = (grid.shape[0] - 2) // step
  cell = max(step, min_cell_width)
  text_h = max_lines * LINE_HEIGHT + 2
  canvas = Image.new("RGB", (ncols * cell + 2, rows * (step + text_h) + 2),
                     WHITE)
  draw = ImageDraw.Draw(canvas)
  f = font()
  for i in range(rows * ncols):
    r, c = divmod(i, ncols)
    block = grid[r * step:r * step + step + 2, c * step:c * step + step + 2]
    x, y = c * cell, r * (step + text_h)
    canvas.paste(Image.fromarray(np.ascontiguousarray(block)), (x, y))
    if i < len(captions):
      lines = wrap(f"{i}: {captions[i]}", cell - 4, min_chars=8)
      if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:-3] + "..."
      for k, text in enumerate(lines):
        draw.text((x + 2, y + step + 2 + k * LINE_HEIGHT), text, fill=BLACK,
                  font=f)
  return np.asarray(canvas)
