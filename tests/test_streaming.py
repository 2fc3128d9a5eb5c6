"""Streaming: per-step outputs, the stateful streamer and early decisions equal the
whole-sequence predictions of every prefix."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor

from .conftest import make_sequences

SETTINGS = [dict(), dict(window=3, readout="mean"), dict(window=4, readout="max"),
            dict(readout="max", w_rank=2, u_rank=3, scale_input=True),
            dict(gate_nonlinearity="quant_sigmoid", update_nonlinearity="quant_tanh", window=2)]
IDS = ["last", "window3-mean", "window4-max", "low-rank-max-scaled", "quantised-pair"]


def fitted(rng, estimator=FastGRNNClassifier, **params):
    X, y = make_sequences(rng, n=30, T=11, d=2)
    X[::2, 7:] = np.nan  # every other sequence has 7 real timesteps
    if estimator is FastGRNNRegressor:
        y = np.nan_to_num(X).sum(axis=(1, 2))
    model = estimator(hidden_size=6, max_iter=3, random_state=0, dtype="float64", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y), X


def length(i):
    return 7 if i % 2 == 0 else 11


@pytest.mark.parametrize("params", SETTINGS, ids=IDS)
def test_staged_probabilities_are_those_of_every_prefix(rng, params):
    clf, X = fitted(rng, **params)
    staged = clf.staged_predict_proba(X[:6])
    assert staged.shape == (6, 11, 3)
    for i in range(6):
        for t in range(length(i)):
            np.testing.assert_allclose(staged[i, t], clf.predict_proba(X[i : i + 1, : t + 1])[0],
                                       rtol=1e-12, atol=1e-12)
        assert np.isnan(staged[i, length(i):]).all()
    labels = clf.staged_predict(X[:6])
    np.testing.assert_array_equal(labels[:, -1], clf.predict(X[:6]))


@pytest.mark.parametrize("params", SETTINGS, ids=IDS)
def test_interleaved_streams_equal_the_whole_sequence_predictions(rng, params):
    clf, X = fitted(rng, **params)
    stream = clf.streamer(n_streams=3)
    staged = clf.staged_predict_proba(X[:3])
    # stream 2 pauses for 4 timesteps (rows of NaN) while the others go on
    fed = {0: 0, 1: 0, 2: 0}
    for tick in range(15):
        x = np.full((3, 2), np.nan)
        for i in range(3):
            if (i != 2 or not 3 <= tick < 7) and fed[i] < length(i):
                x[i] = X[i, fed[i]]
                fed[i] += 1
        proba = stream.update(x)
        for i in range(3):
            if fed[i]:
                np.testing.assert_allclose(proba[i], staged[i, fed[i] - 1], rtol=1e-12,
                                           atol=1e-12)
    np.testing.assert_array_equal(stream.n_timesteps_seen_, [7, 11, 7])


def test_one_stream_takes_one_row_and_a_float32_streamer_agrees(rng):
    clf, X = fitted(rng, window=3, readout="mean")
    one, single = clf.streamer(), clf.streamer(dtype="float32")
    for t in range(11):
        p = one.update(X[1, t])
        assert p.shape == (3,)
        np.testing.assert_allclose(single.update(X[1, t].astype(np.float32)), p, atol=1e-5)
    np.testing.assert_allclose(p, clf.predict_proba(X[1:2])[0], rtol=1e-12)


def test_pickling_mid_stream_resumes_exactly_and_state_round_trips(rng):
    clf, X = fitted(rng, window=4, readout="max")
    stream = clf.streamer(n_streams=2)
    for t in range(5):
        stream.update(X[:2, t])
    copy = pickle.loads(pickle.dumps(stream))
    other = clf.streamer(n_streams=2)
    other.state = stream.state
    for t in range(5, 7):
        expected = stream.update(X[:2, t])
        np.testing.assert_array_equal(copy.update(X[:2, t]), expected)
        np.testing.assert_array_equal(other.update(X[:2, t]), expected)
    stream.reset(0)
    np.testing.assert_allclose(stream.update(np.stack([X[2, 0], X[1, 7]]))[0],
                               clf.predict_proba(X[2:3, :1])[0], rtol=1e-12)
    with pytest.raises(ValueError, match="state must have shape"):
        other.state = np.zeros((3, 4))


def test_regressor_streams_and_stages(rng):
    reg, X = fitted(rng, estimator=FastGRNNRegressor, window=2, readout="mean")
    staged = reg.staged_predict(X[:4])
    assert staged.shape == (4, 11)
    stream = reg.streamer()
    for t in range(11):
        value = stream.update(X[1, t])
        np.testing.assert_allclose(value, reg.predict(X[1:2, : t + 1])[0], rtol=1e-12)
        assert value == pytest.approx(staged[1, t], rel=1e-12)


def test_predict_early_decides_at_the_first_sure_step(rng):
    clf, X = fitted(rng)
    proba = clf.staged_predict_proba(X)
    threshold = float(np.nanmedian(proba.max(axis=2)))
    y_early, steps = clf.predict_early(X, threshold)
    for i in range(len(X)):
        sure = np.flatnonzero(np.nan_to_num(proba[i].max(axis=1)) >= threshold)
        step = sure[0] if sure.size else length(i) - 1
        assert steps[i] == step + 1
        assert y_early[i] == clf.classes_[np.argmax(proba[i, step])]
    # threshold 1: nothing is that sure before the end, the decision is predict's
    y_last, last = clf.predict_early(X, 1.0)
    np.testing.assert_array_equal(last, [length(i) for i in range(len(X))])
    np.testing.assert_array_equal(y_last, clf.predict(X))


def test_bad_timesteps_are_clear_errors(rng):
    clf, _ = fitted(rng)
    stream = clf.streamer(n_streams=2)
    with pytest.raises(ValueError, match="one timestep of 2 stream"):
        stream.update(np.zeros(2))
    with pytest.raises(ValueError, match="NaN in some channels only, or inf"):
        stream.update([[0.0, np.nan], [0.0, 0.0]])
    with pytest.raises(ValueError, match="n_streams must be a positive integer"):
        clf.streamer(n_streams=0)
    with pytest.raises(ValueError, match="threshold must be in"):
        clf.predict_early(np.zeros((1, 3, 2)), 0)
