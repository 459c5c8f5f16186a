"""The embedded 'shapes' dataset: procedural captioned images, no download.

Each image shows one main object (plus, sometimes, a second one) on a plain
coloured background. An object has a kind (circle, square, triangle, diamond,
star, ring, cross), a colour, a size (small / large), a position (left, right,
top, bottom, center) and a texture (plain, striped, dotted; main object only).
Captions come from a small grammar with a dozen sentence templates, synonyms
and optional clauses (texture, second object, background) in varying order.
Every caption names the main object's colour and kind, and the class id is
``kind_index * len(OBJECT_COLOURS) + colour_index``.

Two scene families (``config.data.shapes_scenes``): ``'full'`` (default, as
above) and ``'single'``: one large (radius 0.26 of the canvas), plain object
in the centre (jittered) on a plain background, so only kind, colour and
background vary. The same caption
grammar describes both (a 'single' caption may still say "large" or "in the
center"); the classes are the same 56. 'single' is the quick demo: a GAN
trained for 30 CPU minutes forms its shapes (docs/results.md), where on 'full' it only
gets the colours.

Determinism: index ``i`` of a split uses ``np.random.default_rng([seed,
split_id, i])`` (split_id 0 = train, 1 = test) for its scene and then its
captions, so an item never depends on access order or on the split sizes.
Scenes and captions are cheap (no pixels); images are rendered with numpy on
``__getitem__``: shapes are signed-distance functions with a one-pixel soft
edge (anti-aliased at any size), textures are soft stripes or dots.
"""

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np

from input_pipeline import source_items
from input_pipeline import text as text_lib
from input_pipeline import transforms

KINDS = ("circle", "square", "triangle", "diamond", "star", "ring", "cross")
# RGB of each colour word. Object colours are far apart (>= ~80 in RGB) so a
# 64 px model can tell them apart; backgrounds may also be gray.
COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 50),
    "green": (40, 165, 70),
    "blue": (40, 90, 225),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
OBJECT_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple",
                  "white", "black")
BACKGROUND_COLOURS = OBJECT_COLOURS + ("gray",)
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
TEXTURES = ("plain", "striped", "dotted")
SPLITS = {"train": 0, "test": 1}
SCENE_FAMILIES = ("full", "single")

# Object centres (fractions of the canvas) and radii. The canvas is rendered
# at 76/64 of the training size and randomly cropped, so objects stay away
# from the borders.
_OFFSET = 0.19
_CENTRES = {"left": (0.5 - _OFFSET, 0.5), "right": (0.5 + _OFFSET, 0.5),
            "top": (0.5, 0.5 - _OFFSET), "bottom": (0.5, 0.5 + _OFFSET),
            "center": (0.5, 0.5)}
_RADII_ONE = {"small": 0.11, "large": 0.20}   # single-object scenes
_RADII_TWO = {"small": 0.10, "large": 0.155}  # two objects must not touch
_RADIUS_SINGLE = 0.26  # 'single' scenes: one object, larger than 'large'
_JITTER = 0.02
_SECOND_OBJECT_P = 0.4
_TEXTURE_P = (0.5, 0.25, 0.25)  # plain, striped, dotted


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One object: words for the captions, geometry (canvas fractions) to draw."""
  kind: str
  colour: str
  size: str
  position: str
  texture: str
  cx: float
  cy: float
  radius: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """``objects[0]`` is the main object (the class); drawn on ``background``."""
  background: str
  objects: tuple[ShapeObject, ...]

  @property
  def main(self) -> ShapeObject:
    return self.objects[0]

  @property
  def class_id(self) -> int:
    return class_id(self.main.kind, self.main.colour)


def class_id(kind: str, colour: str) -> int:
  """``kind_index * len(OBJECT_COLOURS) + colour_index``."""
  return KINDS.index(kind) * len(OBJECT_COLOURS) + OBJECT_COLOURS.index(colour)


def class_name(cid: int) -> str:
  """Class id -> e.g. 'red circle'."""
  kind, colour = divmod(int(cid), len(OBJECT_COLOURS))
  return f"{OBJECT_COLOURS[colour]} {KINDS[kind]}"


def _choice(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
  return seq[int(rng.integers(len(seq)))]


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws one scene (class uniform over kinds x colours)."""
  kind = _choice(rng, KINDS)
  colour = _choice(rng, OBJECT_COLOURS)
  size = _choice(rng, SIZES)
  texture = TEXTURES[int(rng.choice(len(TEXTURES), p=_TEXTURE_P))]
  two = bool(rng.random() < _SECOND_OBJECT_P)
  if two:
    pair = ("left", "right") if rng.random() < 0.5 else ("top", "bottom")
    if rng.random() < 0.5:
      pair = pair[::-1]
    radii = _RADII_TWO
    specs = [(kind, colour, size, pair[0], texture)]
    colour2 = _choice(rng, [c for c in OBJECT_COLOURS if c != colour])
    specs.append((_choice(rng, KINDS), colour2, _choice(rng, SIZES), pair[1],
                  "plain"))
  else:
    radii = _RADII_ONE
    specs = [(kind, colour, size, _choice(rng, POSITIONS), texture)]
  objects = []
  for k, c, s, p, t in specs:
    cx, cy = _CENTRES[p]
    cx += float(rng.uniform(-_JITTER, _JITTER))
    cy += float(rng.uniform(-_JITTER, _JITTER))
    objects.append(ShapeObject(k, c, s, p, t, cx, cy, radii[s]))
  return Scene(_background(rng, objects), tuple(objects))


