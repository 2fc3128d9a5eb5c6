"""Envelope channels: beside each channel, its largest and smallest value over the
last ``envelope_width_`` timesteps, computed alike by every path."""

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._channels import running_extreme, with_envelope
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export import load_weights, save_weights

from .conftest import make_sequences, pad, padded_model, plain_envelope


def fitted(estimator=FastGRNNClassifier, **params):
    return padded_model(estimator, **{"hidden_size": 8, **params})


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_the_envelope_is_the_extreme_of_each_span_of_real_timesteps(data):
    n, T, d = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12)),
               data.draw(st.integers(1, 3)))
    width = data.draw(st.integers(2, 14))
    lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=n, max_size=n)))
    values = data.draw(st.lists(
        st.floats(-(2.0**100), 2.0**100, width=32), min_size=n * T * d,
        max_size=n * T * d,
    ))
    X = pad(np.array(values, dtype=np.float32).reshape(n, T, d), lengths).astype(np.float32)
    got = with_envelope(X, width)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, plain_envelope(X, width))


def test_a_width_below_two_is_no_envelope_and_the_input_is_never_written():
    X = np.arange(12.0).reshape(1, 6, 2)
    assert with_envelope(X, 0) is X and with_envelope(X, 1) is X
    before = X.copy()
    high = running_extreme(X, 1, np.maximum)
    assert high is not X
    np.testing.assert_array_equal(high, X)
    with_envelope(X, 4)
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("params, width, rank", [
    ({"window": 4}, 4, 2),
    ({"window": 6}, 6, 2),
    ({"window": 3}, 0, None),
    ({"window": 1}, 0, None),
    ({"window": 3, "envelope_width": 5}, 5, 2),
    ({"window": 6, "envelope_width": 0}, 0, None),
    ({"window": 6, "envelope_width": 1}, 0, None),
    ({"window": 4, "w_rank": None}, 4, None),
    ({"window": 4, "w_rank": 3}, 4, 3),
    ({"window": 2, "w_rank": 3}, 0, 3),
])
def test_auto_envelope_and_rank(params, width, rank):
    model, X = fitted(**params)
    assert model.envelope_width_ == width
    channels = 2 * (3 if width else 1) * 3  # the values, envelope, then the changes
    if rank is None:
        assert model.coefs_["W"].shape == (model.window_ * channels, 8)
    else:
        assert model.coefs_["W1"].shape == (model.window_ * channels, rank)
    assert model.change_offsets_.shape == (2 * (3 if width else 1),)
    assert model.predict_proba(X).shape == (len(X), len(model.classes_))


@pytest.mark.parametrize("change_channels", [True, False])
def test_prediction_reads_the_envelope_of_the_raw_values(change_channels):
    """The model is the same cell reading [x | max | min] given as channels."""
    model, X = fitted(window=3, envelope_width=4, window_phases=1,
                      change_channels=change_channels)
    plain = pickle.loads(pickle.dumps(model))
    plain.envelope_width_ = 0
    plain.n_channels_ = 6
    plain.n_features_in_ = plain.n_timesteps_ * 6
    np.testing.assert_allclose(plain.predict_proba(plain_envelope(X, 4)),
                               model.predict_proba(X), rtol=1e-12, atol=1e-14)
    other = pickle.loads(pickle.dumps(model))
    other.envelope_width_ = 3  # another width: other numbers
    assert not np.allclose(other.predict_proba(X), model.predict_proba(X))


