"""The loss of a mini-batch in C: the softmax cross-entropy, the L2 penalty, clipping.

Around the compiled engine's forward and backward passes, a mini-batch of a
classifier computes the cross-entropy and its gradient
(:func:`~._losses.cross_entropy`), adds the L2 penalty
(:func:`~._losses.l2_penalty`) and clips the gradient
(:func:`~._optimizers.clip_by_global_norm`): about twenty NumPy calls, as long
as the engine's own work at small batches of short sequences. Here each is one
C call, used with the compiled engine (:class:`~._training.TrainingRun`; the
cross-entropy also as the hard part of a distillation); the NumPy functions
stay the reference (``tests/test_compiled_loss.py``).

The results agree with the references to rounding, not to the bit: the
softmax is ``exp(z - max) / sum`` with the C library's ``exp`` (NumPy has its
own), and the sums of squares and the loss are accumulated in float64 (BLAS
accumulates a float32 dot product in float32).
"""

import ctypes

import numpy as np

from ._build import C_REALS, BuildError, SharedLibrary, address
from ._losses import CrossEntropy, Distillation, l2_penalty
from ._optimizers import clip_by_global_norm

_SOURCE = r"""/* sklearn-fastgrnn: the loss of a mini-batch
   (sklearn_fastgrnn/_compiled_loss.py). */
#include <math.h>
#include <stdint.h>

/* sum_i w_i * -sum_c t_ic log softmax(z_i)[c], g = w_i * (softmax(z_i) - t_i),
   t_i = (1 - eps) onehot(y_i) + eps / C (eps = 0: the one-hot labels) */
#define FG_CROSS_ENTROPY(NAME, real, EXP, LOG)                                 \
double NAME(const real *restrict z, int64_t B, int64_t C,                      \
            const int64_t *restrict y, const real *restrict w,                 \
            real *restrict g, double eps)                                      \
{                                                                              \
    double loss = 0.0;                                                         \
    const real share = (real)(eps / (double)C), kept = (real)(1.0 - eps);     \
    int64_t i, c;                                                              \
    for (i = 0; i < B; ++i) {                                                  \
        const real *zi = z + i * C;                                            \
        real *gi = g + i * C;                                                  \
        real top = zi[0], total = 0, log_total;                                \
        for (c = 1; c < C; ++c) /* NaN wins, as in NumPy's max */              \
            top = (zi[c] > top || zi[c] != zi[c]) ? zi[c] : top;               \
        for (c = 0; c < C; ++c) {                                              \
            gi[c] = EXP(zi[c] - top);                                          \
            total += gi[c];                                                    \
        }                                                                      \
        log_total = LOG(total);                                                \
        if (eps == 0) {                                                        \
            loss -= (double)w[i] * (double)((zi[y[i]] - top) - log_total);     \
            for (c = 0; c < C; ++c)                                            \
                gi[c] = gi[c] / total;                                         \
        } else {                                                               \
            double spread = 0.0; /* sum_c log softmax(z_i)[c] */              \
            for (c = 0; c < C; ++c)                                            \
                spread += (double)((zi[c] - top) - log_total);                 \
            loss -= (double)w[i] * ((1.0 - eps)                                \
                    * (double)((zi[y[i]] - top) - log_total)                   \
                    + eps / (double)C * spread);                               \
            for (c = 0; c < C; ++c)                                            \
                gi[c] = gi[c] / total - share;                                 \
        }                                                                      \
        gi[y[i]] -= kept;                                                      \
        for (c = 0; c < C; ++c)                                                \
            gi[c] *= w[i];                                                     \
    }                                                                          \
    return loss;                                                               \
}

/* g[:n_weights] += alpha * p[:n_weights]; returns (alpha / 2) ||p[:n_weights]||^2;
   then g is scaled to norm max_norm when it is longer (max_norm <= 0: never) */
#define FG_PENALTY_AND_CLIP(NAME, real)                                        \
typedef struct {                                                               \
    const real *p; real *g; int64_t n_weights, n; real alpha;                  \
    double half_alpha, max_norm;                                               \
} NAME##_ctx;                                                                  \
double NAME(const NAME##_ctx *c)                                               \
{                                                                              \
    const real *restrict p = c->p;                                             \
    real *restrict g = c->g;                                                   \
    const real alpha = c->alpha;                                               \
    double squares = 0.0, g_squares = 0.0, norm;                               \
    int64_t i;                                                                 \
    if (alpha != 0)                                                            \
        for (i = 0; i < c->n_weights; ++i) {                                   \
            g[i] = g[i] + alpha * p[i];                                        \
            squares += (double)p[i] * (double)p[i];                            \
        }                                                                      \
    for (i = 0; i < c->n; ++i)                                                 \
        g_squares += (double)g[i] * (double)g[i];                              \
    norm = sqrt(g_squares);                                                    \
    if (c->max_norm > 0 && norm > c->max_norm) {                               \
        const real scale = (real)(c->max_norm / norm);                         \
        for (i = 0; i < c->n; ++i)                                             \
            g[i] *= scale;                                                     \
    }                                                                          \
    return c->half_alpha * squares;                                            \
}

FG_CROSS_ENTROPY(fg_cross_entropy_float, float, expf, logf)
FG_CROSS_ENTROPY(fg_cross_entropy_double, double, exp, log)
FG_PENALTY_AND_CLIP(fg_penalty_and_clip_float, float)
FG_PENALTY_AND_CLIP(fg_penalty_and_clip_double, double)
"""
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno"]


