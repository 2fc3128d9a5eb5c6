"""SequenceScaler, pad_sequences and make_fastgrnn_pipeline."""

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.preprocessing import SequenceScaler, make_fastgrnn_pipeline, pad_sequences

SMALL = dict(hidden_size=8, max_iter=3, batch_size=32, random_state=0)


# scikit-learn's estimator checks: tests/test_estimator_checks.py


def ragged_digits(n=240, seed=0):
    """Digit images as sequences of 8 rows, each cut to a random length 3-8.

    Pixels stay on the 0-16 scale of scikit-learn, so scaling matters.
    """
    X, y = load_digits_sequences()
    lengths = np.random.default_rng(seed).integers(3, 9, n)
    return [x[:t] * 16.0 for x, t in zip(X[:n], lengths)], y[:n]


def padded_toy(rng, n=30, T=7, d=3):
    """NaN-padded 3D data with per-channel offsets and scales, and its lengths."""
    X = rng.standard_normal((n, T, d)) * [1.0, 5.0, 0.1] + [3.0, -2.0, 10.0]
    lengths = rng.integers(1, T + 1, n)
    lengths[0] = T
    X[np.arange(T) >= lengths[:, None]] = np.nan
    return X, lengths


# ------------------------------------------------------------- SequenceScaler
def test_statistics_are_per_channel_over_real_timesteps(rng):
    X, lengths = padded_toy(rng)
    real = np.concatenate([x[:t] for x, t in zip(X, lengths)])  # (sum T_i, d)
    scaler = SequenceScaler().fit(X)
    assert scaler.mean_.shape == scaler.scale_.shape == (3,)
    assert scaler.n_steps_seen_ == lengths.sum()
    assert_allclose(scaler.mean_, real.mean(axis=0), rtol=1e-12)
    assert_allclose(scaler.scale_, real.std(axis=0), rtol=1e-12)
    Xt = scaler.transform(X)
    assert_array_equal(np.isnan(Xt), np.isnan(X))  # padding kept in place
    scaled = np.concatenate([x[:t] for x, t in zip(Xt, lengths)])
    assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-12)
    assert_allclose(scaled.std(axis=0), 1.0, rtol=1e-12)


def test_differs_from_standard_scaler_on_flattened_input(rng):
    # StandardScaler gives each (timestep, channel) column its own statistics
    X = rng.standard_normal((50, 4, 2)) + np.arange(4)[None, :, None]
    seq = SequenceScaler().fit_transform(X).reshape(50, -1)
    flat = StandardScaler().fit_transform(X.reshape(50, -1))
    per_column_means = seq.mean(axis=0)
    assert np.ptp(per_column_means) > 1.0  # the time trend survives per channel
    assert_allclose(flat.mean(axis=0), 0.0, atol=1e-12)  # it is removed per column


def test_2d_layouts_match_3d(rng):
    X, _ = padded_toy(rng, n=20, T=5, d=3)
    X2 = X.reshape(20, 15)
    s3 = SequenceScaler().fit(X)
    s2 = SequenceScaler(n_timesteps=5).fit(X2)
    assert_allclose(s2.mean_, s3.mean_)
    assert_allclose(s2.scale_, s3.scale_)
    out = s2.transform(X2)
    assert out.shape == (20, 15)
    assert_allclose(out, s3.transform(X).reshape(20, 15))
    assert (s2.n_features_in_, s2.n_timesteps_, s2.n_channels_) == (15, 5, 3)
    # default 2D: each column a timestep of one channel
    uni = SequenceScaler().fit(X2[:, :5])
    assert uni.mean_.shape == (1,)
    assert_allclose(uni.mean_, np.nanmean(X2[:, :5]))


