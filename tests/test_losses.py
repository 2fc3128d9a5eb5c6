"""The loss objects: exact gradients (float64 finite differences), baselines and
qualities, and one end-to-end BPTT check per loss through the engine."""

import numpy as np
import pytest

from sklearn_fastgrnn import _losses
from sklearn_fastgrnn._cell import FastGRNNEngine, ParameterLayout, init_parameters, to_time_major

EPS = 1e-6


def _targets(loss, rng, B, K):
    if isinstance(loss, _losses.CrossEntropy):
        return rng.integers(0, K, B)
    if isinstance(loss, _losses.BinaryCrossEntropy):
        return (rng.random((B, K)) > 0.5).astype(float)
    if isinstance(loss, _losses.PoissonDeviance):
        return rng.poisson(2.0, (B, K)).astype(float)
    return rng.standard_normal((B, K))


def _soft(loss, rng, B, K):
    if isinstance(loss, _losses.CrossEntropy):
        p = rng.random((B, K))
        return p / p.sum(axis=1, keepdims=True)
    if isinstance(loss, _losses.BinaryCrossEntropy):
        return rng.random((B, K))
    return rng.standard_normal((B, K)) if not isinstance(
        loss, _losses.PoissonDeviance) else rng.poisson(2.0, (B, K)).astype(float)


def _numeric_gradient(loss, outputs, targets, w):
    """Central differences of ``loss`` with respect to each output."""
    numeric, scratch = np.empty_like(outputs), np.empty_like(outputs)
    for i in np.ndindex(outputs.shape):
        up, down = outputs.copy(), outputs.copy()
        up[i] += EPS
        down[i] -= EPS
        numeric[i] = (loss(up, targets, w, scratch) - loss(down, targets, w, scratch)) / (2 * EPS)
    return numeric


TASK_LOSSES = [_losses.CrossEntropy(), _losses.BinaryCrossEntropy(), _losses.SquaredError(),
               _losses.PoissonDeviance()]


def _all_losses():
    for loss in TASK_LOSSES:
        yield type(loss).__name__, loss, False
        yield f"Distillation({type(loss).__name__})", _losses.Distillation(loss, 0.3, 2.5), True


@pytest.mark.parametrize("name, loss, distilled", list(_all_losses()),
                         ids=[n for n, _, _ in _all_losses()])
def test_loss_gradient_is_exact(name, loss, distilled, rng):
    B, K = 5, 3
    outputs = rng.standard_normal((B, K))
    task = loss.hard if distilled else loss
    targets = _targets(task, rng, B, K)
    if distilled:
        targets = (targets, _soft(task, rng, B, K))
    w = rng.random(B) + 0.1
    w /= w.sum()
    grad = np.empty_like(outputs)
    value = loss(outputs, targets, w, grad)
    np.testing.assert_allclose(grad, _numeric_gradient(loss, outputs, targets, w),
                               rtol=1e-6, atol=1e-9)
    if not distilled:
        assert value == pytest.approx(loss.value(outputs, targets, w), rel=1e-12)


@pytest.mark.parametrize("loss", TASK_LOSSES, ids=lambda loss: type(loss).__name__)
def test_the_baseline_is_the_loss_of_the_best_constant(loss, rng):
    B, K = 200, 3
    targets = _targets(loss, rng, B, K)
    w = rng.random(B) + 0.1
    baseline = loss.baseline(targets, w)
    # the best constant output: numerically, over a few candidates around it
    if isinstance(loss, _losses.CrossEntropy):
        p = np.bincount(targets, weights=w, minlength=K) / w.sum()
        best = np.log(p)
    elif isinstance(loss, _losses.BinaryCrossEntropy):
        p = w @ targets / w.sum()
        best = np.log(p / (1 - p))
    elif isinstance(loss, _losses.PoissonDeviance):
        best = np.log(w @ targets / w.sum())
    else:
        best = w @ targets / w.sum()
    value = loss.value(np.broadcast_to(best, (B, K)), targets, w / w.sum())
    assert baseline == pytest.approx(value, rel=1e-9)
    for step in (-0.1, 0.1):  # one output moved (softmax ignores a common shift)
        moved = np.broadcast_to(best + step * np.eye(K)[0], (B, K))
        assert loss.value(moved, targets, w / w.sum()) > baseline


def test_qualities():
    w = np.ones(4)
    ce = _losses.CrossEntropy()
    assert ce.quality(np.array([[1, 0], [0, 1], [1, 0], [1, 0]]), np.array([0, 1, 1, 0]), w) == 0.75
    assert ce.baseline_quality(np.array([0, 1, 1, 1]), w) == 0.75
    bce = _losses.BinaryCrossEntropy()
    targets = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], float)
    assert bce.quality(np.array([[1, -1], [1, 1], [-1, 1], [1, -1.0]]), targets, w) == 0.75
    assert bce.baseline_quality(targets, w) == 0.5  # [1, 0] right on rows 0 and 3
    se = _losses.SquaredError()
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert se.quality(y, y, w) == 1.0
    assert se.quality(np.full_like(y, 2.5), y, w) == pytest.approx(0.0)
    assert se.baseline_quality(y, w) == 0.0
    assert se.quality(y, np.ones_like(y), w) == 0.0  # a constant target: R² 0 unless exact
    assert se.quality(np.ones_like(y), np.ones_like(y), w) == 1.0


