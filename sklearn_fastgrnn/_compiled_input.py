"""The passes over the training input in C: statistics, standardisation, layout.

Before its first mini-batch a training call makes three passes over all of its
sequences: the per-channel moments of the input
(:meth:`~._scaling.Moments.of`), the standardisation
(:func:`~._scaling.standardised`) and the time-major copy that the engine reads
(:func:`~._cell.to_time_major`). In NumPy each is several array operations,
with float64 temporaries, which at a few thousand short sequences take as long
as an epoch of the compiled engine. Here each is one loop in C, used with the
compiled engine; the NumPy functions stay the reference
(``tests/test_compiled_input.py``):

- :func:`moments` sums in float64 in another order than NumPy's (BLAS), so its
  moments, and the maps made of them (:meth:`~._scaling.Moments.spread`),
  agree to rounding (relative 1e-12): the float32 training input standardised
  with either is the same but where a value falls within that rounding of a
  float32 rounding tie;
- :func:`standardised` and :func:`time_major` are the references' results to
  the bit (the same IEEE operations; the code is compiled with
  ``-ffp-contract=off`` and without ``-ffast-math``, and with
  ``-fno-trapping-math``, which lets the NaN tests vectorise and changes no
  result).

Each falls back to its reference where the C code cannot be built.
"""

import ctypes

import numpy as np

from ._build import C_REALS, BuildError, SharedLibrary, address
from ._cell import to_time_major
from ._scaling import Moments
from ._scaling import standardised as standardised_reference

_SOURCE = r"""/* sklearn-fastgrnn: the passes over the training input
   (sklearn_fastgrnn/_compiled_input.py). A sequence is a row of L = T * d
   values; the sums keep one float64 accumulator a position of the row (long,
   vectorisable loops that never reassociate a sum), which the caller adds up
   per channel. */
#include <math.h>
#include <stdint.h>

#define FG_SUMS(NAME, real)                                                    \
void NAME(const real *restrict x, int64_t n, int64_t L, const double *restrict w, \
          const double *restrict centre, int squares, double *restrict count,  \
          double *restrict total)                                              \
{                                                                              \
    int64_t i, j;                                                              \
    for (i = 0; i < n; ++i) {                                                  \
        const real *restrict row = x + i * L;                                  \
        const double wi = w[i];                                                \
        if (squares)                                                           \
            for (j = 0; j < L; ++j) {                                          \
                const double v = row[j], dv = v - centre[j];                   \
                total[j] += v == v ? wi * (dv * dv) : 0.0;                     \
            }                                                                  \
        else                                                                   \
            for (j = 0; j < L; ++j) {                                          \
                const double v = row[j];                                       \
                total[j] += v == v ? wi * v : 0.0;                             \
                count[j] += v == v ? wi : 0.0;                                 \
            }                                                                  \
    }                                                                          \
}

#define FG_STANDARDISE(NAME, in_real, out_real)                                \
void NAME(const in_real *restrict x, int64_t n, int64_t L,                     \
          const double *restrict mean, const double *restrict scale,           \
          out_real *restrict out)                                              \
{                                                                              \
    int64_t i, j;                                                              \
    for (i = 0; i < n; ++i)                                                    \
        for (j = 0; j < L; ++j)                                                \
            out[i * L + j] =                                                   \
                (out_real)(((double)x[i * L + j] - mean[j]) / scale[j]);       \
}

/* the time-major copy of sequences start..stop-1, d channels and a one a
   step: step by step, so that the writes run along the output */
#define FG_TIME_MAJOR(NAME, real)                                              \
static inline void NAME##_block(const real *restrict x, int64_t n, int64_t T,  \
                                int64_t d, int64_t start, int64_t stop,        \
                                real *restrict out)                            \
{                                                                              \
    int64_t t, i, c;                                                           \
    for (t = 0; t < T; ++t)                                                    \
        for (i = start; i < stop; ++i) {                                       \
            const real *src = x + (i * T + t) * d;                             \
            real *dst = out + (t * n + i) * (d + 1);                           \
            for (c = 0; c < d; ++c)                                            \
                dst[c] = src[c] == src[c] ? src[c] : (real)0;                  \
            dst[d] = (real)1;                                                  \
        }                                                                      \
}                                                                              \
void NAME(const real *restrict x, int64_t n, int64_t T, int64_t d,             \
          real *restrict out)                                                  \
{                                                                              \
    int64_t start, stop;                                                       \
    for (start = 0; start < n; start = stop) {                                 \
        stop = start + 32 < n ? start + 32 : n; /* 32 sequences stay in cache */ \
        switch (d) { /* a constant channel count unrolls the inner loop */     \
        case 1: NAME##_block(x, n, T, 1, start, stop, out); break;             \
        case 2: NAME##_block(x, n, T, 2, start, stop, out); break;             \
        case 3: NAME##_block(x, n, T, 3, start, stop, out); break;             \
        case 4: NAME##_block(x, n, T, 4, start, stop, out); break;             \
        case 8: NAME##_block(x, n, T, 8, start, stop, out); break;             \
        default: NAME##_block(x, n, T, d, start, stop, out);                   \
        }                                                                      \
    }                                                                          \
}

FG_SUMS(fg_sums_float, float)
FG_SUMS(fg_sums_double, double)
FG_STANDARDISE(fg_standardise_float_float, float, float)
FG_STANDARDISE(fg_standardise_float_double, float, double)
FG_STANDARDISE(fg_standardise_double_float, double, float)
FG_STANDARDISE(fg_standardise_double_double, double, double)
FG_TIME_MAJOR(fg_time_major_float, float)
FG_TIME_MAJOR(fg_time_major_double, double)
"""
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
_C_NAMES = {dtype: c_name for dtype, (c_name, _) in C_REALS.items()}


