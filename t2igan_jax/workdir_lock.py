"""One training job per workdir: a lock file held while the job runs.

Two jobs writing checkpoints and ``losses.jsonl`` into the same workdir
corrupt each other silently (orbax's temporary directories vanish under the
other job; steps are logged twice). ``WorkdirLock`` makes the second one stop
at start with one line naming the holder (host, pid, job, since when).

How: ``<workdir>/.t2igan.lock`` holds a JSON line about the holder and is
locked with ``fcntl.flock``. The kernel drops a flock when its process dies,
however it dies (SIGKILL included), so a lock left by a killed job never
blocks the restart: the file still names the dead holder, the new job takes
the lock over and logs a warning naming it. Where the file system refuses
flock, the holder's pid is checked instead (a lock of a pid that no longer
runs on this host is taken over; another host's lock is respected).

Only process 0 of a multi-host job takes the lock (the other processes of the
same ``jax.distributed`` job share the workdir legitimately); the caller
passes ``enabled=False`` on the others. On exit the file is emptied (not
removed, so that a job opening it at that moment never locks a stale inode).
"""

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from typing import Any

from t2igan_jax.errors import WorkdirError

LOCK_FILE = ".t2igan.lock"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _describe(holder: dict[str, Any]) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"job {holder.get('job', '?')}, since {holder.get('since', '?')}")


def _read_holder(f) -> dict[str, Any] | None:
  f.seek(0)
  text = f.read().strip()
  if not text:
    return None
  try:
    holder = json.loads(text)
  except ValueError:
    return {"host": "?", "pid": "?", "job": "?", "since": "?",
            "unreadable": text[:80]}
  return holder if isinstance(holder, dict) else None


class WorkdirLock:
  """Context manager: holds ``<workdir>/.t2igan.lock`` for one job.

  Raises ``WorkdirError`` on entry when another live job holds it.
  """

  def __init__(self, workdir: str, job: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.job = job
    self.enabled = enabled and "://" not in workdir
    self._file = None
    self.took_over: dict[str, Any] | None = None  # a dead holder replaced

  def __enter__(self) -> "WorkdirLock":
    if self.enabled:
      self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _refuse(self, holder):
    raise WorkdirError(
        f"--workdir={os.path.dirname(self.path)} is in use by another job "
        f"({_describe(holder or {})}): wait for it to end or use another "
        f"--workdir (if that job is gone, delete {self.path})")

  def acquire(self) -> None:
    f = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      flock_ok = True
      try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          self._refuse(_read_holder(f))
        flock_ok = False  # e.g. ENOLCK: no flock on this file system
      holder = _read_holder(f)
      if holder is not None and not flock_ok:
        same_host = holder.get("host") == socket.gethostname()
        pid = holder.get("pid")
        if not (same_host and isinstance(pid, int) and not _pid_alive(pid)):
          self._refuse(holder)
      if holder is not None:
        self.took_over = holder
        logging.warning(
            "workdir lock %s was left by a job that no longer runs (%s); "
            "taking it over", self.path, _describe(holder))
      me = {"host": socket.gethostname(), "pid": os.getpid(), "job": self.job,
            "since": datetime.datetime.now().astimezone().isoformat(
                timespec="seconds")}
      f.seek(0)
      f.truncate()
      f.write(json.dumps(me) + "\n")
      f.flush()
    except BaseException:
      f.close()
      raise
    self._file = f

  def release(self) -> None:
    f, self._file = self._file, None
    if f is None:
      return
    try:
      f.seek(0)
      f.truncate()
      f.flush()
    except OSError as e:
      logging.warning("could not clear the workdir lock %s: %s", self.path, e)
    finally:
      f.close()  # drops the flock
