"""FastGRNNRegressor: it learns sequence targets of any scale, one output or several,
and keeps the training semantics of the classifier (partial_fit, warm_start,
early stopping, padding, distillation from a teacher's predictions)."""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score

from sklearn_fastgrnn import FastGRNNRegressor

from .conftest import assert_same_coefs


def sums(rng, n=200, T=12, d=2):
    """The target is a weighted sum over time of the channels: a memory task."""
    X = rng.standard_normal((n, T, d))
    y = X[:, :, 0].sum(axis=1) - 0.5 * X[:, -3:, 1].sum(axis=1)
    return X, y


def small(**params):
    return FastGRNNRegressor(hidden_size=8, random_state=0, **params)


def test_it_learns_a_sum_over_time(rng):
    X, y = sums(rng, n=400)
    reg = FastGRNNRegressor(random_state=0).fit(X[:300], y[:300])
    assert reg.score(X[300:], y[300:]) > 0.9
    assert reg.predict(X[:5]).shape == (5,)
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1


def test_targets_of_any_scale_train_alike(rng):
    """Training standardises y: a * y + b gives a * predictions + b, to rounding."""
    X, y = sums(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = small(max_iter=20, dtype="float64").fit(X, y)
        scaled = small(max_iter=20, dtype="float64").fit(X, 5000.0 * y + 1e6)
    # to the float32 rounding of the map (1e6 is held to 6e-8 of itself, 0.06),
    # which 20 epochs of training carry a little further: 1e-7 of 1e6 is 2e-5
    # of y's spread
    np.testing.assert_allclose(
        scaled.predict(X), 5000.0 * plain.predict(X) + 1e6, rtol=1e-7, atol=0
    )
    # the standardised targets differ by the map's float32 rounding (6e-8), which
    # Adam's 20 epochs grow to a few 1e-6 of the loss; a wrong map is off by O(1)
    assert scaled.loss_curve_ == pytest.approx(plain.loss_curve_, rel=1e-5)


def test_several_outputs(rng):
    X, y = sums(rng, n=300)
    Y = np.column_stack([y, -2 * y + 3, X[:, 0, 0]])
    reg = FastGRNNRegressor(random_state=0).fit(X[:250], Y[:250])
    assert reg.predict(X[250:]).shape == (50, 3) and reg.n_outputs_ == 3
    assert r2_score(Y[250:], reg.predict(X[250:])) > 0.8
    # a (n, 1) y is one output, predicted as a 1D array (as MLPRegressor does)
    one = small(max_iter=2).fit(X, y[:, None])
    assert one.predict(X).shape == (300,)


def test_partial_fit_continues_exactly_after_joblib_round_trip(rng, tmp_path):
    X, y = sums(rng, n=60)
    straight, resumed = small(), small()
    for reg in (straight, resumed):
        reg.partial_fit(X, 100 * y)
    joblib.dump(resumed, tmp_path / "r.joblib")
    resumed = joblib.load(tmp_path / "r.joblib")
    straight.partial_fit(X, 100 * y)
    resumed.partial_fit(X, 100 * y)
    assert_same_coefs(straight, resumed)


def test_warm_start_continues_exactly_through_the_folded_target_map(rng):
    X, y = sums(rng, n=60)
    once = small(max_iter=5, tol=0).fit(X, 100 * y + 7)
    twice = small(max_iter=2, tol=0).fit(X, 100 * y + 7)
    twice.set_params(warm_start=True, max_iter=3).fit(X, 100 * y + 7)
    assert_same_coefs(once, twice)
    # coefs_ set by hand (as from a weights file): training resumes from them
    rebuilt = small(warm_start=True, max_iter=1)
    for name in ("coefs_", "n_features_in_", "n_timesteps_", "n_channels_", "n_outputs_",
                 "out_activation_", "change_channels_", "change_offsets_"):
        setattr(rebuilt, name, getattr(once, name))
    before = r2_score(100 * y + 7, rebuilt.predict(X))
    rebuilt.fit(X, 100 * y + 7)
    assert r2_score(100 * y + 7, rebuilt.predict(X)) > before - 0.05


def test_early_stopping_watches_the_validation_loss(rng):
    X, y = sums(rng, n=200)
    reg = small(max_iter=30, n_iter_no_change=5, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X[:150], y[:150], X_val=X[150:], y_val=y[150:])
    best = int(np.argmin([h["val_loss"] for h in reg.history_]))
    assert reg.best_epoch_ == best + 1
    # the validation score is R² of the validation set at that epoch
    assert reg.best_validation_score_ == reg.validation_scores_[best]
    assert -1 < reg.best_validation_score_ <= 1
    auto = small(max_iter=3, early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        auto.fit(X, y)
    assert len(auto.validation_scores_) == 3


def test_a_padded_sequence_predicts_what_the_unpadded_one_does(rng):
    X, y = sums(rng, n=80)
    X[::3, 8:] = np.nan  # every third sequence has 8 steps
    reg = small(max_iter=5).fit(X, np.nan_to_num(y))
    padded = reg.predict(X[:1])
    np.testing.assert_allclose(padded, reg.predict(X[:1, :8]), rtol=1e-6)


def test_poisson_predicts_positive_counts_and_refuses_negative_targets(rng):
    X, y = sums(rng, n=1200)
    rate = np.exp(0.3 * y)
    counts = rng.poisson(rate)
    reg = FastGRNNRegressor(loss="poisson", random_state=0, early_stopping=True)
    reg.fit(X[:1000], counts[:1000])
    assert reg.out_activation_ == "exp" and (reg.predict(X[1000:]) > 0).all()
    # the predictions follow the rate: R² against the noiseless rate
    assert r2_score(rate[1000:], reg.predict(X[1000:])) > 0.5
    with pytest.raises(ValueError, match="loss='poisson' needs non-negative y"):
        small(loss="poisson").fit(X, y)
    # a weighted fit needs a positive count of positive weight; a partial_fit
    # chunk of zero counts is ordinary streaming data
    with pytest.raises(ValueError, match="a positive y of positive sample_weight"):
        small(loss="poisson").fit(X, counts, sample_weight=np.where(counts > 0, 0.0, 1.0))
    reg.partial_fit(X[:3], np.zeros(3))


def test_partial_fit_one_sequence_at_a_time_learns_targets_of_any_scale(rng):
    """The first call's single target fixes no standardisation for good: the
    running statistics move the target map, and the weights follow it."""
    X, y = sums(rng, n=400)
    y = 300 * y + 1000
    reg = small(learning_rate="constant")
    for epoch in range(8):
        for i in range(300):
            reg.partial_fit(X[i : i + 1], y[i : i + 1])
    assert reg.score(X[300:], y[300:]) > 0.9
    np.testing.assert_allclose(reg._maps.output_offset, y[:300].mean(), rtol=0.1)


def test_nan_or_inf_targets_are_refused(rng):
    X, y = sums(rng, n=20)
    y[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small().fit(X, y)


def test_learning_nothing_warns_in_regression_terms(rng):
    X = rng.standard_normal((60, 5, 1))
    y = rng.standard_normal(60)  # unrelated to X
    with pytest.warns(ConvergenceWarning, match="no better than predicting the mean"):
        small(max_iter=1, learning_rate_init=1e-6).fit(X, y)


def test_distillation_from_a_teachers_predictions(rng):
    X, y = sums(rng, n=200)
    noisy = y + rng.standard_normal(len(y))
    alone = small(max_iter=40, tol=0)
    taught = small(max_iter=40, tol=0, distillation_alpha=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alone.fit(X[:150], noisy[:150])
        taught.fit(X[:150], noisy[:150], soft_targets=y[:150])  # a clean teacher
    assert taught.score(X[150:], y[150:]) > alone.score(X[150:], y[150:])
    with pytest.raises(ValueError, match="soft_targets has shape"):
        small().fit(X, y, soft_targets=np.zeros((200, 2)))


def test_changing_the_loss_or_the_outputs_cannot_continue(rng):
    X, y = sums(rng, n=30)
    reg = small(max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.partial_fit(X, np.abs(y))
    with pytest.raises(ValueError, match="trained with 'squared_error'"):
        reg.set_params(loss="poisson").partial_fit(X, np.abs(y))
    with pytest.raises(ValueError, match="y has 2 outputs"):
        reg.set_params(loss="squared_error").partial_fit(X, np.column_stack([y, y]))