def _context_type(real):
    fields = [("p", ctypes.c_void_p), ("g", ctypes.c_void_p), ("n_weights", ctypes.c_int64),
              ("n", ctypes.c_int64), ("alpha", real), ("half_alpha", ctypes.c_double),
              ("max_norm", ctypes.c_double)]
    return type(f"PenaltyContext_{real.__name__}", (ctypes.Structure,), {"_fields_": fields})


_CONTEXTS = {dtype: _context_type(real) for dtype, (_, real) in C_REALS.items()}


def _prepare(library):
    """The C functions by (dtype, name), typed."""
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    functions = {}
    for dtype, (c_name, _) in C_REALS.items():
        ce = getattr(library, f"fg_cross_entropy_{c_name}")
        ce.argtypes = [pointer, size, size, pointer, pointer, pointer, ctypes.c_double]
        ce.restype = ctypes.c_double
        clip = getattr(library, f"fg_penalty_and_clip_{c_name}")
        clip.argtypes = [ctypes.POINTER(_CONTEXTS[dtype])]
        clip.restype = ctypes.c_double
        functions[dtype, "cross_entropy"] = ce
        functions[dtype, "penalty_and_clip"] = clip
    return functions


LIBRARY = SharedLibrary(_SOURCE, "fastgrnn-loss", _FLAGS, "the compiled loss", _prepare)


class _CompiledCrossEntropy(CrossEntropy):
    """A :class:`~._losses.CrossEntropy` whose call runs in C."""

    def __init__(self, functions, label_smoothing=0.0):
        super().__init__(label_smoothing)
        self.by_dtype = {dtype: function for (dtype, name), function in functions.items()
                         if name == "cross_entropy"}

    def __call__(self, outputs, targets, weights, doutputs):
        dtype = outputs.dtype
        function = self.by_dtype.get(dtype)
        if (function is None or weights.dtype != dtype or doutputs.dtype != dtype
                or targets.dtype != np.int64 or not (
                    outputs.flags.c_contiguous and targets.flags.c_contiguous
                    and weights.flags.c_contiguous and doutputs.flags.c_contiguous)):
            return super().__call__(outputs, targets, weights, doutputs)
        B, C = outputs.shape
        return function(address(outputs), B, C, address(targets), address(weights),
                        address(doutputs), self.label_smoothing)


def compiled_loss(loss):
    """``loss`` (a loss object of :mod:`~._losses`) with its softmax
    cross-entropy (label smoothing included) in C, alone or as the hard part
    of a distillation; any other loss, or no C compiler, gives ``loss`` itself."""
    distilled = isinstance(loss, Distillation)
    task = loss.hard if distilled else loss
    if type(task) is not CrossEntropy:
        return loss
    try:
        functions = LIBRARY.get()
    except BuildError:
        return loss
    hard = _CompiledCrossEntropy(functions, task.label_smoothing)
    if distilled:
        return Distillation(hard, loss.alpha, loss.temperature)
    return hard


class PenaltyAndClip:
    """The L2 penalty and the clipping of one training call's gradient.

    ``penalty_and_clip(flat, grad)`` adds ``alpha * w`` to the gradient of the
    first ``n_weights`` parameters, clips the gradient to norm ``max_norm``
    (None: no clipping) and returns the penalty ``(alpha / 2) ||w||^2``: in C
    when ``compiled`` and the arrays allow it, else with
    :func:`~._losses.l2_penalty` and :func:`~._optimizers.clip_by_global_norm`.
    """

    def __init__(self, n_weights, alpha, max_norm, compiled):
        self.n_weights, self.alpha, self.max_norm = n_weights, alpha, max_norm
        self.functions = None
        if compiled:
            try:
                self.functions = LIBRARY.get()
            except BuildError:
                pass
        self._arrays = (None, None)  # (flat, grad) of the C call's context
        self._call = None

    def penalty(self, flat, grad):
        """Add the L2 penalty's gradient; its value (reference, for sparse training)."""
        return l2_penalty(flat, self.n_weights, self.alpha, grad)

    def clip(self, grad):
        """Clip ``grad`` to norm ``max_norm`` (reference)."""
        clip_by_global_norm(grad, self.max_norm)

    def _compiled_call(self, flat, grad):
        """The C function and its context for these arrays, or None."""
        dtype = grad.dtype
        function = None if self.functions is None else self.functions.get(
            (dtype, "penalty_and_clip"))
        if (function is None or flat.dtype != dtype or flat.shape != grad.shape
                or not (flat.flags.c_contiguous and grad.flags.c_contiguous)):
            return None
        context = _CONTEXTS[dtype](
            address(flat), address(grad), self.n_weights, grad.size, self.alpha,
            0.5 * self.alpha, -1.0 if self.max_norm is None else self.max_norm,
        )
        return function, context, ctypes.byref(context)

    def c_call(self, flat, grad):
        """``(function, context)`` of the C call for these arrays (the function
        takes a pointer to the context), or None where the reference runs."""
        if self._arrays[0] is not flat or self._arrays[1] is not grad:
            self._arrays, self._call = (flat, grad), self._compiled_call(flat, grad)
        return None if self._call is None else self._call[:2]

    def __call__(self, flat, grad):
        if self.c_call(flat, grad) is None:
            loss = self.penalty(flat, grad)
            self.clip(grad)
            return loss
        return self._call[0](self._call[2])
