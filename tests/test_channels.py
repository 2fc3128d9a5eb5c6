"""Change channels (docs/design.md, "Change channels"): what the cell reads, in
every Python path, its offsets, and how ``change_channels`` resolves and
continues."""

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._channels import capped_change, change_offsets, with_changes
from sklearn_fastgrnn._statistics import lower_median

from .conftest import make_sequences
from .test_input_maps import padded_batches

F32_MAX = float(np.finfo(np.float32).max)


@given(padded_batches())
@settings(max_examples=200, deadline=None)
def test_the_cell_reads_the_values_their_absolute_changes_and_logarithms(batch):
    X, lengths, _ = batch  # (and a window size)
    d = X.shape[2]
    offsets = np.linspace(1e-3, 2.0, d)
    cells = with_changes(X, offsets)
    assert cells.shape == (*X.shape[:2], 3 * d) and cells.dtype == X.dtype
    for i, length in enumerate(lengths):
        np.testing.assert_array_equal(cells[i, :, :d], X[i])
        np.testing.assert_array_equal(cells[i, 0, d:], np.r_[np.zeros(d), np.log(offsets)]
                                      .astype(X.dtype))
        steps = X[i, :length]
        changes = np.abs(np.diff(steps, axis=0))
        np.testing.assert_array_equal(cells[i, 1:length, d : 2 * d], changes)
        logs = np.log(changes.astype(np.float64) + offsets).astype(X.dtype)
        np.testing.assert_array_equal(cells[i, 1:length, 2 * d :], logs)
        assert np.isnan(cells[i, length:]).all()  # padding stays padding
        # the unpadded sequence reads the same
        np.testing.assert_array_equal(with_changes(X[i : i + 1, :length], offsets)[0],
                                      cells[i, :length])


@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(1, 4)), min_size=1, max_size=300),
       st.sampled_from([1.0, 0.1, 3.0]), st.sampled_from([np.float64, np.float32]))
