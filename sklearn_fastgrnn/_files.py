"""Writing files so that a failure never leaves half a file behind.

A destination is what the user named: a symbolic link is followed (its target
is replaced atomically and the link stays), and a special file (a FIFO, a
character or block device such as ``/dev/null`` or ``/dev/stdout``) is written
through, in place, since it can not be replaced by a renamed file. A socket or
a link to a directory is refused.
"""

import contextlib
import os
import stat
import tempfile


def _mode(path):
    """Permissions for ``path``: its own if it exists, else 0o666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_temporary(path, data):
    """A synced temporary file beside ``path`` holding ``data``; its name."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp",
        dir=os.path.dirname(os.path.abspath(path)),
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _previous(path):
    """What is at ``path`` now: None (nothing), bytes (a file) or str (a symlink)."""
    if os.path.islink(path):
        return os.readlink(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _restore(path, previous):
    """Put back what :func:`_previous` saw at ``path``."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    elif isinstance(previous, str):
        os.unlink(path)
        os.symlink(previous, path)
    else:
        os.replace(_write_temporary(path, previous), path)


def destination(path):
    """``(where, special)``: the path to write for ``path`` and whether it is a
    special file written in place.

    ``where`` is ``path`` itself, or for a symbolic link (however many) the path
    it resolves to; ``special`` is True for a FIFO or a device. Raises
    ``IsADirectoryError`` for a directory (or a link to one) and ``OSError``
    for a socket or a link that loops.
    """
    path = os.fspath(path)
    where = os.path.realpath(path) if os.path.islink(path) else path
    try:
        mode = os.stat(path).st_mode  # through the links
    except FileNotFoundError:  # a new file, or a link to one
        return where, False
    except OSError as exc:  # a loop of links, a name too long
        raise OSError(exc.errno, f"{path} can not be resolved ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if stat.S_ISSOCK(mode):
        raise OSError(f"{path} is a socket, which can not be written as a file")
    if not stat.S_ISREG(mode):  # opened by its own name: /dev/stdout -> /proc/self/fd/1
        return path, True
    return where, False


def check_writable(path):
    """Raise ``OSError`` now if ``path`` can not be written as a file later.

    Checks that its directory exists and is writable and that ``path`` is not a
    directory, so that a long job can refuse a bad destination before it starts.
    A special file (``/dev/null``, a FIFO) must be writable itself.
    """
    path, special = destination(path)
    if special:
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"the directory {directory} is not writable")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")


def write_atomically(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file and ``os.replace``.

    A failure at any point leaves ``path`` as it was (absent, or the previous
    file) and removes the temporary file. A new file gets the usual permissions
    (0o666 minus the umask); a replaced file keeps its own.
    """
    write_all_atomically({path: data})


def write_all_atomically(files):
    """Write several files, ``{path: bytes}``: all of them, or none.

    Every file is first written in full to a temporary file beside it; only
    then are they renamed over their destinations. If a rename fails, the files
    already replaced get their previous content back (or are removed when they
    did not exist), so a failure leaves every destination as it was.

    Destinations are resolved by :func:`destination` first (a directory or a
    socket among them fails before anything is written): a symbolic link's
    target is replaced, and a FIFO or device is written through, in place,
    after the regular files.
    """
    resolved = [destination(path) for path in files]
    pairs = [(where, is_special, data)
             for (where, is_special), data in zip(resolved, files.values())]
    regular = {where: data for where, is_special, data in pairs if not is_special}
    if regular:
        _replace_all(regular)
    for where, is_special, data in pairs:
        if is_special:  # a FIFO or a device can not be replaced: write through
            with open(where, "wb") as f:
                f.write(data)


def _replace_all(files):
    """:func:`write_all_atomically` for regular files (or new ones)."""
    paths = list(files)
    previous = {}
    temporary = []
    try:
        for path, data in zip(paths, files.values()):
            temporary.append(_write_temporary(path, data))
        for path in paths[:-1]:  # the last rename is the last thing that can fail
            previous[path] = _previous(path)
        replaced = []
        try:
            for path, tmp in zip(paths, temporary):
                os.replace(tmp, path)
                replaced.append(path)
        except BaseException:
            for path in replaced:
                _restore(path, previous[path])
            raise
    finally:
        for tmp in temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
