"""One default training epoch on float64 input against float32 input (same data).

The default ``dtype="float32"`` trains in float32 whatever the input, so float64
input (NumPy's default) costs only the cast; ``dtype="float64"`` is shown for
reference. Interleaved repeats (A B C A B C ...), medians, ratios to the float32
input.

    python benchmarks/bench_dtype.py [--repeats 7]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier

SHAPES = [  # (n, T, d, H)
    (2048, 32, 4, 32),
    (2048, 128, 9, 64),
    (2048, 8, 8, 16),
]


def one_epoch(X, y, H, dtype):
    clf = FastGRNNClassifier(H, max_iter=1, random_state=0, dtype=dtype)
    time.sleep(0.25)  # let BLAS threads of the previous run settle
    start = time.perf_counter()
    clf.fit(X, y)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"{'shape (n, T, d, H)':22s} {'f32 in':>9s} {'f64 in':>9s} {'ratio':>6s} "
          f"{'dtype=f64':>10s} {'ratio':>6s}")
    for n, T, d, H in SHAPES:
        rng = np.random.default_rng(0)
        X64 = rng.standard_normal((n, T, d))
        y = (X64[:, :, 0].sum(axis=1) > 0).astype(int)
        X32 = X64.astype(np.float32)
        runs = {"f32": [], "f64": [], "exact": []}
        for _ in range(args.repeats):
            runs["f32"].append(one_epoch(X32, y, H, "float32"))
            runs["f64"].append(one_epoch(X64, y, H, "float32"))
            runs["exact"].append(one_epoch(X64, y, H, "float64"))
        med = {key: float(np.median(value)) for key, value in runs.items()}
        print(f"{str((n, T, d, H)):22s} {med['f32']:8.3f}s {med['f64']:8.3f}s "
              f"{med['f64'] / med['f32']:6.2f} {med['exact']:9.3f}s "
              f"{med['exact'] / med['f32']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
