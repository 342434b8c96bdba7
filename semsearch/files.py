"""Files written whole or not at all: the one way semsearch replaces a file.

Written to a temporary file in the same folder, fsynced, renamed over the target, and the
folder fsynced, so a reader (or a crash) sees the old file or the new one, never a part;
on any failure, Ctrl-C included, the temporary file is removed at once (on a full disk it
held the last free bytes) and the target is untouched. (click's atomic open renames a
partial file into place when the block raises.)
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process's umask: from /proc (Linux) without touching it, else by setting it
    back at once (another thread creating a file in that instant would get 022)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file here (mkstemp gives 0600)


def fsync_dir(path) -> None:
    """Make a rename inside ``path`` durable (the last step of every atomic file write)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path, mode: str = "wb", permissions: int | None = None, **open_args):
    """Open a stand-in for ``path`` to write; it becomes ``path`` when the block ends
    without an error. ``permissions``: the file's mode bits (None: mkstemp's 0600; a file
    for the user to read elsewhere gets NEW_FILE_MODE, as open() would give it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if permissions is not None:
            os.fchmod(fd, permissions)
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
