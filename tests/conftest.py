import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import _training as training_module
from sklearn_fastgrnn._build import find_compiler
from sklearn_fastgrnn._compiled_cell import StepRows

#: Skips a test that needs a C compiler (the compiled engine, the C exports)
#: where none is found: the rest of the suite runs without one.
needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (set CC or install gcc)")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def make_sequences(rng, n=40, T=6, d=3, n_classes=3, dtype=np.float64):
    """Learnable toy sequences: the class is the sign pattern of a channel sum."""
    X = rng.standard_normal((n, T, d)).astype(dtype)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int) + (X[:, -1, d - 1] > 0.5)
    return X, y % n_classes


# the tasks of the estimators: every export path is tested on each
TASKS = ("classification", "multilabel", "regression", "poisson")


def task_model(rng, task, n=40, T=7, d=3, hidden_size=6, max_iter=6, **params):
    """A small model of ``task`` fitted on toy sequences (channel 0 wider and off
    centre), and its input ``X``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor

    X, y = make_sequences(rng, n=n, T=T, d=d)
    X[:, :, 0] = 3 * X[:, :, 0] + 10
    if task == "multilabel":
        y = np.stack([y == 0, y == 1, X[:, -1, 1] > 0], axis=1).astype(int)
    elif task in ("regression", "poisson"):
        y = np.round(np.abs(np.stack([X[:, :, 1].sum(axis=1), X[:, -1, 2]], axis=1)) * 3)
    if task == "poisson":
        params["loss"] = "poisson"
    classifier = task in ("classification", "multilabel")
    estimator = FastGRNNClassifier if classifier else FastGRNNRegressor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(hidden_size, max_iter=max_iter, random_state=0, **params).fit(X, y)
    return model, X


def padded_model(estimator, T=17, d=2, **params):
    """``estimator`` (a class, with ``params``; hidden_size 5 and 4 epochs unless
    given) fitted on 30 toy sequences of up to ``T`` timesteps, each NaN-padded
    after a random length; returns the model and the sequences."""
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=30, T=T, d=d)
    X = pad(X, rng.integers(1, T + 1, len(X)))
    if estimator.__name__ == "FastGRNNRegressor":
        y = np.nan_to_num(X).sum(axis=(1, 2))
    params = {"hidden_size": 5, "max_iter": 4, "random_state": 0, "dtype": "float64",
              **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator(**params).fit(X, y), X


def plain_envelope(X, width):
    """Sequences ``X`` (n, T, d) with their envelope channels by the definition,
    in a plain loop without the package's helpers: each timestep's ``d``
    values, then the largest, then the smallest of each channel over the last
    ``width`` timesteps (those there are, at the start). NaN padding stays NaN;
    ``X``'s dtype."""
    n, T, d = X.shape
    out = np.full((n, T, 3 * d), np.nan, X.dtype)
    for i in range(n):
        for t in range(T):
            if np.isnan(X[i, t]).all():
                continue
            for c in range(d):
                recent = [X[i, u, c] for u in range(max(0, t - width + 1), t + 1)]
                out[i, t, c] = X[i, t, c]
                out[i, t, d + c] = max(recent)
                out[i, t, 2 * d + c] = min(recent)
    return out


def pad(X, lengths):
    """A float copy of ``X`` with each sequence NaN-padded after its length."""
    X = np.array(X, dtype=float)
    for i, length in enumerate(lengths):
        X[i, length:] = np.nan
    return X


def materialized(batch):
    """A training batch as the time-major array (T, B, d + 1) it stands for:
    the array itself, or the steps a StepRows reads, beside a column of ones."""
    if not isinstance(batch, StepRows):
        return batch
    T, B, d1 = batch.shape
    flat = batch.data.ravel()
    out = np.ones((T, B, d1), batch.data.dtype)
    for b in range(B):
        for t in range(T):
            out[t, b, :-1] = flat[batch.bases[b] + t * batch.step:][:d1 - 1]
    return out


def assert_same_coefs(a, b):
    """The same tensors, bit for bit: two fitted models or two ``coefs_`` dicts."""
    a, b = getattr(a, "coefs_", a), getattr(b, "coefs_", b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def press_ctrl_c_in_epoch(monkeypatch, epoch):
    """Make the ``epoch``-th training epoch from now on raise KeyboardInterrupt."""
    real_epoch = training_module.TrainingRun.epoch
    calls = []

    def interrupted_epoch(self, *args):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_epoch(self, *args)

    monkeypatch.setattr(training_module.TrainingRun, "epoch", interrupted_epoch)


def set_dotted(meta, dotted, value):
    """Set ``meta["a"][0]["b"]`` for ``dotted="a.0.b"``; ``value=KeyError`` deletes it."""
    *parents, last = dotted.split(".")
    node = meta
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