def test_3d_transform_reads_any_length_and_2d_after_3d_fit(rng):
    X, _ = padded_toy(rng, n=20, T=5, d=3)
    scaler = SequenceScaler().fit(X)
    longer = rng.standard_normal((4, 9, 3))
    assert_allclose(scaler.transform(longer), (longer - scaler.mean_) / scaler.scale_)
    assert_allclose(scaler.transform(X.reshape(20, 15)), scaler.transform(X).reshape(20, 15))
    with pytest.raises(ValueError, match="4 channels per timestep.*fitted with 3"):
        scaler.transform(rng.standard_normal((2, 5, 4)))
    with pytest.raises(ValueError, match="X has 14 features"):
        scaler.transform(rng.standard_normal((2, 14)))


def test_float32_stays_float32(rng):
    X, _ = padded_toy(rng)
    X32 = X.astype(np.float32)
    scaler = SequenceScaler().fit(X32)
    Xt = scaler.transform(X32)
    assert Xt.dtype == np.float32
    assert scaler.inverse_transform(Xt).dtype == np.float32
    assert_allclose(Xt, SequenceScaler().fit_transform(X), rtol=1e-5, atol=1e-5)


def test_inverse_transform_round_trip(rng):
    X, _ = padded_toy(rng)
    scaler = SequenceScaler().fit(X)
    back = scaler.inverse_transform(scaler.transform(X))
    assert_array_equal(np.isnan(back), np.isnan(X))
    assert_allclose(back, X, rtol=1e-12)


def test_partial_fit_over_chunks_equals_fit(rng):
    X, _ = padded_toy(rng, n=60, T=6)
    extra = rng.standard_normal((5, 2, 3)) + 4.0  # 3D chunks may differ in length
    streamed = SequenceScaler()
    for start in range(0, 60, 7):
        streamed.partial_fit(X[start:start + 7])
    streamed.partial_fit(extra)
    extra_padded = np.full((5, 6, 3), np.nan)
    extra_padded[:, :2] = extra
    whole = SequenceScaler().fit(np.concatenate([X, extra_padded]))
    assert streamed.n_steps_seen_ == whole.n_steps_seen_
    assert_allclose(streamed.mean_, whole.mean_, rtol=1e-12)
    assert_allclose(streamed.var_, whole.var_, rtol=1e-12)
    # fit starts over
    assert_allclose(streamed.fit(X).mean_, SequenceScaler().fit(X).mean_)


def test_constant_channel_gets_unit_scale():
    X = np.ones((10, 4, 2)) * [7.0, 0.0]
    X[:, :, 1] = np.arange(4)
    scaler = SequenceScaler().fit(X)
    assert scaler.scale_[0] == 1.0
    assert_allclose(scaler.transform(X)[:, :, 0], 0.0)


def test_joblib_round_trip(rng, tmp_path):
    X, _ = padded_toy(rng)
    scaler = SequenceScaler(n_timesteps=7).fit(X.reshape(len(X), -1))
    joblib.dump(scaler, tmp_path / "scaler.joblib")
    loaded = joblib.load(tmp_path / "scaler.joblib")
    assert loaded.get_params() == scaler.get_params()
    assert_array_equal(loaded.mean_, scaler.mean_)
    assert_array_equal(loaded.transform(X), scaler.transform(X))


