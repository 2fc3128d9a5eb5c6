"""An epoch's mini-batches in C, the same to the bit as the Python loop.

With the compiled engine, a mini-batch of :meth:`~._training.TrainingRun.epoch`
is five C calls (the forward pass, the cross-entropy, the backward pass, the
L2 penalty with clipping, the Adam step) and the Python between them: about
half of a fit's time at the small batches of short sequences. :class:`CompiledEpoch`
runs the same C functions, in the same order on the same arrays, from one C
loop over the epoch's batches (one call, or one per :data:`UNITS_PER_CALL` of
work, so that Ctrl-C still interrupts a long epoch); what Python computed
between them (a batch's number of steps, ``sigmoid(zeta)`` and ``sigmoid(nu)``,
Adam's step size, the epoch's weighted loss) is computed in C with the same double-precision
operations of the same C library, compiled without contraction
(``-ffp-contract=off``). So the fit is the same to the bit
(``tests/test_compiled_epoch.py``), and the loop in Python stays the reference
and the path of everything else: other losses, distillation, SGD, sparse
training, the product of a low-rank ``W`` or ``U`` (a low-rank ``W`` trained
as its factors runs in C: ``fg_train_forward`` projects the steps and
``fg_train_backward`` adds ``dW1``), the NumPy engine, no C compiler.
"""

import ctypes

import numpy as np

from ._build import C_REALS, BuildError, SharedLibrary, address
from ._compiled_adam import _CompiledAdamStep
from ._compiled_loss import _CompiledCrossEntropy

_SOURCE = r"""/* sklearn-fastgrnn: an epoch's mini-batches in one call
   (sklearn_fastgrnn/_compiled_epoch.py). */
#include <math.h>
#include <stdint.h>

typedef struct {
    /* the C functions: the engine's fg_train_forward and fg_train_backward,
       the cross-entropy, the penalty with clipping, the Adam step */
    void *forward, *backward, *loss, *finish, *adam;
    void *contexts[2];          /* the engine's, for batches of sizes[0] and sizes[1] */
    void *outputs[2], *doutputs[2];
    int64_t sizes[2];
    void *finish_context, *adam_context;
    int64_t n, batch_size, n_outputs;
    int64_t first, end;         /* the batches of this call */
    const int64_t *bases;       /* (n,) where each sequence's steps start, epoch order */
    const int64_t *lengths;     /* (n,) its steps */
    const int64_t *labels;      /* (n,) */
    const void *weights;        /* (n,) normalised within their batch */
    const double *batch_weights;  /* a batch's total weight (0: skipped) */
    const void *zeta, *nu;      /* in the parameters */
    double label_smoothing, learning_rate, beta_1, beta_2;
    int64_t t;                  /* Adam's steps: the call adds its own */
    double total_loss, total_weight;  /* the epoch's sums: the call adds to them */
    int64_t failed;             /* the batch whose loss was not finite, or -1 */
    double failed_loss;
} fg_epoch;

typedef int64_t (*fg_forward_fn)(void *, int64_t, const int64_t *, const int64_t *,
                                 double, double);
typedef void (*fg_backward_fn)(void *);
typedef double (*fg_finish_fn)(const void *);

/* 1 / (1 + exp(-x)) as _nonlinearities.scalar_sigmoid computes it */
static double fg_scalar_sigmoid(double x)
{
    double e;
    if (x >= 0) {
        return 1.0 / (1.0 + exp(-x));
    }
    e = exp(x);
    return e / (1.0 + e);
}

#define FG_EPOCH(NAME, real)                                                   \
void NAME(fg_epoch *e)                                                         \
{                                                                              \
    typedef double (*loss_fn)(const real *, int64_t, int64_t, const int64_t *, \
                              const real *, real *, double);                  \
    typedef void (*adam_fn)(const void *, real);                               \
    const fg_forward_fn forward = (fg_forward_fn)e->forward;                   \
    const fg_backward_fn backward = (fg_backward_fn)e->backward;               \
    const loss_fn loss = (loss_fn)e->loss;                                     \
    const fg_finish_fn finish = (fg_finish_fn)e->finish;                       \
    const adam_fn adam = (adam_fn)e->adam;                                     \
    const real *weights = (const real *)e->weights;                            \
    int64_t i, b;                                                              \
    for (i = e->first; i < e->end; ++i) {                                      \
        const int64_t start = i * e->batch_size;                               \
        const int64_t B = e->n - start < e->batch_size ? e->n - start          \
                                                       : e->batch_size;        \
        const int s = B == e->sizes[0] ? 0 : 1;                               \
        const double w_sum = e->batch_weights[i];                             \
        int64_t T = 0;                                                         \
        double value, step;                                                    \
        if (w_sum == 0.0) {                                                    \
            continue;                                                          \
        }                                                                      \
        for (b = start; b < start + B; ++b) {                                  \
            T = e->lengths[b] > T ? e->lengths[b] : T;                         \
        }                                                                      \
        forward(e->contexts[s], T, e->bases + start, e->lengths + start,       \
                fg_scalar_sigmoid((double)*(const real *)e->zeta),             \
                fg_scalar_sigmoid((double)*(const real *)e->nu));              \
        value = loss((const real *)e->outputs[s], B, e->n_outputs,             \
                     e->labels + start, weights + start,                       \
                     (real *)e->doutputs[s], e->label_smoothing);              \
        backward(e->contexts[s]);                                              \
        value += finish(e->finish_context);                                    \
        if (!isfinite(value)) {                                                \
            e->failed = i;                                                     \
            e->failed_loss = value;                                            \
            return;                                                            \
        }                                                                      \
        e->t += 1; /* as Adam.next_step_size */                                \
        step = e->learning_rate * sqrt(1.0 - pow(e->beta_2, (double)e->t))     \
               / (1.0 - pow(e->beta_1, (double)e->t));                         \
        adam(e->adam_context, (real)step);                                     \
        e->total_loss += value * w_sum;                                        \
        e->total_weight += w_sum;                                              \
    }                                                                          \
}

FG_EPOCH(fg_epoch_float, float)
FG_EPOCH(fg_epoch_double, double)
"""
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno"]