def _background(rng: np.random.Generator,
                objects: Sequence[ShapeObject]) -> str:
  used = {o.colour for o in objects}
  return _choice(rng, [c for c in BACKGROUND_COLOURS if c not in used])


def sample_single_scene(rng: np.random.Generator) -> Scene:
  """Draws one 'single' scene: a large plain object in the (jittered) centre."""
  kind = _choice(rng, KINDS)
  colour = _choice(rng, OBJECT_COLOURS)
  cx, cy = (c + float(rng.uniform(-_JITTER, _JITTER)) for c in
            _CENTRES["center"])
  obj = ShapeObject(kind, colour, "large", "center", "plain", cx, cy,
                    _RADIUS_SINGLE)
  return Scene(_background(rng, [obj]), (obj,))


_SAMPLERS = {"full": sample_scene, "single": sample_single_scene}


def check_scene_family(scenes: str) -> str:
  if scenes not in SCENE_FAMILIES:
    raise ValueError(f"config.data.shapes_scenes must be one of "
                     f"{SCENE_FAMILIES}, got {scenes!r}")
  return scenes


# ------------------------------------------------------------------ captions

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_TEXTURE_ADJ = {"striped": ("striped",), "dotted": ("dotted", "spotted")}
_TEXTURE_WITH = {"striped": ("with stripes", "with diagonal stripes"),
                 "dotted": ("with dots", "covered in dots", "with small dots")}
_POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
_BACKGROUND_PHRASES = ("on a {} background", "against a {} background",
                       "over a {} background", "in front of a {} background",
                       "with a {} background", "and the background is {}")
_SECOND_PHRASES = ("next to a {np}", "beside a {np}", "and a {np} {pos}",
                   "with a {np} {pos}", "and also a {np} {pos}")
_SHOWS = ("this picture shows", "this image shows", "the image shows",
          "the picture shows")
_IMAGE_OF = ("an image of", "a picture of", "a drawing of")
_WE_SEE = ("we can see", "you can see", "we see")
_VERBS = ("sits", "is", "appears", "is placed", "is drawn")
_GENERIC = ("object", "figure", "thing")
_COLOURED = ("colored", "painted", "in")


