"""Input-pipeline throughput on real JPEGs: images/s through the real loader.

Decodes the 294 real CUB-2010 photos of ``../shared/data/cub2010_photos``
(repeated to ``--num_images`` items, each read from its file every time),
applies the full reference augmentation at 256 px (shorter side -> 304,
random 256 crop, random flip, the 64/128/256 pyramid, [-1, 1]), draws and fits
a caption, and batches them with ``pipeline.create_iterator`` -- the same code
the training jobs use -- for each ``--num_workers`` (0 = in-process; > 0 =
grain worker processes). The first ``--warmup`` batches (worker start-up) are
not timed.

  python bench/input_pipeline.py                  # workers 0 and 2, batch 10

Prints a table and writes JSON to
``bench/results/input_pipeline_<timestamp>.json``. Compare with the train
step's images/s (bench/train_step.py, bench/README.md).
"""

import argparse
import json
import os
import pathlib
import platform as platform_lib
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from input_pipeline import images as images_lib  # noqa: E402
from input_pipeline import pipeline  # noqa: E402


class PhotoSource:
  """Real photos from disk, repeated; one fixed 12-word caption each."""

  mirror_word_pairs = ()
  split = "bench"

  def __init__(self, paths, num_images):
    self.paths = list(paths)
    self.num_images = num_images

  def __len__(self):
    return self.num_images

  def __getitem__(self, i):
    path = self.paths[int(i) % len(self.paths)]
    return dict(image=images_lib.read_rgb(path, "bench"),
                captions=[list(range(1, 13)), list(range(1, 25))],
                class_id=int(i) % 10, key=os.path.basename(path))


def run(source, num_workers, batch_size, num_batches, warmup, sizes):
  it = pipeline.create_iterator(
      source, global_batch_size=batch_size, image_sizes=sizes, words_num=18,
      seed=0, truncation="random_subset", num_workers=num_workers)
  try:
    for _ in range(warmup):
      next(it)
    times = []
    start = time.perf_counter()
    for _ in range(num_batches):
      t = time.perf_counter()
      batch = next(it)
      times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
  finally:
    it.close()
  assert batch["images"][-1].shape == (batch_size, sizes[-1], sizes[-1], 3)
  return {"num_workers": num_workers, "batch_size": batch_size,
          "timed_batches": num_batches, "warmup_batches": warmup,
          "seconds": total, "images_per_s": num_batches * batch_size / total,
          "median_s_per_batch": statistics.median(times)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--photos", default=os.path.join(
      os.path.dirname(_ROOT), "shared", "data", "cub2010_photos"))
  parser.add_argument("--num_workers", default="0,2")
  parser.add_argument("--batch_size", type=int, default=10)
  parser.add_argument("--batches", type=int, default=12)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--num_images", type=int, default=2940)
  parser.add_argument("--sizes", default="64,128,256")
  parser.add_argument("--out_dir", default=os.path.join(_ROOT, "bench",
                                                        "results"))
  args = parser.parse_args(argv)
  paths = sorted(str(p) for p in pathlib.Path(args.photos).glob("*/*.jpg"))
  if not paths:
    sys.exit(f"error: no JPEGs under {args.photos}/<class>/")
  sizes = tuple(int(s) for s in args.sizes.split(","))
  source = PhotoSource(paths, args.num_images)
  results = []
  print(f"{len(paths)} real JPEGs, sizes {sizes}, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  print(f"{'workers':>8} {'images/s':>9} {'s/batch (median)':>17}")
  for w in (int(x) for x in args.num_workers.split(",")):
    r = run(source, w, args.batch_size, args.batches, args.warmup, sizes)
    results.append(r)
    print(f"{w:>8} {r['images_per_s']:>9.1f} {r['median_s_per_batch']:>17.3f}")
  os.makedirs(args.out_dir, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  out = os.path.join(args.out_dir, f"input_pipeline_{stamp}.json")
  with open(out, "w") as f:
    json.dump({"photos": args.photos, "num_photos": len(paths),
               "sizes": sizes, "cpu_count": os.cpu_count(),
               "load_average_1m": os.getloadavg()[0],
               "platform": platform_lib.platform(), "results": results}, f,
              indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
