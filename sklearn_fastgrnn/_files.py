"""Writing files so that a failure never leaves half a file behind."""

import contextlib
import os
import tempfile


def write_atomically(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file and ``os.replace``.

    A failure at any point leaves ``path`` as it was (absent, or the previous
    file) and removes the temporary file. A new file gets the usual permissions
    (0o666 minus the umask); a replaced file keeps its own.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
