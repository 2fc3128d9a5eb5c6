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