def test_raw_input_trains_as_standardised_input_with_envelopes():
    """Trained on a * Z + b (a > 0), a model predicts on a * Z + b what one trained
    on Z predicts on Z: the envelope of a * Z + b is a * env(Z) + b. The maps are
    float32 (as every export holds them), and the envelope channels' means are not
    0 on z-scored data, so they round a * mean + b to 6e-8 of its magnitude."""
    rng = np.random.default_rng(1)
    X, y = make_sequences(rng, n=40, T=16, d=2)
    Z = (X - X.mean(axis=(0, 1))) / X.std(axis=(0, 1))
    params = {"window": 4, "hidden_size": 6, "max_iter": 5, "random_state": 0,
              "dtype": "float64"}
    a, b = np.array([3.0, 0.01]), np.array([-7.0, 2.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        on_z = FastGRNNClassifier(**params).fit(Z, y)
        on_raw = FastGRNNClassifier(**params).fit(a * Z + b, y)
    assert on_z.envelope_width_ == on_raw.envelope_width_ == 4
    np.testing.assert_allclose(on_raw.predict_proba(a * Z + b), on_z.predict_proba(Z),
                               rtol=0, atol=1e-4)
    assert on_raw.loss_curve_ == pytest.approx(on_z.loss_curve_, rel=1e-5)


@pytest.mark.parametrize("params", [
    {"window": 4},
    {"window": 3, "envelope_width": 5, "window_phases": 2},
    {"window": 5, "change_channels": False},
    {"window": 1, "envelope_width": 3, "readout": "mean"},
])
def test_streams_give_the_prediction_of_every_prefix(params):
    model, X = fitted(**params)
    assert model.envelope_width_ >= 2
    q = quantize(model, X)
    X = X[:4]
    stream, q_stream = model.streamer(n_streams=4), q.streamer(n_streams=4)
    for t in range(X.shape[1]):
        got, q_got = stream.update(X[:, t]), q_stream.update(X[:, t])
        live = ~np.isnan(X[:, t, 0])
        if live.any():
            np.testing.assert_allclose(got[live], model.predict_proba(X[live, : t + 1]),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_array_equal(q_got[live], q.predict_proba(X[live, : t + 1]))
        if t == 6:  # mid-stream, the states move to new streamers
            moved, q_moved = model.streamer(n_streams=4), q.streamer(n_streams=4)
            moved.state, q_moved.state = stream.state, q_stream.state
            np.testing.assert_array_equal(moved.predictions(), stream.predictions())
            np.testing.assert_array_equal(q_moved.predictions(), q_stream.predictions())
            stream, q_stream = moved, q_moved


def test_the_state_row_ends_with_the_base_values_then_the_history():
    model, X = fitted(window=2, envelope_width=4, window_phases=1)
    stream = model.streamer()
    x = np.array([[1.0, -1.0], [5.0, 0.0], [2.0, 3.0], [0.5, 9.0], [4.0, -2.0]])
    H, k, d = 8, 2, 2
    block = 2 * H + 2 + k * 3 * 3 * d
    stream.update(x[0])
    state = stream.state
    assert state.shape == (1, block + 3 * d + 3 * d + 1)
    # previous: x_0 and its envelope (x_0 too); the history: 3 copies of x_0
    np.testing.assert_array_equal(state[0, block : block + 6], np.tile(x[0], 3))
    np.testing.assert_array_equal(state[0, block + 6 : -1], np.tile(x[0], 3))
    for t in range(1, 5):
        stream.update(x[t])
    state = stream.state
    previous = np.concatenate([x[4], x[1:5].max(axis=0), x[1:5].min(axis=0)])
    np.testing.assert_array_equal(state[0, block : block + 6], previous)
    np.testing.assert_array_equal(state[0, block + 6 : -1], x[2:5].ravel())
    assert state[0, -1] == 5
    stream.reset()
    assert not stream.state.any()


def test_old_models_and_files_have_no_envelope(tmp_path):
    model, X = fitted(window=4)
    assert model.envelope_width_ == 4
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    loaded = load_weights(path)
    assert loaded.envelope_width_ == 4
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    plain, X = fitted(window=4, envelope_width=0, w_rank=None)
    old = pickle.loads(pickle.dumps(plain))
    del old.envelope_width_, old.envelope_width
    old = pickle.loads(pickle.dumps(old))
    assert old.envelope_width_ == 0 and old.envelope_width == 0
    np.testing.assert_array_equal(old.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("value", [1, -2, 2.0, True, "4"])
def test_a_damaged_envelope_width_is_refused_by_the_exports(tmp_path, value):
    model, _ = fitted(window=4)
    model.envelope_width_ = value
    with pytest.raises(ValueError, match="envelope_width_ must be 0"):
        save_weights(model, tmp_path / "model.safetensors")


def test_training_goes_on_with_the_envelope_it_started_with():
    model, X = fitted(window=4, max_iter=3, warm_start=True)
    _, y = make_sequences(np.random.default_rng(0), n=30, T=17, d=2)  # fitted's labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.partial_fit(X, y)
        assert model.envelope_width_ == 4
        model.set_params(envelope_width=0)
        with pytest.raises(ValueError, match="envelope_width_=4"):
            model.fit(X, y)


def test_a_regressor_reads_envelopes_when_asked():
    auto, _ = fitted(FastGRNNRegressor, window=4)
    assert auto.envelope_width_ == 0 and "W" in auto.coefs_  # its benchmark chose none
    model, X = fitted(FastGRNNRegressor, window=4, envelope_width=4)
    assert model.envelope_width_ == 4 and "W1" in model.coefs_
    stream = model.streamer()
    for t in range(X.shape[1]):
        got = stream.update(X[0, t])
        if not np.isnan(X[0, t, 0]):
            np.testing.assert_allclose(got, model.predict(X[:1, : t + 1])[0], rtol=1e-10)
    assert "envelopes of 4 timesteps" in model.summary()
