"""Fitted models answer concurrent prediction calls as serial ones."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline, pad_sequences

N_THREADS = 8
ROUNDS = 2


def variable_length_digits(dtype):
    """1,797 digit sequences cut to random lengths 2-8, NaN-padded."""
    X, y = load_digits_sequences(dtype=dtype)
    lengths = np.random.default_rng(1).integers(2, 9, len(X))
    return pad_sequences([x[:t] for x, t in zip(X, lengths)], dtype=dtype), y


def workloads(X):
    """Inputs of different sizes and lengths, so threads run different code paths.

    The largest crosses the 1,024-sequence prediction chunk; single sequences
    of each length run without padding.
    """
    loads = [X[:1100], X[1100:1400], X[1400:1500, :5]]
    loads += [X[i:i + 1, :t] for i, t in [(0, 2), (1, 5), (2, 8)]]
    return loads


@pytest.mark.parametrize(
    "model, dtype",
    [
        (FastGRNNClassifier(hidden_size=16, max_iter=3, random_state=0), np.float64),
        (
            FastGRNNClassifier(hidden_size=12, w_rank=4, u_rank=6, max_iter=3, random_state=0),
            np.float32,
        ),
        (make_fastgrnn_pipeline("sequence", hidden_size=8, max_iter=3, random_state=0), np.float64),
    ],
    ids=["full-rank-float64", "low-rank-float32", "pipeline"],
)
def test_concurrent_predictions_equal_serial(model, dtype):
    X, y = variable_length_digits(dtype)
    model.fit(X[:600], y[:600])
    loads = workloads(X)
    methods = ["predict", "predict_proba", "decision_function"]
    serial = {(m, k): getattr(model, m)(load) for m in methods for k, load in enumerate(loads)}

    start = threading.Barrier(N_THREADS)

    def worker(thread):
        start.wait()  # all threads predict at the same time
        results = []
        for r in range(ROUNDS):
            for j in range(len(methods) * len(loads)):
                m, k = methods[(thread + r + j) % len(methods)], (thread + j) % len(loads)
                results.append(((m, k), getattr(model, m)(loads[k])))
        return results

    with ThreadPoolExecutor(N_THREADS) as pool:
        outputs = list(pool.map(worker, range(N_THREADS)))
    checked = 0
    for results in outputs:
        for key, result in results:
            assert result.dtype == serial[key].dtype
            assert_array_equal(result, serial[key], err_msg=f"{key} differs from serial")
            checked += 1
    assert checked == N_THREADS * ROUNDS * len(methods) * len(loads)
