"""Accuracy against model size: dense, low rank, low rank + sparse, + int8.

The shape of the paper's compression table (Kusupati et al., 2018), on the
bundled digits read as sequences (8 rows of 8 pixels; first half to train,
second half to test). Every row trains the same FastGRNN (hidden size 64, Adam,
``--epochs`` full epochs: the stopping rule is off so that each row gets the
same budget) over the same seeds; the int8 row quantises the sparse models of
the row above. Sizes are counted as docs/design.md ("Model size") says.

Run: ``python benchmarks/bench_compression.py [--seeds 5] [--epochs 100]``.
Prints a Markdown table, then whether the target holds: at most 2 points of
accuracy lost from dense to low rank + sparse + int8, at least 8x smaller.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

HIDDEN_SIZE = 64
ROWS = {
    "dense": {},
    "low rank (U rank 16)": {"u_rank": 16},
    "low rank + sparse (30% of W, U1, U2)": {"u_rank": 16, "sparsity_w": 0.3, "sparsity_u": 0.3},
}
INT8_ROW = "low rank + sparse + int8"


def run(seeds, epochs):
    X, y = load_digits_sequences(dtype=np.float32)
    X_train, X_test, y_train, y_test = split_halves(X, y)
    results = {name: [] for name in [*ROWS, INT8_ROW]}
    sizes, nonzeros, seconds = {}, {}, {name: 0.0 for name in ROWS}
    for seed in range(seeds):
        for name, params in ROWS.items():
            clf = FastGRNNClassifier(
                HIDDEN_SIZE, max_iter=epochs, n_iter_no_change=epochs, random_state=seed,
                **params,
            )
            start = time.perf_counter()
            clf.fit(X_train, y_train)
            seconds[name] += time.perf_counter() - start
            results[name].append(clf.score(X_test, y_test))
            sizes[name] = clf.model_size_bytes_
            nonzeros[name] = sum(int(np.count_nonzero(v)) for v in clf.coefs_.values())
        q = quantize(clf, X_train)
        results[INT8_ROW].append(q.score(X_test, y_test))
        sizes[INT8_ROW] = q.model_size_bytes_
        nonzeros[INT8_ROW] = sum(int(np.count_nonzero(v)) for v in q.weights_.values()) + 2
    return results, sizes, nonzeros, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    # one BLAS thread: faster for these small matrices (and fair to every row)
    with threadpool_limits(1):
        results, sizes, nonzeros, seconds = run(args.seeds, args.epochs)
    dense = sizes["dense"]
    print(f"digits as sequences, hidden size {HIDDEN_SIZE}, {args.epochs} epochs, "
          f"{args.seeds} seeds (mean +- std of test accuracy)\n")
    print("| model | test accuracy | non-zeros | size (KB) | smaller than dense |")
    print("|---|---|---|---|---|")
    for name, scores in results.items():
        print(f"| {name} | {np.mean(scores):.4f} +- {np.std(scores):.4f} | {nonzeros[name]} "
              f"| {sizes[name] / 1024:.2f} | {dense / sizes[name]:.1f}x |")
    lost = np.mean(results["dense"]) - np.mean(results[INT8_ROW])
    ratio = dense / sizes[INT8_ROW]
    print("\nper-seed accuracy: " + "; ".join(
        f"{name}: {', '.join(f'{s:.3f}' for s in scores)}" for name, scores in results.items()))
    print("training seconds per fit: " + ", ".join(
        f"{name}: {t / args.seeds:.1f}" for name, t in seconds.items()))
    verdict = "met" if lost <= 0.02 and ratio >= 8 else "NOT met"
    print(f"\ntarget (<= 2 points lost, >= 8x smaller): {verdict}: "
          f"{100 * lost:+.2f} points lost, {ratio:.1f}x smaller")


if __name__ == "__main__":
    main()
