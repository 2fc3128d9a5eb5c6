"""Finite-difference checks of the exact BPTT gradients, in float64.

Every parameter key, every pair of non-linearities, low rank, sample and class
weights, padded sequences and the L2 penalty.
"""

import itertools

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import (
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    to_time_major,
)
from sklearn_fastgrnn._losses import cross_entropy, l2_penalty
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES, scalar_sigmoid

# Five-point central differences: truncation error O(EPS**4), round-off ~1e-11,
# and a step small enough not to cross the kinks of relu and the clipped pair.
EPS = 1e-5
REL_TOL = 1e-6


def _problem(rng, gate, update, w_rank=None, u_rank=None, lengths=None, n=5, T=6):
    d, H, C = 3, 4, 3
    layout = ParameterLayout(d, H, C, w_rank, u_rank)
    flat = init_parameters(layout, np.random.RandomState(0), 1.0, -4.0, np.float64)
    # move away from the initial point so that every term of the gradient matters
    flat += 0.3 * rng.standard_normal(flat.size)
    X = rng.standard_normal((n, T, d))
    if lengths is not None:
        for i, length in enumerate(lengths):
            X[i, length:] = np.nan
    y = rng.integers(0, C, n)
    engine = FastGRNNEngine(layout, gate, update, np.float64)
    return layout, flat, to_time_major(X, np.float64), y, engine


def _loss(engine, flat, Xa, lengths, y, weights, layout, alpha):
    logits = engine.forward(flat, Xa, lengths)
    dlogits = np.empty_like(logits)
    grad = np.empty_like(flat)
    loss = cross_entropy(logits, y, weights, dlogits)
    engine.backward(dlogits, grad)
    loss += l2_penalty(flat, layout.n_weights, alpha, grad)
    return loss, grad


def assert_gradient_exact(engine, flat, Xa, lengths, y, weights, layout, alpha=0.0):
    _, grad = _loss(engine, flat, Xa, lengths, y, weights, layout, alpha)
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        values = []
        for step in (-2, -1, 1, 2):
            moved = flat.copy()
            moved[i] += step * EPS
            values.append(_loss(engine, moved, Xa, lengths, y, weights, layout, alpha)[0])
        numeric[i] = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * EPS)
    exact, approx = layout.views(grad), layout.views(numeric)
    for key in layout.shapes:
        scale = max(np.abs(approx[key]).max(), np.abs(exact[key]).max(), 1e-8)
        err = np.abs(approx[key] - exact[key]).max() / scale
        assert err < REL_TOL, f"{key}: relative error {err:.2e}"
        # a gradient that is identically zero would pass trivially: it is not
        assert np.abs(exact[key]).max() > 1e-8, f"{key}: zero gradient"


@pytest.mark.parametrize(
    "gate, update", list(itertools.product(sorted(NONLINEARITIES), repeat=2))
)
def test_every_nonlinearity_pair(rng, gate, update):
    layout, flat, Xa, y, engine = _problem(rng, gate, update)
    weights = np.full(len(y), 1 / len(y))
    assert_gradient_exact(engine, flat, Xa, None, y, weights, layout)


@pytest.mark.parametrize("w_rank, u_rank", [(2, None), (None, 2), (1, 3)])
def test_low_rank(rng, w_rank, u_rank):
    layout, flat, Xa, y, engine = _problem(rng, "sigmoid", "tanh", w_rank, u_rank)
    assert set(layout.shapes) >= {"W1", "W2"} if w_rank else {"W"}
    weights = np.full(len(y), 1 / len(y))
    assert_gradient_exact(engine, flat, Xa, None, y, weights, layout)


@pytest.mark.parametrize("gate, update", [("sigmoid", "tanh"), ("quant_sigmoid", "relu")])
def test_padded_sequences(rng, gate, update):
    lengths = np.array([6, 3, 1, 6, 4])
    layout, flat, Xa, y, engine = _problem(rng, gate, update, 2, 3, lengths=lengths)
    weights = np.full(len(y), 1 / len(y))
    assert_gradient_exact(engine, flat, Xa, lengths, y, weights, layout)


def test_sample_weights_and_l2(rng):
    layout, flat, Xa, y, engine = _problem(rng, "sigmoid", "tanh")
    weights = rng.random(len(y))
    weights /= weights.sum()
    assert_gradient_exact(engine, flat, Xa, None, y, weights, layout, alpha=0.3)


def test_class_weights_as_the_estimator_builds_them(rng):
    """Weights from ``class_weight`` and ``sample_weight`` enter the loss exactly."""
    layout, flat, Xa, y, engine = _problem(rng, "sigmoid", "tanh", n=8)
    clf = FastGRNNClassifier(class_weight={0: 3.0, 1: 0.5, 2: 1.0})
    clf.classes_, clf.out_activation_ = np.arange(3), "softmax"
    sample_weight = rng.random(len(y)) + 0.5
    weights = clf._sample_weights(y, sample_weight, np.empty((len(y), 1, 1)), np.float64, False)
    np.testing.assert_allclose(weights, sample_weight * np.array([3.0, 0.5, 1.0])[y])
    assert_gradient_exact(engine, flat, Xa, None, y, weights / weights.sum(), layout)


def test_final_state_and_cut_workspaces_keep_backward_exact(rng):
    """Prediction between forward and backward changes nothing; a shorter batch
    after a longer one (a cut workspace) gets the gradient of a fresh engine."""
    lengths = np.array([6, 3, 1, 6, 4])
    layout, flat, Xa, _, engine = _problem(rng, "sigmoid", "tanh", 2, None, lengths)
    params = layout.views(flat)

    def forward_backward(engine, Xa, lengths, dlogits):
        logits = engine.forward(flat, Xa, lengths)
        return logits, engine.backward(dlogits, np.empty_like(flat)).copy()

    dlogits = rng.standard_normal((len(lengths), layout.n_classes))
    fresh = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64)
    expected_logits, expected_grad = forward_backward(fresh, Xa, lengths, dlogits)
    _, U, P = fresh.stacked_weights(params)
    sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])

    logits = engine.forward(flat, Xa, lengths)
    h_T = engine.final_state(Xa, P.copy(), U, sz, sn, lengths)
    np.testing.assert_array_equal(h_T @ params["V"] + params["bias_out"], logits)
    np.testing.assert_array_equal(logits, expected_logits)
    np.testing.assert_array_equal(engine.backward(dlogits, np.empty_like(flat)), expected_grad)

    short, short_lengths = Xa[:4], np.minimum(lengths, 4)
    got = forward_backward(engine, short, short_lengths, dlogits)
    fresh = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64)
    for a, b in zip(got, forward_backward(fresh, short, short_lengths, dlogits)):
        np.testing.assert_array_equal(a, b)
