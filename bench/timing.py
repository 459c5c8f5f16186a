"""Timing a jitted call on this host: one warm-up, then ``reps`` timed calls."""

import time
from typing import Any, Callable


def time_calls(fn: Callable[[], Any], reps: int) -> tuple[Any, float, list[float]]:
  """``(first output, seconds of the first call (compile included), seconds
  of each of the ``reps`` timed calls)``; every call waits for its result
  (``jax.block_until_ready``)."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return out, first, times
