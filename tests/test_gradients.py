"""Finite-difference checks of the exact BPTT gradients, in float64.

Every parameter key, every readout with every pair of non-linearities on padded
sequences (full and low rank in turn), low rank, sample and class weights and
the L2 penalty; padded sequences read out what the unpadded ones do.
"""

import itertools

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import (
    READOUTS,
    FastGRNNEngine,
    ParameterLayout,
    Predictor,
    init_parameters,
    to_time_major,
)
from sklearn_fastgrnn._losses import cross_entropy, l2_penalty
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES, scalar_sigmoid

# Five-point central differences: truncation error O(EPS**4), round-off ~1e-11,
# and a step small enough not to cross the kinks of relu and the clipped pair.
EPS = 1e-5
REL_TOL = 1e-6
PAIRS = list(itertools.product(sorted(NONLINEARITIES), repeat=2))
# lengths of a padded batch of T = 6 steps: a full one, a length-1 one, ties
LENGTHS = np.array([6, 3, 1, 6, 4])


def _problem(rng, gate, update, w_rank=None, u_rank=None, lengths=None, n=5, T=6,
             readout="last"):
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
    engine = FastGRNNEngine(layout, gate, update, np.float64, readout)
    return layout, flat, to_time_major(X, np.float64), y, engine


def _loss(engine, flat, Xa, lengths, y, weights, layout, alpha):
    outputs = engine.forward(flat, Xa, lengths)
    doutputs = np.empty_like(outputs)
    grad = np.empty_like(flat)
    loss = cross_entropy(outputs, y, weights, doutputs)
    engine.backward(doutputs, grad)
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


@pytest.mark.parametrize("gate, update", PAIRS)
def test_every_nonlinearity_pair(rng, gate, update):
    layout, flat, Xa, y, engine = _problem(rng, gate, update)
    weights = np.full(len(y), 1 / len(y))
    assert_gradient_exact(engine, flat, Xa, None, y, weights, layout)


# every readout x every pair x full and low rank, on padded sequences (150
# checks of 5 sequences of 6 steps, H = 4: about 4 s)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("ranks", [(None, None), (2, 3)], ids=["full", "low-rank"])
@pytest.mark.parametrize("gate, update", PAIRS)
def test_every_readout_with_every_pair_on_padded_sequences(rng, readout, gate, update,
                                                           ranks):
    layout, flat, Xa, y, engine = _problem(
        rng, gate, update, *ranks, lengths=LENGTHS, readout=readout
    )
    weights = np.full(len(y), 1 / len(y))
    assert_gradient_exact(engine, flat, Xa, LENGTHS, y, weights, layout)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("w_rank, u_rank", [(2, None), (None, 2), (1, 3)])
def test_low_rank(rng, w_rank, u_rank, readout):
    layout, flat, Xa, y, engine = _problem(
        rng, "sigmoid", "tanh", w_rank, u_rank, readout=readout
    )
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


@pytest.mark.parametrize("readout", READOUTS)
def test_readout_state_and_cut_workspaces_keep_backward_exact(rng, readout):
    """Prediction between forward and backward changes nothing; a shorter batch
    after a longer one (a cut workspace) gets the gradient of a fresh engine."""
    lengths = LENGTHS
    layout, flat, Xa, _, engine = _problem(
        rng, "sigmoid", "tanh", 2, None, lengths, readout=readout
    )
    params = layout.views(flat)

    def forward_backward(engine, Xa, lengths, doutputs):
        outputs = engine.forward(flat, Xa, lengths)
        return outputs, engine.backward(doutputs, np.empty_like(flat)).copy()

    doutputs = rng.standard_normal((len(lengths), layout.n_outputs))
    fresh = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64, readout)
    expected_outputs, expected_grad = forward_backward(fresh, Xa, lengths, doutputs)
    _, U, P = fresh.stacked_weights(params)
    sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])

    outputs = engine.forward(flat, Xa, lengths)
    r = engine.readout_state(Xa, P.copy(), U, sz, sn, lengths)
    np.testing.assert_allclose(
        r @ params["V"] + params["bias_out"], outputs, rtol=1e-14, atol=1e-14
    )
    np.testing.assert_array_equal(outputs, expected_outputs)
    np.testing.assert_array_equal(engine.backward(doutputs, np.empty_like(flat)),
                                  expected_grad)

    short, short_lengths = Xa[:4], np.minimum(lengths, 4)
    got = forward_backward(engine, short, short_lengths, doutputs)
    fresh = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64, readout)
    for a, b in zip(got, forward_backward(fresh, short, short_lengths, doutputs)):
        np.testing.assert_array_equal(a, b)


