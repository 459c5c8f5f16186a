"""Tiny AttnGAN-layout datasets built from the real files in shared/data.

Test helpers (imported by tests as ``import attngan_layout``; pytest puts
``tests/`` on ``sys.path``)::

  root = make_birds_layout(shared_data, tmp_path / "birds")
  src = attngan.AttnGANSource(root, "train", "birds", BIRDS_CAPTIONS_PER_IMAGE)

Birds: the 9 real CUB photos. train = the 6 keys of classes 024 and 191,
test = the 3 keys of class 001 (as in the real AttnGAN split), 10 real
captions each. ``CUB_200_2011/bounding_boxes.txt`` holds made-up boxes: the
central 60% of each photo (x = 0.2 W, y = 0.2 H, w = 0.6 W, h = 0.6 H, written
as CUB does, e.g. ``3 67.0 80.0 201.0 240.0``). No captions.pickle: the
reader builds it from ``text/``.

COCO: the 11 captioned real val2014 photos (keys sorted; the first 8 train,
the last 3 test), ``text/<key>.txt`` with the first (at most) 5 captions of
each. The shared captions.json has only 1 to 5 captions per photo, so read it
with ``captions_per_image=COCO_CAPTIONS_PER_IMAGE`` (1); a larger value makes
the reader fail on the short caption files.
"""

import json
import os
import pathlib
import pickle
import shutil

import numpy as np
from PIL import Image

BIRDS_CAPTIONS_PER_IMAGE = 10
COCO_CAPTIONS_PER_IMAGE = 1
BIRDS_TRAIN_CLASSES = ("024", "191")
COCO_NUM_TRAIN = 8
# Two real CUB keys of the shared sample (test split / train split).
ALBATROSS = "001.Black_footed_Albatross/Black_Footed_Albatross_0090_796077"
CORMORANT = "024.Red_faced_Cormorant/Red_Faced_Cormorant_0042_796277"


def image_path(root: pathlib.Path, key: str) -> pathlib.Path:
  """Where the birds layout under ``root`` keeps the image of ``key``."""
  return root / "CUB_200_2011" / "images" / f"{key}.jpg"


def _dump(obj, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=2)


def birds_keys(shared_data) -> list[str]:
  """All 9 keys '<NNN.Class>/<Name>' of shared_data/cub, sorted."""
  images = pathlib.Path(shared_data) / "cub" / "images"
  return sorted(f"{p.parent.name}/{p.stem}" for p in images.glob("*/*.jpg"))


def central_box(width: int, height: int) -> tuple[float, float, float, float]:
  """The made-up CUB box of a photo: its central 60%."""
  return (float(int(0.2 * width)), float(int(0.2 * height)),
          float(int(0.6 * width)), float(int(0.6 * height)))


