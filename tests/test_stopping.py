"""The stopping rule, validation sets, initialisation and the diagnosis of a fit."""

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss

from sklearn_fastgrnn import FastGRNNClassifier, _optimizers
from sklearn_fastgrnn import _base as base_module
from sklearn_fastgrnn._cell import ParameterLayout, init_parameters
from sklearn_fastgrnn._stopping import PlateauMonitor, patience_epochs

from .conftest import assert_same_coefs, make_sequences


# ------------------------------------------------------------ PlateauMonitor
def test_plateau_monitor_counts_epochs_without_an_improvement_of_tol():
    monitor = PlateauMonitor(tol=0.1)
    assert monitor.update(1.0, 1)  # the first value is the best so far
    assert not monitor.update(0.95, 2)  # better, but by less than tol
    assert monitor.best == 0.95 and monitor.best_epoch == 2 and monitor.bad_epochs == 1
    assert not monitor.update(2.0, 3)
    assert monitor.plateaued(2) and not monitor.plateaued(3)
    assert monitor.update(0.5, 4)  # beats 0.95 by more than tol: counter reset
    assert monitor.bad_epochs == 0 and monitor.best_epoch == 4


def test_plateau_monitor_keeps_the_best_weights():
    monitor = PlateauMonitor(tol=0.0, keep_best=True)
    weights = np.zeros(3)
    monitor.update(-0.5, 1, weights)  # a score of 0.5, watched with its sign flipped
    weights += 1  # the monitor holds a copy, not a view
    monitor.update(-0.4, 2, weights)
    np.testing.assert_array_equal(monitor.best_weights, np.zeros(3))
    monitor.update(-0.7, 3, weights)
    np.testing.assert_array_equal(monitor.best_weights, np.ones(3))
    monitor.reset()
    assert monitor.best is None and monitor.best_weights is None


def test_patience_is_counted_in_epochs_but_at_least_in_steps():
    assert patience_epochs(10, 2, 500) == 250  # 50 sequences: two steps an epoch
    assert patience_epochs(10, 1000, 500) == 10  # big data: the epochs count
    assert patience_epochs(10, 3, 500) == 167


def test_a_plateau_shorter_than_the_minimum_steps_does_not_stop_training(rng):
    """tol=10: no epoch improves; training still runs the minimum number of steps."""
    X, y = make_sequences(rng, n=20)  # learnable: the loss leaves chance level at once
    clf = FastGRNNClassifier(hidden_size=4, tol=10.0, random_state=0,
                             learning_rate="constant").fit(X, y)
    steps_per_epoch = math.ceil(20 / 8)  # batch_size="auto" is 8 here
    patience = math.ceil(base_module.AUTO_MIN_PATIENCE_STEPS / steps_per_epoch)
    assert clf.n_iter_ == 1 + patience  # the first epoch sets the best
    assert clf.stop_reason_ == (
        f"stopped: no improvement of tol=10.0 for {patience} epochs "
        f"({patience * steps_per_epoch} optimiser steps)"
    )
    # an explicit n_iter_no_change keeps MLPClassifier's meaning: epochs
    quick = FastGRNNClassifier(hidden_size=4, tol=10.0, n_iter_no_change=5,
                               random_state=0, learning_rate="constant").fit(X, y)
    assert quick.n_iter_ == 6
    # an adaptive rate is divided twice, at each plateau, before it stops
    adaptive = FastGRNNClassifier(hidden_size=4, tol=10.0, n_iter_no_change=5,
                                  random_state=0, learning_rate="adaptive").fit(X, y)
    assert adaptive.n_iter_ == 16
    assert [h["event"] for h in adaptive.history_ if h["event"]] == [
        "learning rate reduced to 0.002", "learning rate reduced to 0.0004",
        "stopped: no improvement of tol=10.0 for 5 epochs (15 optimiser steps)",
    ]