def _literal_readout(readout, states):
    """The readout of the module docstring, from the real states (L, H)."""
    if readout == "last":
        return states[-1]
    return states.mean(axis=0) if readout == "mean" else states.max(axis=0)


@pytest.mark.parametrize("readout", READOUTS)
def test_readouts_pool_the_real_steps_only(rng, readout):
    """A padded sequence gives the outputs and gradient of the unpadded one, and
    the outputs are the readout's formula over its real steps."""
    layout, flat, Xa, _, engine = _problem(
        rng, "sigmoid", "tanh", lengths=LENGTHS, readout=readout
    )
    params = layout.views(flat)
    outputs = engine.forward(flat, Xa, LENGTHS)
    doutputs = rng.standard_normal(outputs.shape)
    last = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64)  # states h_1..h_L
    _, U, P = last.stacked_weights(params)
    sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
    for i, length in enumerate(LENGTHS):
        alone = Xa[:length, i : i + 1]
        states = np.array(
            [last.readout_state(alone[:t], P, U, sz, sn)[0] for t in range(1, length + 1)]
        )
        expected = _literal_readout(readout, states) @ params["V"] + params["bias_out"]
        np.testing.assert_allclose(outputs[i], expected, rtol=1e-9, atol=1e-12)
        # the same sequence alone, unpadded: the same outputs and gradient
        one = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64, readout)
        np.testing.assert_allclose(one.forward(flat, alone, None)[0], outputs[i],
                                   rtol=1e-13, atol=1e-15)
        grad_alone = one.backward(doutputs[i : i + 1], np.empty_like(flat)).copy()
        only_i = np.zeros_like(doutputs)
        only_i[i] = doutputs[i]
        engine.forward(flat, Xa, LENGTHS)
        grad_padded = engine.backward(only_i, np.empty_like(flat))
        np.testing.assert_allclose(grad_padded, grad_alone, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("gate, update", [("sigmoid", "tanh"), ("quant_sigmoid", "relu")])
def test_predictor_one_sequence_path_is_the_batch_path(rng, readout, gate, update, dtype):
    """The single-sequence loop of Predictor reads out what the batch path does,
    padded or not, to rounding."""
    layout, flat, _, _, _ = _problem(rng, gate, update, 2, None)
    coefs = layout.unpack(flat + rng.standard_normal(flat.size))  # states that turn
    X = rng.standard_normal((5, 9, layout.n_inputs)).astype(dtype)
    lengths = np.array([9, 4, 1, 9, 7])
    for i, length in enumerate(lengths):
        X[i, length:] = np.nan
    predictor = Predictor(coefs, gate, update, dtype, readout)
    batch = predictor.outputs(X, lengths)
    assert batch.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for i, length in enumerate(lengths):
        for x in (X[i : i + 1], X[i : i + 1, :length]):  # padded, cut
            one = predictor.outputs(x, lengths[i : i + 1])
            np.testing.assert_allclose(one[0], batch[i], rtol=tol, atol=tol)
    if readout != "last":  # the readouts differ
        other = Predictor(coefs, gate, update, dtype, "last").outputs(X, lengths)
        assert not np.allclose(other, batch)


def test_an_unknown_readout_is_a_clear_error():
    layout = ParameterLayout(2, 3, 2)
    for bad in ("sum", None, "LAST"):
        with pytest.raises(ValueError, match=r"readout must be one of \['last', 'mean', 'max'\]"):
            FastGRNNEngine(layout, "sigmoid", "tanh", np.float64, bad)
