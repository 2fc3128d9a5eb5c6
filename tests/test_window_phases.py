"""Window phases: prediction averages the readouts of the sequence read with its
window boundaries in ``window_phases_`` places; every path agrees on it."""

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._sequences import phase_shifts, windowed
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export import load_weights, save_weights

from .conftest import make_sequences, pad, padded_model


def fitted(estimator=FastGRNNClassifier, T=17, **params):
    return padded_model(estimator, T, **params)


def first_copies(X, shift):
    """``X`` with each sequence preceded by ``shift`` copies of its first timestep."""
    return np.concatenate([np.repeat(X[:, :1], shift, axis=1), X], axis=1)


def test_the_shifts_spread_the_phases_evenly_from_zero():
    assert phase_shifts(5, 1).tolist() == [0]
    assert phase_shifts(5, 3).tolist() == [0, 1, 3]
    assert phase_shifts(6, 2).tolist() == [0, 3]
    assert phase_shifts(4, 4).tolist() == [0, 1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_shifted_window_reads_the_sequence_after_copies_of_its_first_timestep(data):
    n, T, d = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 9)),
               data.draw(st.integers(1, 3)))
    window = data.draw(st.integers(1, 5))
    shift = data.draw(st.integers(0, window - 1))
    lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=n, max_size=n)))
    X = pad(np.arange(n * T * d, dtype=float).reshape(n, T, d), lengths)
    got, got_lengths = windowed(X, lengths, window, shift)
    expected, expected_lengths = windowed(first_copies(X, shift), lengths + shift, window)
    np.testing.assert_array_equal(got_lengths, expected_lengths)
    np.testing.assert_array_equal(got, expected)  # NaN padding in the same places


@pytest.mark.parametrize("readout", ["last", "mean", "max"])
@pytest.mark.parametrize("change_channels", [True, False])
def test_prediction_is_the_mean_of_the_phases_outputs(readout, change_channels):
    model, X = fitted(window=5, window_phases=3, readout=readout,
                      change_channels=change_channels)
    assert model.window_phases_ == 3
    one = pickle.loads(pickle.dumps(model))
    one.window_phases_ = 1
    expected = np.mean([one._raw_outputs(first_copies(X, s)) for s in (0, 1, 3)], axis=0)
    np.testing.assert_allclose(model._raw_outputs(X), expected, rtol=1e-12, atol=1e-12)
    # and it is not the first phase's alone
    assert np.abs(model._raw_outputs(X) - one._raw_outputs(X)).max() > 1e-6


def test_window_phases_is_resolved_at_fit_and_changes_no_weight():
    model, _ = fitted(window=6)
    assert model.window_phases_ == 4  # "auto": min(window_, 4)
    assert fitted(window=3)[0].window_phases_ == 3
    assert fitted(window=6, shift_windows=False)[0].window_phases_ == 1
    assert fitted(window=3, window_phases=10)[0].window_phases_ == 3  # capped
    assert fitted(window=1, window_phases=2)[0].window_phases_ == 1
    single, _ = fitted(window=6, window_phases=1)
    for key, value in model.coefs_.items():
        np.testing.assert_array_equal(value, single.coefs_[key])
    # set_params then partial_fit resolves it again (a prediction setting)
    model.set_params(window_phases=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.partial_fit(*make_sequences(np.random.default_rng(1), n=30, T=17, d=2))
    assert model.window_phases_ == 2


@pytest.mark.parametrize("params", [dict(window=4, window_phases=3, readout="last"),
                                    dict(window=5, readout="mean", change_channels=False),
                                    dict(window=3, readout="max")])
def test_streams_give_the_prediction_of_every_prefix(params):
    model, X = fitted(**params)
    lengths = (~np.isnan(X).all(axis=2)).sum(axis=1)
    stream = model.streamer(n_streams=4)
    q = quantize(model, X)
    q_stream = q.streamer(n_streams=4)
    for t in range(X.shape[1]):
        x = X[:4, t]
        got, q_got = stream.update(x), q_stream.update(x)
        live = np.flatnonzero(t < lengths[:4])
        if len(live):
            np.testing.assert_allclose(got[live], model.predict_proba(X[live, : t + 1]),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_array_equal(q_got[live], q.predict_proba(X[live, : t + 1]))
        if t == 6:  # mid-stream, a state moves to a new streamer and back
            moved = model.streamer(n_streams=4)
            moved.state = stream.state
            np.testing.assert_array_equal(moved.predictions(), stream.predictions())
            stream = moved


def test_a_state_row_holds_one_block_per_phase_and_its_counts_must_agree():
    model, X = fitted(window=4, window_phases=2, change_channels=False, envelope_width=0)
    stream = model.streamer()
    for t in range(5):
        stream.update(X[0, t])
    state = stream.state
    H, k, d = 5, 4, 2
    block = 2 * H + 2 + k * d
    assert state.shape == (1, 2 * block + 1)
    # 5 timesteps: phase 0 one step and 1 filled; phase 1 (2 copies first) 1 and 3
    assert state[0, 2 * H : 2 * H + 2].tolist() == [1, 1]
    assert state[0, block + 2 * H : block + 2 * H + 2].tolist() == [1, 3]
    assert state[0, -1] == 5
    stream.state = state
    bad = state.copy()
    bad[0, block + 2 * H + 1] = 2  # phase 1 one timestep behind phase 0
    with pytest.raises(ValueError, match="invalid counts"):
        stream.state = bad


def test_old_models_and_files_read_one_phase(tmp_path):
    model, X = fitted(window=4)
    assert model.window_phases_ == 4
    old = pickle.loads(pickle.dumps(model))
    del old.window_phases_
    del old.window_phases
    old = pickle.loads(pickle.dumps(old))
    assert old.window_phases_ == 1 and old.window_phases == 1
    one = pickle.loads(pickle.dumps(model))
    one.window_phases_ = 1
    np.testing.assert_array_equal(old.predict_proba(X), one.predict_proba(X))
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    loaded = load_weights(path)
    assert loaded.window_phases_ == 4
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("value", [0, 5, 2.0, True])
def test_a_damaged_window_phases_is_refused_by_the_exports(tmp_path, value):
    model, _ = fitted(window=4)
    model.window_phases_ = value
    with pytest.raises(ValueError, match="window_phases_ must be an integer from 1 to"):
        save_weights(model, tmp_path / "model.safetensors")


def test_a_regressor_averages_its_phases_too():
    model, X = fitted(FastGRNNRegressor, window=4, window_phases=4)
    one = pickle.loads(pickle.dumps(model))
    one.window_phases_ = 1
    expected = np.mean([one.predict(first_copies(X, s)) for s in range(4)], axis=0)
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-10)