def test_learning_rate_auto_is_adaptive_from_fifty_steps_an_epoch(rng):
    X, y = make_sequences(rng, n=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small_batches = FastGRNNClassifier(hidden_size=4, batch_size=2, max_iter=1).fit(X, y)
        # 10 a batch; without input noise (which anneals: test_input_noise.py)
        default = FastGRNNClassifier(hidden_size=4, max_iter=1, input_noise=0).fit(X, y)
    assert small_batches._schedule.kind == "adaptive"  # 50 steps an epoch
    assert not small_batches._schedule.tail
    assert default._schedule.kind == "constant"  # 10 steps an epoch


def test_while_the_loss_is_at_chance_level_the_patience_is_longer(rng):
    """Nothing to learn: the loss stays at chance, so 3,000 steps of patience."""
    X = np.zeros((20, 4, 2))
    y = np.r_[np.zeros(12, int), np.ones(8, int)]
    clf = FastGRNNClassifier(hidden_size=2, tol=10.0, random_state=0, learning_rate="constant")
    with pytest.warns(ConvergenceWarning, match="no better than always answering"):
        clf.fit(X, y)
    patience = math.ceil(base_module.AUTO_PLATEAU_PATIENCE_STEPS / 3)
    assert clf.n_iter_ == 1 + patience
    prior = np.array([0.6, 0.4])
    chance = -(prior * np.log(prior)).sum()
    assert min(clf.loss_curve_) > base_module.AUTO_PLATEAU_LEVEL * chance


def test_the_adaptive_rate_is_reduced_before_training_stops(rng):
    X, y = make_sequences(rng, n=20)
    clf = FastGRNNClassifier(
        hidden_size=4, tol=10.0, n_iter_no_change=3, learning_rate="adaptive",
        max_lr_reductions=2, random_state=0,
    ).fit(X, y)
    events = [(h["epoch"], h["event"]) for h in clf.history_ if h["event"]]
    assert events == [
        (4, "learning rate reduced to 0.002"),
        (7, "learning rate reduced to 0.0004"),
        (10, "stopped: no improvement of tol=10.0 for 3 epochs (9 optimiser steps)"),
    ]
    rates = [h["learning_rate"] for h in clf.history_]
    np.testing.assert_allclose(rates, [0.01] * 4 + [0.002] * 3 + [0.0004] * 3)


def test_batch_size_and_max_iter_auto():
    resolve = base_module.resolve_batch_size
    assert [resolve("auto", n) for n in (5, 50, 300, 100_000)] == [5, 8, 30, 64]
    assert resolve(32, 10) == 10 and resolve(np.int16(16), 100) == 16


# ------------------------------------------------------------ validation sets
def test_validation_split_holds_every_class_on_small_multiclass_data(rng):
    X = rng.standard_normal((40, 5, 2))
    y = np.repeat(np.arange(8), 5)
    clf = FastGRNNClassifier(
        hidden_size=4, early_stopping=True, max_iter=3, random_state=0
    ).fit(X, y)
    assert clf.t_ == 3 * 32  # one sequence of each of the 8 classes held out
    assert len(clf.validation_scores_) == 3
    # every score is a multiple of 1/8: eight validation sequences
    assert all(abs(8 * s - round(8 * s)) < 1e-12 for s in clf.validation_scores_)


def test_a_class_with_one_sequence_stays_in_training(rng):
    """As MLPClassifier(early_stopping=True) fits such data, so does the estimator."""
    X = rng.standard_normal((40, 5, 2))
    y = np.r_[np.repeat([0, 1, 2], 13), 3]  # class 3: one sequence
    clf = FastGRNNClassifier(hidden_size=4, early_stopping=True, random_state=0)
    clf.classes_ = np.unique(y)
    train, val = clf._split_validation(y, seed=0)
    assert 39 in train and 39 not in val
    assert sorted(set(y[val])) == [0, 1, 2] and len(val) == 3
    clf.fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_


def test_no_class_with_two_sequences_splits_at_random(rng):
    X = rng.standard_normal((12, 5, 2))
    y = np.arange(12)  # twelve classes of one sequence each
    clf = FastGRNNClassifier(hidden_size=4, early_stopping=True, max_iter=3, random_state=0)
    clf.classes_ = np.unique(y)
    train, val = clf._split_validation(y, seed=0)
    assert len(val) == 1 and len(train) == 11
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert len(clf.validation_scores_) == 3


def test_x_val_y_val_are_watched_and_the_best_epoch_is_kept(rng):
    X, y = make_sequences(rng, n=60)
    X_val, y_val = make_sequences(rng, n=30)
    clf = FastGRNNClassifier(hidden_size=6, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y, X_val=X_val, y_val=y_val)
    assert clf.t_ == clf.n_iter_ * 60  # nothing of X is held out
    losses = [h["val_loss"] for h in clf.history_]
    assert clf.best_epoch_ == 1 + int(np.argmin(losses))
    # the model holds the weights of the best epoch
    kept = clf.history_[clf.best_epoch_ - 1]
    assert clf.score(X_val, y_val) == pytest.approx(kept["val_score"])
    assert log_loss(y_val, clf.predict_proba(X_val)) == pytest.approx(
        kept["val_loss"], rel=1e-4
    )


def test_x_val_errors(rng):
    X, y = make_sequences(rng, n=30)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=2)
    with pytest.raises(ValueError, match="X_val was given without y_val"):
        clf.fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="y_val contains labels \\[7\\]"):
        clf.fit(X, y, X_val=X[:3], y_val=[0, 1, 7])
    with pytest.raises(ValueError, match="channels"):
        clf.fit(X, y, X_val=X[:, :, :2], y_val=y)
    assert not hasattr(clf, "coefs_")


