"""The regression suite: real sets bundled in PyPI packages, and synthetic long-range tasks.

Nothing here downloads anything. The real sets are every regression set the
installed aeon 1.6 and sktime 1.2 ship inside their packages (a ``.ts`` file
with ``@targetLabel true``; pyts ships none):

- Covid3Month (aeon ``load_covid_3month``; sktime ships the same files):
  140 training and 61 test series of 84 steps, a country's daily confirmed
  Covid-19 cases (raw counts up to 20,341); the target is its death rate on
  1 April 2020 (0 to 0.18).
- CardanoSentiment (aeon ``load_cardano_sentiment``): 74 training and 33 test
  series of 24 hourly steps, 2 channels (close price in USD, traded volume up
  to 527,377); the target is the day's normalised sentiment score (-0.49 to
  0.98).
- Tecator (sktime ``load_tecator``): 172 training and 43 test near-infrared
  absorbance spectra of 100 wavelengths (read as 100 steps); the target is the
  meat's fat content in percent (0.9 to 49.1).

The synthetic tasks are generated from a seed (the data seed is 0 in the
benchmark; the models' seeds vary):

- ``adding_regression``: the adding problem (Hochreiter and Schmidhuber 1997;
  Le et al. 2015) as regression: channel 0 holds U(0, 1) values, channel 1
  marks one step in the first half and one in the second half; the target is
  the sum of the two marked values. Predicting the training mean gives a test RMSE of 0.40.
- ``delayed_sum``: channel 0 holds N(0, 1) values throughout, the other
  channels N(0, 1) noise; the target is the mean of channel 0 over the fixed
  window of steps ``[start, stop)`` (T/4 to T/2) times ``sqrt(stop - start)``
  (unit variance). No channel marks the window: a recurrent model must keep
  time to know which steps to add, and then hold the sum over the last half
  of the sequence. The target is a linear function of the flattened input,
  so Ridge on it is the ceiling (R² 1).

Every loader returns ``(X_train, y_train, X_test, y_test)``: float32 ``X`` of
shape ``(n, T, d)`` (NaN-padded at the end if lengths varied; none of these
sets does), z-scored per channel from the training part by default
(``suite.py``'s rule; ``scale=False`` for the values as they are), and
float64 ``y`` of shape ``(n,)``.
"""

import numpy as np
from suite import _finish, _pad_to


def _aeon(loader):
    parts = []
    for split in ("train", "test"):
        X, y = loader(split=split)
        parts.append((np.asarray(X, dtype=float).transpose(0, 2, 1), np.asarray(y, dtype=float)))
    return parts


def _covid():
    from aeon.datasets import load_covid_3month

    return _aeon(load_covid_3month)


def _cardano():
    from aeon.datasets import load_cardano_sentiment

    return _aeon(load_cardano_sentiment)


def _tecator():
    from sktime.datasets import load_tecator

    parts = []
    for split in ("train", "test"):
        X, y = load_tecator(split=split, return_type="numpy3D")
        parts.append((np.asarray(X, dtype=float).transpose(0, 2, 1), np.asarray(y, dtype=float)))
    return parts


# Every regression set aeon 1.6, sktime 1.2 and pyts 0.14 ship inside their
# packages: name -> (package read from, loader of its bundled files).
SOURCES = {
    "Covid3Month": ("aeon", _covid),
    "CardanoSentiment": ("aeon", _cardano),
    "Tecator": ("sktime", _tecator),
}
REAL = list(SOURCES)


def real(name, scale=True):
    """One real set by name (see :data:`REAL`), its default train/test split."""
    if name not in SOURCES:
        raise ValueError(f"unknown real dataset {name!r}; expected one of {REAL}")
    (X_train, y_train), (X_test, y_test) = SOURCES[name][1]()
    T = max(X_train.shape[1], X_test.shape[1])  # one width for the flat baselines
    X_train, X_test = (_pad_to(X, T) for X in (X_train, X_test))
    return _finish(X_train, y_train.astype(float), X_test, y_test.astype(float), scale)


# ---------------------------------------------------------------- synthetic
def adding_regression(T, n_train=2000, n_test=1000, seed=0, scale=True):
    """The adding problem as regression: the sum of the two marked values."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    values = rng.uniform(0, 1, (n, T))
    marks = np.zeros((n, T))
    rows = np.arange(n)
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return _split(np.stack([values, marks], axis=2), y, n_train, scale)


def delayed_sum(T=200, start=None, stop=None, n_noise=2, n_train=2000, n_test=1000, seed=0,
                scale=True):
    """Channel 0 summed over the unmarked window ``[start, stop)`` (T/4 to T/2 by default)."""
    start = T // 4 if start is None else start
    stop = T // 2 if stop is None else stop
    if not 0 <= start < stop <= T:
        raise ValueError(f"need 0 <= start < stop <= T, got {start}, {stop}, {T}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    X = rng.standard_normal((n, T, 1 + n_noise))
    y = X[:, start:stop, 0].sum(axis=1) / np.sqrt(stop - start)
    return _split(X, y, n_train, scale)


def _split(X, y, n_train, scale):
    return _finish(X[:n_train], y[:n_train], X[n_train:], y[n_train:], scale)


SYNTHETIC = {
    "adding-100": lambda scale: adding_regression(100, scale=scale),
    "adding-400": lambda scale: adding_regression(400, scale=scale),
    "delayed-sum-200": lambda scale: delayed_sum(200, scale=scale),
}
NAMES = REAL + list(SYNTHETIC)


def load(name, scale=True):
    """Any set of the suite by name; ``scale=False`` for the same split unscaled."""
    return SYNTHETIC[name](scale) if name in SYNTHETIC else real(name, scale)
