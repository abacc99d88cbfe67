"""Writing files so that a crash or power cut leaves the old file or the new one, whole: the one
place the edge (and the host, through it) does that."""

import contextlib
import os
import threading


def fsync_dir(path: str) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, sync_dir: bool = True) -> None:
    """Replace `path` with `data`: written to a temporary name beside it, fsynced, renamed over
    it, and (with `sync_dir`) the folder fsynced. Callers that write several files into one
    folder pass sync_dir=False and call fsync_dir once. On an error the temporary file is
    removed and the OSError raised; `path` is untouched."""
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")
