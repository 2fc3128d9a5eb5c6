"""Input windows, readouts and the folded input scaling, through the estimator.

The engine's own tests check the exact gradients of every readout; a window
only regroups the input, so a windowed model is the unwindowed model of the
regrouped input (checked here bit for bit), and the folded standardisation
makes raw input train exactly as standardised input.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor, _scaling
from sklearn_fastgrnn._channels import change_offsets, with_changes
from sklearn_fastgrnn._compiled_cell import StepRows
from sklearn_fastgrnn._sequences import edge_extended, windowed
from sklearn_fastgrnn._training import TrainingData, TrainingRun
from sklearn_fastgrnn.exceptions import LayoutWarning

from .conftest import assert_same_coefs, make_sequences, materialized


# ------------------------------------------------------------------ windowed
@st.composite
def padded_batches(draw):
    n = draw(st.integers(1, 4))
    T = draw(st.integers(1, 9))
    d = draw(st.integers(1, 3))
    X = draw(arrays(np.float64, (n, T, d), elements=st.floats(-1e3, 1e3)))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=n, max_size=n)))
    for i, length in enumerate(lengths):
        X[i, length:] = np.nan
    return X, lengths, draw(st.integers(1, 5))


@given(padded_batches())
@settings(max_examples=200, deadline=None)
def test_windows_regroup_the_real_steps_and_fill_the_last_one(batch):
    X, lengths, k = batch
    n, T, d = X.shape
    W, steps = windowed(X, lengths, k)
    assert W.shape == (n, -(-T // k), k * d)
    np.testing.assert_array_equal(steps, -(-lengths // k))
    for i, length in enumerate(lengths):
        flat = W[i].reshape(-1, d)  # timesteps again, window after window
        np.testing.assert_array_equal(flat[:length], X[i, :length])
        fill = flat[length : steps[i] * k]
        np.testing.assert_array_equal(fill, np.broadcast_to(X[i, length - 1], fill.shape))
        assert np.isnan(flat[steps[i] * k :]).all()
        # padding-invariant: the unpadded sequence gives the same windows
        alone, _ = windowed(X[i : i + 1, :length], lengths[i : i + 1], k)
        np.testing.assert_array_equal(alone[0], W[i, : steps[i]])


@given(padded_batches(), st.data())
@settings(max_examples=150, deadline=None)
def test_moved_training_windows_are_the_windows_of_a_later_start(batch, data):
    """The batches of shift_windows and crop_fraction: the part of sequence i
    from timestep c_i, prefixed with the shifts[i] timesteps before it (copies
    of the first timestep before the sequence's start), cut into windows (what
    the engine receives, time-major). A part of n_i timesteps takes
    ceil((n_i + shifts[i]) / k) windows, which read on past its end into the
    sequence, to the sequence's end (then edge-filled). The same batch as an
    array (the NumPy engine's) and as StepRows (the compiled engine's)."""
    X, lengths, k = batch
    n, T, d = X.shape
    shifts = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    parts = np.array([data.draw(st.integers(1, length)) for length in lengths])
    starts = np.array([data.draw(st.integers(0, length - part))
                       for length, part in zip(lengths, parts)])
    timesteps = np.nan_to_num(X)  # the mapped training input; padding is never read
    run = object.__new__(TrainingRun)
    run.data = TrainingData(None, None, None, None, None, None, timesteps, lengths, k,
                            True, 0.5)
    run.Xa = np.zeros((-(-(T + k - 1) // k), n, k * d + 1))
    run._batch_buffers, run._run_views = {}, {}
    run.extended = edge_extended(timesteps, lengths, k - 1, 2 * T + 3 * k)  # as __init__
    run.starts = k - 1 - shifts + starts
    run.lengths = -(-(parts + shifts) // k)
    idx = np.arange(n)[::-1].copy()
    for in_place in (False, True):
        run._in_place = in_place
        batch, batch_lengths = run._batch(idx, run.lengths[idx])
        assert isinstance(batch, StepRows) is in_place
        batch = materialized(batch)
        assert np.isfinite(batch).all()  # padded steps are skipped, but never NaN
        for row, i in enumerate(idx):
            steps = run.lengths[i]
            end = min(lengths[i], starts[i] + steps * k - shifts[i])  # the windows' reach
            late = timesteps[i, np.maximum(np.arange(starts[i] - shifts[i], end), 0)][None]
            expected, _ = windowed(late, np.array([len(late[0])]), k)
            np.testing.assert_array_equal(batch[:steps, row, :-1], expected[0])
            assert (batch[:, row, -1] == 1).all()


def test_a_window_is_the_cell_reading_regrouped_input(rng):
    X, y = make_sequences(rng, n=30, T=6, d=2)
    # without input scaling: standardising 2 channels is not standardising 12;
    # the regrouped model reads the values, changes and their logarithms (3 x 2
    # channels) as input
    windowed_fit = FastGRNNClassifier(hidden_size=5, max_iter=3, random_state=0, window=3,
                                      scale_input=False, shift_windows=False)
    regrouped_fit = FastGRNNClassifier(hidden_size=5, max_iter=3, random_state=0, window=1,
                                       scale_input=False, change_channels=False)
    regrouped = with_changes(X, change_offsets(X)).reshape(30, 2, 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", LayoutWarning)  # 2 steps of 18 channels, meant so
        windowed_fit.fit(X, y)
        regrouped_fit.fit(regrouped, y)
    assert_same_coefs(windowed_fit, regrouped_fit)
    assert windowed_fit.window_ == 3 and windowed_fit.coefs_["W"].shape == (18, 5)
    np.testing.assert_array_equal(
        windowed_fit.predict_proba(X), regrouped_fit.predict_proba(regrouped)
    )


@pytest.mark.parametrize("readout", ["last", "mean", "max"])
@pytest.mark.parametrize("window", [1, 3])
def test_padding_changes_no_prediction(rng, readout, window):
    X, y = make_sequences(rng, n=40, T=10, d=2)
    X[::2, 7:] = np.nan
    clf = FastGRNNClassifier(hidden_size=6, max_iter=2, random_state=0, readout=readout,
                             window=window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    padded = clf.predict_proba(X[:4])
    for i in range(4):
        length = 7 if i % 2 == 0 else 10
        np.testing.assert_allclose(padded[i], clf.predict_proba(X[i : i + 1, :length])[0],
                                   rtol=1e-6)


def test_window_auto_aims_at_about_fifty_steps(rng):
    X = rng.standard_normal((20, 400, 1))
    y = np.arange(20) % 2
    clf = FastGRNNClassifier(hidden_size=4, max_iter=1, window="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert clf.fit(X, y).window_ == 8
        assert clf.fit(X[:, :60], y).window_ == 1
        # one timestep a step up to 74 timesteps (the documented boundary)
        assert clf.fit(X[:, :74], y).window_ == 1
        assert clf.fit(X[:, :75], y).window_ == 2
        assert clf.set_params(window=500).fit(X, y).window_ == 400  # at most T


def test_window_auto_follows_the_typical_length_weighted_as_the_fit_is(rng):
    # 11 sequences of 100 real steps, 9 of 1,000: the median is 100, so 2
    # timesteps a step, whatever the longest; the longest caps an explicit window
    X = rng.standard_normal((20, 1000, 1))
    X[:11, 100:] = np.nan
    y = np.arange(20) % 2
    clf = FastGRNNClassifier(hidden_size=4, max_iter=1, window="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert clf.fit(X, y).window_ == 2
        # weights are repetitions: three times the long ones outweigh the short
        weights = np.where(np.arange(20) < 11, 1.0, 3.0)
        assert clf.fit(X, y, sample_weight=weights).window_ == 20
        repeated = np.repeat(np.arange(20), weights.astype(int))
        assert clf.fit(X[repeated], y[repeated]).window_ == 20
        # a weight of 0 is a sequence left out
        assert clf.fit(X, y, sample_weight=(np.arange(20) >= 11) * 1.0).window_ == 20
        assert clf.set_params(window=5000).fit(X, y).window_ == 1000

# -------------------------------------------------------------- input maps
@pytest.mark.parametrize("w_rank", [None, 2])
@pytest.mark.parametrize("window", [1, 2])
def test_fold_and_unfold_invert_each_other(rng, w_rank, window):
    d, H, C = 3, 4, 2
    shapes = {"W": (window * d, H)} if w_rank is None else {
        "W1": (window * d, w_rank), "W2": (w_rank, H)}
    coefs = {key: rng.standard_normal(shape) for key, shape in shapes.items()}
    coefs |= {"U": rng.standard_normal((H, H)), "V": rng.standard_normal((H, C)),
              "bias_gate": rng.standard_normal(H), "bias_update": rng.standard_normal(H),
              "zeta": np.array(0.5), "nu": np.array(-2.0), "bias_out": rng.standard_normal(C)}
    maps = _scaling.Maps(rng.standard_normal(d) * 100, rng.random(d) * 50 + 0.1,
                         rng.standard_normal(C), rng.random(C) + 0.5)
    back = _scaling.unfold(_scaling.fold(coefs, maps), maps)
    for key in coefs:
        np.testing.assert_allclose(back[key], coefs[key], rtol=1e-9, atol=1e-9, err_msg=key)
    # the folded weights on raw input give the pre-activations of the scaled input
    x = rng.standard_normal((5, window * d))
    raw = x * np.tile(maps.input_scale, window) + np.tile(maps.input_mean, window)
    W = coefs["W"] if w_rank is None else coefs["W1"] @ coefs["W2"]
    folded = _scaling.fold(coefs, maps)
    W_raw = folded["W"] if w_rank is None else folded["W1"] @ folded["W2"]
    np.testing.assert_allclose(raw @ W_raw + folded["bias_gate"], x @ W + coefs["bias_gate"],
                               rtol=1e-9, atol=1e-9)


def _fits_on_z_scores_and_raw(rng, estimator, T):
    """``estimator`` fitted on z-scored padded sequences ``Z`` and on ``raw = a *
    Z + b`` (offsets up to 50 deviations): ``(on_z, on_raw, Z, raw)``."""
    X, y = make_sequences(rng, n=60, T=T, d=3)
    X[::3, T - 3:] = np.nan
    mean, std = np.nanmean(X, axis=(0, 1)), np.nanstd(X, axis=(0, 1))
    Z = (X - mean) / std
    a, b = np.array([1e4, 0.01, 3.0]), np.array([-5e5, 2.0, 1e3])
    raw = a * Z + b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        on_z = estimator.__class__(**estimator.get_params()).fit(Z, y)
        on_raw = estimator.__class__(**estimator.get_params()).fit(raw, y)
    return on_z, on_raw, Z, raw


@pytest.mark.parametrize("estimator", [
    FastGRNNClassifier(hidden_size=6, max_iter=5, random_state=0, dtype="float64",
                       scale_input=True, window=2, readout="mean"),
    FastGRNNRegressor(hidden_size=6, max_iter=5, random_state=0, dtype="float64",
                      scale_input=True),
], ids=["classifier", "regressor"])
def test_raw_input_trains_as_standardised_input(rng, estimator):
    """Trained on a * X + b, a model predicts on a * X + b what one trained on X
    (z-scored) predicts on X, to rounding: the map is folded into the weights."""
    on_z, on_raw, Z, raw = _fits_on_z_scores_and_raw(rng, estimator, T=8)
    predict = "predict_proba" if hasattr(on_z, "predict_proba") else "predict"
    np.testing.assert_allclose(getattr(on_raw, predict)(raw), getattr(on_z, predict)(Z),
                               rtol=1e-7, atol=1e-9)
    # both standardise to the same numbers to float64 rounding (float64 training)
    assert on_raw.loss_curve_ == pytest.approx(on_z.loss_curve_, rel=1e-12)


@pytest.mark.parametrize("estimator", [
    FastGRNNClassifier(hidden_size=6, max_iter=30, random_state=0, change_channels=True,
                       envelope_width=3),
    FastGRNNClassifier(hidden_size=6, max_iter=30, random_state=0, change_channels=True,
                       window=2, engine="numpy"),
    FastGRNNRegressor(hidden_size=6, max_iter=30, random_state=0, change_channels=True),
], ids=["classifier", "classifier-numpy", "regressor"])
def test_float64_raw_input_trains_the_model_of_its_z_scores_bit_for_bit(rng, estimator):
    """float32 training on float64 ``a * X + b`` (``a > 0``) is training on its z
    scores: the maps and the change offsets keep float64 precision, so both
    inputs standardise to the same float32 numbers, and the fits are the same."""
    on_z, on_raw, Z, raw = _fits_on_z_scores_and_raw(rng, estimator, T=12)
    assert on_raw.loss_curve_ == on_z.loss_curve_
    assert on_raw.n_iter_ == on_z.n_iter_
    if hasattr(on_z, "classes_"):
        np.testing.assert_array_equal(on_raw.predict(raw), on_z.predict(Z))
    else:  # the folded float32 W and biases read values 50 deviations off zero: a
        # float32 rounding of those, so to the scale of the predictions, not of each
        # (one near zero measured 6.5e-6 apart, 1.8e-4 of itself, under NumPy 1.26)
        expected = on_z.predict(Z)
        np.testing.assert_allclose(on_raw.predict(raw), expected, rtol=1e-4,
                                   atol=5e-5 * np.abs(expected).max())
    # the same weights, expressed for the two inputs' units
    for key in ("U", "V", "zeta", "nu", "bias_out"):
        np.testing.assert_array_equal(on_raw.coefs_[key], on_z.coefs_[key])


def test_scale_input_keeps_continuation_exact(rng):
    X, y = make_sequences(rng, n=40)
    X = 1000 * X + 50
    once = FastGRNNClassifier(hidden_size=5, max_iter=4, tol=0, random_state=0,
                              scale_input=True).fit(X, y)
    twice = FastGRNNClassifier(hidden_size=5, max_iter=2, tol=0, random_state=0,
                               scale_input=True).fit(X, y)
    twice.set_params(warm_start=True, max_iter=2).fit(X, y)
    assert_same_coefs(once, twice)


# ------------------------------------------------------------------ moments


def _direct_moments(values, weights):
    """Weighted count, mean and squared deviations of each channel of (n, T, d)
    values over their non-NaN entries, one entry at a time."""
    n, T, d = values.shape
    out = []
    for c in range(d):
        entries = [(values[i, t, c], weights[i]) for i in range(n) for t in range(T)
                   if not np.isnan(values[i, t, c])]
        total = sum(w for _, w in entries)
        mean = sum(v * w for v, w in entries) / total
        out.append((total, mean, sum(w * (v - mean) ** 2 for v, w in entries)))
    return np.array(out).T


@pytest.mark.parametrize("padded", [False, True])
def test_moments_are_the_weighted_moments_of_the_real_values(rng, padded):
    values = rng.standard_normal((9, 5, 3)) * [1.0, 10.0, 0.1] + [0.0, -5.0, 100.0]
    if padded:
        values[2, 3:] = np.nan
        values[7, 1:, 1] = np.nan
    weights = rng.uniform(0.1, 3.0, 9)
    moments = _scaling.Moments.of(values, weights, axis=(0, 1))
    np.testing.assert_allclose(np.array(moments), _direct_moments(values, weights), rtol=1e-12)
    # the moments of two parts merged are those of the whole
    halves = [_scaling.Moments.of(values[s], weights[s], axis=(0, 1))
              for s in (slice(0, 4), slice(4, None))]
    np.testing.assert_allclose(np.array(halves[0].merge(halves[1])), np.array(moments),
                               rtol=1e-12)


def test_moments_leave_the_values_alone(rng):
    """The moments work in place on a copy: a float64 array, NaN padding
    included, is the caller's and comes back unchanged."""
    values = rng.standard_normal((6, 4, 2)) + 3.0
    values[1, 2:] = np.nan
    before = values.copy()
    _scaling.Moments.of(values, np.ones(6), axis=(0, 1))
    np.testing.assert_array_equal(values, before)
    # any memory layout: channels first, as aeon stores them, transposed
    weights = rng.uniform(0.5, 2.0, 6)
    for view in (values.transpose(0, 2, 1).copy().transpose(0, 2, 1), values[:, ::-1]):
        np.testing.assert_allclose(
            np.array(_scaling.Moments.of(view, weights, axis=(0, 1))),
            _direct_moments(view, weights), rtol=1e-12)
    targets = rng.standard_normal(6)  # one output, as a vector
    kept = targets.copy()
    moments = _scaling.Moments.of(targets, np.ones(6), axis=0)
    np.testing.assert_array_equal(targets, kept)
    np.testing.assert_allclose(moments.mean, targets.mean(), rtol=1e-12)
    np.testing.assert_allclose(moments.m2, ((targets - targets.mean()) ** 2).sum(), rtol=1e-12)