def make_birds_layout(shared_data, root) -> pathlib.Path:
  """Lays out the 9 shared CUB photos in the AttnGAN birds layout at root."""
  cub = pathlib.Path(shared_data) / "cub"
  root = pathlib.Path(root)
  keys = birds_keys(shared_data)
  if len(keys) != 9:
    raise RuntimeError(f"expected 9 CUB photos under {cub}/images, found "
                       f"{len(keys)}")
  image_dir = root / "CUB_200_2011" / "images"
  images_txt, boxes_txt = [], []
  for image_id, key in enumerate(keys, 1):
    (image_dir / key).parent.mkdir(parents=True, exist_ok=True)
    (root / "text" / key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cub / "images" / f"{key}.jpg", image_dir / f"{key}.jpg")
    shutil.copyfile(cub / "text" / f"{key}.txt", root / "text" / f"{key}.txt")
    with Image.open(cub / "images" / f"{key}.jpg") as img:
      box = central_box(*img.size)
    images_txt.append(f"{image_id} {key}.jpg\n")
    boxes_txt.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box) + "\n")
  (root / "CUB_200_2011" / "images.txt").write_text("".join(images_txt))
  (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("".join(boxes_txt))
  train = [k for k in keys if k[:3] in BIRDS_TRAIN_CLASSES]
  test = [k for k in keys if k[:3] not in BIRDS_TRAIN_CLASSES]
  _dump(train, root / "train" / "filenames.pickle")
  _dump(test, root / "test" / "filenames.pickle")
  # Like the real split files: NumPy ints for train, Python ints for test.
  _dump([np.int64(int(k[:3])) for k in train],
        root / "train" / "class_info.pickle")
  _dump([int(k[:3]) for k in test], root / "test" / "class_info.pickle")
  return root


def coco_captions(shared_data) -> dict[str, list[str]]:
  """{key (file stem): [caption, ...]} of shared_data/coco/captions.json."""
  path = pathlib.Path(shared_data) / "coco" / "captions.json"
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  # One entry is stored as '../coco_single/<file>': keep the file stem.
  return {os.path.splitext(os.path.basename(name))[0]: [c for _, c in anns]
          for name, anns in data.items()}


def make_coco_layout(shared_data, root) -> pathlib.Path:
  """Lays out the 11 captioned shared COCO photos in the AttnGAN coco layout."""
  coco = pathlib.Path(shared_data) / "coco"
  root = pathlib.Path(root)
  captions = coco_captions(shared_data)
  keys = sorted(captions)
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "text").mkdir(parents=True, exist_ok=True)
  for key in keys:
    shutil.copyfile(coco / "images" / f"{key}.jpg",
                    root / "images" / f"{key}.jpg")
    (root / "text" / f"{key}.txt").write_text(
        "\n".join(captions[key][:5]) + "\n", encoding="utf-8")
  _dump(keys[:COCO_NUM_TRAIN], root / "train" / "filenames.pickle")
  _dump(keys[COCO_NUM_TRAIN:], root / "test" / "filenames.pickle")
  return root


def make_coco_json_layout(shared_data, root, shuffle_seed=0) -> pathlib.Path:
  """The 11 captioned COCO photos as the official 2014 download is laid out.

  ``annotations/captions_{train,val}2014.json`` in COCO's annotation format,
  images in ``train2014/`` and ``val2014/``. The first ``COCO_NUM_TRAIN``
  keys (sorted) become train images, renamed ``COCO_train2014_<same
  digits>.jpg``; the rest stay val2014. Each annotation keeps its real id and
  caption; the annotation list is shuffled across images (as in the real
  files), keeping each image's captions in their shared order.
  """
  coco = pathlib.Path(shared_data) / "coco"
  root = pathlib.Path(root)
  captions = coco_captions(shared_data)
  with open(coco / "captions.json", encoding="utf-8") as f:
    ann_ids = {os.path.splitext(os.path.basename(n))[0]: [a for a, _ in anns]
               for n, anns in json.load(f).items()}
  keys = sorted(captions)
  rng = np.random.default_rng(shuffle_seed)
  for split, folder, split_keys in (
      ("train", "train2014", keys[:COCO_NUM_TRAIN]),
      ("val", "val2014", keys[COCO_NUM_TRAIN:])):
    (root / folder).mkdir(parents=True, exist_ok=True)
    images, queues = [], []
    for key in split_keys:
      image_id = int(key.rsplit("_", 1)[1])
      name = f"COCO_{folder}_{image_id:012d}.jpg"
      shutil.copyfile(coco / "images" / f"{key}.jpg", root / folder / name)
      with Image.open(coco / "images" / f"{key}.jpg") as img:
        width, height = img.size
      images.append({"id": image_id, "file_name": name, "width": width,
                     "height": height})
      queues.append([{"id": a, "image_id": image_id, "caption": c}
                     for a, c in zip(ann_ids[key], captions[key])])
    annotations = []
    while any(queues):  # interleave images in a random order
      j = int(rng.choice([j for j, q in enumerate(queues) if q]))
      annotations.append(queues[j].pop(0))
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"captions_{folder}.json", "w",
              encoding="utf-8") as f:
      json.dump({"info": {"description": "test"}, "images": images,
                 "annotations": annotations}, f)
  return root