@pytest.mark.parametrize("loss", TASK_LOSSES, ids=lambda loss: type(loss).__name__)
def test_bptt_through_each_loss_is_exact(loss, rng):
    """The loss gradient, back through time: the gradient of every parameter."""
    d, H, K, n, T = 2, 3, 3, 4, 5
    layout = ParameterLayout(d, H, K)
    flat = init_parameters(layout, np.random.RandomState(0), 1.0, -4.0, np.float64)
    flat += 0.3 * rng.standard_normal(flat.size)
    Xa = to_time_major(rng.standard_normal((n, T, d)), np.float64)
    targets = _targets(loss, rng, n, K)
    w = np.full(n, 1.0 / n)
    engine = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64)

    def value(params):
        outputs = engine.forward(params, Xa)
        return loss(outputs, targets, w, np.empty_like(outputs))

    outputs = engine.forward(flat, Xa)
    dout = np.empty_like(outputs)
    loss(outputs, targets, w, dout)
    grad = engine.backward(dout, np.empty_like(flat))
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += EPS
        down[i] -= EPS
        numeric[i] = (value(up) - value(down)) / (2 * EPS)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def _smoothed_targets(loss, targets, K, e):
    """The target distribution a smoothed loss trains against, written out."""
    if isinstance(loss, _losses.CrossEntropy):
        return (1 - e) * np.eye(K)[targets] + e / K
    return targets * (1 - e) + e / 2


@pytest.mark.parametrize("task", [_losses.CrossEntropy, _losses.BinaryCrossEntropy])
@pytest.mark.parametrize("e", [0.1, 0.6])
@pytest.mark.parametrize("distilled", [False, True])
def test_label_smoothing_is_the_loss_of_the_smoothed_targets(task, e, distilled, rng):
    """The smoothed loss and its exact gradient (finite differences, float64),
    against the cross-entropy of the smoothed targets written out; ``value``
    stays the loss of the labels themselves."""
    B, K = 6, 4
    loss = task(label_smoothing=e)
    outputs = rng.standard_normal((B, K)) * 2
    targets = _targets(loss, rng, B, K)
    w = rng.random(B) + 0.1
    w /= w.sum()
    smoothed = _smoothed_targets(loss, targets, K, e)
    if task is _losses.CrossEntropy:
        expected = -float(w @ (smoothed * _losses.log_softmax(outputs)).sum(axis=1))
    else:
        expected = _losses.BinaryCrossEntropy().value(outputs, smoothed, w)
    if distilled:
        soft = _soft(loss, rng, B, K)
        loss, targets = _losses.Distillation(loss, 0.3, 2.0), (targets, soft)
        teacher = _losses.Distillation(task(), 1.0, 2.0)(
            outputs, targets, w, np.empty_like(outputs))
        expected = 0.7 * expected + 0.3 * teacher
    grad = np.empty_like(outputs)
    assert loss(outputs, targets, w, grad) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(grad, _numeric_gradient(loss, outputs, targets, w),
                               rtol=1e-6, atol=1e-9)
    if not distilled:
        plain = task()
        assert loss.value(outputs, targets, w) == plain.value(outputs, targets, w)
        assert loss.value(outputs, targets, w) != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("task", [_losses.CrossEntropy, _losses.BinaryCrossEntropy])
def test_no_label_smoothing_is_the_plain_loss_to_the_bit(task, rng):
    B, K = 9, 5
    outputs = rng.standard_normal((B, K)).astype(np.float32)
    targets = _targets(task(), rng, B, K)
    w = np.full(B, 1 / B, np.float32)
    grads = [np.empty_like(outputs), np.empty_like(outputs)]
    if task is _losses.CrossEntropy:  # the reference as it was: one-hot targets
        logp = _losses.log_softmax(outputs)
        expected = -float(w @ logp[np.arange(B), targets])
        np.exp(logp, out=grads[0])
        grads[0][np.arange(B), targets] -= 1.0
        grads[0] *= w[:, None]
    else:
        expected = _losses.BinaryCrossEntropy.value(None, outputs, targets, w)
        np.exp(_losses.log_sigmoid(outputs), out=grads[0])
        grads[0] -= targets
        grads[0] *= w[:, None]
    assert task(label_smoothing=0.0)(outputs, targets, w, grads[1]) == expected
    np.testing.assert_array_equal(grads[1], grads[0])