def _prepare(library):
    """The library, its functions typed (pointers and sizes as ints)."""
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    signatures = {"sums": [pointer, size, size, pointer, pointer, ctypes.c_int, pointer,
                           pointer],
                  "time_major": [pointer, size, size, size, pointer]}
    for real in _C_NAMES.values():
        for kind, argtypes in signatures.items():
            function = getattr(library, f"fg_{kind}_{real}")
            function.argtypes, function.restype = argtypes, None
        for out in _C_NAMES.values():
            function = getattr(library, f"fg_standardise_{real}_{out}")
            function.argtypes = [pointer, size, size, pointer, pointer, pointer]
            function.restype = None
    return library


LIBRARY = SharedLibrary(_SOURCE, "fastgrnn-input", _FLAGS, "the compiled input passes",
                        _prepare)


def moments(X3, weights):
    """``Moments.of(X3, weights, axis=(0, 1))``: each channel's moments over
    the samples and their steps, NaN padding left out, summed in float64."""
    try:
        library = LIBRARY.get()
    except BuildError:
        return Moments.of(X3, weights, axis=(0, 1))
    X3 = np.ascontiguousarray(X3)
    n, T, d = X3.shape
    weights = np.ascontiguousarray(weights, dtype=np.float64).reshape(n)
    sums = getattr(library, f"fg_sums_{_C_NAMES[X3.dtype]}")

    def per_channel(centre, squares):
        count, total = np.zeros(T * d), np.zeros(T * d)
        sums(address(X3), n, T * d, address(weights), address(centre), squares,
             address(count), address(total))
        return count.reshape(T, d).sum(axis=0), total.reshape(T, d).sum(axis=0)

    weight, total = per_channel(np.zeros(T * d), 0)
    mean = total / np.where(weight > 0, weight, 1.0)
    _, m2 = per_channel(np.tile(mean, T), 1)
    return Moments(weight, mean, m2)


def standardised(X3, mean, scale, dtype):
    """``_scaling.standardised(X3, mean, scale, dtype)``, to the bit, in one pass."""
    dtype = np.dtype(dtype)
    try:
        library = LIBRARY.get()
    except BuildError:
        return standardised_reference(X3, mean, scale, dtype)
    X3 = np.ascontiguousarray(X3)
    n, T, d = X3.shape
    out = np.empty(X3.shape, dtype)
    mean, scale = (np.tile(np.asarray(v, np.float64), T) for v in (mean, scale))
    getattr(library, f"fg_standardise_{_C_NAMES[X3.dtype]}_{_C_NAMES[dtype]}")(
        address(X3), n, T * d, address(mean), address(scale), address(out),
    )
    return out


def time_major(X, dtype):
    """``_cell.to_time_major(X, dtype)``, to the bit, in one pass."""
    dtype = np.dtype(dtype)
    if X.dtype != dtype:
        return to_time_major(X, dtype)
    try:
        library = LIBRARY.get()
    except BuildError:
        return to_time_major(X, dtype)
    X = np.ascontiguousarray(X)
    n, T, d = X.shape
    out = np.empty((T, n, d + 1), dtype)
    getattr(library, f"fg_time_major_{_C_NAMES[dtype]}")(
        address(X), n, T, d, address(out)
    )
    return out
