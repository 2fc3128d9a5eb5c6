"""Clear errors from the estimator for what fuzzing found (hardening round 2).

Each test failed on release 0.1.0 with a raw exception (ZeroDivisionError,
KeyError, IndexError, OverflowError, NumPy's allocation message) or with
advice that did not apply.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor

from .conftest import make_sequences


def fitted(rng, **params):
    X, y = make_sequences(rng, n=30)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.partial_fit(X, y, classes=np.unique(y)), X, y


def test_validation_weights_summing_to_zero_are_a_clear_error(rng, monkeypatch):
    X, y = make_sequences(rng, n=30)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=2, early_stopping=True)
    with pytest.raises(ValueError, match="sample_weight_val sums to zero"):
        clf.fit(X[:20], y[:20], X_val=X[20:], y_val=y[20:], sample_weight_val=np.zeros(10))
    # the held-out part of the data weighs nothing: the split is the one thing
    # the test fixes, by holding out exactly the zero-weight sequences
    weights = np.ones(30)
    weights[:3] = 0.0
    monkeypatch.setattr(
        FastGRNNClassifier, "_split_validation",
        lambda self, targets, seed: (np.arange(3, 30), np.arange(3)),
    )
    with pytest.raises(ValueError, match="validation set whose sample weights are all zero"):
        clf.fit(X, y, sample_weight=weights)
    assert not hasattr(clf, "coefs_")


@pytest.mark.parametrize("param, value", [
    ("beta_1", 1.0),
    ("batch_size", float("inf")),
    ("gate_nonlinearity", "Sigmoid"),
    ("class_weight", [1]),
    ("learning_rate_init", -1.0),
])
def test_partial_fit_validates_parameters_set_after_the_first_call(rng, param, value):
    clf, X, y = fitted(rng)
    before = {k: v.copy() for k, v in clf.coefs_.items()}
    clf.set_params(**{param: value})
    with pytest.raises(InvalidParameterError, match=param):
        clf.partial_fit(X, y)
    for key, array in before.items():
        np.testing.assert_array_equal(clf.coefs_[key], array)


def test_prediction_names_a_misspelt_nonlinearity(rng):
    clf, X, _ = fitted(rng)
    clf.set_params(gate_nonlinearity="Sigmoid")
    with pytest.raises(InvalidParameterError, match="gate_nonlinearity.*'Sigmoid'"):
        clf.predict(X)


def test_a_relu_gate_that_diverges_gets_advice_about_relu(rng):
    X = rng.standard_normal((60, 10, 3)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    clf = FastGRNNClassifier(gate_nonlinearity="relu", random_state=0)
    with pytest.raises(ValueError, match="relu non-linearity is unbounded") as info:
        clf.fit(X, y)
    assert "gate_nonlinearity='sigmoid'" in str(info.value)


def test_outputs_that_overflow_at_prediction_warn_instead_of_a_silent_nan(rng):
    clf, X, _ = fitted(rng, gate_nonlinearity="relu", learning_rate_init=1e-4)
    long = 10 * rng.standard_normal((5, 200, X.shape[2]))
    with pytest.warns(UserWarning, match="hidden state overflowed for 5 of 5"):
        proba = clf.predict_proba(long)
    assert np.isnan(proba).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite outputs: no warning
        assert np.isfinite(clf.predict_proba(X)).all()


def test_damaged_weights_are_refused_instead_of_predicting_nan(rng):
    clf, X, _ = fitted(rng)
    clf.coefs_ = {**clf.coefs_, "V": clf.coefs_["V"] * np.nan}
    with pytest.raises(ValueError, match="coefs_\\['V'\\] holds NaN or infinity"):
        clf.predict_proba(X)


def test_float64_input_beyond_float32_names_the_overflow(rng):
    X, y = make_sequences(rng, n=20)
    X = X.astype(np.float64)
    X[3, 2, 0] = 1e39
    clf = FastGRNNClassifier(hidden_size=4, max_iter=2, scale_input=False)
    with pytest.raises(ValueError, match="up to 1e\\+39.*beyond the range of float32.*"
                                         "dtype='float64'"):
        clf.fit(X, y)
    # standardised in float64 first (the default), such input trains
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert np.isfinite(clf.set_params(scale_input=True).fit(X, y).predict_proba(X)).all()


@pytest.mark.parametrize("estimator", [FastGRNNClassifier, FastGRNNRegressor])
def test_a_channel_whose_spread_is_beyond_float32_is_refused_not_zeroed(rng, estimator):
    """The input map is capped at float32's range: a channel of 1e100-sized
    values standardises beyond it and is refused, where an uncapped map would
    fold into float32 weights of 0 for that channel (a model that ignores it)."""
    X, y = make_sequences(rng, n=20)
    X = X.astype(np.float64)
    X[:, :, 1] *= 1e100
    with pytest.raises(ValueError, match="beyond the range of float32.*dtype='float64'"):
        estimator(hidden_size=4, max_iter=2).fit(X, y)


def test_a_huge_hidden_size_is_refused_before_allocating(rng):
    X, y = make_sequences(rng, n=20)
    with pytest.raises(ValueError, match="hidden_size=1000000000000 gives a model of"):
        FastGRNNClassifier(hidden_size=10**12).fit(X, y)


def test_y_val_without_x_val_is_an_error(rng):
    X, y = make_sequences(rng, n=20)
    with pytest.raises(ValueError, match="y_val was given without X_val"):
        FastGRNNClassifier(hidden_size=4, max_iter=2).fit(X, y, y_val=y)