class _Epoch(ctypes.Structure):
    """The C struct ``fg_epoch``."""

    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("forward", "backward", "loss", "finish", "adam")),
        ("contexts", ctypes.c_void_p * 2), ("outputs", ctypes.c_void_p * 2),
        ("doutputs", ctypes.c_void_p * 2), ("sizes", ctypes.c_int64 * 2),
        ("finish_context", ctypes.c_void_p), ("adam_context", ctypes.c_void_p),
        *((name, ctypes.c_int64) for name in ("n", "batch_size", "n_outputs", "first", "end")),
        *((name, ctypes.c_void_p) for name in (
            "bases", "lengths", "labels", "weights", "batch_weights", "zeta", "nu")),
        *((name, ctypes.c_double) for name in (
            "label_smoothing", "learning_rate", "beta_1", "beta_2")),
        ("t", ctypes.c_int64), ("total_loss", ctypes.c_double),
        ("total_weight", ctypes.c_double), ("failed", ctypes.c_int64),
        ("failed_loss", ctypes.c_double),
    ]


def _prepare(library):
    """The C function of each dtype, typed."""
    functions = {}
    for dtype, (c_name, _) in C_REALS.items():
        function = getattr(library, f"fg_epoch_{c_name}")
        function.argtypes, function.restype = [ctypes.POINTER(_Epoch)], None
        functions[dtype] = function
    return functions


LIBRARY = SharedLibrary(_SOURCE, "fastgrnn-epoch", _FLAGS, "the compiled epoch", _prepare)

#: Hidden units times steps (of the longest sequence) times rows that one C
#: call trains at most, about 50 ms on the machines of docs/performance.md: a
#: long epoch is several calls, so that Ctrl-C interrupts it within a call.
UNITS_PER_CALL = 1 << 23


def _function_address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


class EpochResult:
    """What :meth:`CompiledEpoch.run` reports: the epoch's weighted loss sums,
    or the batch whose loss was not finite (``failed``, else None) and that loss."""

    def __init__(self, epoch):
        self.total_loss, self.total_weight = epoch.total_loss, epoch.total_weight
        self.failed = None if epoch.failed < 0 else int(epoch.failed)
        self.failed_loss = epoch.failed_loss


def _inside(data, step, bases, lengths, batch_size, d):
    """Whether every row, reading its batch's number of steps ``step`` apart
    from ``bases``, stays inside ``data``."""
    n = len(lengths)
    firsts = np.arange(0, n, batch_size)
    steps = np.repeat(np.maximum.reduceat(lengths, firsts), np.diff(np.append(firsts, n)))
    reach = bases + (np.maximum(steps, 1) - 1) * step + d
    return reach.max() <= data.size


