"""The average of the weights over the epochs that ``fit`` keeps (``weight_averaging``)."""

import math
import warnings

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._averaging import WeightAverage

from .conftest import assert_same_coefs, make_sequences


def small(**params):
    # without change channels: with them, the short fits of these tests keep
    # their best epoch's weights instead of the average (the end rule), and
    # could not show how an average continues
    return FastGRNNClassifier(**{"hidden_size": 6, "random_state": 0, "tol": 0,
                                 "dtype": "float64", "learning_rate_init": 0.05,
                                 "change_channels": False, **params})


def fit_quietly(estimator, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y, **kwargs)


def test_the_average_weighs_each_epoch_by_decay_to_its_age():
    rng = np.random.default_rng(0)
    epochs = [rng.standard_normal(5) for _ in range(4)]
    average = WeightAverage(0.8)
    for n, flat in enumerate(epochs, start=1):
        got = average.update(flat)
        weights = [0.8 ** (n - i) for i in range(1, n + 1)]  # decay ** age
        expected = sum(w * e for w, e in zip(weights, epochs)) / sum(weights)
        np.testing.assert_allclose(got, expected, rtol=1e-14)
    np.testing.assert_array_equal(WeightAverage(0.9).update(epochs[0]), epochs[0])
    copy = average.as_dtype(np.float32)
    assert copy.weights.dtype == np.float32 and copy.decay == 0.8
    copy.update(epochs[0].astype(np.float32))
    np.testing.assert_array_equal(average.weights, got)  # the copy is its own
    average.reset()
    np.testing.assert_array_equal(average.update(epochs[2]), epochs[2])


@pytest.mark.parametrize("Estimator", [FastGRNNClassifier, FastGRNNRegressor])
def test_fit_keeps_the_average_of_the_epochs_weights(rng, Estimator):
    X, y = make_sequences(rng, n=60)
    params = {"hidden_size": 6, "random_state": 0, "tol": 0, "dtype": "float64",
              "learning_rate_init": 0.05}
    k, decay = 12, 0.7
    averaged = fit_quietly(Estimator(max_iter=k, weight_averaging=decay, **params), X, y)
    assert averaged.best_epoch_ == averaged.n_iter_ == k  # not a restored epoch
    assert averaged._kept_weights_text() == f"the average of the weights up to epoch {k}"
    # the optimiser's path does not depend on the average: its weights after
    # each epoch are those of partial_fit without one (whose maps stay put on
    # the same data)
    raw = Estimator(weight_averaging=0, **params)
    coefs = []
    for _ in range(k):
        raw.partial_fit(X, y, **({"classes": np.unique(y)} if hasattr(raw, "predict_proba")
                                 else {}))
        coefs.append({key: value.copy() for key, value in raw.coefs_.items()})
    assert raw.loss_curve_ == averaged.loss_curve_
    # coefs_ fold an affine map into the weights: the average of the folded
    # weights is the folded average
    ages = [decay ** (k - i) for i in range(1, k + 1)]
    for key, value in averaged.coefs_.items():
        expected = sum(w * c[key] for w, c in zip(ages, coefs)) / sum(ages)
        np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12, err_msg=key)
    assert not np.allclose(averaged.coefs_["U"], coefs[-1]["U"])


def test_weight_averaging_zero_keeps_the_last_weights(rng):
    X, y = make_sequences(rng, n=60)
    last = fit_quietly(small(max_iter=7, weight_averaging=0), X, y)
    inc = small(weight_averaging=0)
    for _ in range(7):
        inc.partial_fit(X, y, classes=np.unique(y))
    assert last.best_epoch_ == 7
    assert last._kept_weights_text() == "the weights of epoch 7"
    assert_same_coefs(last, inc)
    assert not hasattr(inc, "_average") or inc._average is None


def test_partial_fit_averages_over_its_calls_and_continues_after_a_round_trip(rng, tmp_path):
    X, y = make_sequences(rng, n=60)
    straight, resumed = small(), small()
    for clf in (straight, resumed):
        for _ in range(3):
            clf.partial_fit(X, y, classes=np.unique(y))
    joblib.dump(resumed, tmp_path / "m.joblib")
    resumed = joblib.load(tmp_path / "m.joblib")
    for clf in (straight, resumed):
        clf.partial_fit(X, y)
    assert_same_coefs(straight, resumed)
    assert_same_coefs(straight, fit_quietly(small(max_iter=4), X, y))


def test_warm_start_goes_on_from_the_optimisers_weights_and_the_average(rng):
    X, y = make_sequences(rng, n=60)
    once = fit_quietly(small(max_iter=9), X, y)
    twice = fit_quietly(small(max_iter=4), X, y)
    fit_quietly(twice.set_params(warm_start=True, max_iter=5), X, y)
    assert once.best_epoch_ == 9
    assert_same_coefs(once, twice)
    # another decay starts a new average from the weights the model holds
    other = fit_quietly(small(max_iter=4), X, y)
    start = {key: value.copy() for key, value in other.coefs_.items()}
    fit_quietly(other.set_params(warm_start=True, max_iter=1, weight_averaging=0), X, y)
    assert other._average is None
    assert not np.array_equal(other.coefs_["U"], start["U"])


def test_sparse_training_averages_from_the_frozen_support(rng):
    X, y = make_sequences(rng, n=60)
    clf = fit_quietly(small(max_iter=20, sparsity_w=0.5, sparsity_u=0.5), X, y)
    assert clf._average is not None  # the model holds an average ...
    for key in ("W", "U"):  # ... with the support's zeros
        assert np.count_nonzero(clf.coefs_[key]) <= math.ceil(0.5 * clf.coefs_[key].size)


def test_early_stopping_scores_and_restores_the_average(rng):
    X, y = make_sequences(rng, n=120)
    # long enough for the validation loss to rise (the input noise delays it)
    clf = fit_quietly(small(max_iter=40, early_stopping=True, n_iter_no_change=30), X, y)
    raw = fit_quietly(small(max_iter=40, early_stopping=True, n_iter_no_change=30,
                            weight_averaging=0), X, y)
    assert clf.loss_curve_ == raw.loss_curve_  # the same path ...
    assert clf.validation_scores_ != raw.validation_scores_  # ... other weights scored
    best = int(np.argmin([h["val_loss"] for h in clf.history_])) + 1
    assert clf.best_epoch_ == best < clf.n_iter_
    # the restored weights are the average up to that epoch
    short = fit_quietly(small(max_iter=best, early_stopping=True, n_iter_no_change=30), X, y)
    assert short.best_epoch_ == best
    assert_same_coefs(clf, short)


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_weight_averaging_outside_zero_to_one_is_refused(rng, value):
    X, y = make_sequences(rng)
    with pytest.raises(InvalidParameterError, match="weight_averaging"):
        small(weight_averaging=value).fit(X, y)
