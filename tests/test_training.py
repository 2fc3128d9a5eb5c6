"""Training semantics of docs/design.md, section "Training"."""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn import _base as base_module
from sklearn_fastgrnn import _training as training_module
from sklearn_fastgrnn._compiled_cell import CompiledEngine
from sklearn_fastgrnn._compiled_epoch import CompiledEpoch
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

from .conftest import assert_same_coefs, make_sequences, needs_compiler, press_ctrl_c_in_epoch


def small(**params):
    defaults = dict(hidden_size=6, max_iter=4, batch_size=8, random_state=0)
    return FastGRNNClassifier(**{**defaults, **params})


# the training semantics hold for each engine (the compiled one where it builds)
ENGINES = pytest.mark.parametrize("engine", ["numpy", pytest.param("compiled",
                                                                    marks=needs_compiler)])


@needs_compiler
@pytest.mark.parametrize("case", ["plain", "low-rank", "windows", "long"])
def test_the_engines_train_alike(rng, monkeypatch, case):
    """The compiled engine computes what the NumPy one does, to rounding: a few
    epochs of float64 training end at the same weights to 1e-9; with a low-rank
    ``W`` of 12 inputs, which the compiled engine applies as its factors, on
    padded sequences; with windows that move (of 3 timesteps, full-rank ``W``),
    which the compiled engine reads in place (StepRows) and the NumPy one
    copied; and with the defaults of long series (windows that move, crops,
    envelope channels and their low-rank ``W``, as its factors). Where a
    batch is the two C passes (full rank), the compiled fit runs its epochs
    in one C call each (``_compiled_epoch.py``), its factors' passes too."""
    factored, in_place = case in ("low-rank", "long"), case in ("windows", "long")
    T = {"long": 240, "windows": 60}.get(case, 6)
    X, y = make_sequences(rng, T=T, d=12 if case == "low-rank" else 3)
    params = dict(dtype="float64", tol=0)
    if case == "low-rank":
        X[::3, 4:] = np.nan
        params.update(w_rank=2, window=1, change_channels=False)
    if case == "windows":
        X[::3, 40:] = np.nan
        params.update(window=3)
    calls = {"factors": 0, "in place": 0, "epochs in C": 0}

    def count(key, method, when=lambda *args: True):
        def counted(*args):
            calls[key] += bool(when(*args))
            return method(*args)
        return counted

    monkeypatch.setattr(CompiledEngine, "training_contexts", count(
        "factors", CompiledEngine.training_contexts, lambda engine, *_: engine.factored))
    monkeypatch.setattr(CompiledEngine, "_rows", count("in place", CompiledEngine._rows))
    monkeypatch.setattr(training_module.TrainingRun, "_epoch_rows", count(
        "in place", training_module.TrainingRun._epoch_rows, lambda run, _: run._in_place))
    monkeypatch.setattr(CompiledEpoch, "run", count("epochs in C", CompiledEpoch.run))
    numpy_fit = small(engine="numpy", **params).fit(X, y)
    compiled_fit = small(engine="compiled", **params).fit(X, y)
    assert (calls["factors"] > 0, calls["in place"] > 0) == (factored, in_place)
    assert calls["epochs in C"] == compiled_fit.n_iter_
    for key, value in numpy_fit.coefs_.items():
        np.testing.assert_allclose(compiled_fit.coefs_[key], value, rtol=1e-9, atol=1e-12,
                                   err_msg=key)


