"""Writer locks: one process at a time writes a run directory, a comparison's parent or a sweep directory.

A writer holds an OS file lock (``flock(LOCK_EX | LOCK_NB)``) on ``<directory>/.lock`` for as long as
it writes there. The kernel releases the lock when the holder's file description closes, which
includes the process dying by any signal, so a killed writer never leaves a stale lock: the next
writer simply takes it. The file holds the holder's pid, host and start time as JSON, only so that a
refused writer can say who holds it::

    results/sw is being written by pid 1234 on host-a (started 2026-12-02 15:54:42 UTC); wait for it or stop it

A second writer never waits: it refuses at once (:class:`DirectoryBusy`). Readers (``fedfleet plot``,
``report``, ``compare``, :func:`sim.load_run`) never take the lock and never block.

Releasing removes the lock file (so a finished directory holds only its results). Removing a lock
file is racy in general: a second process may have opened the old file just before the unlink and
then lock an orphaned inode while a third creates a new file. :meth:`DirectoryLock.acquire`
therefore checks, once it holds the lock, that the file it locked is still the one at the path
(same device and inode) and starts again if not, so at most one process ever holds the lock of the
file that is at ``.lock``.

While it holds the lock, a writer removes what killed writers of the same directory left behind
(:meth:`DirectoryLock.remove_leftovers`): temporary files of atomic writes (``.<name>.*.tmp``, see
:mod:`sim.store`) of the files it owns, and temporary cell directories (``.<cell id>.<pid>.tmp``,
see :mod:`sim.studies.cells`). Under the lock no live writer of that directory can exist, so these
can only belong to dead ones; files that are not the writer's own (a report being written by a
reader, say) are left alone.

Only regular files are opened: a symlink, FIFO or device at ``.lock`` is refused (``O_NOFOLLOW``,
``O_NONBLOCK``, then ``fstat``), and at most :data:`MAX_HOLDER_BYTES` of it are read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
MAX_HOLDER_BYTES = 4096
"""The most bytes of a lock file read back for the refusal message."""
HOLDER_READ_TRIES = 20
"""Reads of a holder's file (50 ms apart) while the holder may be between locking and writing it."""
TEMP_CELL_RE = re.compile(r"^\..+\.[0-9]+\.tmp$")
"""Name of a cell computed in a temporary directory: ``.<cell id>.<pid>.tmp``."""
_HOST_RE = re.compile(r"[^A-Za-z0-9._-]")


class LockError(Exception):
    """A directory could not be locked for writing. ``str(e)`` is the user message."""


class DirectoryBusy(LockError):
    """Another live process holds the directory's lock."""


class DirectoryLock:
    """The writer lock of one directory (a context manager: ``with DirectoryLock(d): ...``)."""

    def __init__(self, directory: Path | str, what: str = "directory") -> None:
        self.directory = Path(directory)
        self.what = what  # "run", "sweep" or "comparison": recorded in the lock file
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock now or raise :class:`DirectoryBusy` naming the holder (never waits)."""
        if self.held:
            raise LockError(f"{self.directory}: this lock is already held by this process")
        for _ in range(100):  # each retry means another writer released (and removed) the file meanwhile
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = f"{self.directory} is being written by {_describe(_read_holder(fd))}; wait for it or stop it"
                os.close(fd)
                raise DirectoryBusy(msg) from None
            if _same_file(fd, self.path):
                self._fd = fd
                self._write_holder()
                return self
            os.close(fd)
        raise LockError(f"{self.directory}: could not take its lock (the lock file keeps changing)")

    def release(self) -> None:
        """Remove the lock file and release the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:  # e.g. the directory became read-only: the lock is released all the same
            log.warning("could not remove %s: %s", self.path, e.strerror)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def remove_leftovers(self, names: Iterable[str] = (), where: Path | None = None,
                         temp_cells: bool = False) -> list[Path]:
        """Remove, in ``where`` (default: the locked directory; it must lie inside it), the temporary
        files ``.<name>.*.tmp`` of atomic writes of every ``name`` in ``names`` and, with
        ``temp_cells``, the temporary cell directories ``.<cell id>.<pid>.tmp``. Only while holding the
        lock: then every such leftover belongs to a dead writer. Returns what was removed."""
        if not self.held:
            raise LockError(f"{self.directory}: leftovers are removed only while holding its lock")
        where = self.directory if where is None else Path(where)
        if where.resolve() != self.directory.resolve() and self.directory.resolve() not in where.resolve().parents:
            raise ValueError(f"{where} is not inside the locked directory {self.directory}")
        prefixes = tuple(f".{n}." for n in names)
        removed = []
        for p in sorted(where.glob(".*.tmp")):
            mode = p.lstat().st_mode
            if prefixes and p.name.startswith(prefixes) and stat.S_ISREG(mode):
                p.unlink(missing_ok=True)
            elif temp_cells and TEMP_CELL_RE.match(p.name) and stat.S_ISDIR(mode):
                shutil.rmtree(p, ignore_errors=True)
            else:
                continue
            removed.append(p)
        if removed:
            log.info("%s: removed %d leftover(s) of a killed writer: %s", where, len(removed),
                     ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
        return removed

    def _open(self) -> int:
        """The lock file, created if absent; refuses anything but a regular file."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise LockError(f"cannot lock {self.directory} for writing: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockError(f"cannot lock {self.directory} for writing: {self.path} is not a regular file")
        return fd

    def _write_holder(self) -> None:
        assert self._fd is not None
        doc = {"pid": os.getpid(), "host": socket.gethostname(), "started_unix": time.time(), "what": self.what}
        data = json.dumps(doc).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as e:  # e.g. a full disk: the lock holds all the same; a refusal then names no pid
            log.warning("could not record the holder in %s: %s", self.path, e.strerror)


def _same_file(fd: int, path: Path) -> bool:
    """True when ``fd`` is the file now at ``path`` (not one unlinked by a releasing writer)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _read_holder(fd: int) -> dict | None:
    """The holder's record (pid, host, started_unix) from the lock file, or None if it never becomes
    readable (the holder may be between taking the lock and writing it: a few short retries)."""
    for attempt in range(HOLDER_READ_TRIES):
        try:
            doc = json.loads(os.pread(fd, MAX_HOLDER_BYTES, 0))
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("pid"), int) and not isinstance(doc["pid"], bool):
            return doc
        if attempt + 1 < HOLDER_READ_TRIES:
            time.sleep(0.05)
    return None


def _describe(holder: dict | None) -> str:
    """``pid 1234 on host-a (started 2026-12-02 15:54:42 UTC)``, from sanitised fields only."""
    if holder is None:
        return "another process (its lock file names no pid)"
    text = f"pid {holder['pid']}"
    host = holder.get("host")
    if isinstance(host, str) and host:
        text += f" on {_HOST_RE.sub('?', host[:64])}"
    started = holder.get("started_unix")
    if isinstance(started, (int, float)) and not isinstance(started, bool) and 0 <= started < 1e11:
        text += f" (started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started))})"
    return text