@given(
    st.integers(1, 40), st.integers(1, 30), st.integers(1, 4),
    st.sampled_from([np.float32, np.float64]), st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_standardised_input_is_the_plain_formula_bit_for_bit(n, T, d, dtype, out, seed):
    """Blocks, tiling and the one-channel scalar change no bit of
    ``((X - mean) / scale)`` computed in float64 and cast, NaN included."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, T, d)) * 50 + 7).astype(dtype)
    X[rng.random((n, T)) < 0.2] = np.nan
    if seed % 2:  # channels first in memory, as aeon stores them
        X = X.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    mean, scale = rng.standard_normal(d) * 9, rng.uniform(1e-3, 40, d)
    expected = ((X.astype(np.float64) - mean) / scale).astype(out)
    block = _scaling._BLOCK
    try:
        _scaling._BLOCK = int(rng.integers(1, 200))  # blocks of a few sequences
        got = _scaling.standardised(X, mean, scale, out)
    finally:
        _scaling._BLOCK = block
    assert got.dtype == out and got.shape == X.shape
    np.testing.assert_array_equal(got, expected)


def test_moments_of_targets_are_per_column(rng):
    targets = rng.standard_normal((12, 2)) * [3.0, 0.5]
    weights = rng.uniform(0.1, 3.0, 12)
    moments = _scaling.Moments.of(targets, weights, axis=0)
    np.testing.assert_allclose(moments.weight, [weights.sum()] * 2)
    np.testing.assert_allclose(moments.mean, np.average(targets, axis=0, weights=weights))
    np.testing.assert_allclose(
        moments.m2, (weights[:, None] * (targets - moments.mean) ** 2).sum(axis=0))
    with pytest.raises(ValueError, match="over the samples"):
        _scaling.Moments.of(targets, weights, axis=1)


def test_an_offset_the_working_dtype_cannot_hold_is_warned_about(rng):
    """Folded into the weights, the standardisation reads the raw values: a
    channel 1e7 deviations from zero is rounded by 0.6 deviations in float32."""
    X, y = make_sequences(rng, n=30)
    params = dict(hidden_size=4, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match=r"mean is 1e\+07 times its standard deviation: "
                                         r"float32 rounds .* up to 0.62 of a deviation"):
        FastGRNNClassifier(**params).fit(X * 0.01 + 1e5, y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="An input channel's mean")
        FastGRNNClassifier(**params).fit(X + 1e3, y)  # rounded by 1e-4 deviations
        FastGRNNClassifier(dtype="float64", **params).fit(X * 0.01 + 1e5, y)
