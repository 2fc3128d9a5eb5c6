"""C sources built at run time with the system compiler, cached per user.

:func:`find_compiler` names the compiler (``$CC``, else the first of
:data:`COMPILERS` on the PATH). :func:`build_library` compiles a source into a
shared library once per (source, compiler, compiler version, flags, CPU) and
keeps it in the cache directory (:func:`cache_directory`): a second call, in
this process or another, finds the library there and only loads it. A library
is written under a temporary name and renamed into place (``os.replace``), so
that processes building the same library at once never load half a file.
:class:`SharedLibrary` builds one on first use in a process, and
:func:`address` gives an array's address to pass to it. Nothing here runs at
import time.
"""

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading

import numpy as np

#: The compilers looked for on the PATH when ``$CC`` is not set, in this order.
COMPILERS = ("cc", "gcc", "clang")
#: Environment variable naming the cache directory (overrides the default).
CACHE_ENV = "SKLEARN_FASTGRNN_CACHE"
#: The float dtypes the C helpers are built for: dtype -> (C type, ctypes type).
#: Their functions are named after the C type (``fg_adam_float``, ...).
C_REALS = {
    np.dtype(np.float32): ("float", ctypes.c_float),
    np.dtype(np.float64): ("double", ctypes.c_double),
}


def address(array):
    """The address of a contiguous ``array``'s first element (an int for ctypes).

    Through the buffer protocol (a third of a microsecond); arrays it does not
    take (read-only, empty, strided) give ``__array_interface__``'s address,
    three times as slow, and the same number.
    """
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.__array_interface__["data"][0]


class BuildError(RuntimeError):
    """No C compiler was found, or building a library failed."""


class SharedLibrary:
    """A C library built from a source on first use, once per process.

    :meth:`get` builds the library (or loads it from the cache), passes it to
    ``prepare`` (which sets its functions' ctypes types and returns what its
    users need) and keeps the result; a failed build is kept too and raised
    again as a :class:`BuildError` naming ``what``. Thread-safe.
    """

    def __init__(self, source, stem, flags, what, prepare):
        self.source, self.stem, self.flags = source, stem, flags
        self.what, self.prepare = what, prepare
        self.loaded = None  # what ``prepare`` returned, or the exception that stopped it
        self._lock = threading.Lock()

    def get(self):
        """What ``prepare`` returned for the library; BuildError without it."""
        with self._lock:
            if self.loaded is None:
                try:
                    library = ctypes.CDLL(build_library(self.source, self.stem, self.flags))
                    self.loaded = self.prepare(library)
                except (BuildError, OSError, AttributeError) as exc:
                    self.loaded = exc
        if isinstance(self.loaded, Exception):
            raise BuildError(f"{self.what} cannot be built: {self.loaded}")
        return self.loaded


def find_compiler():
    """The C compiler command: ``$CC`` (split like a shell word list), else the
    first of :data:`COMPILERS` on the PATH; None when there is none."""
    if os.environ.get("CC", "").strip():
        command = shlex.split(os.environ["CC"])
        if shutil.which(command[0]):
            return command
        return None
    for name in COMPILERS:
        path = shutil.which(name)
        if path:
            return [path]
    return None


def cache_directory():
    """Where built libraries are kept: ``$SKLEARN_FASTGRNN_CACHE``, else
    ``$XDG_CACHE_HOME/sklearn-fastgrnn``, else ``~/.cache/sklearn-fastgrnn``."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "sklearn-fastgrnn")


@functools.lru_cache(maxsize=None)
def _compiler_version(command):
    """The first line of ``command --version`` (part of the cache key)."""
    try:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


@functools.lru_cache(maxsize=None)
def cpu_fingerprint():
    """A string naming this CPU's model and instruction sets (a library built with
    ``-march=native`` must not be loaded on another CPU sharing the cache)."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def build_library(source, stem, flags, *, optional=("-march=native",)):
    """Path of the shared library built from ``source``, compiled if not cached.

    Parameters
    ----------
    source : str
        C source.
    stem : str
        Start of the library's file name (the rest is the cache key).
    flags : list of str
        Compiler flags (``-shared -fPIC`` are added).
    optional : sequence of str, default=("-march=native",)
        Flags tried first; when the compiler rejects them (another CPU family,
        another compiler), the build is tried again without the last of them,
        and so on down to none.

    Returns
    -------
    path : str

    Raises
    ------
    BuildError
        When no compiler is found or the build fails (with its output).
    """
    compiler = find_compiler()
    if compiler is None:
        raise BuildError(
            "no C compiler was found: set CC or put cc, gcc or clang on the PATH "
            "(for example apt-get install gcc, or xcode-select --install on macOS)."
        )
    key = hashlib.sha256(
        "\0".join(
            [source, shlex.join(compiler), _compiler_version(tuple(compiler)),
             shlex.join(flags), shlex.join(optional), cpu_fingerprint()]
        ).encode()
    ).hexdigest()[:20]
    directory = cache_directory()
    path = os.path.join(directory, f"{stem}-{key}.so")
    if os.path.exists(path):
        return path
    try:
        os.makedirs(directory, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{stem}-", dir=directory)
    except OSError as exc:
        raise BuildError(f"the cache directory {directory} is not writable: {exc}") from exc
    try:
        c_file = os.path.join(work, f"{stem}.c")
        with open(c_file, "w", encoding="ascii") as f:
            f.write(source)
        built = os.path.join(work, f"{stem}.so")
        base = [*flags, "-shared", "-fPIC", c_file, "-o", built]
        attempts = [[*optional[:k], *base] for k in range(len(optional), -1, -1)]
        for attempt in attempts:
            try:
                result = subprocess.run(
                    [*compiler, *attempt], capture_output=True, text=True
                )
            except OSError as exc:
                raise BuildError(f"running {compiler[0]} failed: {exc}") from exc
            if result.returncode == 0:
                break
        else:
            raise BuildError(
                f"{shlex.join([*compiler, *attempts[-1]])} failed:\n"
                f"{result.stderr.strip()}"
            )
        os.replace(built, path)  # atomic: a concurrent build wins or loses whole
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