class CompiledEpoch:
    """The mini-batch loop of an epoch in C, for one training call's arrays.

    Made by :func:`compiled_epoch`; :meth:`run` trains one epoch.
    """

    def __init__(self, function, engine, passes, loss, finish, adam, flat, grad):
        self.function, self.engine = function, engine
        self.flat, self.grad, self.adam = flat, grad, adam
        self._callees = (loss, finish)  # alive while the C loop holds their addresses
        epoch = self._epoch = _Epoch()
        epoch.forward, epoch.backward = passes
        epoch.loss = _function_address(loss.by_dtype[flat.dtype])
        epoch.label_smoothing = loss.label_smoothing
        epoch.finish = _function_address(finish[0])
        epoch.finish_context = ctypes.addressof(finish[1])
        epoch.adam = _function_address(adam.function)
        epoch.adam_context = ctypes.addressof(adam.context)
        views = engine.layout.views(flat)
        epoch.zeta, epoch.nu = address(views["zeta"]), address(views["nu"])
        epoch.n_outputs = engine.layout.n_outputs
        self._pointer = ctypes.byref(epoch)
        self._contexts = None  # the engine's buffers epoch.contexts points at

    def run(self, rows, bases, lengths, labels, weights, batch_weights, batch_size,
            learning_rate):
        """One epoch over the sequences in their epoch order.

        Parameters
        ----------
        rows : (ndarray, int)
            The array of the steps and the step between a row's steps (as
            :class:`~._compiled_cell.StepRows`).
        bases, lengths, labels : int64 ndarrays of shape (n,)
            Where each sequence's steps start in ``rows``, its number of
            steps, its class.
        weights : ndarray of shape (n,)
            The sample weights, each normalised by the sum of its batch's.
        batch_weights : float64 ndarray
            Each batch's sum of weights (0: the batch is skipped).
        batch_size : int
            Batches are consecutive runs of this many sequences (the last
            one may be shorter).
        learning_rate : float

        Returns
        -------
        EpochResult
        """
        n, n_batches = len(lengths), -(-len(lengths) // batch_size)
        data, step = rows
        d = self.engine.layout.n_inputs
        expected = ((bases, np.int64, n), (lengths, np.int64, n), (labels, np.int64, n),
                    (weights, self.flat.dtype, n), (batch_weights, np.float64, n_batches))
        if any(a.dtype != dtype or a.shape != (size,) or not a.flags.c_contiguous
               for a, dtype, size in expected):
            raise ValueError("the epoch's arrays must be contiguous, of n (or one per batch) "
                             "values of their dtype.")
        T = int(lengths.max()) if n else 1
        # a batch reads T_batch steps of each row (the projection of the factors);
        # every row reading T steps inside the array is enough, and is checked first
        if n and (bases.min() < 0 or (
                int(bases.max()) + (max(T, 1) - 1) * step + d > data.size
                and not _inside(data, step, bases, lengths, batch_size, d))):
            raise ValueError("the epoch's rows read outside their array.")
        sizes = (batch_size, n % batch_size or batch_size)
        contexts = self.engine.training_contexts(self.flat, self.grad, rows, T, sizes)
        epoch = self._epoch
        if self._contexts != contexts:
            for s, buffers in enumerate(contexts):
                epoch.contexts[s] = ctypes.addressof(buffers.ctx)
                epoch.outputs[s] = address(buffers.arrays["out"])
                epoch.doutputs[s] = address(buffers.arrays["dout"])
                epoch.sizes[s] = sizes[s]
            self._contexts = contexts
        epoch.n, epoch.batch_size = n, batch_size
        epoch.bases, epoch.lengths, epoch.labels, epoch.weights, epoch.batch_weights = (
            address(a) for a, _, _ in expected)  # referenced until the call returns
        optimizer = self.adam.optimizer
        epoch.learning_rate = learning_rate
        epoch.beta_1, epoch.beta_2 = optimizer.beta_1, optimizer.beta_2
        epoch.total_loss = epoch.total_weight = 0.0
        epoch.failed = -1
        # calls of at most UNITS_PER_CALL units (Ctrl-C acts between two)
        per_call = max(1, UNITS_PER_CALL // (batch_size * T * self.engine.layout.hidden_size))
        for first in range(0, n_batches, per_call):
            epoch.first, epoch.end = first, min(first + per_call, n_batches)
            epoch.t = optimizer.t
            self.function(self._pointer)
            optimizer.t = int(epoch.t)
            if epoch.failed >= 0:
                break
        return EpochResult(epoch)


def compiled_epoch(engine, loss, finish, step, flat, grad):
    """A :class:`CompiledEpoch` for this training call, or None where a batch
    is more than the C calls it runs.

    Parameters
    ----------
    engine : the training call's engine
    loss : the mini-batch loss (a compiled cross-entropy, or another)
    finish : :class:`~._compiled_loss.PenaltyAndClip`
    step : the optimiser's step (a compiled Adam step, or another)
    flat, grad : ndarray
        The parameters and the gradient the batches use.
    """
    passes = getattr(engine, "batch_passes", None)
    dtype = flat.dtype
    if (passes is None or not isinstance(loss, _CompiledCrossEntropy)
            or dtype not in loss.by_dtype or not isinstance(step, _CompiledAdamStep)
            or step.params is not flat or step.grad is not grad):
        return None
    finish_call = finish.c_call(flat, grad)
    if finish_call is None:
        return None
    try:
        function = LIBRARY.get()[dtype]
    except BuildError:
        return None
    return CompiledEpoch(function, engine, passes, loss, finish_call, step, flat, grad)
