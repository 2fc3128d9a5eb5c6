import numpy as np
import pytest


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
