"""Registry of the cell's non-linearities: name -> forward kernel and derivative.

:data:`NONLINEARITIES` is the one list of names: ``FastGRNNClassifier``
validates ``gate_nonlinearity`` and ``update_nonlinearity`` against it, and each
back end keys its own translation by the same names (the integer kernels of
``compression``, the ONNX builders of ``export.onnx``, the C expressions of
``export.c`` and ``_compiled_cell.C_NONLINEARITIES``); ``tests/test_registries.py``
checks that the key sets are equal.

Each entry evaluates in place, and its derivative is written in terms of the
*output* ``y = f(x)`` (as scikit-learn's ``DERIVATIVES`` registry does), so the
backward pass only needs what the forward pass stored.

``sigmoid`` is computed as ``0.5 * tanh(x / 2) + 0.5``: the halving is folded into
the weights by the engine (``prescale``), so that a sigmoid gate and a tanh update
share one ``np.tanh`` call per timestep. NumPy's SIMD ``tanh`` is several times
faster than ``scipy.special.expit``.
"""

import math
from typing import Callable, NamedTuple

import numpy as np


class Nonlinearity(NamedTuple):
    """How the engine evaluates one non-linearity.

    Attributes
    ----------
    prescale : float
        Factor folded into the weights and biases before ``kernel``.
    uses_tanh : bool
        True when ``kernel`` is ``np.tanh`` (possibly followed by ``post``), so
        that it can share one ``np.tanh`` call with the other half of the cell.
    kernel : callable
        ``kernel(a)`` overwrites ``a`` (the prescaled pre-activation) in place.
    post : tuple of float or None
        ``(scale, shift)`` applied after ``kernel``: ``y = scale * k + shift``.
    derivative : callable
        ``derivative(y, out)`` writes ``f'(x)`` expressed through ``y = f(x)``.
    """

    prescale: float
    uses_tanh: bool
    kernel: Callable[[np.ndarray], None]
    post: tuple | None
    derivative: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _tanh_inplace(a):
    np.tanh(a, out=a)


def _relu_inplace(a):
    np.maximum(a, 0, out=a)


def _quant_sigmoid_inplace(a):
    # prescale 0.5 already applied: clip(0.5 * x + 0.5, 0, 1)
    a += 0.5
    np.clip(a, 0, 1, out=a)


def _quant_tanh_inplace(a):
    np.clip(a, -1, 1, out=a)


def _sigmoid_derivative(y, out):
    # y * (1 - y)
    np.subtract(1, y, out=out)
    return np.multiply(out, y, out=out)


def _tanh_derivative(y, out):
    # 1 - y ** 2
    np.multiply(y, y, out=out)
    return np.subtract(1, out, out=out)


def _relu_derivative(y, out):
    return np.greater(y, 0, out=out, casting="unsafe")


def _quant_sigmoid_derivative(y, out):
    # 0.5 inside the linear zone (0, 1), 0 where clipped
    np.greater(y, 0, out=out, casting="unsafe")
    out *= y < 1
    return np.multiply(out, 0.5, out=out)


def _quant_tanh_derivative(y, out):
    np.absolute(y, out=out)
    return np.less(out, 1, out=out, casting="unsafe")


NONLINEARITIES = {
    "sigmoid": Nonlinearity(0.5, True, _tanh_inplace, (0.5, 0.5), _sigmoid_derivative),
    "tanh": Nonlinearity(1.0, True, _tanh_inplace, None, _tanh_derivative),
    "relu": Nonlinearity(1.0, False, _relu_inplace, None, _relu_derivative),
    "quant_sigmoid": Nonlinearity(
        0.5, False, _quant_sigmoid_inplace, None, _quant_sigmoid_derivative
    ),
    "quant_tanh": Nonlinearity(
        1.0, False, _quant_tanh_inplace, None, _quant_tanh_derivative
    ),
}


def evaluate(name, x):
    """Return ``f(x)`` for the registered non-linearity ``name`` (a new array)."""
    spec = NONLINEARITIES[name]
    a = np.multiply(x, spec.prescale, dtype=np.result_type(x, np.float32))
    spec.kernel(a)
    if spec.post is not None:
        a *= spec.post[0]
        a += spec.post[1]
    return a


def scalar_sigmoid(x):
    """``1 / (1 + exp(-x))`` of one number as a Python float, without overflow.

    For the scalars ``zeta`` and ``nu`` (``sigmoid(zeta)``, ``sigmoid(nu)``),
    which every back end folds into constants.
    """
    x = float(x)
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
