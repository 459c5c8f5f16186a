"""``python main.py`` in a subprocess, for the kill/restart tests (a plain
module, not a test file; used by test_reliability.py and test_multihost.py)."""

import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(cache_dir, devices):
  """CPU, ``devices`` fake devices, a persistent compilation cache."""
  return dict(
      os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      JAX_COMPILATION_CACHE_DIR=str(cache_dir),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
      JAX_DISABLE_MOST_OPTIMIZATIONS="1")


class Run:
  """``python main.py ARGS`` with its output collected line by line."""

  def __init__(self, args, env, log_path):
    self.proc = subprocess.Popen(
        [sys.executable, "main.py", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    self.lines: list[str] = []
    self._log = open(log_path, "a")
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)
      self._log.write(line)
      self._log.flush()

  def wait_for(self, regex, timeout, condition=lambda m: True):
    """The first match of ``regex`` (a line) satisfying ``condition``."""
    pattern = re.compile(regex)
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
      lines = self.lines[seen:]
      seen += len(lines)
      for line in lines:
        m = pattern.search(line)
        if m and condition(m):
          return m
      if not lines and self.proc.poll() is not None:
        self._reader.join(5)
        if len(self.lines) == seen:
          return None
      time.sleep(0.005)
    raise AssertionError(f"no line matching {regex!r} within {timeout} s:\n"
                         + "".join(self.lines[-30:]))

  def finish(self, timeout=300) -> int:
    rc = self.proc.wait(timeout)
    self._reader.join(10)
    self.proc.stdout.close()
    self._log.close()
    return rc

  def output(self) -> str:
    return "".join(self.lines)