@settings(max_examples=300, deadline=None)
def test_the_lower_median_counts_a_weight_as_repetitions(pairs, unit, dtype):
    values = np.array([v for v, _ in pairs], dtype=float)
    counts = np.array([c for _, c in pairs])
    repeated = np.sort(np.repeat(values, counts))
    expected = repeated[(len(repeated) - 1) // 2]
    # weights in any unit (0.1 does not add up exactly) and float dtype (the
    # fit's weights are in the training dtype), equal or not
    assert lower_median(values, (unit * counts).astype(dtype)) == expected
    assert lower_median(repeated, np.full(len(repeated), unit, dtype=dtype)) == expected


def test_the_offsets_are_a_fraction_of_the_median_change_and_scale_with_the_input(rng):
    X = rng.standard_normal((6, 9, 3))
    X[:, :, 1] = 4.0  # a channel that never changes
    X[:, 4, 2] = X[:, 3, 2]  # changes of 0 do not count
    X[2, 5:] = np.nan  # padding: not a change
    offsets = change_offsets(X)
    real = [X[i, : 5 if i == 2 else 9] for i in range(6)]
    changes = np.concatenate([np.abs(np.diff(s, axis=0)) for s in real])
    assert len(changes) == 5 * 8 + 4
    for channel in (0, 2):
        moves = np.sort(changes[:, channel][changes[:, channel] > 0])
        lower_median = moves[(len(moves) - 1) // 2]
        assert offsets[channel] == pytest.approx(0.3 * lower_median, rel=1e-7)
    # a weight of 2 is a sequence given twice, a weight of 0 no sequence
    weights = np.array([2.0, 1.0, 0.0, 1.0, 3.0, 1.0])
    np.testing.assert_array_equal(change_offsets(X, weights),
                                  change_offsets(np.repeat(X, [2, 1, 0, 1, 3, 1], axis=0)))
    assert offsets[1] == 1.0
    # an affine map of the input scales the offsets (the constant channel stays at
    # 1) to float64 rounding: they are not rounded to float32, which would move
    # them by up to 6e-8 (the log channels of a * X + b then differ from those of X
    # once standardised, and training with them)
    np.testing.assert_allclose(change_offsets(-250.0 * X + 7.0)[[0, 2]],
                               250.0 * offsets[[0, 2]], rtol=1e-14)
    assert (offsets.astype(np.float32) != offsets)[[0, 2]].all()
    # changes below float32's range still give a positive float32 offset
    assert change_offsets(1e-300 * X)[0] == np.finfo(np.float32).tiny
    # a single timestep has no change
    np.testing.assert_array_equal(change_offsets(X[:, :1]), 1.0)


def test_a_jump_across_the_float32_range_is_capped_at_its_maximum():
    x = np.array([[[3e38], [-3e38], [-3e38], [1.0]]], dtype=np.float32)
    cells = with_changes(x, np.array([1e30]))
    np.testing.assert_array_equal(cells[0, :, 1], np.float32([0.0, F32_MAX, 0.0, 3e38]))
    assert cells.dtype == np.float32
    # the logarithm is taken in float64: finite, and the offset counts
    np.testing.assert_array_equal(
        cells[0, :, 2], np.float32(np.log(np.float64(cells[0, :, 1]) + 1e30)))
    # in float64 the change is exact, and the float64 maximum caps it
    np.testing.assert_array_equal(with_changes(x.astype(np.float64), np.ones(1))[0, 1, 1],
                                  2 * float(np.float32(3e38)))
    huge = with_changes(np.array([[[1.7e308], [-1.7e308]]]), np.array([1e300]))
    assert huge[0, 1, 1] == np.finfo(np.float64).max and np.isfinite(huge).all()
    assert capped_change(np.array([1.7e308]), np.array([-1.7e308]))[0] == (
        np.finfo(np.float64).max)


def test_auto_reads_changes_when_sequences_have_more_than_one_timestep(rng):
    X, y = make_sequences(rng, n=40, T=5, d=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        series = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
        rows = FastGRNNClassifier(4, max_iter=2, random_state=0, n_timesteps=1).fit(
            X.reshape(40, 15), y)
        forced = FastGRNNClassifier(4, max_iter=2, random_state=0, n_timesteps=1,
                                    change_channels=True).fit(X.reshape(40, 15), y)
    assert series.change_channels_ and series.coefs_["W"].shape == (9, 4)
    np.testing.assert_array_equal(series.change_offsets_, change_offsets(X))
    # one timestep has no change: a table is read without change channels
    assert not rows.change_channels_ and rows.coefs_["W"].shape == (15, 4)
    assert rows.change_offsets_ is None
    assert forced.change_channels_ and forced.coefs_["W"].shape == (45, 4)


@pytest.mark.parametrize("incremental", [False, True])
def test_continuing_with_other_change_channels_is_refused(rng, incremental):
    X, y = make_sequences(rng, n=40, T=5, d=2)
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        before = {key: value.copy() for key, value in clf.coefs_.items()}
        clf.set_params(change_channels=False)
        more = (lambda: clf.partial_fit(X, y)) if incremental else (lambda: clf.fit(X, y))
        with pytest.raises(ValueError, match=r"change_channels=False: the fitted weights "
                                             r"read change channels"):
            more()
        for key, value in before.items():  # the fitted model is as it was
            np.testing.assert_array_equal(clf.coefs_[key], value)
        clf.set_params(change_channels="auto")  # "auto" goes on with the fitted value
        more()
    assert clf.change_channels_ and clf.n_iter_ == (3 if incremental else 4)


def test_the_streamer_keeps_the_last_timestep_of_each_stream(rng):
    X, y = make_sequences(rng, n=40, T=6, d=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastGRNNClassifier(4, max_iter=2, random_state=0, window=2).fit(X, y)
    stream = clf.streamer(2)
    stream.update(X[:2, 0])
    stream.update(np.array([X[0, 1], [np.nan, np.nan]]))  # stream 1 gets no timestep
    state = stream.state
    previous = state[:, -3:-1]  # [... | previous (2 channels) | timesteps seen]
    np.testing.assert_array_equal(previous, [X[0, 1], X[1, 0]])
    copy = pickle.loads(pickle.dumps(stream))
    restored = clf.streamer(2)
    restored.state = state
    for t in range(2, 6):
        x = np.array([X[0, t], X[1, t - 1]])
        expected = stream.update(x)
        np.testing.assert_array_equal(copy.update(x), expected)
        np.testing.assert_array_equal(restored.update(x), expected)
    # stream 1 read X[1, :5]: its change at each step is from its own last timestep
    np.testing.assert_allclose(expected, clf.predict_proba(
        np.stack([X[0], np.vstack([X[1, :5], [[np.nan, np.nan]]])])), rtol=1e-12)
    stream.reset(0)
    np.testing.assert_array_equal(stream.state[0, -3:-1], 0.0)
    np.testing.assert_allclose(stream.update(np.array([X[0, 3], X[1, 5]]))[0],
                               clf.predict_proba(X[:1, 3:4])[0], rtol=1e-12)


def test_a_regressor_reads_change_channels_too(rng):
    X = rng.standard_normal((80, 12, 1))
    y = np.abs(np.diff(X[:, :, 0], axis=1)).sum(axis=1)  # how much each series moves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = {flag: FastGRNNRegressor(8, max_iter=60, random_state=0,
                                          change_channels=flag).fit(X[:60], y[:60])
                  .score(X[60:], y[60:]) for flag in (False, True)}
    assert scores[True] > 0.95 and scores[True] > scores[False] + 0.05


def test_a_pickle_with_change_channels_but_no_offsets_is_refused_clearly(rng):
    X, y = make_sequences(rng, n=30, T=5, d=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    state = clf.__getstate__()
    del state["change_offsets_"]  # as a development build before the logarithms wrote it
    with pytest.raises(ValueError, match="reads change channels but has no change_offsets_: "
                                         "it was pickled by a development build"):
        FastGRNNClassifier.__new__(FastGRNNClassifier).__setstate__(state)
    loaded = pickle.loads(pickle.dumps(clf))  # a complete model loads as it was
    np.testing.assert_array_equal(loaded.change_offsets_, clf.change_offsets_)