@pytest.mark.slow
def test_default_settings_learn_digits_as_sequences():
    """Digits as 8 rows of 8 pixels, first half to train, second half to test.

    The second half holds other writers. Over 5 seeds the defaults score 0.913
    (+- 0.011) and a PyTorch GRU of the same size 0.921 (+- 0.008); see
    benchmarks/bench_digits_accuracy.py. Chance is 0.10.
    """
    X, y = load_digits_sequences()
    X_train, X_test, y_train, y_test = split_halves(X, y)
    clf = FastGRNNClassifier(random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.90
    assert clf.score(X_train, y_train) >= 0.99


@ENGINES
def test_same_random_state_gives_bit_identical_coefs(rng, engine):
    X, y = make_sequences(rng)
    a, b = small(engine=engine).fit(X, y), small(engine=engine).fit(X, y)
    assert_same_coefs(a, b)
    assert a.engine_ == engine
    c = small(random_state=1, engine=engine).fit(X, y)
    assert not np.array_equal(a.coefs_["W"], c.coefs_["W"])


@ENGINES
def test_partial_fit_epochs_equal_fit_epochs(rng, engine):
    X, y = make_sequences(rng)
    full = small(max_iter=3, tol=0, engine=engine).fit(X, y)
    inc = small(tol=0, engine=engine)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.unique(y))
    assert_same_coefs(full, inc)
    assert inc.n_iter_ == 3 and inc.t_ == 3 * len(X)
    assert inc.loss_curve_ == full.loss_curve_


@ENGINES
def test_partial_fit_continues_exactly_after_joblib_round_trip(rng, tmp_path, engine):
    X, y = make_sequences(rng)
    straight = small(engine=engine)
    resumed = small(engine=engine)
    for clf in (straight, resumed):
        clf.partial_fit(X, y, classes=np.unique(y))
    joblib.dump(resumed, tmp_path / "m.joblib")
    resumed = joblib.load(tmp_path / "m.joblib")
    straight.partial_fit(X, y)
    resumed.partial_fit(X, y)
    assert_same_coefs(straight, resumed)
    np.testing.assert_array_equal(straight._optimizer.m, resumed._optimizer.m)


@ENGINES
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_start_continues_exactly(rng, solver, engine):
    X, y = make_sequences(rng)
    once = small(max_iter=5, tol=0, solver=solver, engine=engine).fit(X, y)
    twice = small(max_iter=2, tol=0, solver=solver, engine=engine).fit(X, y)
    twice.set_params(warm_start=True, max_iter=3).fit(X, y)
    assert_same_coefs(once, twice)
    assert twice.n_iter_ == 5 and len(twice.history_) == 5


def test_without_warm_start_fit_starts_over(rng):
    X, y = make_sequences(rng)
    clf = small().fit(X, y)
    first = clf.coefs_["U"].copy()
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.coefs_["U"], first)
    assert clf.n_iter_ == 4


