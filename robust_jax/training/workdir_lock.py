"""One trainer per workdir: a lock file holding the holder's host and pid, with stale-lock detection.

Two trainers writing one workdir interleave their metrics records and race on checkpoint step
numbers. :class:`WorkdirLock` creates ``<workdir>/train.lock`` atomically (written to a temporary
file, then hard-linked into place, which fails if the lock exists, also on NFS) holding
``{"host", "pid", "pid_start", "since", "argv"}``. A second trainer is refused at once with
:class:`WorkdirLocked`, one line naming the holder and the lock file.

A lock left behind by a killed trainer (SIGKILL, a node crash) is *stale*: on the same host its
pid no longer runs, or runs a different process (the pid's start time, from ``/proc``, differs from
the recorded one); a stale lock is replaced with a warning. A lock from another host cannot be
checked from here: the message says to delete the file if that host's job is gone.

Only process 0 of a multi-process run takes the lock; the others learn the outcome from it.

Example:

>>> import tempfile
>>> workdir = tempfile.mkdtemp()
>>> with WorkdirLock(workdir):
...   try:
...     WorkdirLock(workdir).acquire()
...   except WorkdirLocked as e:
...     print(str(e).split(" (")[0])
workdir ... is in use by another trainer
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from typing import Any, Dict, Optional

from absl import logging
import jax
import numpy as np

LOCK_FILE = "train.lock"


class WorkdirLocked(RuntimeError):
  """Another live trainer holds the workdir's lock."""


def _pid_start(pid: int) -> Optional[str]:
  """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # Field 22 (starttime); the command name (field 2) may hold spaces, so split after its ")".
  fields = stat.rsplit(")", 1)[-1].split()
  return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """The lock of one workdir (a context manager: :meth:`acquire` on entry, :meth:`release` on exit).

  Args:
    workdir: the training workdir (created if missing).
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._held = False

  def _describe(self, holder: Dict[str, Any]) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {when}"

  def _is_stale(self, holder: Dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
      return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
      return True
    if not _pid_alive(pid):
      return True
    recorded, now = holder.get("pid_start"), _pid_start(pid)
    return recorded is not None and now is not None and recorded != now  # the pid was reused

  def _read(self) -> Optional[Dict[str, Any]]:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # unreadable: written by no version of this code; treated as stale below

  def _try_create(self) -> bool:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid()),
          "since": time.time(), "argv": sys.argv}
    fd, tmp = tempfile.mkstemp(prefix=".train.lock.", dir=self.workdir)
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      os.link(tmp, self.path)   # atomic; fails with FileExistsError if the lock exists
      return True
    except FileExistsError:
      return False
    finally:
      os.unlink(tmp)

  def _acquire_here(self) -> Optional[str]:
    """Takes the lock on this process; returns None, or the refusal message."""
    os.makedirs(self.workdir, exist_ok=True)
    for _ in range(3):
      if self._try_create():
        self._held = True
        return None
      holder = self._read()
      if holder is None:
        continue  # released in between
      if holder and not self._is_stale(holder):
        return (f"workdir {self.workdir} is in use by another trainer ({self._describe(holder)}; "
                f"lock file {self.path}): wait for it to finish or use another --workdir; if that "
                "process is gone (another host), delete the lock file")
      logging.warning("Removing the stale lock %s (%s: that process is gone).", self.path,
                      self._describe(holder) if holder else "unreadable")
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass
    return f"could not take the lock {self.path} (it keeps changing); is another trainer starting?"

  def acquire(self) -> "WorkdirLock":
    """Takes the lock.

    Raises:
      WorkdirLocked: if a live trainer holds it (one line: holder, lock file, what to do).
    """
    message = self._acquire_here() if jax.process_index() == 0 else None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      refused = multihost_utils.broadcast_one_to_all(np.int32(message is not None))
      if int(refused) and message is None:
        message = f"workdir {self.workdir} is in use by another trainer (see process 0)"
    if message is not None:
      raise WorkdirLocked(message)
    return self

  def release(self) -> None:
    """Removes the lock if this process holds it (and the file is still ours)."""
    if not self._held:
      return
    self._held = False
    holder = self._read()
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