def test_bad_values_name_sample_and_timestep(rng):
    X = rng.standard_normal((5, 4, 2))
    X[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN in sample 3 at timestep 1"):
        SequenceScaler().fit(X)
    X[3, 1, 0] = np.inf
    with pytest.raises(ValueError, match="inf .*sample 3 at timestep 1"):
        SequenceScaler().fit(X)
    X[3] = np.nan
    with pytest.raises(ValueError, match="Sample 3 of X has no real timestep"):
        SequenceScaler().fit(X)
    with pytest.raises(ValueError, match="not divisible by n_timesteps=3"):
        SequenceScaler(n_timesteps=3).fit(rng.standard_normal((5, 8)))


# ------------------------------------------------------------- pad_sequences
def test_pad_sequences_layout():
    seqs = [np.arange(6.0).reshape(3, 2), np.array([[9.0, 8.0]]), np.ones((2, 2))]
    X = pad_sequences(seqs)
    assert X.shape == (3, 3, 2) and X.dtype == np.float64
    assert_array_equal(X[0], seqs[0])
    assert_array_equal(X[1, 0], [9.0, 8.0])
    assert np.isnan(X[1, 1:]).all() and np.isnan(X[2, 2]).all()
    assert not np.isnan(X[2, :2]).any()
    # 1-D sequences are univariate; the dtype is respected
    uni = pad_sequences([[1, 2, 3], [4]], dtype=np.float32)
    assert uni.shape == (2, 3, 1) and uni.dtype == np.float32
    assert_array_equal(uni[:, :, 0], [[1, 2, 3], [4, np.nan, np.nan]])


def test_pad_sequences_truncation():
    seqs = [np.arange(5.0), np.arange(2.0)]
    pre = pad_sequences(seqs, maxlen=3)
    post = pad_sequences(seqs, maxlen=3, truncating="post")
    assert_array_equal(pre[:, :, 0], [[2, 3, 4], [0, 1, np.nan]])
    assert_array_equal(post[:, :, 0], [[0, 1, 2], [0, 1, np.nan]])
    assert pad_sequences(seqs, maxlen=7).shape == (2, 7, 1)


@pytest.mark.parametrize(
    "seqs, kwargs, message",
    [
        (
            [np.ones((3, 2)), np.ones((2, 2)), np.ones((4, 3))], {},
            "Sequence 2 has 3 channels, but sequence 0 has 2",
        ),
        ([np.ones(3), np.ones((2, 2))], {}, "Sequence 1 has 2 channels, but sequence 0 has 1"),
        (
            [np.ones((3, 2)), [[1.0, np.nan], [2.0, 3.0]]], {},
            "Sequence 1 contains nan at timestep 0, channel 1",
        ),
        ([np.ones(3), [1.0, 2.0, np.inf]], {}, "Sequence 1 contains inf at timestep 2"),
        ([np.ones(3), np.ones(2), []], {}, "Sequence 2 is empty"),
        ([np.ones((2, 2, 2))], {}, r"Sequence 0 has shape \(2, 2, 2\)"),
        ([["a", "b"]], {}, "Sequence 0 cannot be read as float64"),
        ([], {}, "at least one sequence"),
        ([np.ones(3)], {"maxlen": 0}, "maxlen must be a positive integer"),
        ([np.ones(3)], {"truncating": "middle"}, "truncating must be 'pre' or 'post'"),
        ([np.ones(3)], {"dtype": np.int64}, "must be a floating dtype"),
    ],
)
def test_pad_sequences_errors(seqs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pad_sequences(seqs, **kwargs)


# ------------------------------------------------------------------ pipelines
def test_pipeline_steps():
    seq = make_fastgrnn_pipeline(n_timesteps=8, hidden_size=12)
    assert list(seq.named_steps) == ["sequencescaler", "fastgrnnclassifier"]
    assert seq[0].n_timesteps == 8 and seq[-1].n_timesteps == 8
    assert seq[-1].hidden_size == 12
    std = make_fastgrnn_pipeline("standard", n_timesteps=8)
    assert list(std.named_steps) == ["require_2d", "standardscaler", "fastgrnnclassifier"]
    assert isinstance(std[0], FunctionTransformer) and isinstance(std[1], StandardScaler)
    bare = make_fastgrnn_pipeline(None, hidden_size=4)
    assert [type(s) for s in bare] == [FastGRNNClassifier]
    with pytest.raises(ValueError, match="scaler must be 'sequence', 'standard' or None"):
        make_fastgrnn_pipeline("minmax")
    with pytest.raises(TypeError):
        make_fastgrnn_pipeline(hidden_sise=4)


def test_standard_pipeline_passes_nan_padding_through():
    seqs, y = ragged_digits()
    X2 = pad_sequences(seqs).reshape(len(seqs), -1)
    pipe = make_fastgrnn_pipeline("standard", n_timesteps=8, **SMALL).fit(X2, y)
    Xt = pipe[:-1].transform(X2)
    assert_array_equal(np.isnan(Xt), np.isnan(X2))
    # the classifier stops each sequence at its last real step
    clf = pipe[-1]
    alone = [clf.predict_proba(row.reshape(1, 8, 8)[:, : len(s)]) for row, s in zip(Xt, seqs)]
    assert_allclose(np.vstack(alone), pipe.predict_proba(X2), rtol=1e-10, atol=1e-12)


def test_standard_pipeline_rejects_3d_with_advice():
    seqs, y = ragged_digits(n=40)
    X3 = pad_sequences(seqs)
    pipe = make_fastgrnn_pipeline("standard", **SMALL)
    advice = r"X is 3D with shape \(40, 8, 8\).*scaler='sequence'.*shape \(40, 64\).*n_timesteps=8"
    with pytest.raises(ValueError, match=advice):
        pipe.fit(X3, y)
    pipe.set_params(fastgrnnclassifier__n_timesteps=8).fit(X3.reshape(40, -1), y)
    with pytest.raises(ValueError, match=advice):
        pipe.predict(X3)


@pytest.mark.parametrize("layout", ["3d", "2d"])
def test_variable_length_grid_search_equals_each_sequence_alone(layout):
    seqs, y = ragged_digits(n=240)
    X = pad_sequences(seqs)
    params = dict(SMALL)
    if layout == "2d":
        X, params["n_timesteps"] = X.reshape(len(X), -1), 8
    search = GridSearchCV(
        make_fastgrnn_pipeline("sequence", **params),
        {
            "fastgrnnclassifier__hidden_size": [8, 12],
            "fastgrnnclassifier__learning_rate_init": [0.01, 0.03],
        },
        cv=2,
    ).fit(X[:160], y[:160])
    best = search.best_estimator_
    test_seqs = seqs[160:]
    assert len({len(s) for s in test_seqs}) == 6  # lengths 3 to 8 all occur
    padded = best.predict_proba(X[160:])
    alone = np.vstack([best.predict_proba(s[None]) for s in test_seqs])
    assert_allclose(alone, padded, rtol=1e-10, atol=1e-12)
    alone_labels = np.concatenate([best.predict(s[None]) for s in test_seqs])
    assert_array_equal(alone_labels, best.predict(X[160:]))
    # padding was really ignored: filling it with zeros changes the answer
    zero_filled = np.nan_to_num(X[160:], nan=0.0)
    assert not np.allclose(best.predict_proba(zero_filled), padded)


def test_pad_sequences_reads_an_already_padded_array():
    from sklearn_fastgrnn.preprocessing import pad_sequences

    rng = np.random.default_rng(0)
    ragged = [rng.standard_normal((length, 2)) for length in (3, 5, 1)]
    X = pad_sequences(ragged)
    np.testing.assert_array_equal(pad_sequences(X), X)  # padding twice changes nothing
    np.testing.assert_array_equal(pad_sequences(list(X)), X)
    longer = pad_sequences(X, maxlen=7)
    assert longer.shape == (3, 7, 2)
    np.testing.assert_array_equal(longer[:, :5], X)
    assert np.isnan(longer[:, 5:]).all()
    np.testing.assert_array_equal(pad_sequences(X, maxlen=2, truncating="pre")[1],
                                  ragged[1][-2:])  # the last real steps, not padding
    univariate = pad_sequences([np.array([1.0, 2.0, np.nan]), [4.0]])
    np.testing.assert_array_equal(univariate[:, :, 0], [[1.0, 2.0], [4.0, np.nan]])
    inside = X.copy()
    inside[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="Sequence 1 contains nan at timestep 1, channel 0"):
        pad_sequences(inside)
    empty = X.copy()
    empty[2] = np.nan
    with pytest.raises(ValueError, match="Sequence 2 has no real timestep"):
        pad_sequences(empty)
