import numpy as np
import pytest

from sklearn_fastgrnn import _training as training_module


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def make_sequences(rng, n=40, T=6, d=3, n_classes=3, dtype=np.float64):
    """Learnable toy sequences: the class is the sign pattern of a channel sum."""
    X = rng.standard_normal((n, T, d)).astype(dtype)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int) + (X[:, -1, d - 1] > 0.5)
    return X, y % n_classes


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
