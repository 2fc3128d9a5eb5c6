"""One training epoch with 1 or 2 BLAS threads, on a quiet CPU and beside a busy process.

For each of the 12 shapes of ``bench_epoch.py`` (n = 4096 float32 sequences,
``FastGRNNClassifier(hidden_size=H, batch_size=B).partial_fit``), plus larger
ones with ``--large``, the script times one epoch with the BLAS libraries set to
1 and to 2 threads (``threadpoolctl.threadpool_limits``, outside the timed call),
first on the machine as it is ("quiet"), then while a busy process it starts
itself (a Python loop spinning on one core) competes for the CPU ("busy"); it
stops that process before the next shape. Runs of 1 and 2 threads are
interleaved, each after a 0.25 s sleep; the table gives medians and the ratios
within one run.

The estimator itself limits BLAS to one thread during ``fit``/``partial_fit``
when ``sklearn_fastgrnn._threads`` is wired into it; then both columns measure
one thread (``--show-default`` adds the library default as a third column).

``--engines`` instead times the compiled engine (``bench_epoch.py``'s mini-batch
loop through ``CompiledEngine``) at the seven shapes of issue 17 with each batch's
rows split over 1 and 2 threads (each thread runs the whole time loop over its
blocks of rows; ctypes releases the GIL), quiet and beside the busy process.

Run ``python benchmarks/bench_threads.py`` (about 5 minutes on 2 cores) or
``--quick`` for 2 shapes.
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from bench_epoch import (  # the same 12 shapes  # the same shapes
    ENGINE_SHAPES,
    FULL_SHAPES,
    N_CLASSES,
    N_SAMPLES,
    QUICK_ENGINE_SHAPES,
    SLEEP,
    VARIABLE_LENGTH,
    EngineEpoch,
    make_engine_data,
    timed_epoch,
)
from threadpoolctl import threadpool_limits

from sklearn_fastgrnn import FastGRNNClassifier

LARGE_SHAPES = [(32, 4, 128, 256), (32, 4, 256, 256), (32, 4, 256, 1024)]
QUICK_SHAPES = [(8, 8, 16, 32), (32, 4, 64, 256)]
BUSY_LOOP = "while True:\n    pass\n"


def make_data(T, d, n=N_SAMPLES, seed=0):
    """Random float32 sequences (n, T, d) and labels in [0, N_CLASSES)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, T, d), dtype=np.float32), rng.integers(0, N_CLASSES, n)


def epoch(X, y, H, B):
    """One epoch of a fresh estimator (setup included, as in bench_epoch.py)."""
    FastGRNNClassifier(hidden_size=H, batch_size=B, random_state=0).partial_fit(
        X, y, classes=np.arange(N_CLASSES))


def timed(threads, X, y, H, B):
    """Seconds of one epoch with ``threads`` BLAS threads (None: library default)."""
    with threadpool_limits(threads, user_api="blas"):
        time.sleep(SLEEP)
        start = time.perf_counter()
        epoch(X, y, H, B)
        return time.perf_counter() - start