class _CaptionMaker:
  """Builds sentences about one scene; all choices come from ``rng``."""

  def __init__(self, scene: Scene, rng: np.random.Generator):
    self.scene = scene
    self.rng = rng
    self.m = scene.main
    self.second = scene.objects[1] if len(scene.objects) > 1 else None

  def pick(self, seq):
    return _choice(self.rng, seq)

  def coin(self, p: float) -> bool:
    return bool(self.rng.random() < p)

  def new_caption(self) -> None:
    """Draws which optional facts this sentence states."""
    self.with_size = self.coin(0.5)
    self.texture_mode = None  # 'adj' | 'with' | None
    if self.m.texture != "plain":
      self.texture_mode = _choice(self.rng, ("adj", "adj", "with", "with", None))

  def size_words(self, obj: ShapeObject) -> str:
    return self.pick(_SIZE_WORDS[obj.size])

  def adjectives(self) -> list[str]:
    """[size] [texture] for the main object, as drawn by ``new_caption``."""
    words = []
    if self.with_size:
      words.append(self.size_words(self.m))
    if self.texture_mode == "adj":
      words.append(self.pick(_TEXTURE_ADJ[self.m.texture]))
    return words

  def np(self) -> list[str]:
    """Main noun phrase without article: '[size] [texture] colour kind'."""
    return self.adjectives() + [self.m.colour, self.m.kind]

  def pos(self, obj: ShapeObject | None = None) -> str:
    return self.pick(_POSITION_PHRASES[(obj or self.m).position])

  def maybe_pos(self, p: float = 0.5) -> list[str]:
    return [self.pos()] if self.coin(p) else []

  def extras(self) -> list[str]:
    """Optional trailing clauses: texture, second object, background."""
    first = []
    if self.texture_mode == "with":
      first.append(self.pick(_TEXTURE_WITH[self.m.texture]))
    rest = []
    if self.second is not None and self.coin(0.6):
      o = self.second
      np2 = ([self.size_words(o)] if self.coin(0.3) else []) + [o.colour, o.kind]
      rest.append(self.pick(_SECOND_PHRASES).format(
          np=" ".join(np2), pos=self.pos(o)))
    if self.coin(0.45):
      rest.append(self.pick(_BACKGROUND_PHRASES).format(self.scene.background))
    if len(rest) == 2 and self.coin(0.5):
      rest = rest[::-1]
    rest = rest[:2 - len(first)]  # at most two clauses: captions stay short
    out = []
    for clause in first + rest:
      out.append(("," if self.coin(0.3) else "") + " " + clause)
    return ["".join(out).strip()] if out else []

  # Templates: each returns the words of one sentence about the scene.
  def t_np(self):
    return ["a", *self.np(), *self.maybe_pos(), *self.extras()]

  def t_there_is(self):
    return ["there is a", *self.np(), *self.maybe_pos(), *self.extras()]

  def t_that_is(self):
    return ["a", *self.adjectives(), self.m.kind, "that is", self.m.colour,
            *self.maybe_pos(), *self.extras()]

  def t_shows(self):
    return [self.pick(_SHOWS), "a", *self.np(), *self.maybe_pos(),
            *self.extras()]

  def t_fronted_position(self):
    verb = self.pick(("there is", "is", "we see"))
    head = self.pos() + ("," if verb != "is" and self.coin(0.4) else "")
    return [head, verb, "a", *self.np(), *self.extras()]

  def t_verb(self):
    return ["a", *self.np(), self.pick(_VERBS), self.pos(), *self.extras()]

  def t_the_kind_is(self):
    words = ["the", self.m.kind, *self.maybe_pos(0.5), "is", self.m.colour]
    if self.with_size:
      words += ["and", self.size_words(self.m)]
    return words + self.extras()

  def t_image_of(self):
    return [self.pick(_IMAGE_OF), "a", *self.np(), *self.maybe_pos(),
            *self.extras()]

  def t_terse(self):
    return [*self.np(), *self.maybe_pos(), *self.extras()]

  def t_shaped(self):  # long already: no trailing clauses
    return ["a", *self.adjectives(), self.m.colour, self.pick(_GENERIC),
            self.pick(("in the shape of a", "shaped like a")), self.m.kind,
            *self.maybe_pos()]

  def t_coloured(self):
    return ["a", *self.adjectives(), self.m.kind, self.pick(_COLOURED),
            self.m.colour, *self.maybe_pos(), *self.extras()]

  def t_we_see(self):
    return [self.pick(_WE_SEE), "a", *self.np(), *self.maybe_pos(),
            *self.extras()]

  TEMPLATES = ("t_np", "t_there_is", "t_that_is", "t_shows",
               "t_fronted_position", "t_verb", "t_the_kind_is", "t_image_of",
               "t_terse", "t_shaped", "t_coloured", "t_we_see")

  def sentence(self, template: int) -> str:
    self.new_caption()
    words = " ".join(getattr(self, self.TEMPLATES[template])()).split()
    for i in range(len(words) - 1):  # a -> an before a vowel
      if words[i] == "a" and words[i + 1][0] in "aeiou":
        words[i] = "an"
    if self.coin(0.5):
      words[-1] += "."
    return " ".join(words).replace(" ,", ",")


