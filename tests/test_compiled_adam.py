"""The compiled Adam step is NumPy's Adam step to the bit, and steps aside
where it cannot run."""

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier, _compiled_adam, _training
from sklearn_fastgrnn._optimizers import SGD, Adam

from .conftest import assert_same_coefs, make_sequences, needs_compiler


def _gradients(rng, n, dtype, steps):
    """Gradients of every magnitude the dtype has (subnormal to near overflow),
    with infinities, NaN and signed zeros now and then."""
    exponent = (-45, 30) if dtype == np.float32 else (-320, 300)
    for step in range(steps):
        g = rng.standard_normal(n) * 10.0 ** rng.integers(*exponent, n)
        if step % 7 == 0:
            g[:5] = [np.inf, -np.inf, np.nan, 0.0, -0.0]
        yield g.astype(dtype)


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("settings", [{}, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7}])
def test_the_compiled_step_is_numpys_to_the_bit(rng, dtype, settings):
    n = 1001
    reference, compiled = Adam(n, dtype, **settings), Adam(n, dtype, **settings)
    p_ref = rng.standard_normal(n).astype(dtype)
    p, grad = p_ref.copy(), np.empty(n, dtype)
    step = _compiled_adam.compiled_step(compiled, p, grad)
    assert isinstance(step, _compiled_adam._CompiledAdamStep)
    with np.errstate(all="ignore"):
        for lr, g in zip(np.geomspace(1e-4, 10, 150), _gradients(rng, n, dtype, 150)):
            grad[...] = g
            reference.step(p_ref, g, lr)
            step(p, grad, lr)
            np.testing.assert_array_equal(p, p_ref)  # NaN where NaN, bit for bit
            np.testing.assert_array_equal(compiled.m, reference.m)
            np.testing.assert_array_equal(compiled.v, reference.v)
    assert compiled.t == reference.t == 150
    # other arrays than those it was made for: NumPy's step
    other = np.zeros(n, dtype)
    with np.errstate(all="ignore"):
        step(other, np.ones(n, dtype), 0.1)
    assert compiled.t == 151 and np.count_nonzero(other) > 0


def test_the_step_stays_numpys_where_it_cannot_be_compiled(monkeypatch):
    params, grad = np.zeros(10, np.float32), np.zeros(10, np.float32)
    sgd = SGD(10, np.float32)
    assert _compiled_adam.compiled_step(sgd, params, grad) == sgd.step
    adam = Adam(10, np.float32)
    for p, g in [(params[::2], grad[::2]), (params.astype(np.float64), grad),
                 (np.zeros(9, np.float32), grad)]:
        assert _compiled_adam.compiled_step(adam, p, g) == adam.step
    # no compiler: the failed build is remembered, and NumPy's step is used
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(_compiled_adam.LIBRARY, "loaded", None)
    assert _compiled_adam.compiled_step(adam, params, grad) == adam.step
    assert isinstance(_compiled_adam.LIBRARY.loaded, Exception)
    monkeypatch.setattr(_compiled_adam.LIBRARY, "loaded", None)  # built again afterwards


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_with_the_compiled_step_gives_the_same_weights(rng, monkeypatch, dtype):
    """A fit and a partial_fit on the compiled engine end where NumPy's Adam
    step would have taken them, to the bit."""
    X, y = make_sequences(rng, n=60)
    X = X.astype(dtype)

    def train():
        clf = FastGRNNClassifier(hidden_size=6, max_iter=4, batch_size=16, engine="compiled",
                                 random_state=0)
        return clf.fit(X, y).partial_fit(X[:20], y[:20])

    calls = []
    original = _compiled_adam.compiled_step

    def counted(*args):
        step = original(*args)
        calls.append(type(step).__name__)
        return step

    monkeypatch.setattr(_training, "compiled_step", counted)
    compiled = train()
    assert calls and set(calls) == {"_CompiledAdamStep"}
    monkeypatch.setattr(_training, "compiled_step", lambda optimizer, *_: optimizer.step)
    assert_same_coefs(train(), compiled)