def test_a_scorer_can_be_watched(rng):
    X, y = make_sequences(rng, n=60)
    clf = FastGRNNClassifier(
        hidden_size=4, early_stopping=True, scoring="balanced_accuracy", max_iter=5,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    scores = clf.validation_scores_
    assert clf.best_epoch_ == 1 + int(np.argmax(scores))
    assert clf.best_validation_score_ == max(scores)


def test_early_stopping_auto_turns_on_for_large_data(rng, monkeypatch):
    monkeypatch.setattr(base_module, "AUTO_EARLY_STOPPING_SAMPLES", 50)
    X, y = make_sequences(rng, n=60)
    big = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(X, y)
    assert big.validation_scores_ is not None and big.best_loss_ is None
    small = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(X[:40], y[:40])
    assert small.validation_scores_ is None


# ------------------------------------------------------------ initialisation
def test_chrono_initialisation_spreads_the_gate_over_the_sequence_length():
    layout = ParameterLayout(2, 500, 3)
    rs = np.random.RandomState(0)
    chrono = layout.views(init_parameters(layout, rs, 1.0, -4.0, np.float64,
                                          scheme="chrono", n_timesteps=200))
    memory = 1 + np.exp(chrono["bias_gate"])  # steps a unit keeps its state
    assert memory.min() >= 2 and memory.max() <= 200
    assert np.median(memory) == pytest.approx(100, rel=0.1)
    edgeml = layout.views(init_parameters(layout, rs, 1.0, -4.0, np.float64))
    np.testing.assert_array_equal(edgeml["bias_gate"], 1.0)
    for key in ("bias_update", "zeta", "nu", "bias_out"):
        np.testing.assert_array_equal(chrono[key], edgeml[key])


@pytest.mark.parametrize("d, w_rank", [(1, None), (12, None), (64, 8)])
def test_chrono_input_term_has_the_same_spread_for_any_number_of_channels(d, w_rank):
    # EdgeML's 0.1 * N(0, 1) gives standardised input a term of std 0.1 * sqrt(d)
    layout = ParameterLayout(d, 400, 2, w_rank=w_rank)
    views = layout.views(init_parameters(layout, np.random.RandomState(0), 1.0, -4.0,
                                         np.float64, scheme="chrono", n_timesteps=50))
    W = views["W"] if w_rank is None else views["W1"] @ views["W2"]
    x = np.random.default_rng(1).standard_normal((2000, d))
    assert np.std(x @ W) == pytest.approx(0.5, rel=0.1)
    edgeml = layout.views(init_parameters(layout, np.random.RandomState(0), 1.0, -4.0,
                                          np.float64))
    np.testing.assert_array_equal(views["U"], edgeml["U"])
    np.testing.assert_array_equal(views["V"], edgeml["V"])


def test_chrono_uses_the_longest_real_sequence_not_the_padded_width(rng):
    X, y = make_sequences(rng, n=24, T=5, d=2)
    wide = np.full((24, 40, 2), np.nan)
    wide[:, :5] = X
    a = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(X, y)
    b = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(wide, y)
    np.testing.assert_array_equal(a.coefs_["bias_gate"], b.coefs_["bias_gate"])


# ------------------------------------------------------------ diagnosis
def test_a_model_no_better_than_the_majority_class_warns(rng):
    X = np.zeros((30, 4, 2))  # nothing to learn from
    y = np.r_[np.zeros(20, int), np.ones(10, int)]
    with pytest.warns(ConvergenceWarning, match="no better than always answering"):
        FastGRNNClassifier(hidden_size=2, max_iter=3, random_state=0).fit(X, y)


def test_a_model_that_learned_does_not_warn(rng):
    X, y = make_sequences(rng, n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FastGRNNClassifier(hidden_size=8, random_state=0).fit(X, y)


def test_training_that_ends_far_worse_than_it_began_warns(rng):
    X, y = make_sequences(rng, n=40)
    with pytest.warns(ConvergenceWarning, match="far above"):
        FastGRNNClassifier(
            hidden_size=4, learning_rate_init=1e10, max_iter=3, random_state=0
        ).fit(X, y)


def test_verbose_ends_with_why_training_stopped(rng, capsys):
    X, y = make_sequences(rng, n=20)
    FastGRNNClassifier(
        hidden_size=4, tol=10.0, n_iter_no_change=2, learning_rate="constant",
        early_stopping=True, verbose=1, random_state=4,
    ).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    # with this seed the validation loss is best at epoch 1, below chance level
    # 18 sequences train (2 validate): 3 mini-batches of at most 8 an epoch
    assert lines[-2].endswith(
        "stopped: no improvement of tol=10.0 for 2 epochs (6 optimiser steps)")
    assert lines[-1] == (
        "Training stopped: no improvement of tol=10.0 for 2 epochs (6 optimiser "
        "steps); kept the average of the weights up to epoch 1."
    )


# ------------------------------------------------------------ it learns
def bump_sequences(n, T, seed):
    """Noise with a bump of either sign in the middle; the class is its sign."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = np.arange(T)
    bump = np.exp(-0.5 * ((t - T / 2) / (T / 30)) ** 2)
    X = rng.standard_normal((n, T)) + np.where(y == 1, 1.5, -1.5)[:, None] * bump
    return X[:, :, None], y


@pytest.mark.slow
def test_defaults_learn_a_bump_in_the_middle_of_150_steps_from_50_sequences():
    """The memory must carry the bump over 75 steps; EdgeML's initial gate
    (about 4 steps of memory) and an epoch-counted patience stopped here at
    chance before."""
    X, y = bump_sequences(50, 150, seed=0)
    X_test, y_test = bump_sequences(500, 150, seed=1)
    clf = FastGRNNClassifier(random_state=0).fit(X, y)
    assert clf.score(X_test, y_test) >= 0.9


def test_sparse_training_with_max_iter_auto_lays_its_schedule_over_200_epochs(rng):
    X, y = make_sequences(rng, n=40)
    clf = FastGRNNClassifier(8, sparsity_u=0.5, random_state=0).fit(X, y)
    assert clf._sparse_training.iht_end == 150  # floor(0.75 * 200)
    assert clf.n_iter_ > 150 and np.count_nonzero(clf.coefs_["U"]) == 32


def test_early_stopping_keeps_the_last_weights_when_validation_never_leaves_chance(rng):
    X = np.zeros((30, 4, 2))  # nothing to learn: the validation loss stays at chance
    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    clf = FastGRNNClassifier(hidden_size=2, early_stopping=True, max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.best_epoch_ == clf.n_iter_ == 20
    assert clf.best_validation_score_ == clf.validation_scores_[-1]


@pytest.mark.parametrize("weight_averaging", [0.0, 0.9])
def test_fit_keeps_the_best_epoch_when_a_late_loss_spike_leaves_worse_weights(
    rng, monkeypatch, weight_averaging
):
    X, y = make_sequences(rng, n=64)  # batch_size "auto": 8 steps an epoch
    # the NumPy engine, whose training calls Adam.step (the compiled engine's
    # step is the C one, which this test does not replace)
    params = dict(hidden_size=8, max_iter=40, n_iter_no_change=100, random_state=0,
                  engine="numpy", weight_averaging=weight_averaging)
    step = _optimizers.Adam.step
    calls = []

    def step_then_spike(self, flat, grad, learning_rate):
        step(self, flat, grad, learning_rate)
        calls.append(1)
        # the first step of epoch 31 blows the weights up, so far that their
        # average collapses too (by 30, the average stays better than halfway
        # from the best epoch to chance, and is kept: see BaseFastGRNN._kept_weights)
        if len(calls) == 30 * 8 + 1:
            flat *= 300.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        monkeypatch.setattr(_optimizers.Adam, "step", step_then_spike)
        spiked = FastGRNNClassifier(**params).fit(X, y)
        monkeypatch.undo()
        assert spiked.n_iter_ == 40
        assert min(spiked.loss_curve_[30:]) > max(spiked.loss_curve_[20:30])
        assert spiked.best_epoch_ == np.argmin(spiked.loss_curve_) + 1 <= 30
        assert spiked.stop_reason_.endswith("max_iter=40 epochs reached")
        # the optimiser's weights of that epoch (an average is restored from
        # nothing: the average after the spike collapsed too)
        clean = FastGRNNClassifier(
            **{**params, "max_iter": spiked.best_epoch_, "weight_averaging": 0}
        ).fit(X, y)
    assert_same_coefs(spiked, clean)
    assert spiked._kept_weights_text() == f"the weights of epoch {spiked.best_epoch_}"


def test_fit_keeps_the_last_weights_without_a_spike(rng):
    X, y = make_sequences(rng, n=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastGRNNClassifier(hidden_size=8, max_iter=30, random_state=0).fit(X, y)
    assert clf.best_epoch_ == clf.n_iter_ == 30
