"""The compiled loss of a mini-batch (cross-entropy, L2 penalty, clipping)
against the NumPy references, its exact gradient, and the references where it
cannot run."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_fastgrnn import FastGRNNClassifier, _compiled_loss
from sklearn_fastgrnn._build import find_compiler
from sklearn_fastgrnn._losses import (
    BinaryCrossEntropy,
    CrossEntropy,
    Distillation,
    cross_entropy,
    l2_penalty,
)
from sklearn_fastgrnn._optimizers import clip_by_global_norm
from sklearn_fastgrnn._training import TrainingRun

from .conftest import make_sequences, needs_compiler

# float32: the C library's exp against NumPy's, and sums of a few terms
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


def _batch(rng, B, C, dtype, spread):
    logits = (rng.standard_normal((B, C)) * spread).astype(dtype)
    y = rng.integers(0, C, B)
    w = rng.uniform(0, 1, B)
    return logits, y, (w / w.sum()).astype(dtype)


@needs_compiler
@given(st.integers(1, 70), st.integers(2, 30), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([0.1, 3.0, 40.0]), st.sampled_from([0.0, 0.1, 0.7]),
       st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_the_cross_entropy_is_numpys_to_rounding(B, C, dtype, spread, smoothing, seed):
    logits, y, w = _batch(np.random.default_rng(seed), B, C, dtype, spread)
    expected_grad, got_grad = np.empty_like(logits), np.empty_like(logits)
    expected = cross_entropy(logits, y, w, expected_grad, smoothing)
    got = _compiled_loss.compiled_loss(CrossEntropy(smoothing))(logits, y, w, got_grad)
    tol = TOLERANCE[dtype]
    assert got == pytest.approx(expected, rel=tol * 10, abs=tol)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=tol * 10, atol=tol)


@needs_compiler
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_cross_entropy_gradient_is_exact(rng, smoothing):
    """Five-point central differences of the C loss itself, in float64."""
    logits, y, w = _batch(rng, 7, 5, np.float64, 3.0)
    loss = _compiled_loss.compiled_loss(CrossEntropy(smoothing))
    assert loss.label_smoothing == smoothing
    grad = np.empty_like(logits)
    loss(logits, y, w, grad)
    numeric, scratch, h = np.empty_like(logits), np.empty_like(logits), 1e-4

    def at(index, shift):
        moved = logits.copy()
        moved[index] += shift
        return loss(moved, y, w, scratch)

    for index in np.ndindex(logits.shape):
        numeric[index] = (8 * (at(index, h) - at(index, -h))
                          - (at(index, 2 * h) - at(index, -2 * h))) / (12 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-11)


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_logits_give_a_non_finite_loss(rng, dtype):
    """NaN or inf in a logit (not the first, nor the target's) makes the loss
    non-finite, as NumPy's does (training then stops with a clear error);
    -inf there is a probability of 0, and the loss stays finite."""
    loss = _compiled_loss.compiled_loss(CrossEntropy())
    for bad in (np.nan, np.inf, -np.inf):
        logits, y, w = _batch(rng, 4, 6, dtype, 1.0)
        y[2] = 0
        logits[2, 3] = bad
        with np.errstate(invalid="ignore", over="ignore"):
            expected = cross_entropy(logits, y, w, np.empty_like(logits))
            got = loss(logits, y, w, np.empty_like(logits))
        assert np.isfinite(got) == np.isfinite(expected) == (bad == -np.inf), bad
        assert np.isnan(got) == np.isnan(expected), bad


@needs_compiler
@given(st.integers(0, 60), st.integers(1, 30), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([0.0, 1e-4, 0.3]), st.sampled_from([None, 1e-3, 5.0, 1e6]),
       st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_the_penalty_and_clipping_are_numpys_to_rounding(n_weights, extra, dtype, alpha,
                                                         max_norm, seed):
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(n_weights + extra).astype(dtype)
    grad = (rng.standard_normal(flat.size) * rng.choice([1e-3, 1.0, 30.0])).astype(dtype)
    expected_grad, got_grad = grad.copy(), grad.copy()
    expected = l2_penalty(flat, n_weights, alpha, expected_grad)
    clip_by_global_norm(expected_grad, max_norm)
    got = _compiled_loss.PenaltyAndClip(n_weights, alpha, max_norm, compiled=True)(
        flat, got_grad)
    tol = TOLERANCE[dtype]
    assert got == pytest.approx(expected, rel=tol * 10, abs=1e-300)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=tol * 10, atol=1e-300)
    if max_norm is not None:
        assert np.linalg.norm(got_grad.astype(np.float64)) <= max_norm * (1 + tol * 10)


def test_other_losses_and_no_compiler_keep_the_references(rng, monkeypatch):
    binary = BinaryCrossEntropy()
    assert _compiled_loss.compiled_loss(binary) is binary
    distilled = Distillation(binary, 0.3, 2.0)
    assert _compiled_loss.compiled_loss(distilled) is distilled
    if find_compiler() is not None:  # the hard part of a distillation in C
        distilled = _compiled_loss.compiled_loss(Distillation(CrossEntropy(0.1), 0.3, 2.0))
        assert isinstance(distilled.hard, _compiled_loss._CompiledCrossEntropy)
        assert (distilled.alpha, distilled.temperature) == (0.3, 2.0)
        assert distilled.hard.label_smoothing == 0.1
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(_compiled_loss.LIBRARY, "loaded", None)
    plain = CrossEntropy()
    assert _compiled_loss.compiled_loss(plain) is plain
    assert isinstance(_compiled_loss.LIBRARY.loaded, Exception)
    finish = _compiled_loss.PenaltyAndClip(3, 0.5, 1.0, compiled=True)
    assert finish.functions is None
    flat, grad = np.ones(5), np.full(5, 2.0)
    expected_grad = grad.copy()
    expected = l2_penalty(flat, 3, 0.5, expected_grad)
    clip_by_global_norm(expected_grad, 1.0)
    assert finish(flat, grad) == expected
    np.testing.assert_array_equal(grad, expected_grad)
    monkeypatch.setattr(_compiled_loss.LIBRARY, "loaded", None)  # built again afterwards


@needs_compiler
def test_arrays_the_c_code_cannot_take_go_to_numpy(rng):
    """Targets of another integer type, mixed dtypes, strided outputs."""
    loss = _compiled_loss.compiled_loss(CrossEntropy())
    logits, y, w = _batch(rng, 6, 4, np.float64, 2.0)
    for args in [(logits, y.astype(np.int32), w), (logits, y, w.astype(np.float32)),
                 (np.asfortranarray(logits), y, w)]:
        expected_grad, grad = np.empty_like(logits), np.empty_like(logits)
        expected = cross_entropy(*args, expected_grad)
        assert loss(*args, grad) == expected  # NumPy's, to the bit
        np.testing.assert_array_equal(grad, expected_grad)


@needs_compiler
def test_training_with_the_compiled_engine_uses_the_compiled_loss(rng, monkeypatch):
    """Every mini-batch of a classifier's fit goes through the C loss, and the
    sparse training keeps its order (penalty, support, clipping) in NumPy."""
    X, y = make_sequences(rng, n=64)
    calls = {"cross_entropy": 0, "penalty_and_clip": 0}
    original = _compiled_loss.LIBRARY.get

    def counted():
        functions = original()

        def count(name, function):
            def run(*args):
                calls[name] += 1
                return function(*args)
            return run

        return {key: count(key[1], f) for key, f in functions.items()}

    monkeypatch.setattr(_compiled_loss.LIBRARY, "get", counted)
    # the batches one by one in Python (an epoch in one C call runs the same C
    # functions from C, to the bit: test_compiled_epoch.py)
    monkeypatch.setattr(TrainingRun, "_compiled_epoch", lambda *args: None)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=3, batch_size=16, tol=0,
                             engine="compiled", random_state=0).fit(X, y)
    assert calls == {"cross_entropy": 12, "penalty_and_clip": 12}
    assert np.isfinite(clf.loss_curve_).all()
    calls.update(cross_entropy=0, penalty_and_clip=0)
    FastGRNNClassifier(hidden_size=4, max_iter=3, batch_size=16, tol=0, sparsity_w=0.5,
                       engine="compiled", random_state=0).fit(X, y)
    assert calls == {"cross_entropy": 12, "penalty_and_clip": 0}
