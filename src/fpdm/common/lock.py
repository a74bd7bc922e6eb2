"""One process at a time per run folder: a lock file holding the owner's pid and host.

A second `fpdm train --out X` (or a second sampler over one parts folder) is refused with a one-line error
naming the owner, instead of interleaving its writes with the first one's. A lock left by a process that no
longer exists on this host (killed with -9, a crashed machine) is stale and taken over. Under torchrun only
the first process takes the lock; the others write nothing of their own.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".fpdm.lock"

__all__ = ["LOCK_NAME", "FolderInUse", "hold"]


class FolderInUse(RuntimeError):
    """Another live process owns the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # vanished, or torn by a crash while being written


def _try_create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(me))
    return True


@contextmanager
def hold(folder: str | Path, what: str = "run", enabled: bool = True) -> Iterator[None]:
    """Own `folder` (created if needed) for the duration, or raise FolderInUse naming its owner."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while not _try_create(path, me):
        owner = _owner(path)
        if owner is not None and (owner.get("host") != me["host"] or _alive(int(owner.get("pid", -1)))):
            raise FolderInUse(f"{folder} is in use by another {what} (pid {owner.get('pid')} on "
                              f"{owner.get('host')}, since {owner.get('since')}); wait for it to finish, or "
                              f"delete {path} if that process is gone")
        try:  # stale (its process is gone) or unreadable: take it over
            path.unlink()
        except FileNotFoundError:
            pass
    try:
        yield
    finally:
        if _owner(path) == me:
            path.unlink()
