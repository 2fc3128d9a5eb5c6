"""One BLAS thread for the engine's matrix products, which are too small to share.

The engine's products are at most a few hundred rows by a few hundred columns:
a second BLAS thread gains little on a quiet machine, and on a busy one its
spin-waiting makes epochs several times slower (see ``docs/performance.md``).
:func:`one_blas_thread` sets every BLAS library that threadpoolctl finds to one
thread for the duration of a block (about 3 us; ``threadpool_limits`` would scan
the loaded libraries each time, about 1 ms). Entering it from several threads at
once is safe: see :func:`one_blas_thread`.
"""

import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_state = {"libraries": None, "holder": None}


def _blas_libraries():
    if _state["libraries"] is None:
        _state["libraries"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _state["libraries"]


@contextmanager
def one_blas_thread():
    """Run the block with the BLAS libraries at one thread, then restore them.

    Process-wide while it runs, like ``threadpoolctl.threadpool_limits``: BLAS
    calls from other threads in the meantime also use one thread. The first
    block to enter sets the limit and restores it when it leaves; blocks entered
    in other threads meanwhile change nothing (OpenBLAS ignores a thread count
    raised by another thread than the one that lowered it).
    """
    with _lock:
        holder = _state["holder"] is None
        if holder:
            saved = []
            for library in _blas_libraries():
                threads = library.get_num_threads()
                if threads is not None and threads > 1:
                    library.set_num_threads(1)
                    saved.append((library, threads))
            _state["holder"] = saved
    try:
        yield
    finally:
        if holder:
            with _lock:
                for library, threads in _state["holder"]:
                    library.set_num_threads(threads)
                _state["holder"] = None
