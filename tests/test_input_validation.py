"""Bad input: a clear error, and the estimator left exactly as it was."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import unique_labels

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor

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
    _expect_error(clf, lambda: clf.partial_fit(X, y - 2), r"labels \[-2, -1\] .*not in classes_")
    # labels of another kind than the classes: strings for integer classes
    _expect_error(clf, lambda: clf.partial_fit(X, np.where(y % 2, "1", "0")),
                  r"labels \['0', '1'\] .*not in classes_")
    # floats equal to the classes are the classes, as np.unique sees them
    clf.partial_fit(X, (y % 2).astype(float))


def test_partial_fit_with_other_classes_later(rng):
    X, y = make_sequences(rng)
    clf = FastGRNNClassifier(hidden_size=4).partial_fit(X, y, classes=[2, 0, 1, 1])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    clf.partial_fit(X, y, classes=np.array([0, 1, 2], np.int8))  # the same classes
    _expect_error(clf, lambda: clf.partial_fit(X, y, classes=[0, 1, 2, 3]),
                  r"`classes=\[0, 1, 2, 3\]` is not the same as on last call")


@given(st.lists(st.integers(-300, 300), min_size=2, max_size=6, unique=True),
       st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, float, str]),
       st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_labels_of_any_kind_encode_as_scikit_learn_sorts_them(labels, kind, incremental, seed):
    """Integer labels (which skip scikit-learn's label checks), 0 to k - 1 among
    them (read as their own index), floats and strings: the same classes_ and
    class indices as unique_labels and searchsorted give."""
    rng = np.random.default_rng(seed)
    if kind in (np.uint8, np.uint64):
        labels = [abs(v) % 256 for v in labels]
    if seed % 3 == 0:  # 0, 1, ..., k - 1
        labels = list(range(len(labels)))
    labels = np.unique(np.array(labels).astype(kind))
    if len(labels) < 2:
        return
    y = labels[rng.integers(0, len(labels), 30)]
    y[:2] = labels[:2]
    clf = FastGRNNClassifier(hidden_size=3)
    classes = labels if incremental else None
    targets = clf._encode_targets(y, classes, incremental, resume=False)
    expected = unique_labels(labels if incremental else y)
    np.testing.assert_array_equal(clf.classes_, expected)
    assert clf.classes_.dtype == expected.dtype
    np.testing.assert_array_equal(targets, np.searchsorted(expected, y))
    assert targets.dtype == np.intp


def test_parameter_names_are_scikit_learns_per_class():
    """The names read once per class are what scikit-learn reads every time,
    also for a subclass with a parameter of its own."""
    class Wider(FastGRNNClassifier):
        def __init__(self, *args, extra=1):
            super().__init__(*args)
            self.extra = extra

    class Named(FastGRNNClassifier):
        def __init__(self, hidden_size=8, extra=2):
            super().__init__(hidden_size=hidden_size)
            self.extra = extra

    for estimator in (FastGRNNClassifier, FastGRNNRegressor, Named):
        assert estimator._get_param_names() == BaseEstimator._get_param_names.__func__(
            estimator)
    assert Named._get_param_names() == ["extra", "hidden_size"]
    assert Named().get_params() == {"extra": 2, "hidden_size": 8}
    with pytest.raises(RuntimeError, match="should always specify their parameters"):
        Wider._get_param_names()  # *args: scikit-learn's error, as before
    names = FastGRNNClassifier._get_param_names()
    names.append("changed")  # a copy: the cached names stay
    assert "changed" not in FastGRNNClassifier._get_param_names()


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
    [({"w_rank": 7},  # 3 channels, their changes and the changes' logarithms
      r"w_rank=7 is larger than allowed: W is \(9, 6\).*at most 6\."),
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
