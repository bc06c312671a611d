"""The local files of a contribution (the output JSONL, its journal, the solo queue) and what happens when the
disk says no: every failure becomes a `StorageError` that names the path and says what to do.

Python reports file failures as OSError (an errno) and SQLite failures as sqlite3.Error (a result code, or
only a sentence); `storage_error` maps both to one message, asking the file system (statvfs) when SQLite's
answer is vague ("unable to open database file", "disk I/O error"). `guarded` wraps a block of I/O.
`locked` takes an advisory lock on an open file, so two processes writing one output (two workers started
with the same name) never read each other's half-written line.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from lemcore.errors import StorageError

T = TypeVar("T")

# What to do when the output (JSONL + journal) cannot be written; the solo queue has its own advice.
OUTPUT_FIX = ("Choose an output file on a disk with space that you may write to (`--output` on the command "
              "line, or move the data folder with LEM_DATA_DIR)")
KEPT = "Answers finished before this are kept."

# SQLite primary result codes (the low byte of sqlite_errorcode).
_PERM, _BUSY, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 8, 10, 11, 13, 14, 26


def _nearest_folder(path: Path) -> Path:
    """The path's folder, or the closest one above it that exists (for statvfs and advice)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _from_file_system(path: Path) -> str:
    """'readonly' or 'full' when the file system holding `path` says so, else ''."""
    try:
        st = os.statvfs(_nearest_folder(path))
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "readonly"
    if st.f_bavail == 0:
        return "full"
    return ""


def _problem(err: BaseException, path: Path) -> str:
    if isinstance(err, OSError):
        code = err.errno
        if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
            return "full"
        if code == errno.EROFS:
            return "readonly"
        if code in (errno.EACCES, errno.EPERM):
            return _from_file_system(path) or "denied"
        if code in (errno.ENOTDIR, errno.EEXIST):
            return "notdir"
        if code == errno.EISDIR:
            return "isdir"
        return _from_file_system(path) or "other"
    raw = getattr(err, "sqlite_errorcode", None)
    primary = raw & 0xFF if isinstance(raw, int) else None
    text = str(err).lower()
    if primary == _FULL or "full" in text:
        return "full"
    if primary == _READONLY or "readonly" in text:
        return _from_file_system(path) or "readonly"
    if primary == _PERM:
        return "denied"
    if primary == _BUSY or "locked" in text:
        return "busy"
    if primary in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return "corrupt"
    return _from_file_system(path) or ("cantopen" if primary == _CANTOPEN or "unable to open" in text else "other")


def storage_error(path: Path, err: BaseException, doing: str, fix: str = OUTPUT_FIX) -> StorageError:
    """One sentence for the user: what failed, on which path, why, and what to do. `doing` completes
    "Could not ..." (e.g. "save a finished answer"); `fix` is the advice when another place is needed."""
    path = Path(path)
    problem = _problem(err, path)
    reason = (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or type(err).__name__
    head = f"Could not {doing}"
    if problem == "full":
        text = f"{head}: the disk holding {path} is full. Free some space, then start again. {KEPT}"
    elif problem == "readonly":
        text = f"{head}: {path} is on a read-only disk or folder. {fix}. {KEPT}"
    elif problem == "denied":
        text = (f"{head}: no permission to write {path}. Give your user write access to "
                f"{_nearest_folder(path)}, or: {fix[0].lower() + fix[1:]}. {KEPT}")
    elif problem == "notdir":
        text = (f"{head}: {path} cannot be made because a file stands where a folder should be "
                f"({getattr(err, 'filename', None) or path.parent}). Move that file, or: "
                f"{fix[0].lower() + fix[1:]}. {KEPT}")
    elif problem == "isdir":
        text = f"{head}: {path} is a folder, not a file. {fix}. {KEPT}"
    elif problem == "busy":
        text = f"{head}: {path} is locked by another program. Close it, then start again. {KEPT}"
    elif problem == "corrupt":
        text = (f"{head}: {path} is damaged ({reason}). Move it aside (a new one is made at the next start), "
                f"then start again. {KEPT}")
    elif problem == "cantopen":
        text = (f"{head}: cannot open {path}. Check that its folder exists and that you may write to it. "
                f"{fix}. {KEPT}")
    else:
        text = f"{head}: {path}: {reason}. Check the disk, then start again. {KEPT}"
    return StorageError(text)


@contextmanager
def guarded(path: Path, doing: str, fix: str = OUTPUT_FIX) -> Iterator[None]:
    """Turn OSError and sqlite3.Error raised inside the block into a StorageError about `path`."""
    try:
        yield
    except (OSError, sqlite3.Error) as err:
        raise storage_error(path, err, doing, fix) from err


@contextmanager
def locked(fd: int) -> Iterator[None]:
    """An exclusive advisory lock on an open file for the block (POSIX; elsewhere no lock: O_APPEND writes of
    one line still never interleave)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` or raise. A file system that runs out of space mid-write (tmpfs does) accepts a
    short write first and fails only on the next call; that short write is an error here too."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def probe_writable(output: Path, fix: str = OUTPUT_FIX) -> None:
    """Fail now, with a StorageError, if the output's folder cannot take a new file and a few bytes (the
    journal lives beside the output) or an existing output cannot be appended to. Used before a model loads,
    so a read-only or full disk is found in a second, not after a download."""
    output = Path(output)
    doing = f"prepare the output folder {output.parent}"
    with guarded(output, doing, fix):
        output.parent.mkdir(parents=True, exist_ok=True)
    with guarded(output, doing, fix), tempfile.TemporaryFile(dir=output.parent, prefix=".lem-check-") as fh:
        fh.write(b"lem\n" * 1024)
        fh.flush()
        os.fsync(fh.fileno())
    if output.exists():
        with guarded(output, "open the output file for appending", fix):
            os.close(os.open(output, os.O_WRONLY | os.O_APPEND))


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that takes the database lock at once (BEGIN IMMEDIATE), so two processes sharing
    the file never interleave; rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back (e.g. after SQLITE_FULL)
        raise
    db.execute("COMMIT")


def retry_while_locked(fn: Callable[[], T], wait_s: float = 30.0) -> T:
    """`fn()`, again after a short pause while SQLite says the database is locked, for up to `wait_s`.

    SQLite's busy timeout does not cover every case: a connection that holds a read lock and needs a write
    lock (switching a new file to WAL, a first CREATE TABLE) gets "database is locked" at once while another
    does the same, to avoid a deadlock. Two copies of the app starting on one output file met that (2 of 180
    simultaneous opens in a test); the second one now waits its turn (docs/platform-notes.md, "SQLite shared
    by two processes")."""
    deadline = time.monotonic() + wait_s
    pause = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as err:
            text = str(err).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
