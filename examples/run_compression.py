"""Make a FastGRNN tiny: low rank, sparse, int8, then C code
=========================================================

Trains the same FastGRNN three times on the bundled digits read as sequences
(dense; with a low-rank ``U``; low rank with 30% of ``W``, ``U1``, ``U2`` kept by
iterative hard thresholding), quantises the last one to int8, prints the
accuracy and size of each (the shape of the paper's compression table) and the
per-tensor summary of the int8 model, and writes it as a C header and source.
``benchmarks/bench_compression.py`` runs the same table over several seeds with
longer training.
"""

import tempfile
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.export.c import export_c

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits_sequences(dtype=np.float32)
X_train, X_test, y_train, y_test = split_halves(X, y)

# the same budget for every model: 40 full epochs (the stopping rule is off)
common = dict(hidden_size=64, max_iter=40, n_iter_no_change=40, random_state=0)
variants = {
    "dense": {},
    "low rank": {"u_rank": 16},
    "low rank + sparse": {"u_rank": 16, "sparsity_w": 0.3, "sparsity_u": 0.3},
}
rows = []
with threadpool_limits(1):  # one BLAS thread is faster for matrices this small
    for name, params in variants.items():
        clf = FastGRNNClassifier(**common, **params).fit(X_train, y_train)
        rows.append((name, clf.score(X_test, y_test), clf.model_size_bytes_))
    # quantise the sparse model; X_train picks the fixed-point format of the input
    int8 = quantize(clf, X_train)
    rows.append(("low rank + sparse + int8", int8.score(X_test, y_test), int8.model_size_bytes_))

dense_bytes = rows[0][2]
print(f"{'model':<26} {'accuracy':>8} {'KB':>6} {'smaller':>8}")
for name, accuracy, size in rows:
    print(f"{name:<26} {accuracy:>8.4f} {size / 1024:>6.2f} {dense_bytes / size:>7.1f}x")

print()
print(int8.summary())

# the int8 model as C99 code: integer arithmetic identical to int8.predict
directory = tempfile.mkdtemp(prefix="fastgrnn_c_")
header, source = export_c(int8, directory, name="digits")
print(f"\nwrote {header} and {source}")
print(f"compile with: gcc -std=c99 -O2 -c {source}")