def test_early_stopping_restores_the_best_weights(rng):
    X, y = make_sequences(rng, n=120)
    long = small(early_stopping=True, n_iter_no_change=4, max_iter=60, tol=0.0)
    long.fit(X, y)
    scores = long.validation_scores_
    # scoring="loss": the kept epoch is the one of the lowest validation loss
    best_epoch = int(np.argmin([h["val_loss"] for h in long.history_]))
    assert long.best_epoch_ == best_epoch + 1
    assert long.best_validation_score_ == scores[best_epoch]
    assert long.best_loss_ is None
    assert best_epoch < long.n_iter_ - 1, "test needs a run that went past its best"
    # a run that stops right at the best epoch ends with the same weights
    short = small(early_stopping=True, n_iter_no_change=4, max_iter=best_epoch + 1, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short.fit(X, y)
    assert_same_coefs(long, short)
    assert {"val_loss", "val_score"} <= set(long.history_[0])
    assert long.history_[best_epoch]["val_score"] == long.best_validation_score_


def test_stopping_rule_on_training_loss_and_convergence_warning(rng):
    X, y = make_sequences(rng)
    stopped = small(max_iter=200, tol=10.0, n_iter_no_change=3, learning_rate="constant")
    stopped.fit(X, y)
    assert stopped.n_iter_ == 4  # the first epoch sets the best, 3 more fail
    assert stopped.stop_reason_.startswith("stopped: no improvement of tol=10.0 for 3 epochs")
    assert stopped.history_[-1]["event"] == stopped.stop_reason_
    assert stopped.best_epoch_ == 4
    assert stopped.validation_scores_ is None
    assert stopped.best_loss_ == min(stopped.loss_curve_)
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        small(max_iter=2, tol=0).fit(X, y)


def test_learning_rate_schedules(rng):
    X, y = make_sequences(rng)
    step = small(learning_rate="step", learning_rate_init=0.1, lr_decay=0.5,
                 lr_decay_step=2, max_iter=6, tol=0).fit(X, y)
    rates = [h["learning_rate"] for h in step.history_]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    adaptive = small(learning_rate="adaptive", learning_rate_init=0.1, max_iter=12,
                     tol=10.0, n_iter_no_change=2).fit(X, y)
    rates = [h["learning_rate"] for h in adaptive.history_]
    # no epoch improves by tol=10: the rate is divided by 5 every 2 epochs
    np.testing.assert_allclose(rates[:6], [0.1, 0.1, 0.1, 0.02, 0.02, 0.004])


def test_class_weight_balanced_equals_the_sample_weights_it_stands_for(rng):
    X, y = make_sequences(rng, n=60)
    y = np.where(np.arange(60) < 45, 0, 1)
    balanced = small(class_weight="balanced").fit(X, y)
    counts = np.bincount(y)
    explicit = small().fit(X, y, sample_weight=(60 / (2 * counts))[y])
    assert_same_coefs(balanced, explicit)
    as_dict = small(class_weight={0: 3.0, 1: 1.0}).fit(X, y)
    explicit = small().fit(X, y, sample_weight=np.where(y == 0, 3.0, 1.0))
    assert_same_coefs(as_dict, explicit)


def test_sample_weight_changes_training_and_unit_weights_do_not(rng):
    X, y = make_sequences(rng)
    base = small().fit(X, y)
    assert_same_coefs(base, small().fit(X, y, sample_weight=np.full(len(y), 3.0)))
    weighted = small().fit(X, y, sample_weight=rng.random(len(y)))
    assert not np.array_equal(base.coefs_["V"], weighted.coefs_["V"])


def test_keyboard_interrupt_keeps_the_last_weights(rng, monkeypatch):
    X, y = make_sequences(rng)
    reference = small(max_iter=2, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(X, y)
    press_ctrl_c_in_epoch(monkeypatch, 3)
    clf = small(max_iter=10, tol=0)
    with pytest.warns(UserWarning, match="interrupted by the user in epoch 3"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2
    assert_same_coefs(clf, reference)


def test_divergence_raises_and_leaves_the_model_as_it_was(rng):
    X, y = make_sequences(rng)
    clf = small(solver="sgd").fit(X, y)
    before = {k: v.copy() for k, v in clf.coefs_.items()}
    curve, history = list(clf.loss_curve_), list(clf.history_)
    explode = dict(solver="sgd", learning_rate_init=1e308, clip_grad_norm=None)
    clf.set_params(warm_start=True, **explode)
    with pytest.raises(ValueError, match="Training diverged: the loss became nan"):
        clf.fit(X, y)
    for key, value in before.items():
        np.testing.assert_array_equal(clf.coefs_[key], value)
    assert clf.n_iter_ == 4
    assert clf.loss_curve_ == curve and clf.history_ == history
    fresh = small(**explode)
    with pytest.raises(ValueError, match="Training diverged"):
        fresh.fit(X, y)
    assert not hasattr(fresh, "coefs_")


def test_verbose_prints_a_line_per_epoch(rng, capsys):
    X, y = make_sequences(rng, n=400)
    # (with change channels, this data's 3-epoch average falls below half of what
    # the third epoch gained, and the model keeps that epoch's weights instead)
    small(verbose=1, max_iter=3, tol=0, change_channels=False).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("Epoch 1, loss ")
    assert lines[-1] == (
        "Training stopped: max_iter=3 epochs reached; kept the average of the weights "
        "up to epoch 3."
    )
    small(verbose=2, max_iter=1, batch_size=4, early_stopping=True).fit(X, y)
    out = capsys.readouterr().out
    assert "[====" in out and "val_score" in out


def test_auto_alpha_is_one_over_the_sequences_at_most_1e_2(rng):
    X, y = make_sequences(rng, n=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for n, expected in ((50, 1e-2), (100, 1e-2), (200, 1 / 200), (400, 1 / 400)):
            auto = FastGRNNClassifier(6, max_iter=3, random_state=0).fit(X[:n], y[:n])
            explicit = FastGRNNClassifier(6, max_iter=3, random_state=0,
                                          alpha=expected).fit(X[:n], y[:n])
            assert auto.alpha_ == expected and explicit.alpha_ == expected
            assert_same_coefs(auto, explicit)  # the penalty trained with
        other = FastGRNNClassifier(6, max_iter=3, random_state=0, alpha=1e-3).fit(X, y)
        assert not np.array_equal(other.coefs_["W"], auto.coefs_["W"])
        # warm_start and partial_fit go on with the first call's penalty; a
        # number given later is used
        more = FastGRNNClassifier(6, max_iter=2, random_state=0, warm_start=True)
        more.fit(X[:400], y[:400]).fit(X[:50], y[:50])
        assert more.alpha_ == 1 / 400
        more.partial_fit(X[:20], y[:20])
        assert more.alpha_ == 1 / 400
        more.set_params(alpha=0.02).fit(X[:50], y[:50])
        assert more.alpha_ == 0.02
        fresh = FastGRNNClassifier(6, random_state=0).partial_fit(X[:20], y[:20],
                                                                  classes=np.unique(y))
    assert fresh.alpha_ == 1e-2


def test_auto_alpha_is_at_most_2e_3_with_crops_and_5e_3_in_a_regressor(rng):
    X, y = make_sequences(rng, n=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for n, expected in ((50, 2e-3), (400, 2e-3), (600, 1 / 600)):
            X_n, y_n = np.concatenate([X] * 2)[:n], np.concatenate([y] * 2)[:n]
            cropped = FastGRNNClassifier(6, max_iter=1, random_state=0,
                                         crop_fraction=0.5).fit(X_n, y_n)
            assert cropped.crop_fraction_ == 0.5 and cropped.alpha_ == expected
        whole = FastGRNNClassifier(6, max_iter=1, random_state=0, crop_fraction=1.0)
        assert whole.fit(X[:50], y[:50]).alpha_ == 1e-2
        for n, expected in ((50, 5e-3), (200, 5e-3), (400, 1 / 400)):
            reg = FastGRNNRegressor(6, max_iter=1, random_state=0).fit(X[:n], y[:n] * 1.0)
            assert reg.alpha_ == expected


def test_history_and_fitted_attributes(rng):
    X, y = make_sequences(rng)
    clf = small(max_iter=3, tol=0).fit(X, y)
    assert [h["epoch"] for h in clf.history_] == [1, 2, 3]
    assert set(clf.history_[0]) == {"epoch", "train_loss", "val_loss", "val_score",
                                     "learning_rate", "seconds", "event"}
    assert clf.loss_ == clf.loss_curve_[-1] == clf.history_[-1]["train_loss"]
    H, d, C = 6, 3, 3
    # W reads the 3 channels, their changes and the changes' logarithms; an offset
    # per channel
    assert clf.n_params_ == 3 * d * H + H * H + H * C + 2 * H + 2 + C + d
    assert clf.model_size_bytes_ == 4 * clf.n_params_ + 4 * d  # the offsets take 8 bytes
    assert clf.coefs_["zeta"].shape == () and clf.coefs_["nu"].shape == ()


def test_decision_function_and_log_proba(rng):
    X, y = make_sequences(rng)
    clf = small().fit(X, y)
    logits = clf.decision_function(X)
    assert logits.shape == (len(X), 3)
    np.testing.assert_allclose(np.log(clf.predict_proba(X)), clf.predict_log_proba(X))
    np.testing.assert_array_equal(clf.classes_[logits.argmax(1)], clf.predict(X))
    binary = small().fit(X, y % 2)
    proba = binary.predict_proba(X)
    np.testing.assert_allclose(binary.decision_function(X), np.log(proba[:, 1] / proba[:, 0]))


def test_joblib_round_trip_and_version_warning(rng, tmp_path):
    X, y = make_sequences(rng)
    clf = small().fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    state = clf.__getstate__()
    assert state["_sklearn_fastgrnn_version"] == base_module.__version__
    state["_sklearn_fastgrnn_version"] = "0.0.1"
    other = FastGRNNClassifier.__new__(FastGRNNClassifier)
    with pytest.warns(UserWarning, match="from sklearn_fastgrnn version 0.0.1"):
        other.__setstate__(state)


def test_string_labels(rng):
    X, y = make_sequences(rng)
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = small().fit(X, labels)
    assert set(clf.predict(X)) <= {"cat", "dog", "eel"}
    assert list(clf.classes_) == ["cat", "dog", "eel"]


def test_sgd_nesterov_and_plain_momentum_train(rng):
    X, y = make_sequences(rng, n=80)
    for nesterov in (True, False):
        clf = small(solver="sgd", learning_rate_init=0.1, nesterovs_momentum=nesterov,
                    max_iter=30, tol=0).fit(X, y)
        assert clf.loss_curve_[-1] < 0.8 * clf.loss_curve_[0]


def test_adam_and_sgd_steps_follow_their_formulas(rng):
    from sklearn_fastgrnn._optimizers import SGD, Adam, clip_by_global_norm

    p0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(3)]
    adam, p = Adam(7, np.float64, 0.8, 0.9, 1e-6), p0.copy()
    m = v = np.zeros(7)
    expected = p0.copy()
    for t, g in enumerate(grads, 1):
        adam.step(p, g, 0.1)
        m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        expected -= 0.1 * np.sqrt(1 - 0.9**t) / (1 - 0.8**t) * m / (np.sqrt(v) + 1e-6)
    np.testing.assert_allclose(p, expected, rtol=1e-13)
    for nesterov in (False, True):
        sgd, p = SGD(7, np.float64, 0.5, nesterov), p0.copy()
        vel, expected = np.zeros(7), p0.copy()
        for g in grads:
            sgd.step(p, g, 0.1)
            vel = 0.5 * vel - 0.1 * g
            expected += 0.5 * vel - 0.1 * g if nesterov else vel
        np.testing.assert_allclose(p, expected, rtol=1e-13)
    g = np.array([3.0, 4.0])
    assert clip_by_global_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(g, [0.6, 0.8])
    clip_by_global_norm(g, 10.0)
    np.testing.assert_allclose(g, [0.6, 0.8])


def test_a_model_without_optimizer_state_resumes_its_weights(rng):
    """As a model rebuilt from a weights file: fresh optimiser, same weights."""
    X, y = make_sequences(rng)
    clf = small().fit(X, y)
    rebuilt = small(warm_start=True)
    for name in ("classes_", "coefs_", "n_features_in_", "n_timesteps_", "n_channels_"):
        setattr(rebuilt, name, getattr(clf, name))
    start = rebuilt.coefs_["U"].copy()
    rebuilt.fit(X, y)
    assert rebuilt.n_iter_ == 4
    assert not np.array_equal(rebuilt.coefs_["U"], start)
    assert rebuilt.loss_curve_[0] < clf.loss_curve_[0]  # it started from trained weights
    fresh = small()
    fresh.partial_fit(X, y, classes=[0, 1, 2])
    copy_ = small()
    for name in ("classes_", "coefs_", "n_features_in_", "n_timesteps_", "n_channels_"):
        setattr(copy_, name, getattr(fresh, name))
    copy_.partial_fit(X, y)
    assert copy_.n_iter_ == 1


def test_early_stopping_after_a_run_without_it(rng):
    X, y = make_sequences(rng, n=80)
    clf = small().fit(X, y)
    clf.set_params(warm_start=True, early_stopping=True, max_iter=3, tol=0).fit(X, y)
    assert len(clf.validation_scores_) == 3


def test_an_error_in_a_later_epoch_leaves_every_attribute_as_it_was(rng, monkeypatch):
    import pickle

    X, y = make_sequences(rng)
    clf = small(warm_start=True).fit(X, y)
    before = pickle.dumps(clf.__dict__)
    real_epoch = training_module.TrainingRun.epoch
    calls = []

    def failing_epoch(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("Training diverged (simulated)")
        return real_epoch(self, *args)

    monkeypatch.setattr(training_module.TrainingRun, "epoch", failing_epoch)
    with pytest.raises(ValueError, match="simulated"):
        clf.fit(X, y)
    assert pickle.dumps(clf.__dict__) == before
