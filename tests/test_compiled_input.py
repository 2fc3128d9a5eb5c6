"""The compiled passes over the training input against their NumPy references:
the standardisation and the time-major copy to the bit, the moments to
rounding, training to the bit, and the references where C cannot be built."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_fastgrnn import (
    FastGRNNClassifier,
    FastGRNNRegressor,
    _compiled_input,
    _scaling,
    _training,
)
from sklearn_fastgrnn._cell import to_time_major

from .conftest import assert_same_coefs, make_sequences, needs_compiler

DTYPES = [np.float32, np.float64]


def _sequences(rng, n, T, d, dtype, *, extreme=False, padded=True):
    """Sequences of ``dtype`` NaN-padded at random lengths; ``extreme`` mixes in
    every magnitude of the dtype (subnormal to its largest), signed zeros and
    values whose standardisation overflows float32."""
    X = rng.standard_normal((n, T, d)) * 40 + 9
    if extreme:
        exponent = (-44, 36) if dtype == np.float32 else (-320, 305)
        X *= 10.0 ** rng.integers(*exponent, X.shape)
        X.flat[:: 7] = np.where(rng.random(X.flat[::7].shape) < 0.5, 0.0, -0.0)
    X = X.astype(dtype)
    if padded:
        lengths = rng.integers(1, T + 1, n)
        for i, length in enumerate(lengths):
            X[i, length:] = np.nan
    return X


@needs_compiler
@given(
    st.integers(1, 70), st.integers(1, 40), st.integers(1, 10),
    st.sampled_from(DTYPES), st.sampled_from(DTYPES), st.booleans(), st.booleans(),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_standardisation_and_time_major_copy_are_numpys_to_the_bit(
    n, T, d, dtype, out, extreme, channels_first, seed
):
    rng = np.random.default_rng(seed)
    X = _sequences(rng, n, T, d, dtype, extreme=extreme)
    if channels_first:  # as aeon stores them: not C-contiguous
        X = X.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    mean = (rng.standard_normal(d) * 30).astype(np.float32).astype(np.float64)
    scale = rng.uniform(1e-6, 50, d).astype(np.float32).astype(np.float64)
    with np.errstate(over="ignore"):
        expected = _scaling.standardised(X, mean, scale, out)
    got = _compiled_input.standardised(X, mean, scale, out)
    assert got.dtype == out and got.shape == X.shape
    np.testing.assert_array_equal(got, expected)  # inf where inf, NaN where NaN
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    expected = to_time_major(X, dtype)
    got = _compiled_input.time_major(X, dtype)
    assert got.dtype == dtype and got.shape == (T, n, d + 1)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@needs_compiler
@given(
    st.integers(1, 70), st.integers(1, 40), st.integers(1, 10), st.sampled_from(DTYPES),
    st.booleans(), st.booleans(), st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_the_moments_are_numpys_to_rounding(n, T, d, dtype, padded, weighted, seed):
    rng = np.random.default_rng(seed)
    X = _sequences(rng, n, T, d, dtype, padded=padded)
    weights = rng.uniform(0, 3, n) if weighted else np.ones(n, dtype)
    expected = _scaling.Moments.of(X, weights, axis=(0, 1))
    got = _compiled_input.moments(X, weights)
    for name, a, b in zip(expected._fields, got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300, err_msg=name)


@needs_compiler
def test_sequences_without_weight_have_the_references_moments(rng):
    """All weights zero: weight 0, mean 0 (not NaN) and m2 0, as NumPy's."""
    X = _sequences(rng, 6, 5, 2, np.float64)
    expected = _scaling.Moments.of(X, np.zeros(6), axis=(0, 1))
    got = _compiled_input.moments(X, np.zeros(6))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, np.zeros(2))


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
def test_training_on_the_compiled_passes_gives_the_references_weights(rng, monkeypatch, dtype):
    """fit and partial_fit, classifier (padded, weighted) and regressor: the
    compiled passes run, and the weights are those of the NumPy passes, to the bit."""
    X, y = make_sequences(rng, n=90, T=9, d=3)
    X = (X * [5.0, 0.1, 30.0] + [100.0, -2.0, 0.0]).astype(dtype)
    X[::4, 6:] = np.nan
    weights = rng.uniform(0.5, 2.0, 90)
    target = np.nansum(X[:, :, 0], axis=1) * 3 + 50

    def train():
        clf = FastGRNNClassifier(hidden_size=5, max_iter=3, engine="compiled", random_state=0)
        clf.fit(X, y, sample_weight=weights).partial_fit(X[:30] * 2, y[:30])
        reg = FastGRNNRegressor(hidden_size=5, max_iter=3, engine="compiled", random_state=0)
        return clf, reg.fit(X, target)

    calls = []

    def counted(function):
        def run(*args):
            calls.append(function.__name__)
            return function(*args)
        return run

    for module, name in [(_compiled_input, "moments"), (_compiled_input, "standardised"),
                         (_training, "time_major")]:
        monkeypatch.setattr(module, name, counted(getattr(module, name)))
    compiled = train()
    assert set(calls) == {"moments", "standardised", "time_major"}
    monkeypatch.setattr(_compiled_input.LIBRARY, "get", _no_library)
    reference = train()
    for a, b in zip(compiled, reference):
        assert_same_coefs(a, b)


def _no_library():
    raise _compiled_input.BuildError("no compiler in this test")


def test_without_a_compiler_the_passes_are_the_references(rng, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(_compiled_input.LIBRARY, "loaded", None)
    X = _sequences(rng, 7, 5, 2, np.float32)
    weights = np.ones(7)
    moments = _compiled_input.moments(X, weights)
    assert isinstance(_compiled_input.LIBRARY.loaded, Exception)
    for a, b in zip(moments, _scaling.Moments.of(X, weights, axis=(0, 1))):
        np.testing.assert_array_equal(a, b)
    mean, scale = moments.spread()
    np.testing.assert_array_equal(_compiled_input.standardised(X, mean, scale, np.float32),
                                  _scaling.standardised(X, mean, scale, np.float32))
    np.testing.assert_array_equal(_compiled_input.time_major(X, np.float32),
                                  to_time_major(X, np.float32))
    monkeypatch.setattr(_compiled_input.LIBRARY, "loaded", None)  # built again afterwards


def test_the_numpy_engine_trains_on_the_reference_passes(rng, monkeypatch):
    monkeypatch.setattr(_compiled_input.LIBRARY, "get", _failing_library)
    X, y = make_sequences(rng, n=30)
    FastGRNNClassifier(hidden_size=4, max_iter=2, engine="numpy", random_state=0).fit(X, y)


def _failing_library():
    raise AssertionError("engine='numpy' reached the compiled input passes")