NUM_TEMPLATES = len(_CaptionMaker.TEMPLATES)


def make_captions(scene: Scene, rng: np.random.Generator, n: int,
                  return_templates: bool = False):
  """``n`` distinct sentences, templates drawn without replacement first."""
  maker = _CaptionMaker(scene, rng)
  order = []
  while len(order) < n:
    order.extend(int(t) for t in rng.permutation(NUM_TEMPLATES))
  captions, templates = [], []
  for t in order[:n]:
    for _ in range(10):  # avoid exact duplicates within an image
      sentence = maker.sentence(t)
      if sentence not in captions:
        break
    captions.append(sentence)
    templates.append(t)
  return (captions, templates) if return_templates else captions


# ----------------------------------------------------------------- rendering

def _accent(colour: str) -> np.ndarray:
  """Stripe/dot colour: a pale tint of the object colour (gray on white).

  Tints keep the hue (a darkened yellow would read as orange), so a textured
  object's average colour stays nearest to its named colour.
  """
  rgb = np.asarray(COLOURS[colour], np.float32)
  if colour == "white":
    return 0.7 * rgb
  return rgb + 0.45 * (255.0 - rgb)


def _box_sd(dx, dy, hx, hy):
  qx, qy = np.abs(dx) - hx, np.abs(dy) - hy
  outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
  return outside + np.minimum(np.maximum(qx, qy), 0)


def _convex_polygon_sd(dx, dy, vertices: np.ndarray):
  """Max of the edge half-plane distances (exact near edges; fine for AA)."""
  centroid = vertices.mean(axis=0)
  sd = None
  for a, b in zip(vertices, np.roll(vertices, -1, axis=0)):
    n = np.array([b[1] - a[1], a[0] - b[0]], np.float32)
    n /= np.linalg.norm(n)
    if n @ (centroid - a) > 0:
      n = -n
    d = (dx - a[0]) * n[0] + (dy - a[1]) * n[1]
    sd = d if sd is None else np.maximum(sd, d)
  return sd


def _polar(radius: float, degrees: np.ndarray) -> np.ndarray:
  t = np.deg2rad(degrees)
  return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=-1)


def _signed_distance(kind: str, dx, dy, r: float):
  """Signed distance (pixels; < 0 inside) of a shape of 'radius' r at 0."""
  if kind == "circle":
    return np.hypot(dx, dy) - r
  if kind == "ring":
    return np.abs(np.hypot(dx, dy) - 0.72 * r) - 0.28 * r
  if kind == "square":
    return _box_sd(dx, dy, 0.84 * r, 0.84 * r)
  if kind == "diamond":
    return (np.abs(dx) + np.abs(dy) - 1.1 * r) / np.sqrt(2.0)
  if kind == "cross":
    arm, half = 1.0 * r, 0.33 * r
    return np.minimum(_box_sd(dx, dy, arm, half), _box_sd(dx, dy, half, arm))
  if kind == "triangle":  # equilateral, apex up (y grows downwards)
    big = 1.15 * r
    verts = _polar(big, np.array([-90.0, 30.0, 150.0]))
    return _convex_polygon_sd(dx, dy, verts)
  if kind == "star":  # five points: inner pentagon plus five spikes
    outer = _polar(1.12 * r, -90.0 + 72.0 * np.arange(5))
    inner = _polar(0.46 * r, -90.0 + 36.0 + 72.0 * np.arange(5))
    sd = _convex_polygon_sd(dx, dy, inner)
    # Each spike runs past its base into the pentagon (along its own edges),
    # so the union has no seam where pieces would only touch.
    for k in range(5):
      a = outer[k] + 1.3 * (inner[k] - outer[k])
      b = outer[k] + 1.3 * (inner[k - 1] - outer[k])
      spike = np.stack([outer[k], a, b])
      sd = np.minimum(sd, _convex_polygon_sd(dx, dy, spike))
    return sd
  raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")


