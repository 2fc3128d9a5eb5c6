"""
Make a FastGRNN tiny: accuracy against size
===========================================

Trains the same FastGRNN three times on the bundled digits read as sequences
(dense; with a low-rank ``U``; low rank with 30% of ``W``, ``U1``, ``U2`` kept by
iterative hard thresholding), quantises each one to int8 with
:func:`sklearn_fastgrnn.compression.quantize`, prints the accuracy and size of
every model (``model_size_bytes_``, the shape of the paper's compression table)
and the per-tensor summary of the smallest, plots test accuracy against
kilobytes, and writes the smallest model as C code.
``benchmarks/bench_compression.py`` runs the same table over several seeds with
longer training.
"""

import tempfile
import warnings

import matplotlib.pyplot as plt
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
rows = []  # (name, accuracy, bytes, int8?)
with threadpool_limits(1):  # one BLAS thread is faster for matrices this small
    for name, params in variants.items():
        clf = FastGRNNClassifier(**common, **params).fit(X_train, y_train)
        rows.append((name, clf.score(X_test, y_test), clf.model_size_bytes_, False))
        # post-training int8; X_train picks the fixed-point format of the input
        int8 = quantize(clf, X_train)
        rows.append((name + " + int8", int8.score(X_test, y_test), int8.model_size_bytes_, True))

dense_bytes = rows[0][2]
print(f"{'model':<26} {'accuracy':>8} {'KB':>6} {'smaller':>8}")
for name, accuracy, size, _ in rows:
    print(f"{name:<26} {accuracy:>8.4f} {size / 1024:>6.2f} {dense_bytes / size:>7.1f}x")

# %%
# Accuracy against size
# ---------------------
# Each float32 model (circle) is joined to its int8 version (square): int8
# divides the bytes of every tensor by about 4 and changes few predictions.
# The x axis is logarithmic; KB are bytes / 1024.

fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
for i, (name, _) in enumerate(variants.items()):
    (_, acc32, kb32, _), (_, acc8, kb8, _) = rows[2 * i], rows[2 * i + 1]
    color = f"C{i}"
    ax.plot([kb32 / 1024, kb8 / 1024], [acc32, acc8], color=color, alpha=0.5)
    ax.plot(kb32 / 1024, acc32, "o", color=color, label=f"{name} (float32)")
    ax.plot(kb8 / 1024, acc8, "s", color=color, label=f"{name} + int8")
ax.set_xscale("log")
ax.margins(x=0.08, y=0.15)  # no marker on the frame
sizes = [row[2] / 1024 for row in rows]
ax.set_xticks([t for t in (1, 2, 3, 5, 10, 20, 50) if min(sizes) / 1.5 <= t <= max(sizes) * 1.5])
ax.xaxis.set_major_formatter("{x:g}")
ax.minorticks_off()
ax.set_xlabel("model size (KB)")
ax.set_ylabel("test accuracy")
ax.set_title("FastGRNN on digits: accuracy against size")
ax.grid(alpha=0.3, which="both")
# beside the axes, where it can hide no point
ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)

# %%
# The smallest model, tensor by tensor, and as C code
# ---------------------------------------------------

print()
print(int8.summary())

# the int8 model as C99 code: integer arithmetic identical to int8.predict
directory = tempfile.mkdtemp(prefix="fastgrnn_c_")
header, source = export_c(int8, directory, name="digits")
print(f"\nwrote {header} and {source}")
print(f"compile with: gcc -std=c99 -O2 -c {source}")