class BusyProcess:
    """A child Python process spinning on one core while the block runs."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)  # let it start spinning
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()


def bench(shapes, repeats, settings):
    """Print the table; returns the worst busy / quiet ratio of 1 thread."""
    names = [str(s) if s else "default" for s in settings]
    print(f"One epoch, n={N_SAMPLES}, float32; median of {repeats} interleaved runs (ms); "
          "quiet = the machine as it is, busy = plus one spinning process")
    cols = [f"{w} {n}" for w in ("quiet", "busy") for n in names]
    header = (f"{'T':>4} {'d':>2} {'H':>3} {'B':>4} | " + " ".join(f"{c:>10}" for c in cols)
              + " | " + " ".join(f"{'busy/quiet ' + n:>15}" for n in names)
              + f" | {'1/2 quiet':>9} {'1/2 busy':>9}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for T, d, H, B in shapes:
        X, y = make_data(T, d)
        med = {}
        for load in ("quiet", "busy"):
            context = BusyProcess() if load == "busy" else _Nothing()
            with context:
                for s in settings:  # warm-up
                    timed(s, X, y, H, B)
                times = {s: [] for s in settings}
                for _ in range(repeats):
                    for s in settings:
                        times[s].append(timed(s, X, y, H, B))
            for s in settings:
                med[load, s] = statistics.median(times[s])
        ratios = [med["busy", s] / med["quiet", s] for s in settings]
        worst = max(worst, ratios[settings.index(1)])
        print(f"{T:>4} {d:>2} {H:>3} {B:>4} | "
              + " ".join(f"{1e3 * med[w, s]:10.1f}" for w in ("quiet", "busy") for s in settings)
              + " | " + " ".join(f"{r:15.2f}" for r in ratios)
              + f" | {med['quiet', 1] / med['quiet', 2]:9.2f} "
              f"{med['busy', 1] / med['busy', 2]:9.2f}", flush=True)
    print(f"worst busy/quiet with 1 thread: {worst:.2f} (target <= 1.5: "
          f"{'met' if worst <= 1.5 else 'MISSED'})")
    return worst


def bench_engine_threads(shapes, repeats):
    """Print the compiled engine's epoch with a batch split over 1 and 2 threads,
    quiet and beside a busy process; returns the best 1 / 2 ratio seen."""
    print(f"Compiled engine, one epoch (mini-batch loop), float32; median of {repeats} "
          "interleaved runs (ms); quiet = the machine as it is, busy = plus one "
          "spinning process")
    header = (f"{'n':>6} {'T':>5} {'d':>2} {'H':>3} {'B':>3} | {'quiet 1':>8} {'quiet 2':>8} "
              f"{'busy 1':>8} {'busy 2':>8} | {'1/2 quiet':>9} {'1/2 busy':>9}")
    print(header)
    print("-" * len(header))
    best = 0.0
    for shape in shapes:
        n, T, d, H, B = shape
        X, y, lengths = make_engine_data(n, T, d, VARIABLE_LENGTH.get(shape))
        med = {}
        for load in ("quiet", "busy"):
            with BusyProcess() if load == "busy" else _Nothing():
                for threads in (1, 2):  # warm-up
                    EngineEpoch("compiled", X, y, lengths, H, B, n_threads=threads).run()
                times = {1: [], 2: []}
                for _ in range(repeats):
                    for threads in (1, 2):
                        times[threads].append(
                            timed_epoch("compiled", X, y, lengths, H, B, n_threads=threads))
            for threads in (1, 2):
                med[load, threads] = statistics.median(times[threads])
        ratios = [med[load, 1] / med[load, 2] for load in ("quiet", "busy")]
        best = max(best, *ratios)
        print(f"{n:>6} {T:>5} {d:>2} {H:>3} {B:>3} | "
              + " ".join(f"{1e3 * med[w, t]:8.1f}" for w in ("quiet", "busy") for t in (1, 2))
              + f" | {ratios[0]:9.2f} {ratios[1]:9.2f}", flush=True)
    print(f"largest 1-thread / 2-thread time: {best:.2f} (above 1: two threads faster)")
    return best


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    """Command line: see the module docstring and --help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 shapes, 3 repeats")
    parser.add_argument("--large", action="store_true",
                        help="also H = 128 and 256, where threads may pay")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (quick 3)")
    parser.add_argument("--show-default", action="store_true",
                        help="also time the BLAS library's default thread count")
    parser.add_argument("--engines", action="store_true",
                        help="the compiled engine with a batch over 1 and 2 threads")
    args = parser.parse_args()
    if args.engines:
        bench_engine_threads(QUICK_ENGINE_SHAPES if args.quick else ENGINE_SHAPES,
                             args.repeats or (3 if args.quick else 5))
        return
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES + (LARGE_SHAPES if args.large else [])
    settings = [1, 2] + ([None] if args.show_default else [])
    bench(shapes, args.repeats or (3 if args.quick else 5), settings)


if __name__ == "__main__":
    main()