def _texture_alpha(texture: str, dx, dy, period: float):
  if texture == "striped":  # diagonal stripes, one third of the period wide
    s = (dx + dy) / np.sqrt(2.0)
    d = np.abs(np.mod(s / period, 1.0) - 0.5) * period
    return np.clip(period / 6 + 0.5 - d, 0.0, 1.0)
  if texture == "dotted":
    gx = (np.mod(dx / period, 1.0) - 0.5) * period
    gy = (np.mod(dy / period, 1.0) - 0.5) * period
    return np.clip(0.22 * period + 0.5 - np.hypot(gx, gy), 0.0, 1.0)
  return None


def _grid(size: int):
  c = np.arange(size, dtype=np.float32) + 0.5
  return c[None, :], c[:, None]  # x (columns), y (rows), broadcastable


def _bbox(obj: ShapeObject, size: int) -> tuple[slice, slice]:
  """Rows and columns that can hold any of the object (1.25 r + 2 px)."""
  half = 1.25 * obj.radius * size + 2.0
  def span(c):
    lo = max(0, int(np.floor(c * size - half)))
    return slice(lo, max(lo, min(size, int(np.ceil(c * size + half)))))
  return span(obj.cy), span(obj.cx)


def _object_alpha_at(obj: ShapeObject, size: int, dx, dy):
  sd = _signed_distance(obj.kind, dx, dy, obj.radius * size)
  return np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)


def object_alpha(obj: ShapeObject, size: int) -> np.ndarray:
  """float32 [size, size] coverage of ``obj`` in [0, 1] (soft 1 px edge)."""
  x, y = _grid(size)
  return _object_alpha_at(obj, size, x - obj.cx * size, y - obj.cy * size)


def render_scene(scene: Scene, size: int) -> np.ndarray:
  """uint8 [size, size, 3] image of the scene (work limited to object boxes)."""
  if size < 8:
    raise ValueError(f"shapes render size must be >= 8, got {size}")
  img = np.empty((size, size, 3), np.float32)
  img[:] = np.asarray(COLOURS[scene.background], np.float32)
  x, y = _grid(size)
  for obj in reversed(scene.objects):  # the main object last, on top
    rows, cols = _bbox(obj, size)
    dx, dy = x[:, cols] - obj.cx * size, y[rows, :] - obj.cy * size
    alpha = _object_alpha_at(obj, size, dx, dy)[..., None]
    colour = np.asarray(COLOURS[obj.colour], np.float32)
    t = _texture_alpha(obj.texture, dx, dy, size / 9.0)
    if t is not None:
      colour = colour + t[..., None] * (_accent(obj.colour) - colour)
    patch = img[rows, cols]
    img[rows, cols] = patch + alpha * (colour - patch)
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------- source

@dataclasses.dataclass(frozen=True)
class _Split:
  scenes: tuple[Scene, ...]
  texts: tuple[tuple[str, ...], ...]
  ids: tuple[tuple[tuple[int, ...], ...], ...]


def _index_rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, SPLITS[split], index])


@functools.lru_cache(maxsize=4)
def _build(seed: int, num_train: int, num_test: int,
           captions_per_image: int, scenes_family: str = "full"):
  """Scenes and captions of both splits, and the vocabulary over both."""
  sample = _SAMPLERS[scenes_family]
  scenes, texts = {}, {}
  for split, n in (("train", num_train), ("test", num_test)):
    scenes[split], texts[split] = [], []
    for i in range(n):
      rng = _index_rng(seed, split, i)
      scene = sample(rng)
      scenes[split].append(scene)
      texts[split].append(tuple(make_captions(scene, rng, captions_per_image)))
  tokens = {s: [[text_lib.tokenize(c) for c in caps] for caps in texts[s]]
            for s in SPLITS}
  vocab = text_lib.build_vocabulary(
      c for s in ("train", "test") for caps in tokens[s] for c in caps)
  splits = {}
  for s in SPLITS:
    ids = tuple(tuple(tuple(vocab.encode(c)) for c in caps)
                for caps in tokens[s])
    splits[s] = _Split(tuple(scenes[s]), tuple(texts[s]), ids)
  return splits, vocab


