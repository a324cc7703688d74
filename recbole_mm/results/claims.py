"""Run claims: one lock file per run record, so that runners sharing a runs folder split the work.

A runner claims a run by creating ``<record>.lock`` with ``O_CREAT | O_EXCL`` (atomic on a local or NFS v3+
file system) holding its host name and process id; it deletes the lock once the record is written or the run has
failed. A lock whose process is gone (same host, no such pid) is stale and is broken under a second exclusive file
(``<record>.lock.break``), so that two runners never both break it and both run. A lock of another host is
respected (its pid cannot be checked from here); delete it by hand if that machine is gone.
"""

import json
import os
import shutil
import socket
import tempfile
import time
from typing import Dict, Optional

BREAK_TIMEOUT_S = 60.0  # a break file older than this was left by a killed runner
SCRATCH_PREFIX = "recbole_mm_run."


def host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def read_owner(path: str) -> Optional[Dict]:
    """The owner written in lock ``path`` (``{"host", "pid", "time"}``), None if the lock is gone or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_stale(owner: Optional[Dict]) -> bool:
    """A lock is stale when its process is known to be gone: same host, pid not alive."""
    if not isinstance(owner, dict) or "pid" not in owner:
        return True  # half-written by a killed runner (the owner is written right after the create)
    return owner.get("host") == host() and not pid_alive(int(owner["pid"]))


def _create(path: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"host": host(), "pid": os.getpid(), "time": time.time()}, f)
    return True


def _break_stale(path: str) -> None:
    """Delete lock ``path`` if it is stale, under the exclusive break file (one breaker at a time)."""
    guard = path + ".break"
    if not _create(guard):
        try:
            if time.time() - os.path.getmtime(guard) > BREAK_TIMEOUT_S:
                os.unlink(guard)  # its breaker was killed; the next attempt takes it
        except OSError:
            pass
        return
    try:
        if os.path.exists(path) and is_stale(read_owner(path)):
            # the lock may have been half-written a moment ago: only a lock older than a second counts as empty
            owner = read_owner(path)
            if owner is not None or time.time() - os.path.getmtime(path) > 1.0:
                os.unlink(path)
    except OSError:
        pass
    finally:
        os.unlink(guard)


def claim(record_path: str) -> bool:
    """Claim the run of ``record_path``: True if this process now holds its lock (breaking a stale one)."""
    lock = record_path + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    if _create(lock):
        return True
    _break_stale(lock)
    return _create(lock)


def release(record_path: str) -> None:
    """Drop this process's claim on ``record_path`` (a lock held by another process is left alone)."""
    lock = record_path + ".lock"
    owner = read_owner(lock)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == host():
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass


def holder(record_path: str) -> Optional[Dict]:
    """The live owner of ``record_path``'s lock, or None when it is free or stale."""
    owner = read_owner(record_path + ".lock")
    return None if owner is None or is_stale(owner) else owner


def scratch_dir(parent: str) -> str:
    """A new scratch folder under ``parent`` named after this host and process (see :func:`clean_scratch`)."""
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{host()}.{os.getpid()}.", dir=parent)


def clean_scratch(parent: str) -> int:
    """Delete the scratch folders under ``parent`` left by dead processes of this host; how many were deleted."""
    if not os.path.isdir(parent):
        return 0
    removed = 0
    for name in os.listdir(parent):
        if not name.startswith(SCRATCH_PREFIX):
            continue
        parts = name[len(SCRATCH_PREFIX):].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        if parts[0] == host() and not pid_alive(int(parts[1])):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed += 1
    return removed
