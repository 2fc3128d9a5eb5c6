"""Bad input: a clear error, and the estimator left exactly as it was."""

import pickle

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier

from .conftest import make_sequences


@pytest.fixture
def fitted(rng):
    X, y = make_sequences(rng, n=40, T=5, d=3)
    clf = FastGRNNClassifier(hidden_size=6, max_iter=3, random_state=0).fit(X, y)
    return clf, X, y


def _snapshot(clf):
    return pickle.dumps(clf.__dict__)


def _expect_error(clf, call, match, exc=ValueError):
    before = _snapshot(clf)
    with pytest.raises(exc, match=match):
        call()
    assert _snapshot(clf) == before, "the failed call changed the estimator"


def test_nan_inside_a_sequence(fitted):
    clf, X, y = fitted
    bad = X.copy()
    bad[7, 2, 1] = np.nan
    _expect_error(clf, lambda: clf.fit(bad, y), r"NaN in sample 7 at timestep 2")
    _expect_error(clf, lambda: clf.predict(bad), r"NaN in sample 7 at timestep 2")
    bad = X.copy()
    bad[3, 1, :] = np.nan  # a whole NaN step followed by real ones is not padding
    _expect_error(clf, lambda: clf.fit(bad, y), r"sample 3 at timestep 1")


def test_inf_anywhere(fitted):
    clf, X, y = fitted
    bad = X.copy()
    bad[5, 4, 0] = np.inf
    _expect_error(clf, lambda: clf.fit(bad, y), r"inf .*sample 5 at timestep 4")
    _expect_error(clf, lambda: clf.predict_proba(bad), r"inf")


def test_all_nan_sequence(fitted):
    clf, X, y = fitted
    bad = X.copy()
    bad[2] = np.nan
    _expect_error(clf, lambda: clf.fit(bad, y), r"Sample 2 .*no real timestep")


def test_wrong_channel_count_at_predict(fitted):
    clf, X, _ = fitted
    _expect_error(clf, lambda: clf.predict(X[:, :, :2]), r"2 channels .* fitted with 3")


def test_wrong_2d_width_at_predict(fitted):
    clf, X, _ = fitted
    X2 = X.reshape(len(X), -1)
    assert clf.predict(X2).shape == (len(X),)
    _expect_error(clf, lambda: clf.predict(X2[:, :12]), r"X has 12 features.* expecting 15")


def test_width_not_divisible_by_n_timesteps(rng):
    clf = FastGRNNClassifier(n_timesteps=4)
    X = rng.standard_normal((10, 10))
    y = np.arange(10) % 2
    _expect_error(clf, lambda: clf.fit(X, y), r"10 columns.*not divisible by n_timesteps=4")
    assert not hasattr(clf, "n_features_in_")


def test_one_class_only(fitted):
    clf, X, _ = fitted
    _expect_error(clf, lambda: clf.fit(X, np.zeros(len(X))), r"at least 2 classes")


def test_partial_fit_without_classes_the_first_time(rng):
    X, y = make_sequences(rng)
    clf = FastGRNNClassifier()
    _expect_error(clf, lambda: clf.partial_fit(X, y), r"classes must be passed")
    assert not hasattr(clf, "classes_")


def test_label_not_in_classes(rng):
    X, y = make_sequences(rng)
    clf = FastGRNNClassifier(hidden_size=4).partial_fit(X, y % 2, classes=[0, 1])
    _expect_error(clf, lambda: clf.partial_fit(X, y + 5), r"labels \[5, 6, 7\] .*not in classes_")
    # labels of another kind than the classes: strings for integer classes
    _expect_error(clf, lambda: clf.partial_fit(X, np.where(y % 2, "1", "0")),
                  r"labels \['0', '1'\] .*not in classes_")
    # floats equal to the classes are the classes, as np.unique sees them
    clf.partial_fit(X, (y % 2).astype(float))


@pytest.mark.parametrize(
    "weights, match",
    [(-np.ones(40), "Negative values in data passed to `sample_weight`"),
     (np.ones(39), r"sample_weight.shape == \(39,\), expected \(40,\)"),
     (np.zeros(40), "sum to zero")],
)
def test_bad_sample_weight(fitted, weights, match):
    clf, X, y = fitted
    _expect_error(clf, lambda: clf.fit(X, y, sample_weight=weights), match)


def test_unknown_nonlinearity(fitted):
    clf, X, y = fitted
    clf.set_params(gate_nonlinearity="softsign")
    with pytest.raises(ValueError, match="'gate_nonlinearity' parameter .* must be a str among"):
        clf.fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [({"w_rank": 4},
      r"w_rank=4 is larger than allowed.*min\(window_ \* n_channels, hidden_size\) = 3"),
     ({"u_rank": 7}, r"u_rank=7 is larger than allowed.*hidden_size = 6")],
)
def test_rank_larger_than_allowed(fitted, params, match):
    clf, X, y = fitted
    clf.set_params(**params)
    _expect_error(clf, lambda: clf.fit(X, y), match)


def test_warm_start_with_other_classes(fitted):
    clf, X, y = fitted
    clf.set_params(warm_start=True)
    _expect_error(clf, lambda: clf.fit(X, y + 1), r"warm_start can only continue")


def test_class_weight_balanced_in_partial_fit(rng):
    X, y = make_sequences(rng)
    clf = FastGRNNClassifier(class_weight="balanced")
    _expect_error(clf, lambda: clf.partial_fit(X, y, classes=[0, 1, 2]), "partial_fit")