class ShapesSource(source_items.Source):
  """Random-access source of one split of the shapes dataset.

  ``source[i]`` is ``dict(image=uint8[render_size, render_size, 3],
  captions=list[list[int]] (ids, no 0), class_id=int, key=str)``.
  ``vocab`` covers both splits (built from train then test captions), so it is
  the same for ``ShapesSource('train', ...)`` and ``ShapesSource('test', ...)``
  with equal (seed, num_train, num_test, captions_per_image, scenes).
  ``scenes``: the scene family, 'full' | 'single' (module docstring).
  """

  def __init__(self, split: str, num_train: int, num_test: int, seed: int,
               captions_per_image: int, render_size: int,
               scenes: str = "full"):
    if split not in SPLITS:
      raise ValueError(f"shapes split must be one of {tuple(SPLITS)}, got "
                       f"{split!r}")
    for name, value in (("config.data.shapes_num_train", num_train),
                        ("config.data.shapes_num_test", num_test),
                        ("config.data.captions_per_image", captions_per_image)):
      if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if int(seed) < 0:
      raise ValueError(f"config.data.shapes_seed must be >= 0, got {seed}")
    if int(render_size) < 8:
      raise ValueError(f"shapes render_size must be >= 8, got {render_size}")
    self.split = split
    self.scenes = check_scene_family(scenes)
    self.seed = int(seed)
    self.captions_per_image = int(captions_per_image)
    self.render_size = int(render_size)
    splits, self.vocab = _build(self.seed, int(num_train), int(num_test),
                                self.captions_per_image, self.scenes)
    self._data = splits[split]

  @property
  def num_classes(self) -> int:
    return len(KINDS) * len(OBJECT_COLOURS)

  @property
  def mirror_word_pairs(self) -> tuple[tuple[int, int], ...]:
    """Word-id pairs to swap in the caption of a horizontally flipped image."""
    w = self.vocab.wordtoix
    if "left" in w and "right" in w:
      return ((w["left"], w["right"]),)
    return ()

  def __len__(self) -> int:
    return len(self._data.scenes)

  @property
  def _index_label(self) -> str:
    return f"shapes {self.split}"

  def scene(self, i: int) -> Scene:
    return self._data.scenes[self._check(i)]

  def captions_text(self, i: int) -> list[str]:
    return list(self._data.texts[self._check(i)])

  def key(self, i: int) -> str:
    return f"shapes/{self.split}/{self._check(i):06d}"

  def captions(self, i: int) -> list[list[int]]:
    return [list(c) for c in self._data.ids[self._check(i)]]

  def class_id(self, i: int) -> int:
    return self.scene(i).class_id

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = self._check(i)
    return dict(image=render_scene(self._data.scenes[i], self.render_size),
                captions=self.captions(i), class_id=self.class_id(i),
                key=self.key(i))

  def __repr__(self) -> str:
    return (f"ShapesSource(split={self.split!r}, n={len(self)}, "
            f"seed={self.seed}, scenes={self.scenes!r}, "
            f"render_size={self.render_size})")


def source_from_config(data: Any, split: str, render_size: int,
                       num_train: int | None = None) -> ShapesSource:
  """``ShapesSource`` of ``split`` as ``config.data`` describes the dataset
  (``num_train`` overrides ``data.shapes_num_train``)."""
  return ShapesSource(
      split, num_train=data.shapes_num_train if num_train is None else num_train,
      num_test=data.shapes_num_test, seed=data.shapes_seed,
      captions_per_image=data.captions_per_image, render_size=render_size,
      scenes=data.shapes_scenes)


def open_split(data: Any, split: str, image_size: int) -> ShapesSource:
  """The dataset's ``open_split`` (``datasets.DATASETS``): scenes rendered
  at the size the transform needs (``transforms.load_size(image_size)``
  with random crop/flip, else ``image_size``)."""
  render = (transforms.load_size(image_size) if data.random_crop_flip
            else int(image_size))
  return source_from_config(data, split, render)
