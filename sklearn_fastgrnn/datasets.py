"""Bundled data: nothing here downloads anything."""

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["load_digits_sequences", "split_halves"]


def load_digits_sequences(*, dtype=np.float64):
    """scikit-learn's 8x8 digits read as sequences of 8 rows of 8 pixels.

    The 1,797 images ship with scikit-learn. Each image becomes a sequence of 8
    timesteps (its rows, top to bottom) of 8 channels (the pixels of a row),
    scaled from 0-16 to [0, 1].

    Parameters
    ----------
    dtype : numpy dtype, default=np.float64

    Returns
    -------
    X : ndarray of shape (1797, 8, 8)
    y : ndarray of shape (1797,)
        Digit labels 0-9.
    """
    digits = load_digits()
    X = (digits.images / 16.0).astype(dtype)
    return X, digits.target


def split_halves(X, y):
    """First half to train, second half to test (the digits benchmark split)."""
    half = len(X) // 2
    return X[:half], X[half:], y[:half], y[half:]
