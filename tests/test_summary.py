"""summary() names what a model outputs: classes, multilabel labels, or a
regressor's outputs and loss; and its readout and window."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor

from .conftest import make_sequences


def _first_line(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y).summary().splitlines()[0]


@pytest.mark.parametrize("make, target, first_line", [
    (lambda: FastGRNNClassifier(4, max_iter=1), "classes",
     "FastGRNNClassifier: sigmoid gate, tanh update, change channels, 3 classes"),
    (lambda: FastGRNNClassifier(4, max_iter=1, readout="mean", window=2), "labels",
     "FastGRNNClassifier: sigmoid gate, tanh update, change channels, mean readout, "
     "windows of 2 timesteps read in 2 phases, 2 labels (multilabel)"),
    (lambda: FastGRNNClassifier(4, max_iter=1, window=3, window_phases=1), "classes",
     "FastGRNNClassifier: sigmoid gate, tanh update, change channels, "
     "windows of 3 timesteps, 3 classes"),
    (lambda: FastGRNNRegressor(4, max_iter=1), "one",
     "FastGRNNRegressor: sigmoid gate, tanh update, change channels, 1 output "
     "(squared_error loss)"),
    (lambda: FastGRNNRegressor(4, max_iter=1, loss="poisson", readout="max",
                               update_nonlinearity="quant_tanh", change_channels=False),
     "two",
     "FastGRNNRegressor: sigmoid gate, quant_tanh update, max readout, 2 outputs "
     "(poisson loss)"),
])
def test_the_first_line_says_what_the_model_outputs(rng, make, target, first_line):
    X, y = make_sequences(rng, n=30)
    targets = {"classes": y, "labels": np.column_stack([y == 0, y == 1]).astype(int),
               "one": X[:, 0, 0], "two": np.column_stack([y, 2 * y + 1]).astype(float)}
    assert _first_line(make(), X, targets[target]) == first_line


def test_a_regressor_summary_counts_its_tensors(rng):
    X, _ = make_sequences(rng, n=30, d=2)
    reg = FastGRNNRegressor(4, max_iter=1, w_rank=1, random_state=0).fit(X, X[:, :, 0])
    lines = reg.summary().splitlines()
    assert [line.split()[0] for line in lines[2:-2]] == [*reg.coefs_, "change_offsets"]
    v_line = next(line for line in lines if line.split()[0] == "V")
    assert v_line.split()[1] == f"4x{X.shape[1]}"  # one output per timestep's target
    assert lines[-1] == f"model size: {reg.model_size_bytes_} bytes = " \
                        f"{reg.model_size_bytes_ / 1024:.2f} KB"
