"""Writes a benchmark's JSON report into ``bench/results/`` (or ``out_dir``)."""

import json
import os
from typing import Any


def write_report(out_dir: str, filename: str, report: dict[str, Any],
                 indent: int = 1) -> str:
  """Writes ``report`` as ``out_dir/filename``, prints and returns the path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, filename)
  with open(path, "w") as f:
    json.dump(report, f, indent=indent)
  print(f"wrote {path}")
  return path
