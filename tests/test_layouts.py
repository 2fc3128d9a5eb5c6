"""Input layouts of docs/design.md, section "Input layouts": 2D, 3D, variable length,
DataFrames."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._sequences import CHANNELS_FIRST_RATIO
from sklearn_fastgrnn.exceptions import LayoutWarning
from sklearn_fastgrnn.preprocessing import SequenceScaler

from .conftest import make_sequences


@pytest.fixture
def fitted(rng):
    X, y = make_sequences(rng, n=60, T=6, d=3)
    return FastGRNNClassifier(hidden_size=8, max_iter=10, random_state=0).fit(X, y), X, y


def test_2d_time_major_equals_3d(rng):
    X, y = make_sequences(rng, n=50, T=5, d=4)
    X2 = X.reshape(len(X), -1)  # row = [x_1, ..., x_T], each x_t of d values
    a = FastGRNNClassifier(hidden_size=8, max_iter=5, random_state=0).fit(X, y)
    b = FastGRNNClassifier(hidden_size=8, n_timesteps=5, max_iter=5, random_state=0)
    b.fit(X2, y)
    for key in a.coefs_:
        np.testing.assert_array_equal(a.coefs_[key], b.coefs_[key])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X2))
    assert (b.n_timesteps_, b.n_channels_, b.n_features_in_) == (5, 4, 20)
    assert (a.n_timesteps_, a.n_channels_, a.n_features_in_) == (5, 4, 20)
    # a model fitted on 2D also reads 3D input, and the other way round
    np.testing.assert_array_equal(b.predict_proba(X), a.predict_proba(X2))


def test_2d_default_is_a_univariate_series(rng):
    X, y = make_sequences(rng, n=40, T=7, d=1)
    a = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0).fit(X[:, :, 0], y)
    b = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0).fit(X, y)
    assert (a.n_timesteps_, a.n_channels_) == (7, 1)
    np.testing.assert_array_equal(a.coefs_["U"], b.coefs_["U"])


def test_n_timesteps_one_is_the_tabular_case(rng):
    X = rng.standard_normal((30, 6))
    y = (X[:, 0] > 0).astype(int)
    clf = FastGRNNClassifier(hidden_size=4, n_timesteps=1, max_iter=3).fit(X, y)
    assert (clf.n_timesteps_, clf.n_channels_) == (1, 6)


def test_padded_sequence_predicts_what_the_unpadded_one_does(fitted):
    clf, X, _ = fitted
    for length in (1, 3, 5):
        short = X[:4, :length]
        padded = np.full((4, 9, X.shape[2]), np.nan)
        padded[:, :length] = short
        np.testing.assert_array_equal(clf.predict_proba(padded), clf.predict_proba(short))


def test_mixed_lengths_in_one_batch(fitted):
    clf, X, _ = fitted
    lengths = [6, 2, 4, 1, 6, 3]
    padded = X[:6].copy()
    for i, length in enumerate(lengths):
        padded[i, length:] = np.nan
    together = clf.predict_proba(padded)
    for i, length in enumerate(lengths):
        alone = clf.predict_proba(X[i : i + 1, :length])
        np.testing.assert_allclose(together[i : i + 1], alone, rtol=0, atol=1e-15)


def test_training_on_padded_data_equals_training_without_the_padding(rng):
    """The mask also stops gradients: padding changes nothing in training."""
    X, y = make_sequences(rng, n=24, T=5, d=2)
    wide = np.full((24, 8, 2), np.nan)
    wide[:, :5] = X
    a = FastGRNNClassifier(hidden_size=4, max_iter=4, random_state=0).fit(X, y)
    b = FastGRNNClassifier(hidden_size=4, max_iter=4, random_state=0).fit(wide, y)
    for key in a.coefs_:
        np.testing.assert_allclose(a.coefs_[key], b.coefs_[key], rtol=1e-12, atol=1e-14)


def test_3d_predict_accepts_any_number_of_timesteps(fitted):
    clf, X, _ = fitted
    longer = np.concatenate([X[:5], X[:5]], axis=1)
    assert clf.predict_proba(longer).shape == (5, len(clf.classes_))
    assert clf.predict(X[:5, :2]).shape == (5,)


def test_dataframe_gives_feature_names(rng):
    pd = pytest.importorskip("pandas")
    X = rng.standard_normal((30, 4))
    y = (X[:, 0] > 0).astype(int)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = FastGRNNClassifier(hidden_size=4, n_timesteps=2, max_iter=3).fit(df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    with pytest.warns(UserWarning, match="feature names"):
        from_array = clf.predict(X)
    np.testing.assert_array_equal(clf.predict(df), from_array)


def test_float32_trains_and_predicts_in_float32(rng):
    X, y = make_sequences(rng, dtype=np.float32)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0).fit(X, y)
    assert all(v.dtype == np.float32 for v in clf.coefs_.values())
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.predict_proba(X.astype(np.float64)).dtype == np.float64
    # dtype=None follows the input; the default trains float64 input in float32
    clf64 = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0, dtype=None)
    clf64.fit(X.astype(np.float64), y)
    assert all(v.dtype == np.float64 for v in clf64.coefs_.values())
    # int input is float64
    clf64.fit(np.rint(X * 3).astype(int), y)
    assert clf64.coefs_["W"].dtype == np.float64
    default = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0)
    default.fit(X.astype(np.float64), y)
    assert all(v.dtype == np.float32 for v in default.coefs_.values())
    assert default.predict_proba(X.astype(np.float64)).dtype == np.float64
    exact = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0, dtype="float64")
    exact.fit(X, y)
    assert all(v.dtype == np.float64 for v in exact.coefs_.values())


@pytest.mark.parametrize("estimator", [FastGRNNClassifier, FastGRNNRegressor, SequenceScaler])
def test_a_3d_x_laid_out_as_aeons_is_warned_about(rng, estimator):
    """aeon and sktime hold series as (n, channels, timesteps): read as (n,
    timesteps, channels), a univariate series is one timestep of its values."""
    series = rng.standard_normal((24, 1, 40))  # aeon's layout of 24 univariate series
    y = np.arange(24) % 2
    params = {} if estimator is SequenceScaler else {"max_iter": 1}
    with pytest.warns(LayoutWarning, match=r"1 timestep of 40 channels.*transpose\(0, 2, 1\)"):
        estimator(**params).fit(series, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        estimator(**params).fit(series.transpose(0, 2, 1), y)


@given(st.integers(1, 12), st.integers(1, 120))
@settings(max_examples=40, deadline=None)
def test_the_layout_warning_asks_for_many_times_more_channels_than_timesteps(T, d):
    X = np.zeros((3, T, d))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SequenceScaler().fit(X)
    warned = any(issubclass(w.category, LayoutWarning) for w in caught)
    assert warned == (d >= CHANNELS_FIRST_RATIO * T)
