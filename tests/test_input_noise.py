"""Input noise: each training epoch reads every value plus fresh normal noise
(``input_noise``), and nothing but the training batches sees it."""

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor, _training
from sklearn_fastgrnn._training import NOISE_STARTS, InputNoise, TrainingRun

from .conftest import assert_same_coefs, make_sequences, needs_compiler, pad


def small(estimator=FastGRNNClassifier, **params):
    defaults = dict(hidden_size=6, max_iter=6, batch_size=8, random_state=0, tol=0)
    return estimator(**{**defaults, **params})


def _data(T=8):
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=40, T=T)
    X[:, :, 1] = 1e3 * X[:, :, 1] + 50.0  # a channel far from standardised
    return pad(X, rng.integers(T // 2, T + 1, len(X))), y


@pytest.mark.parametrize("estimator", [FastGRNNClassifier, FastGRNNRegressor])
@pytest.mark.parametrize("params, noise", [
    ({"window": 1}, 0.2),  # read one timestep a cell step: noised
    ({"window": 3}, 0.0),  # moving windows augment the data already
    ({"window": 3, "shift_windows": False}, 0.0),
    ({"window": 1, "scale_input": False}, 0.0),  # no units to say how much
])
def test_auto_input_noise(estimator, params, noise):
    X, y = _data(T=12)
    auto = small(estimator, **params).fit(X, y)
    explicit = small(estimator, input_noise=noise, **params).fit(X, y)
    assert_same_coefs(auto, explicit)
    assert auto.loss_curve_ == explicit.loss_curve_
    other = small(estimator, input_noise=0.2 - noise, **params).fit(X, y)
    assert other.loss_curve_ != auto.loss_curve_


@pytest.mark.parametrize("params", [{"window": 1}, {"window": 3, "crop_fraction": 0.5}])
def test_a_noised_fit_refits_to_the_bit(params):
    X, y = _data(T=12)
    first = small(input_noise=0.3, **params).fit(X, y)
    second = small(input_noise=0.3, **params).fit(X, y)
    assert_same_coefs(first, second)
    assert first.loss_curve_ == second.loss_curve_


def _noise_read(model, X, y):
    """Fit ``model``; the name and the noise of each noised array of each epoch,
    and every sequence array that the validation and quality passes read."""
    noised, scored = [], []
    add, outputs = InputNoise.add, TrainingRun._outputs

    def spy_add(self, name, array, rng, clean=None):
        add(self, name, array, rng, clean)
        clean = self._clean[name] if clean is None else clean
        noised.append((name, (array - clean).ravel()))

    def spy_outputs(self, flat, X3, lengths):
        scored.append(np.array(X3))
        return outputs(self, flat, X3, lengths)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InputNoise, "add", spy_add)
        patch.setattr(TrainingRun, "_outputs", spy_outputs)
        model.fit(X, y)
    return noised, scored


@pytest.mark.parametrize("params, where", [
    ({"engine": "numpy", "window": 1}, "time-major"),  # the batches in Python
    pytest.param({"engine": "compiled", "window": 1}, "sequences",  # in one C call
                 marks=needs_compiler),
    ({"engine": "numpy", "window": 3}, "extended"),  # the moving windows' timesteps
    pytest.param({"engine": "compiled", "window": 3, "crop_fraction": 0.5}, "extended",
                 marks=needs_compiler),
])
def test_each_epoch_reads_fresh_noise_of_the_scale_and_scores_clean_data(params, where):
    X, y = _data(T=30)
    scale = 0.5
    noised, scored = _noise_read(
        small(input_noise=scale, early_stopping=True, **params), X, y)
    _, clean = _noise_read(small(input_noise=0.0, early_stopping=True, **params), X, y)
    assert [name for name, _ in noised] == [where] * 6
    for _, noise in noised:
        finite = noise[np.isfinite(noise)]
        assert finite.size > 1000
        assert abs(finite.mean()) < 0.1 * scale
        assert abs(finite.std() / scale - 1.0) < 0.1
    first, second = (noise[np.isfinite(noise)] for _, noise in noised[:2])
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.1  # drawn anew
    # validation and training quality read the sequences without noise
    assert len(scored) == len(clean) > 6
    for noisy_pass, clean_pass in zip(scored, clean):
        np.testing.assert_array_equal(noisy_pass, clean_pass)


def test_the_noise_lies_time_major_over_the_values_and_is_added_in_place():
    rng = np.random.default_rng(3)
    noise = InputNoise(2.0, 7)
    array = np.arange(2400, dtype=np.float64).reshape(20, 30, 4)  # (n, T, d + 1)
    steps = array[..., :-1].transpose(1, 0, 2)  # a view, time-major
    clean = steps.copy()
    noise.add("view", steps, rng)
    assert (array[..., -1] == np.arange(3, 2400, 4).reshape(20, 30)).all()  # untouched
    once = steps - clean
    assert 1.8 < once.std() < 2.2
    # the pool, time-major: the noise of (timestep t, sequence i, value j) follows
    # that of (t, i, j - 1), then (t, i + 1, 0), then (t + 1, 0, 0)
    flat = once.ravel()
    start = int(np.argmin(np.abs(noise._pool[:NOISE_STARTS + 1] - flat[0])))
    np.testing.assert_allclose(flat, noise._pool[start:start + flat.size], rtol=0, atol=1e-9)
    noise.add("view", steps, rng)
    twice = steps - clean  # from the clean values, not on top of the last noise
    assert 1.8 < twice.std() < 2.2
    assert not np.array_equal(once, twice)


@pytest.mark.parametrize("kept", [True, False])
def test_partial_fit_over_chunks_draws_the_noise_once(monkeypatch, kept):
    X, y = _data()
    if not kept:  # a pool above the limit is drawn each call and not kept
        monkeypatch.setattr(_training, "NOISE_POOL_KEPT", NOISE_STARTS)
    _training._kept_noise_pool.cache_clear()
    model = small(input_noise=0.2)
    for start in (0, 20, 0):  # chunks of one size
        model.partial_fit(X[start:start + 20], y[start:start + 20], classes=[0, 1, 2])
    info = _training._kept_noise_pool.cache_info()
    assert (info.misses, info.hits) == ((1, 2) if kept else (0, 0))
    noise = InputNoise(0.2, 7)
    noise.add("steps", np.zeros((4, 5, 3)), np.random.default_rng(0))
    assert not noise._pool.flags.writeable  # shared between calls: read only


@pytest.mark.parametrize("value", [-0.1, "none", np.nan])
def test_a_negative_or_unknown_noise_is_refused(value):
    X, y = _data()
    with pytest.raises(ValueError, match="input_noise"):
        small(input_noise=value).fit(X, y)


def _sequences(n):
    X, y = make_sequences(np.random.default_rng(1), n=n, T=6)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("params, kind, tail, reductions", [
    ({}, "adaptive", True, 1),  # noised, 5 steps an epoch: the tail
    ({"input_noise": 0}, "constant", False, 2),
    ({"window": 3}, "constant", False, 2),  # moving windows: no noise
    ({"n": 60, "batch_size": 1}, "adaptive", False, 2),  # adaptive from 50 steps an epoch
    ({"learning_rate": "adaptive"}, "adaptive", False, 2),  # as asked: plateaus
    ({"max_lr_reductions": 3}, "adaptive", True, 3),
])
def test_the_auto_rate_anneals_the_noise_of_small_data(params, kind, tail, reductions):
    params = dict(params)
    X, y = _sequences(params.pop("n", 40))
    schedule = small(max_iter=1, **params).fit(X, y)._schedule
    assert (schedule.kind, schedule.tail, schedule.max_reductions) == (kind, tail, reductions)


def test_the_tail_runs_the_patience_at_the_last_rate_then_stops():
    """The noised loss can go on falling: the tail stops it anyway, and a
    continued fit goes on at the last rate for at most another tail."""
    X, y = _sequences(40)
    model = small(max_iter=2000, n_iter_no_change=4, tol=1e-4).fit(X, y)
    (reduced, reduction), (stopped, stop) = [
        (r["epoch"], r["event"]) for r in model.history_ if r["event"]]
    assert reduction == "learning rate reduced to 0.002"
    assert stopped == reduced + 4 == model.n_iter_
    assert stop == model.stop_reason_ == "stopped: 4 epochs at the last learning rate (0.002)"
    assert [r["learning_rate"] for r in model.history_[reduced:]] == pytest.approx([0.002] * 4)
    model.set_params(warm_start=True).fit(X, y)
    assert stopped < model.n_iter_ <= stopped + 4
    assert [r["learning_rate"] for r in model.history_[stopped:]] == pytest.approx(
        [0.002] * (model.n_iter_ - stopped))
