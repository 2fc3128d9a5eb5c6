"""Adam's update in C, the same to the bit as :meth:`~._optimizers.Adam.step`.

NumPy's update is twelve array operations, each a call of about half a
microsecond: at the small batches of short sequences that is as long as the
compiled engine's forward and backward passes together. :func:`compiled_step`
gives a callable that makes the same update in one loop over the parameters,
one C call a step; :class:`~._training.TrainingRun` uses it with the compiled
engine.

The C code does each of NumPy's operations in the same order and the same
dtype, the constants rounded to the dtype as NumPy rounds a Python float, and
it is compiled with ``-ffp-contract=off`` (a product and a sum stay two
roundings) and without ``-ffast-math``: every rounding is IEEE's, so the
parameters and moments are those of NumPy's update, bit for bit
(``tests/test_compiled_adam.py``).
"""

import ctypes

from ._build import C_REALS, BuildError, SharedLibrary, address
from ._optimizers import Adam

_SOURCE = r"""/* sklearn-fastgrnn: Adam's update, NumPy's operations one by one
   (sklearn_fastgrnn/_compiled_adam.py). */
#include <math.h>
#include <stdint.h>

#define FG_ADAM(NAME, real, SQRT)                                              \
typedef struct {                                                               \
    real *params; const real *grad; real *m, *v; int64_t n;                    \
    real beta_1, one_minus_beta_1, beta_2, one_minus_beta_2, epsilon;          \
} NAME##_ctx;                                                                  \
void NAME(const NAME##_ctx *c, real step)                                      \
{                                                                              \
    real *restrict p = c->params, *restrict m = c->m, *restrict v = c->v;      \
    const real *restrict g = c->grad;                                          \
    int64_t i;                                                                 \
    for (i = 0; i < c->n; ++i) {                                               \
        const real mi = m[i] * c->beta_1 + g[i] * c->one_minus_beta_1;          \
        const real vi = v[i] * c->beta_2 + (g[i] * g[i]) * c->one_minus_beta_2; \
        m[i] = mi;                                                             \
        v[i] = vi;                                                             \
        p[i] = p[i] - (mi / (SQRT(vi) + c->epsilon)) * step;                   \
    }                                                                          \
}

FG_ADAM(fg_adam_float, float, sqrtf)
FG_ADAM(fg_adam_double, double, sqrt)
"""
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno"]


def _context_type(real):
    fields = [("params", ctypes.c_void_p), ("grad", ctypes.c_void_p),
              ("m", ctypes.c_void_p), ("v", ctypes.c_void_p), ("n", ctypes.c_int64)]
    names = ("beta_1", "one_minus_beta_1", "beta_2", "one_minus_beta_2", "epsilon")
    return type(f"AdamContext_{real.__name__}", (ctypes.Structure,),
                {"_fields_": fields + [(name, real) for name in names]})


_CONTEXTS = {dtype: _context_type(real) for dtype, (_, real) in C_REALS.items()}


def _prepare(library):
    """The C functions by dtype, typed."""
    functions = {}
    for dtype, (c_name, real) in C_REALS.items():
        function = getattr(library, f"fg_adam_{c_name}")
        function.argtypes = [ctypes.POINTER(_CONTEXTS[dtype]), real]
        function.restype = None
        functions[dtype] = function
    return functions


LIBRARY = SharedLibrary(_SOURCE, "fastgrnn-adam", _FLAGS, "the compiled Adam step", _prepare)


class _CompiledAdamStep:
    """``step(params, grad, learning_rate)`` of ``optimizer`` in C, for fixed
    ``params`` and ``grad`` arrays (their addresses are kept)."""

    def __init__(self, optimizer, function, params, grad):
        dtype = optimizer.m.dtype
        self.optimizer, self.function = optimizer, function
        self.params, self.grad = params, grad
        real = C_REALS[dtype][1]
        b1, b2 = optimizer.beta_1, optimizer.beta_2
        # the constants as NumPy rounds a Python float to the arrays' dtype
        self.context = _CONTEXTS[dtype](
            *(address(array) for array in (params, grad, optimizer.m, optimizer.v)),
            optimizer.m.size, *(real(value).value for value in (
                b1, 1.0 - b1, b2, 1.0 - b2, optimizer.epsilon)),
        )
        self._pointer = ctypes.byref(self.context)

    def __call__(self, params, grad, learning_rate):
        if params is not self.params or grad is not self.grad:
            return self.optimizer.step(params, grad, learning_rate)
        self.function(self._pointer, self.optimizer.next_step_size(learning_rate))
        return None


def compiled_step(optimizer, params, grad):
    """``optimizer.step`` for ``params`` and ``grad``, compiled where it can be.

    A callable ``(params, grad, learning_rate)``: the C update of an
    :class:`~._optimizers.Adam` over contiguous float32 or float64 arrays of
    its size and dtype, or ``optimizer.step`` itself (other optimisers, other
    arrays, or no C compiler).
    """
    if not isinstance(optimizer, Adam):
        return optimizer.step
    dtype = optimizer.m.dtype
    arrays = (params, grad, optimizer.m, optimizer.v)
    if dtype not in C_REALS or any(
        a.dtype != dtype or a.shape != optimizer.m.shape or not a.flags.c_contiguous
        for a in arrays
    ):
        return optimizer.step
    try:
        function = LIBRARY.get()[dtype]
    except BuildError:
        return optimizer.step
    return _CompiledAdamStep(optimizer, function, params, grad)
