"""The compiled engine: the cell's forward pass and exact BPTT in C, built at run time.

:class:`CompiledEngine` has the interface of :class:`~sklearn_fastgrnn._cell.FastGRNNEngine`
(``forward(flat, X_aug, lengths) -> outputs``, ``backward(doutputs, grad)``,
``readout_state``, ``stacked_weights``), so that the losses, the sample and class
weights and the L2 penalty stay in NumPy; it computes what the NumPy engine
computes (the module docstring of ``_cell.py`` has the equations, readouts
included), to rounding. :func:`make_engine` picks an engine by name
(:data:`ENGINES`), falling back to the NumPy engine for ``"auto"``.

How it works:

- one C source per (dtype, ``H``, ``d``): the sizes are compile-time constants,
  so that the loops over a row's units are unrolled and vectorised. It is built
  with the system compiler (``-O3``, and ``-march=native -fopenmp-simd
  -mprefer-vector-width=512`` as far as the compiler takes them; never
  ``-ffast-math``: infinities and NaN keep their IEEE meaning) into the
  per-user cache of :mod:`sklearn_fastgrnn._build`, once per machine. The
  non-linearities (:data:`C_NONLINEARITIES`, keyed by the registry's names)
  and the readout are chosen at run time by switches outside the loops over
  units; the estimator's default pair (sigmoid, tanh) has fused loops;
- one C call per batch and direction. ``fg_forward`` sorts the rows by length
  (longest first, stable) and packs the steps: step ``t`` (0-based) processes
  only the ``nb[t]`` rows still running, stored from packed row ``off[t]``, so
  padded steps cost nothing::

      for t = 0 .. T - 1, blocks of RB rows b < nb[t]:
          pre      = [x_t | h_{t-1}] @ [W; U]          (the block's sums in registers)
          z, c     = gate(pre + bias_gate), update(pre + bias_update)
          h_t      = sz_plus_sn c + z (h_{t-1} - sz c)  (and the readout's running sum/max)

  ``fg_backward`` runs the recurrence of ``_cell.py`` backwards the same way::

      for t = T - 1 .. 0, blocks of RB rows b < nb[t]:
          dh_t     = carried from step t + 1 (rows running there) + g_t
          dpre_t   = dh_t (e_t gate'(z_t) + (sz_plus_sn - sz z_t) update'(c_t))
          dh_{t-1} = dh_t z_t + dpre_t @ U.T
      dU, [dW; sum dpre] += [h_{t-1}], [x_t 1] outer dpre_t over packed runs of
          steps (at least 256 rows), in register tiles

  and the sums (dh Fz, dh c, dh c (1 - z) for dzeta without cancellation) are
  kept in the working dtype for at most 256 rows and added in float64;
- a low-rank ``W = W1 @ W2`` whose factors cost at most 0.95 of its
  multiply-adds (:func:`trains_as_factors`: the default ``w_rank`` of envelope
  channels, where the windows are wide against ``H``) trains as its factors:
  ``fg_project`` makes the steps ``[x_t W1, 1]`` (``r`` inputs), the passes above run on them
  with ``W2`` as their ``W`` (giving ``dW2``), and ``fg_factor_gradient`` sums
  ``dW1 = x_t.T (dpre_t W2.T)`` over the real steps, in float64 every 256
  rows (four rows at a time, each sum adding its rows in order). The library
  is built with ``d = r``; prediction reads ``W1 @ W2``;
- the passes read step ``t`` of row ``b`` at ``X + bases[b] + t * step``: a
  time-major array (``bases[b] = b (d + 1)``, ``step = B (d + 1)``), or
  training's moving windows where they lie in the array of edge-extended
  sequences (:class:`StepRows`: ``step = window * channels``), without
  copying them into a batch first;
- ``fg_train_forward`` and ``fg_train_backward`` are a training batch's whole
  passes (the factors' projection and ``dW1`` included), which the epoch loop
  of ``_compiled_epoch.py`` calls from C (:meth:`CompiledEngine.training_contexts`
  prepares their contexts);
- ``tanh`` (and the sigmoid, as ``0.5 tanh(x / 2) + 0.5``) is the code of
  :func:`_tanh_source`, which the compiler vectorises: ``sign(x) e / (e + 2)``
  with ``e = expm1(2|x|)`` by range reduction and a Taylor series; within 2.5
  ulp, NaN in gives NaN out;
- subnormal numbers are flushed to zero while a call runs (the gradient of the
  first steps of a long sequence decays into them, where each operation costs
  about a hundred times more), and the caller's mode is restored;
- ``n_threads > 1`` splits a batch's blocks of rows over threads, each running
  the whole time loop (measured slower than one thread on 2 cores: see
  ``docs/performance.md``).
"""

import ctypes
import math
import threading
from decimal import Decimal, localcontext
from fractions import Fraction
from string import Template
from typing import NamedTuple

import numpy as np

from ._build import BuildError, address, build_library
from ._cell import READOUTS, FastGRNNEngine, check_readout
from ._nonlinearities import NONLINEARITIES, scalar_sigmoid

#: The engines: "auto" is the compiled one when it can be built, else NumPy's.
ENGINES = ("auto", "numpy", "compiled")

#: A low-rank W trains as its factors when they cost at most this share of the
#: product's multiply-adds a row and step (:func:`trains_as_factors`): their
#: loops run below the rate of the passes', and the product's batches run in
#: Python where the factors' run in the C epoch loop (``docs/performance.md``:
#: the factors were 1.10x as fast at a cost of 0.95).
FACTORED_COST = 0.95

#: C expressions of each registered non-linearity: the value of the input ``v``
#: and the derivative written through the output ``y`` (as the registry does).
#: Comparisons are written so that NaN propagates as in NumPy.
C_NONLINEARITIES = {
    "sigmoid": ("(real)0.5 * fg_tanh((real)0.5 * v) + (real)0.5", "y * ((real)1 - y)"),
    "tanh": ("fg_tanh(v)", "(real)1 - y * y"),
    "relu": ("(v < 0 ? (real)0 : v)", "(y > 0 ? (real)1 : (real)0)"),
    "quant_sigmoid": (
        "fg_clip((real)0.5 * v + (real)0.5, (real)0, (real)1)",
        "(y > 0 && y < 1 ? (real)0.5 : (real)0)",
    ),
    "quant_tanh": ("fg_clip(v, (real)-1, (real)1)", "(y > -1 && y < 1 ? (real)1 : (real)0)"),
}

_NONLINEARITY_INDEX = {name: i for i, name in enumerate(C_NONLINEARITIES)}
_READOUT_INDEX = {name: i for i, name in enumerate(READOUTS)}
_COMPILE_FLAGS = ["-O3", "-std=gnu99"]  # gnu99: FMA contraction; no -ffast-math
# tried first, dropped by a compiler or CPU that rejects one of them: this CPU's
# instructions, the omp simd pragmas, 512-bit vectors where there are
_OPTIONAL_FLAGS = ("-march=native", "-fopenmp-simd", "-mprefer-vector-width=512")

# -- constants of tanh and exp, derived here ---------------------------------


def _ln2():
    """``ln 2`` to 60 digits, as a fraction."""
    with localcontext() as context:
        context.prec = 60
        return Fraction(Decimal(2).ln())


def _ln2_split(bits):
    """``ln 2 = hi + lo`` with ``hi`` on ``bits`` significant bits (``k * hi`` is
    exact for the small ``k`` of the range reduction) and ``lo`` the rest."""
    ln2 = _ln2()
    hi = Fraction(round(ln2 * 2**bits), 2**bits)
    return hi, ln2 - hi


# per dtype: (C type, bits type, mantissa bits, exponent bias, Taylor terms of
# expm1 (r, r^2 / 2, ...), |x| from which tanh rounds to 1)
_TYPES = {
    "f": ("float", "int32_t", 23, 127, 8, 9.5),
    "d": ("double", "int64_t", 52, 1023, 14, 20.0),
}


def _literal(value, char):
    """``value`` rounded to the dtype, as an exact C hexadecimal literal."""
    if char == "f":
        return float(np.float32(float(value))).hex() + "f"
    return float(value).hex()


def _tanh_source(char):
    """C code of ``fg_expm1``, ``fg_tanh`` and ``fg_clip`` for dtype ``char``."""
    _, bits_t, mantissa, bias, n_terms, clamp = _TYPES[char]
    hi, lo = _ln2_split(mantissa + 1 - 7)  # k < 64: 6 bits of k
    magic = Fraction(3, 2) * 2**mantissa  # adding it rounds to an integer
    magic_bits = (bias + mantissa) << mantissa | 1 << (mantissa - 1)
    L = lambda v: _literal(v, char)  # noqa: E731
    # expm1(r) = r (1 + r (1/2 + r (1/6 + ...))), the Taylor series without its 1
    poly = " + r * (".join(L(Fraction(1, math.factorial(n))) for n in range(1, n_terms + 1))
    poly += ")" * (n_terms - 1)
    return f"""
/* expm1(y) = exp(y) - 1 for 0 <= y <= {2 * clamp} (finite): y = k ln2 + r with
   |r| <= ln2 / 2 (k rounded by adding 1.5 2^{mantissa}: its low bits hold k),
   exp(y) - 1 = 2^k (exp(r) - 1) + (2^k - 1), exp(r) - 1 by its Taylor series
   (no cancellation near 0: tanh keeps its relative accuracy there). */
static inline real fg_expm1(real y)
{{
    real t = y * {L(1 / _ln2())} + {L(magic)};
    real k = t - {L(magic)};
    real r = (y - k * {L(hi)}) - k * {L(lo)};
    real q = r * ({poly});
    {bits_t} bits;
    real scale;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - ({bits_t}){magic_bits}LL + {bias}) << {mantissa};  /* 2^k */
    memcpy(&scale, &bits, sizeof scale);
    return scale * q + (scale - (real)1);
}}

/* tanh(x) = sign(x) e / (e + 2), e = expm1(2 |x|); branch-free, so that the
   loops calling it are vectorised; NaN in gives NaN out. */
static inline real fg_tanh(real x)
{{
    real a = x < 0 ? -x : x;  /* NaN stays NaN */
    real e, t;
    a = a > {L(clamp)} ? {L(clamp)} : a;  /* tanh rounds to 1 from here on */
    a = a == a ? a : (real)0;
    e = fg_expm1(a + a);
    t = e / (e + (real)2);
    t = x < 0 ? -t : t;
    return x == x ? t : x;
}}

/* min(max(v, lo), hi), NaN stays NaN (as np.clip) */
static inline real fg_clip(real v, real lo, real hi)
{{
    return v < lo ? lo : (v > hi ? hi : v);
}}
"""


def _switch(variable, body):
    """A C switch over the non-linearities: ``body(forward, derivative)`` per case."""
    cases = []
    for name, (forward, derivative) in C_NONLINEARITIES.items():
        cases.append(
            f"    case {_NONLINEARITY_INDEX[name]}: /* {name} */\n"
            f"        {body(forward, derivative)}\n        break;"
        )
    return f"switch ({variable}) {{\n" + "\n".join(cases) + "\n    }"


_SOURCE = Template(r"""/* sklearn-fastgrnn compiled engine: forward pass and exact BPTT of the
   FastGRNN cell for $real, H = $H, d = $D; generated by
   sklearn_fastgrnn/_compiled_cell.py, whose docstring explains it. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef $real real;
#define H $H
#define D $D
#define D1 (D + 1)
#define RB $RB
/* rows of sums kept in the working dtype before they are added in double */
#define FLUSH_ROWS 256
/* rows of the sums: dh Fz, dh c, dh c (1 - z) (no cancellation in dzeta); dU
   (H rows); [dW; sum dpre] (D1 rows) */
#define N_SUMS (3 + H + D1)
/* rows of one part's scratch: the sums, then 3 RB rows */
#define N_SCRATCH (N_SUMS + 3 * RB)
/* columns of a tile of the sums dU, dW kept in registers (4 vectors of 512 bits) */
#define JT $JT

enum { LAST = 0, MEAN = 1, MAX = 2 };

/* the body of the backward pass's loop over a row's units, given gate_d and
   update_d (the derivatives at z[j] and cc[j]) */
#define FG_FACTORS \
    const real fz = (hp[j] - sz * cc[j]) * gate_d; \
    const real fc = (szsn - sz * z[j]) * update_d; \
    const real g = d[j]; \
    acc[j] += g * fz; \
    acc[H + j] += g * cc[j]; \
    acc[2 * H + j] += g * cc[j] * ((real)1 - z[j]); \
    dp[r][j] = g * (fz + fc); \
    hz[r][j] = g * z[j];

/* The loops over a row's H units are the ones to vectorise (left alone, GCC
   may vectorise across a block's rows instead, several times slower). */
#define FG_SIMD _Pragma("omp simd")

/* Subnormal numbers are flushed to zero while a call runs (the gradient of the
   first steps of a long sequence decays into them, where every operation costs
   about a hundred times more); the caller's mode is restored on return.
   Infinities and NaN are untouched. */
#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>
#define FG_FLUSH_BEGIN const unsigned int fg_mode = _mm_getcsr(); _mm_setcsr(fg_mode | 0x8040u);
#define FG_FLUSH_END _mm_setcsr(fg_mode);
#elif defined(__aarch64__)
#define FG_FLUSH_BEGIN uint64_t fg_mode; __asm__ volatile("mrs %0, fpcr" : "=r"(fg_mode)); \
    __asm__ volatile("msr fpcr, %0" : : "r"(fg_mode | (1ull << 24)));
#define FG_FLUSH_END __asm__ volatile("msr fpcr, %0" : : "r"(fg_mode));
#else
#define FG_FLUSH_BEGIN
#define FG_FLUSH_END
#endif

typedef struct {
    int64_t B, T, n_out, readout, gate, update, train, part, n_parts;
    int64_t step;             /* between two steps of a row of X */
    double sz, sn;
    const real *X;            /* the D inputs of step t of row b at X + bases[b] + t * step */
    const int64_t *bases;     /* (B,): e.g. b * D1 and step B * D1 for (T, B, D1) */
    const int64_t *lengths;   /* (B,) real lengths */
    const real *W, *U, *bg, *bu, *V, *bo;  /* (D, H), (H, H), (H,), (H,), (H, n_out), (n_out,) */
    real *UT;                 /* (H, H): U.T, made by fg_backward_begin */
    int32_t *perm;            /* (B,) rows by length, longest first, stable */
    int32_t *nb;              /* (T + 1,) rows running at step t (0-based) */
    int64_t *off;             /* (T + 1,) first packed row of step t */
    real *HP;                 /* training: (n_real, H) packed h_{t-1}; else (B, H) h */
    real *Z, *C;              /* (n_real, H) packed z_t and c_t (training) */
    real *S;                  /* (B, H) sorted: h_L (last), sum (mean) or max */
    int32_t *AM;              /* (B, H) sorted: first step of the maximum */
    real *R;                  /* (B, H) the readout, the caller's row order */
    real *out;                /* (B, n_out) outputs r @ V + bo */
    const real *dout;         /* (B, n_out) d loss / d outputs */
    real *DR;                 /* (B, H) dr = dout @ V.T, the caller's order */
    real *DH;                 /* (B, H) sorted: dh_t */
    real *XP;                 /* (n_real, D1) packed [x_t 1] (training) */
    real *DPRE;               /* (n_real, H) packed dpre_t */
    double *sums;             /* (n_parts, N_SUMS, H): the backward pass's sums */
    real *scratch;            /* (n_parts, N_SCRATCH, H) */
    real *gW, *gU, *gV, *gbg, *gbu, *gzeta, *gnu, *gbo;  /* the gradient */
    void *factors;            /* fg_factors of a training batch, or NULL (full W) */
} fg_ctx;

/* A low-rank W = W1 @ W2 trained as its factors, for fg_train_forward and
   fg_train_backward: the input steps as fg_project reads them, W1, W2 and
   the buffers of the projected steps and of dW1. */
typedef struct {
    const real *X;            /* the d inputs of step t of row b at X + bases[b] + t * step */
    const int64_t *bases;     /* of the batch (set by fg_train_forward) */
    int64_t step, d;
    const real *W1, *W2;      /* (d, D), (D, H) */
    real *W2T;                /* (H, D) */
    real *projected;          /* (T, B, D1) [x W1, 1] */
    const int64_t *projected_bases;  /* (B,) b * D1 */
    double *sums;             /* (d, D) */
    real *acc, *gW1;          /* (d, D) */
} fg_factors;

$tanh

/* tanh of n values (for the tests of its accuracy) */
void fg_tanh_array(const real *x, real *y, int64_t n)
{
    int64_t i;
    FG_SIMD for (i = 0; i < n; ++i) {
        y[i] = fg_tanh(x[i]);
    }
}

/* -- forward ------------------------------------------------------------ */

/* Sorts the rows by length, longest first (a stable counting sort), makes nb
   and off, sets h_0 and the pooled readouts; returns the number of real steps
   (sum of the lengths, the packed rows). */
int64_t fg_forward_begin(fg_ctx *c)
{
    const int64_t B = c->B, T = c->T;
    int64_t *cursor = c->off, b, t, running = 0;
    int j;
    for (t = 0; t <= T; ++t) {
        cursor[t] = 0;
    }
    for (b = 0; b < B; ++b) {
        const int64_t L = c->lengths[b];
        cursor[L < 0 ? 0 : (L > T ? T : L)] += 1;
    }
    for (t = T; t >= 0; --t) {  /* nb[t]: rows longer than t */
        const int64_t n = cursor[t];
        c->nb[t] = (int32_t)running;
        cursor[t] = running;
        running += n;
    }
    for (b = 0; b < B; ++b) {
        const int64_t L = c->lengths[b];
        c->perm[cursor[L < 0 ? 0 : (L > T ? T : L)]++] = (int32_t)b;
    }
    running = 0;
    for (t = 0; t <= T; ++t) {
        c->off[t] = running;
        running += c->nb[t];
    }
    memset(c->HP, 0, (size_t)(c->train ? c->nb[0] : B) * H * sizeof(real));  /* h_0 */
    for (b = 0; b < B; ++b) {
        real *s = c->S + b * H;
        FG_SIMD for (j = 0; j < H; ++j) {
            s[j] = c->readout == MAX ? -(real)INFINITY : (real)0;
        }
        if (c->readout == MAX) {
            memset(c->AM + b * H, 0, H * sizeof(int32_t));
        }
    }
    return running;
}

/* Step t of rows b0 .. b0 + rb - 1 (sorted); nbn rows run at step t + 1. */
static inline __attribute__((always_inline)) void fg_forward_rows(
    const fg_ctx *restrict c, int64_t t, int64_t b0, int rb, int64_t nbn)
{
    const real sz = (real)c->sz, szsn = (real)(c->sz + c->sn);
    const real *restrict W = c->W, *restrict U = c->U;
    const real *restrict bg = c->bg, *restrict bu = c->bu;
    real *scratch = c->scratch + c->part * N_SCRATCH * H + N_SUMS * H;
    real acc[RB][H];
    const real *x[RB], *hin[RB];
    real *hout[RB], *zr[RB], *cr[RB];
    int r, j, k;
    for (r = 0; r < rb; ++r) {
        const int64_t b = b0 + r;
        x[r] = c->X + c->bases[c->perm[b]] + t * c->step;
        if (c->train) {
            const int64_t row = c->off[t] + b;
            memcpy(c->XP + row * D1, x[r], D * sizeof(real));  /* [x_t 1], for dW */
            c->XP[row * D1 + D] = (real)1;
            hin[r] = c->HP + row * H;
            zr[r] = c->Z + row * H;
            cr[r] = c->C + row * H;
            if (b < nbn) {
                hout[r] = c->HP + (c->off[t + 1] + b) * H;
            } else {  /* the row's last step */
                hout[r] = c->readout == LAST ? c->S + b * H : scratch + (2 * RB + r) * H;
            }
        } else {
            hin[r] = hout[r] = c->HP + b * H;
            zr[r] = scratch + r * H;
            cr[r] = scratch + (RB + r) * H;
        }
    }
    /* pre = x_t @ W + h_{t-1} @ U, the block's rows at once */
    for (r = 0; r < rb; ++r) {
        FG_SIMD for (j = 0; j < H; ++j) {
            acc[r][j] = 0;
        }
    }
    for (k = 0; k < D; ++k) {
        for (r = 0; r < rb; ++r) {
            const real v = x[r][k];
            FG_SIMD for (j = 0; j < H; ++j) {
                acc[r][j] += v * W[k * H + j];
            }
        }
    }
    for (k = 0; k < H; ++k) {
        for (r = 0; r < rb; ++r) {
            const real v = hin[r][k];
            FG_SIMD for (j = 0; j < H; ++j) {
                acc[r][j] += v * U[k * H + j];
            }
        }
    }
    for (r = 0; r < rb; ++r) {
        const int64_t b = b0 + r;
        real *restrict z = zr[r], *restrict cc = cr[r], *h = hout[r];
        const real *hp = hin[r], *restrict pre = acc[r];
        /* z, c, and h_t = sz_plus_sn c + z (h_{t-1} - sz c) */
        $fused_forward
        {
            $gate_forward
            $update_forward
            FG_SIMD for (j = 0; j < H; ++j) {
                h[j] = szsn * cc[j] + z[j] * (hp[j] - sz * cc[j]);
            }
        }
        if (c->readout == MEAN) {
            real *restrict s = c->S + b * H;
            FG_SIMD for (j = 0; j < H; ++j) {
                s[j] += h[j];
            }
        } else if (c->readout == MAX) {  /* the first maximum; NaN is the maximum */
            real *restrict m = c->S + b * H;
            int32_t *restrict am = c->AM + b * H;
            FG_SIMD for (j = 0; j < H; ++j) {
                const int take = h[j] > m[j] || (h[j] != h[j] && m[j] == m[j]);
                m[j] = take ? h[j] : m[j];
                am[j] = take ? (int32_t)t : am[j];
            }
        }
    }
}

/* The time loop over this part's rows: blocks of RB rows, block i belonging to
   part i % n_parts (the last, partial block row by row). */
void fg_forward_steps(fg_ctx *c)
{
    const int64_t P = c->n_parts, p = c->part;
    int64_t t, i;
    FG_FLUSH_BEGIN
    for (t = 0; t < c->T; ++t) {
        const int64_t nbt = c->nb[t], nbn = c->nb[t + 1];
        for (i = p; (i + 1) * RB <= nbt; i += P) {
            fg_forward_rows(c, t, i * RB, RB, nbn);
        }
        if ((nbt / RB) % P == p) {
            for (i = nbt / RB * RB; i < nbt; ++i) {
                fg_forward_rows(c, t, i, 1, nbn);
            }
        }
    }
    FG_FLUSH_END
}

/* The readout r in the caller's row order and, when V is given, the outputs. */
void fg_forward_end(fg_ctx *c)
{
    const int64_t B = c->B, n_out = c->n_out;
    int64_t b, m;
    int j;
    for (b = 0; b < B; ++b) {
        const int64_t i = c->perm[b];
        real *r = c->R + i * H;
        const real *s = c->readout == LAST && !c->train ? c->HP + b * H : c->S + b * H;
        if (c->readout == MEAN) {
            const real L = (real)c->lengths[i];
            FG_SIMD for (j = 0; j < H; ++j) {
                r[j] = s[j] / L;
            }
        } else {
            memcpy(r, s, H * sizeof(real));
        }
    }
    if (c->V == 0) {
        return;
    }
    for (b = 0; b < B; ++b) {  /* out = r @ V + bo */
        const real *r = c->R + b * H;
        real *o = c->out + b * n_out;
        for (m = 0; m < n_out; ++m) {
            o[m] = c->bo[m];
        }
        for (j = 0; j < H; ++j) {
            const real v = r[j];
            const real *restrict vrow = c->V + j * n_out;
            for (m = 0; m < n_out; ++m) {
                o[m] += v * vrow[m];
            }
        }
    }
}

/* The whole forward pass in this thread; returns the number of real steps. */
int64_t fg_forward(fg_ctx *c)
{
    const int64_t n_real = fg_forward_begin(c);
    fg_forward_steps(c);
    fg_forward_end(c);
    return n_real;
}

/* -- backward ----------------------------------------------------------- */

/* dr = dout @ V.T, dV = r.T @ dout, dbias_out = sum dout, U.T, and the sums
   set to zero. */
void fg_backward_begin(fg_ctx *c)
{
    const int64_t B = c->B, n_out = c->n_out;
    int64_t b, m, p;
    int j, k;
    for (b = 0; b < B; ++b) {
        const real *restrict d = c->dout + b * n_out;
        real *restrict dr = c->DR + b * H;
        for (j = 0; j < H; ++j) {
            const real *restrict vrow = c->V + j * n_out;
            real s = 0;
            for (m = 0; m < n_out; ++m) {
                s += d[m] * vrow[m];
            }
            dr[j] = s;
        }
    }
    for (j = 0; j < H * n_out; ++j) {
        c->gV[j] = 0;
    }
    for (m = 0; m < n_out; ++m) {
        c->gbo[m] = 0;
    }
    for (b = 0; b < B; ++b) {
        const real *restrict d = c->dout + b * n_out;
        const real *restrict r = c->R + b * H;
        for (j = 0; j < H; ++j) {
            real *restrict g = c->gV + j * n_out;
            for (m = 0; m < n_out; ++m) {
                g[m] += r[j] * d[m];
            }
        }
        for (m = 0; m < n_out; ++m) {
            c->gbo[m] += d[m];
        }
    }
    for (k = 0; k < H; ++k) {
        for (j = 0; j < H; ++j) {
            c->UT[k * H + j] = c->U[j * H + k];
        }
    }
    for (p = 0; p < c->n_parts; ++p) {
        double *sums = c->sums + p * N_SUMS * H;
        real *acc = c->scratch + p * N_SCRATCH * H;
        for (j = 0; j < N_SUMS * H; ++j) {
            sums[j] = 0.0;
            acc[j] = 0;
        }
    }
}

/* BPTT step t of rows b0 .. b0 + rb - 1: dpre into DPRE, dh_{t-1} into DH, and
   the sums dh Fz, dh c, dh c (1 - z) into acc. */
static inline __attribute__((always_inline)) void fg_backward_rows(
    const fg_ctx *restrict c, int64_t t, int64_t b0, int rb, int64_t nbn,
    real *restrict acc)
{
    const real sz = (real)c->sz, szsn = (real)(c->sz + c->sn);
    const real *restrict UT = c->UT;
    real dh[RB][H];
    real *dp[RB], *hz[RB];  /* rows in memory: GCC keeps the accumulators of a
                               product in registers when its rows are pointers */
    int r, j, k;
    for (r = 0; r < rb; ++r) {
        dp[r] = c->DPRE + (c->off[t] + b0 + r) * H;
        hz[r] = acc + (N_SUMS + r) * H;
    }
    for (r = 0; r < rb; ++r) {
        const int64_t b = b0 + r, row = c->off[t] + b, i = c->perm[b];
        const real *restrict z = c->Z + row * H, *restrict cc = c->C + row * H;
        const real *restrict hp = c->HP + row * H;
        const real *restrict dr = c->DR + i * H, *restrict carried = c->DH + b * H;
        real d[H], fg[H], fu[H];
        /* dh_t: what step t + 1 passed down (rows still running there), plus g_t */
        if (c->readout == LAST) {
            memcpy(d, b < nbn ? carried : dr, H * sizeof(real));
        } else {
            FG_SIMD for (j = 0; j < H; ++j) {
                d[j] = b < nbn ? carried[j] : (real)0;
            }
            if (c->readout == MEAN) {
                const real w = (real)(1.0 / (double)c->lengths[i]);
                FG_SIMD for (j = 0; j < H; ++j) {
                    d[j] += w * dr[j];
                }
            } else {
                const int32_t *restrict am = c->AM + b * H;
                FG_SIMD for (j = 0; j < H; ++j) {
                    d[j] += am[j] == (int32_t)t ? dr[j] : (real)0;
                }
            }
        }
        /* Fz = e gate'(z), Fc = (sz_plus_sn - sz z) update'(c), dpre = dh (Fz + Fc),
           and the sums dh Fz, dh c, dh c (1 - z) */
        $fused_backward
        {
            {
                const real *restrict ys = z;
                real *restrict out = fg;
                $gate_derivative
            }
            {
                const real *restrict ys = cc;
                real *restrict out = fu;
                $update_derivative
            }
            FG_SIMD for (j = 0; j < H; ++j) {
                const real gate_d = fg[j], update_d = fu[j];
                FG_FACTORS
            }
        }
    }
    if (t == 0) {
        return;
    }
    /* dh_{t-1} = dh_t z_t + dpre_t @ U.T, the block's rows at once */
    for (r = 0; r < rb; ++r) {
        FG_SIMD for (j = 0; j < H; ++j) {
            dh[r][j] = 0;
        }
    }
    for (k = 0; k < H; ++k) {
        for (r = 0; r < rb; ++r) {
            const real v = dp[r][k];
            FG_SIMD for (j = 0; j < H; ++j) {
                dh[r][j] += v * UT[k * H + j];
            }
        }
    }
    for (r = 0; r < rb; ++r) {
        real *restrict out = c->DH + (b0 + r) * H;
        FG_SIMD for (j = 0; j < H; ++j) {
            out[j] = hz[r][j] + dh[r][j];
        }
    }
}

/* Rows k0 .. k0 + kt - 1, columns j0 .. j0 + jw - 1 of out (rows of H) plus
   sum_i a_i[k] dpre_i[j] over the packed rows i0 <= i < i1, where a_i is
   h_{t-1} (from_x = 0) or [x_t 1] (from_x = 1): a tile of sums in registers. */
static inline __attribute__((always_inline)) void fg_outer_tile(
    const fg_ctx *restrict c, int64_t i0, int64_t i1, int from_x, int k0, int kt,
    int j0, int jw, real *restrict out)
{
    real tile[4][JT];
    int64_t i;
    int kk, j;
    for (kk = 0; kk < kt; ++kk) {
        FG_SIMD for (j = 0; j < jw; ++j) {
            tile[kk][j] = out[(k0 + kk) * H + j0 + j];
        }
    }
    for (i = i0; i < i1; ++i) {
        const real *restrict d = c->DPRE + i * H + j0;
        const real *restrict a = from_x ? c->XP + i * D1 : c->HP + i * H;
        for (kk = 0; kk < kt; ++kk) {
            const real v = a[k0 + kk];
            FG_SIMD for (j = 0; j < jw; ++j) {
                tile[kk][j] += v * d[j];
            }
        }
    }
    for (kk = 0; kk < kt; ++kk) {
        FG_SIMD for (j = 0; j < jw; ++j) {
            out[(k0 + kk) * H + j0 + j] = tile[kk][j];
        }
    }
}

/* Rows k0 .. k0 + kt - 1 of the sums, every column: full tiles, then the rest. */
static inline __attribute__((always_inline)) void fg_outer_rows(
    const fg_ctx *restrict c, int64_t i0, int64_t i1, int from_x, int k0, int kt,
    real *restrict out)
{
    int j0;
    for (j0 = 0; j0 + JT <= H; j0 += JT) {
        fg_outer_tile(c, i0, i1, from_x, k0, kt, j0, JT, out);
    }
    if (H % JT) {
        fg_outer_tile(c, i0, i1, from_x, k0, kt, H / JT * JT, H % JT, out);
    }
}

/* dU += h_{t-1}.T dpre and [dW; sum dpre] += [x 1].T dpre over the packed rows
   i0 <= i < i1 (acc: the sums, N_SUMS rows of H). */
static void fg_outer_sums(const fg_ctx *restrict c, int64_t i0, int64_t i1,
                          real *restrict acc)
{
    int k0;
    for (k0 = 0; k0 + 4 <= H; k0 += 4) {
        fg_outer_rows(c, i0, i1, 0, k0, 4, acc + 3 * H);
    }
    if (H % 4) {
        fg_outer_rows(c, i0, i1, 0, H / 4 * 4, H % 4, acc + 3 * H);
    }
    for (k0 = 0; k0 + 4 <= D1; k0 += 4) {
        fg_outer_rows(c, i0, i1, 1, k0, 4, acc + (3 + H) * H);
    }
    if (D1 % 4) {
        fg_outer_rows(c, i0, i1, 1, D1 / 4 * 4, D1 % 4, acc + (3 + H) * H);
    }
}

/* the n sums of acc added to those of sums in double, and acc set to zero */
static void fg_flush(double *restrict sums, real *restrict acc, int64_t n)
{
    int64_t j;
    for (j = 0; j < n; ++j) {
        sums[j] += (double)acc[j];
        acc[j] = 0;
    }
}

/* The BPTT loop over this part's rows (as fg_forward_steps), its sums in
   double into its rows of c->sums. The outer-product sums run over packed rows
   (all of this part's rows of consecutive steps, at least FLUSH_ROWS of them
   with one part), and are added in double every FLUSH_ROWS rows. */
void fg_backward_steps(fg_ctx *c)
{
    const int64_t P = c->n_parts, p = c->part;
    real *acc = c->scratch + p * N_SCRATCH * H;
    double *sums = c->sums + p * N_SUMS * H;
    int64_t t, i, end = c->off[c->T];  /* packed rows from off[t] to end: no sums yet */
    FG_FLUSH_BEGIN
    for (t = c->T - 1; t >= 0; --t) {
        const int64_t nbt = c->nb[t], nbn = c->nb[t + 1];
        for (i = p; (i + 1) * RB <= nbt; i += P) {
            fg_backward_rows(c, t, i * RB, RB, nbn, acc);
            if (P > 1) {
                fg_outer_sums(c, c->off[t] + i * RB, c->off[t] + (i + 1) * RB, acc);
            }
        }
        if ((nbt / RB) % P == p) {
            for (i = nbt / RB * RB; i < nbt; ++i) {
                fg_backward_rows(c, t, i, 1, nbn, acc);
            }
            if (P > 1) {
                fg_outer_sums(c, c->off[t] + nbt / RB * RB, c->off[t] + nbt, acc);
            }
        }
        if (end - c->off[t] >= FLUSH_ROWS || t == 0) {
            if (P == 1) {
                fg_outer_sums(c, c->off[t], end, acc);
            }
            fg_flush(sums, acc, N_SUMS * H);
            end = c->off[t];
        }
    }
    FG_FLUSH_END
}

/* The gradient from the parts' sums (added into part 0's): dW, dU (into gW, gU),
   the biases, zeta and nu. */
void fg_backward_end(fg_ctx *c)
{
    double *total = c->sums, sum_dh_c = 0.0, sum_dh_c_1_z = 0.0;
    int64_t p;
    int j, k;
    for (p = 1; p < c->n_parts; ++p) {
        const double *part = c->sums + p * N_SUMS * H;
        for (j = 0; j < N_SUMS * H; ++j) {
            total[j] += part[j];
        }
    }
    for (j = 0; j < H; ++j) {
        c->gbg[j] = (real)total[j];
        c->gbu[j] = (real)(total[(3 + H + D) * H + j] - total[j]);  /* sum dpre - dbg */
        sum_dh_c += total[H + j];
        sum_dh_c_1_z += total[2 * H + j];
    }
    for (k = 0; k < H; ++k) {
        for (j = 0; j < H; ++j) {
            c->gU[k * H + j] = (real)total[(3 + k) * H + j];
        }
    }
    for (k = 0; k < D; ++k) {
        for (j = 0; j < H; ++j) {
            c->gW[k * H + j] = (real)total[(3 + H + k) * H + j];
        }
    }
    *c->gzeta = (real)(sum_dh_c_1_z * c->sz * (1.0 - c->sz));
    *c->gnu = (real)(sum_dh_c * c->sn * (1.0 - c->sn));
}

/* The whole backward pass in this thread. */
void fg_backward(fg_ctx *c)
{
    fg_backward_begin(c);
    fg_backward_steps(c);
    fg_backward_end(c);
}

/* -- the factored input product of a low-rank W = W1 @ W2 ----------------
   Built with D the rank: the passes above read the steps [x W1, 1] and W2 as
   their W. */

/* rows i0 .. i0 + rb - 1 of out (D1 columns) = [x W1, 1], xs[r] the d_in
   values of row i0 + r, the block's sums in registers */
static inline __attribute__((always_inline)) void fg_project_rows(
    const real *const xs[4], int64_t i0, int rb, int64_t d_in,
    const real *restrict W1, real *restrict out)
{
    real acc[4][D];
    int64_t k;
    int r, j;
    for (r = 0; r < rb; ++r) {
        FG_SIMD for (j = 0; j < D; ++j) {
            acc[r][j] = 0;
        }
    }
    for (k = 0; k < d_in; ++k) {
        const real *restrict w = W1 + k * D;
        for (r = 0; r < rb; ++r) {
            const real v = xs[r][k];
            FG_SIMD for (j = 0; j < D; ++j) {
                acc[r][j] += v * w[j];
            }
        }
    }
    for (r = 0; r < rb; ++r) {
        memcpy(out + (i0 + r) * D1, acc[r], D * sizeof(real));
        out[(i0 + r) * D1 + D] = (real)1;
    }
}

/* out (T, B, D1) = [x W1, 1], W1 (d_in, D), x the d_in values of step t of
   row b at X + bases[b] + t * step (a time-major array's rows, or the
   windows of the sequences read in place) */
void fg_project(const real *restrict X, const int64_t *restrict bases,
                int64_t step, int64_t T, int64_t B, int64_t d_in,
                const real *restrict W1, real *restrict out)
{
    const real *xs[4];
    int64_t i, t = 0, b = 0, rows = T * B;
    int r;
    for (i = 0; i < rows; i += r) {
        const int rb = rows - i >= 4 ? 4 : 1;
        for (r = 0; r < rb; ++r) {  /* row i + r is step t of row b */
            xs[r] = X + bases[b] + t * step;
            if (++b == B) {
                b = 0;
                ++t;
            }
        }
        if (rb == 4) {
            fg_project_rows(xs, i, 4, d_in, W1, out);
        } else {
            fg_project_rows(xs, i, 1, d_in, W1, out);
        }
    }
}

/* acc (d_in, D) += the outer products of the rb rows xs[r] (d_in values) with
   dps[r] (D values), row after row for each sum, the block's rows read once */
static inline __attribute__((always_inline)) void fg_factor_rows(
    real *restrict acc, const real *const xs[4], real dps[4][D], int rb,
    int64_t d_in)
{
    int64_t k;
    int r, j;
    for (k = 0; k < d_in; ++k) {
        real *restrict a = acc + k * D;
        real v[4];
        for (r = 0; r < rb; ++r) {
            v[r] = xs[r][k];
        }
        FG_SIMD for (j = 0; j < D; ++j) {
            real s = a[j];
            for (r = 0; r < rb; ++r) {
                s += v[r] * dps[r][j];
            }
            a[j] = s;
        }
    }
}

/* dW1 (d_in, D) after the last fg_backward of c: the sum over the real steps
   of x_t.T (dpre_t W2.T), x_t as fg_project read it (row b in the caller's
   order; c->X holds the projected steps), WT = W2.T (H, D); the sums kept in
   the working dtype (acc) for at most FLUSH_ROWS rows, then added in double
   (sums), d_in * D of each. Four rows at a time: each sum still adds its
   rows' products one after another, in the same order. */
void fg_factor_gradient(const fg_ctx *c, const real *restrict X,
                        const int64_t *restrict bases, int64_t step, int64_t d_in,
                        const real *restrict WT, double *restrict sums,
                        real *restrict acc, real *restrict gW1)
{
    const int64_t n = d_in * D;
    const real *xs[4];
    real dps[4][D];  /* dpre_t W2.T of the block's rows */
    int64_t t, b, k, rows = 0;
    int j, r, block = 0;
    for (k = 0; k < n; ++k) {
        sums[k] = 0.0;
        acc[k] = 0;
    }
    FG_FLUSH_BEGIN
    for (t = 0; t < c->T; ++t) {
        for (b = 0; b < c->nb[t]; ++b) {
            const real *restrict dpre = c->DPRE + (c->off[t] + b) * H;
            real *restrict dp = dps[block];
            xs[block] = X + bases[c->perm[b]] + t * step;
            FG_SIMD for (r = 0; r < D; ++r) {
                dp[r] = 0;
            }
            for (j = 0; j < H; ++j) {
                const real v = dpre[j];
                FG_SIMD for (r = 0; r < D; ++r) {
                    dp[r] += v * WT[j * D + r];
                }
            }
            if (++block == 4) {
                fg_factor_rows(acc, xs, dps, 4, d_in);
                block = 0;
            }
            if (++rows == FLUSH_ROWS) {  /* a multiple of 4: no block is open */
                fg_flush(sums, acc, n);
                rows = 0;
            }
        }
    }
    for (r = 0; r < block; ++r) {
        fg_factor_rows(acc, xs + r, dps + r, 1, d_in);
    }
    fg_flush(sums, acc, n);
    FG_FLUSH_END
    for (k = 0; k < n; ++k) {
        gW1[k] = (real)sums[k];
    }
}

/* -- one training batch, for the epoch loop of _compiled_epoch.py ------- */

/* The forward pass of one training batch of T steps, rows starting at bases
   and running lengths steps, with sigmoid(zeta) = sz and sigmoid(nu) = sn; the
   rest of c is set (the epoch loop of _compiled_epoch.py calls it). With
   factors, the passes read the projected steps [x W1, 1] (see fg_project). */
int64_t fg_train_forward(fg_ctx *c, int64_t T, const int64_t *bases,
                         const int64_t *lengths, double sz, double sn)
{
    fg_factors *f = (fg_factors *)c->factors;
    c->T = T;
    c->lengths = lengths;
    c->sz = sz;
    c->sn = sn;
    if (f) {
        f->bases = bases;
        fg_project(f->X, bases, f->step, T, c->B, f->d, f->W1, f->projected);
        c->X = f->projected;
        c->bases = f->projected_bases;
        c->step = c->B * D1;
    } else {
        c->bases = bases;
    }
    return fg_forward(c);
}

/* The backward pass of the batch of the last fg_train_forward; with factors,
   dW1 too (dW2 is the passes' dW). */
void fg_train_backward(fg_ctx *c)
{
    const fg_factors *f = (const fg_factors *)c->factors;
    int64_t j, r;
    fg_backward(c);
    if (f) {
        for (j = 0; j < H; ++j) {
            for (r = 0; r < D; ++r) {
                f->W2T[j * D + r] = f->W2[r * H + j];
            }
        }
        fg_factor_gradient(c, f->X, f->bases, f->step, f->d, f->W2T, f->sums, f->acc,
                           f->gW1);
    }
}
""")


#: Pairs (gate, update) whose forward and backward loops are generated fused (one
#: pass over a row's units instead of three): the estimator's defaults. The
#: other pairs run the same expressions in separate passes.
_FUSED_PAIRS = (("sigmoid", "tanh"),)


def _fused_source(direction):
    """``if (pair) { fused loop } else`` for each pair of :data:`_FUSED_PAIRS`;
    the generic passes follow as the final ``else`` block."""
    code = []
    for gate, update in _FUSED_PAIRS:
        (g_value, g_derivative), (u_value, u_derivative) = (
            C_NONLINEARITIES[gate], C_NONLINEARITIES[update])
        condition = (f"c->gate == {_NONLINEARITY_INDEX[gate]} && "
                     f"c->update == {_NONLINEARITY_INDEX[update]}")
        if direction == "forward":
            body = (f"real zj, cj; {{ const real v = pre[j] + bg[j]; zj = {g_value}; }} "
                    f"{{ const real v = pre[j] + bu[j]; cj = {u_value}; }} "
                    "z[j] = zj; cc[j] = cj; h[j] = szsn * cj + zj * (hp[j] - sz * cj);")
        else:
            body = (f"real gate_d, update_d; {{ const real y = z[j]; gate_d = {g_derivative}; }} "
                    f"{{ const real y = cc[j]; update_d = {u_derivative}; }} FG_FACTORS")
        code.append(f"if ({condition}) {{ /* {gate}, {update}: fused */\n"
                    f"            FG_SIMD for (j = 0; j < H; ++j) {{ {body} }}\n"
                    "        } else")
    return "\n        ".join(code)


def trains_as_factors(n_inputs, hidden_size, w_rank):
    """Whether a low-rank ``W`` (``w_rank``, or None) trains as its factors.

    The multiply-adds of a row and step, forward and backward: with the
    product ``W1 @ W2``, ``2 (d + 1 + H) H + H^2``; with the factors, the
    passes on ``r`` inputs, ``2 (r + 1 + H) H + H^2``, plus ``x W1``, ``dpre
    W2.T`` and ``dW1``, ``2 d r + H r``. True when the factors cost at most
    :data:`FACTORED_COST` of the product.
    """
    if w_rank is None:
        return False
    d, H, r = n_inputs, hidden_size, w_rank
    product = 2 * (d + 1 + H) * H + H * H
    factors = 2 * (r + 1 + H) * H + H * H + 2 * d * r + H * r
    return factors <= FACTORED_COST * product


def _row_block(H):
    """Rows per block: their accumulators (``RB x H``) must fit in registers."""
    return 4 if H <= 64 else 2


def _n_sums(H, d):
    """Rows of the backward pass's sums: dh Fz, dh c, dh c (1 - z), dU, [dW; sum dpre]."""
    return 3 + H + d + 1


def engine_source(dtype, hidden_size, n_inputs):
    """The C source of the engine for ``dtype``, ``H`` and ``d`` (a str)."""
    char = np.dtype(dtype).char
    if char not in _TYPES:
        raise ValueError(f"the compiled engine computes in float32 or float64, not {dtype}.")
    loop = "FG_SIMD for (j = 0; j < H; ++j) {{ {} }}"
    return _SOURCE.substitute(
        real=_TYPES[char][0], H=int(hidden_size), D=int(n_inputs),
        RB=_row_block(hidden_size), JT=min(int(hidden_size), 256 // np.dtype(dtype).itemsize),
        tanh=_tanh_source(char),
        gate_forward=_switch("c->gate", lambda f, _: loop.format(
            f"const real v = pre[j] + bg[j]; z[j] = {f};")),
        update_forward=_switch("c->update", lambda f, _: loop.format(
            f"const real v = pre[j] + bu[j]; cc[j] = {f};")),
        gate_derivative=_switch("c->gate", lambda _, g: loop.format(
            f"const real y = ys[j]; out[j] = {g};")),
        update_derivative=_switch("c->update", lambda _, g: loop.format(
            f"const real y = ys[j]; out[j] = {g};")),
        fused_forward=_fused_source("forward"), fused_backward=_fused_source("backward"),
    )


class _Context(ctypes.Structure):
    """The C struct ``fg_ctx``: sizes, settings and pointers of one call."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in (
            "B", "T", "n_out", "readout", "gate", "update", "train", "part", "n_parts",
            "step",
        )),
        ("sz", ctypes.c_double), ("sn", ctypes.c_double),
        *((name, ctypes.c_void_p) for name in (
            "X", "bases", "lengths", "W", "U", "bg", "bu", "V", "bo", "UT", "perm", "nb", "off",
            "HP", "Z", "C", "S", "AM", "R", "out", "dout", "DR", "DH", "XP", "DPRE",
            "sums", "scratch",
            "gW", "gU", "gV", "gbg", "gbu", "gzeta", "gnu", "gbo", "factors",
        )),
    ]


class _Factors(ctypes.Structure):
    """The C struct ``fg_factors`` (a low-rank ``W`` trained as its factors)."""

    _fields_ = [
        ("X", ctypes.c_void_p), ("bases", ctypes.c_void_p), ("step", ctypes.c_int64),
        ("d", ctypes.c_int64),
        *((name, ctypes.c_void_p) for name in (
            "W1", "W2", "W2T", "projected", "projected_bases", "sums", "acc", "gW1")),
    ]


_FUNCTIONS = {  # name: (argument types, result type)
    "fg_forward": ([ctypes.POINTER(_Context)], ctypes.c_int64),
    "fg_forward_begin": ([ctypes.POINTER(_Context)], ctypes.c_int64),
    "fg_forward_steps": ([ctypes.POINTER(_Context)], None),
    "fg_forward_end": ([ctypes.POINTER(_Context)], None),
    "fg_backward": ([ctypes.POINTER(_Context)], None),
    "fg_backward_begin": ([ctypes.POINTER(_Context)], None),
    "fg_backward_steps": ([ctypes.POINTER(_Context)], None),
    "fg_backward_end": ([ctypes.POINTER(_Context)], None),
    "fg_tanh_array": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None),
    "fg_project": ([ctypes.c_void_p, ctypes.c_void_p, *[ctypes.c_int64] * 4,
                    ctypes.c_void_p, ctypes.c_void_p], None),
    "fg_factor_gradient": ([ctypes.POINTER(_Context), ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int64, ctypes.c_int64, *[ctypes.c_void_p] * 4], None),
    "fg_train_forward": ([ctypes.POINTER(_Context), ctypes.c_int64, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_double, ctypes.c_double], ctypes.c_int64),
    "fg_train_backward": ([ctypes.POINTER(_Context)], None),
}
_libraries = {}  # (dtype char, H, d) -> ctypes library, or the BuildError it raised
_libraries_lock = threading.Lock()


def load_library(dtype, hidden_size, n_inputs):
    """The engine's library for these sizes: built (or found in the cache) once
    per process; a failure is remembered and raised again.

    Raises
    ------
    sklearn_fastgrnn._build.BuildError
    """
    key = (np.dtype(dtype).char, int(hidden_size), int(n_inputs))
    with _libraries_lock:
        library = _libraries.get(key)
        if library is None:
            try:
                path = build_library(engine_source(*key), "fastgrnn-engine", _COMPILE_FLAGS,
                                     optional=_OPTIONAL_FLAGS)
                library = ctypes.CDLL(path)
                for name, (argtypes, restype) in _FUNCTIONS.items():
                    function = getattr(library, name)
                    function.argtypes, function.restype = argtypes, restype
            except (BuildError, OSError, AttributeError) as exc:
                library = exc if isinstance(exc, BuildError) else BuildError(
                    f"loading the compiled engine failed: {exc}"
                )
            _libraries[key] = library
    if isinstance(library, BuildError):
        raise library
    return library


def _scratch_rows(H, d):
    """Rows of one part's scratch: the sums, then 3 blocks of rows."""
    return _n_sums(H, d) + 3 * _row_block(H)


class _Buffers:
    """Buffers of one batch size ``B`` for up to ``T`` steps, and their context."""

    def __init__(self, engine, T, B, n_parts):
        d, H, dt = engine.step_inputs, engine.layout.hidden_size, engine.dtype
        self.T, self.B = T, B
        train = dict(
            HP=np.empty((T * B, H), dt), Z=np.empty((T * B, H), dt),
            C=np.empty((T * B, H), dt), DR=np.empty((B, H), dt), DH=np.empty((B, H), dt),
            XP=np.empty((T * B, d + 1), dt), DPRE=np.empty((T * B, H), dt),
            sums=np.empty((n_parts, _n_sums(H, d), H), np.float64),
        )
        self.arrays = dict(
            perm=np.empty(B, np.int32), nb=np.empty(T + 1, np.int32),
            off=np.empty(T + 1, np.int64), S=np.empty((B, H), dt),
            AM=np.empty((B, H), np.int32), R=np.empty((B, H), dt),
            out=np.empty((B, engine.layout.n_outputs), dt),
            dout=np.empty((B, engine.layout.n_outputs), dt),  # the C epoch loop's
            scratch=np.empty((n_parts, _scratch_rows(H, d), H), dt), **train,
        )
        ctx = self.ctx = _Context()
        for name, array in self.arrays.items():
            setattr(ctx, name, address(array))
        ctx.B, ctx.n_out, ctx.train, ctx.part, ctx.n_parts = (
            B, engine.layout.n_outputs, 1, 0, n_parts)
        ctx.readout = _READOUT_INDEX[engine.readout]
        ctx.gate, ctx.update = engine._kinds
        ctx.UT = address(engine._U_T)
        self.full = np.empty(B, np.int64)  # the lengths of a batch without padding
        self.full_address, self.full_T = address(self.full), None
        self.grad = None  # the gradient array whose addresses ctx holds
        # the arrays training_contexts pointed ctx at, (steps, step, flat, grad);
        # None once forward or backward point it elsewhere
        self.prepared = None
        # where row b of a (T, B, n_inputs + 1) batch starts (see StepRows)
        self.input_bases = np.arange(B, dtype=np.int64) * (engine.layout.n_inputs + 1)
        if engine.factored:  # the projected steps [x W1, 1] and their rows' starts
            self.projected = np.empty((T, B, d + 1), dt)
            self.projected_bases = np.arange(B, dtype=np.int64) * (d + 1)

    def full_lengths(self, T):
        """Lengths of a batch of ``T`` steps without padding, and their address."""
        if self.full_T != T:
            self.full.fill(T)
            self.full_T = T
        return self.full, self.full_address


_pool = None  # the threads of n_threads > 1, made on first use


def _run_parts(function, ctx, n_parts):
    """``function`` on ``n_parts`` copies of ``ctx`` (parts 0..n-1) in threads
    (ctypes releases the GIL); part 0 in this thread."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fastgrnn-engine")
    parts = []
    for part in range(1, n_parts):
        copy = _Context.from_buffer_copy(ctx)
        copy.part = part
        parts.append(_pool.submit(function, copy))
    function(ctx)
    for future in parts:
        future.result()


class StepRows(NamedTuple):
    """A time-major batch that :meth:`CompiledEngine.forward` reads where it
    lies, without a copy: the ``d`` inputs of step ``t`` of row ``b`` are
    ``data.ravel()[bases[b] + t * step:][:d]`` (training's moving windows,
    each ``step`` values after the last in one array of the sequences).
    ``shape`` is the ``(T, B, d + 1)`` of the array it stands for."""

    data: np.ndarray
    bases: np.ndarray
    step: int
    shape: tuple


class CompiledEngine:
    """Forward pass and BPTT of FastGRNN in compiled C, as :class:`FastGRNNEngine`.

    The same interface and results (to rounding) as the NumPy engine; no work on
    padded steps (rows sorted by length). :meth:`forward` and :meth:`backward`
    use the engine's buffers (one set per batch size) and are not thread-safe;
    :meth:`readout_state` uses its own and is.

    A low-rank ``W = W1 @ W2`` whose factors cost fewer multiply-adds
    (:func:`trains_as_factors`) trains as its factors (``factored``): the projected
    steps ``[x W1, 1]`` (``fg_project``) run through the C passes with ``W2``
    as their ``W``, which gives ``dW2``; ``dW1 = x.T (dpre W2.T)`` over the
    real steps is one more C loop (``fg_factor_gradient``). The same sums, in
    another order; the NumPy engine and :meth:`readout_state` apply ``W1 @ W2``.

    Parameters
    ----------
    layout : ParameterLayout
    gate_nonlinearity, update_nonlinearity : str
        Keys of :data:`~sklearn_fastgrnn._nonlinearities.NONLINEARITIES`.
    dtype : numpy dtype
        float32 or float64.
    readout : {"last", "mean", "max"}, default="last"
    n_threads : int, default=1
        Threads that share a batch's rows (each runs the whole time loop over
        its blocks of rows); 1 is what ``docs/performance.md`` measured best.
    factor_low_rank : bool or None, default=None
        Whether a low-rank ``W`` trains as its factors: None where
        :func:`trains_as_factors` says so, or always (True) or never (False).

    Raises
    ------
    sklearn_fastgrnn._build.BuildError
        When the library cannot be built (no compiler, or the build fails).
    """

    name = "compiled"

    def __init__(self, layout, gate_nonlinearity, update_nonlinearity, dtype,
                 readout="last", n_threads=1, factor_low_rank=None):
        self.layout = layout
        self.readout = check_readout(readout)
        self.dtype = np.dtype(dtype)
        for nonlinearity in (gate_nonlinearity, update_nonlinearity):
            if nonlinearity not in NONLINEARITIES:
                raise ValueError(
                    f"unknown non-linearity {nonlinearity!r}: expected one of "
                    f"{sorted(NONLINEARITIES)}."
                )
        self.gate = NONLINEARITIES[gate_nonlinearity]
        self.update = NONLINEARITIES[update_nonlinearity]
        self._kinds = (_NONLINEARITY_INDEX[gate_nonlinearity],
                       _NONLINEARITY_INDEX[update_nonlinearity])
        self.n_threads = int(n_threads)
        d, H, r = layout.n_inputs, layout.hidden_size, layout.w_rank
        #: whether training runs on the projected steps x W1 (see above)
        self.factored = (trains_as_factors(d, H, r) if factor_low_rank is None
                         else r is not None and bool(factor_low_rank))
        #: the inputs of a step in the C passes of forward and backward
        self.step_inputs = r if self.factored else d
        self._low_rank = (layout.w_rank is not None and not self.factored
                          or layout.u_rank is not None)
        self._library = load_library(self.dtype, H, d)  # readout_state
        self._steps_library = load_library(self.dtype, H, self.step_inputs)
        self._stacker = FastGRNNEngine(  # stacked_weights, as the NumPy engine's
            layout, gate_nonlinearity, update_nonlinearity, dtype, readout
        )
        self._W = np.empty((d, H), self.dtype)  # effective W, U of low rank
        self._U = np.empty((H, H), self.dtype)
        self._U_T = np.empty((H, H), self.dtype)
        self._grad_W = np.empty((d, H), self.dtype)  # dW, dU of low rank
        self._grad_U = np.empty((H, H), self.dtype)
        if self.factored:  # W2.T and the sums of dW1, in the working dtype and double
            self._W2_T = np.empty((H, r), self.dtype)
            self._factor_sums = (np.empty((d, r)), np.empty((d, r), self.dtype))
        self._buffers = {}  # batch size -> _Buffers
        self._params = (None, None, None)  # (flat, views, addresses of the weights)
        self._grads = (None, None, None)  # (grad, views, addresses)
        self._saved = None

    def stacked_weights(self, params):
        """As :meth:`FastGRNNEngine.stacked_weights` (``P`` is a shared buffer)."""
        return self._stacker.stacked_weights(params)

    def _check_vector(self, flat, name):
        """The C code reads and writes ``flat`` through its address: it must be a
        contiguous vector of the engine's dtype and size."""
        if (not isinstance(flat, np.ndarray) or flat.dtype != self.dtype
                or flat.shape != (self.layout.size,) or not flat.flags.c_contiguous):
            raise ValueError(
                f"{name} must be a contiguous {self.dtype} vector of {self.layout.size} "
                f"values, got {getattr(flat, 'dtype', type(flat).__name__)} of shape "
                f"{getattr(flat, 'shape', None)}."
            )

    def _views(self, flat):
        """Views of ``flat`` and the addresses of the weights the C code reads
        (made again when ``flat`` is another array; training updates it in place)."""
        cached, views, addresses = self._params
        if flat is not cached:
            self._check_vector(flat, "flat")
            views = self.layout.views(flat)
            lay = self.layout
            W = (views["W"] if lay.w_rank is None
                 else views["W2"] if self.factored else self._W)
            addresses = (
                address(W),
                address(views["U"] if lay.u_rank is None else self._U),
                address(views["bias_gate"]), address(views["bias_update"]),
                address(views["V"]), address(views["bias_out"]),
            )
            self._params = (flat, views, addresses)
        return views, addresses

    def _grad_addresses(self, grad):
        """Views of ``grad`` and the addresses the C code writes the gradient to."""
        cached, views, addresses = self._grads
        if grad is not cached:
            self._check_vector(grad, "grad")
            views = self.layout.views(grad)
            addresses = {
                name: address(views[key]) for name, key in (
                    ("gV", "V"), ("gbo", "bias_out"), ("gbg", "bias_gate"),
                    ("gbu", "bias_update"), ("gzeta", "zeta"), ("gnu", "nu"),
                )
            }
            lay = self.layout
            gW = (views["W"] if lay.w_rank is None
                  else views["W2"] if self.factored else self._grad_W)
            addresses["gW"] = address(gW)
            addresses["gU"] = address(views["U"] if lay.u_rank is None else self._grad_U)
            self._grads = (grad, views, addresses)
        return views, addresses

    def _batch_buffers(self, T, B):
        """The buffers of batches of ``B`` rows, for at least ``T`` steps."""
        buffers = self._buffers.get(B)
        if buffers is None or buffers.T < T:
            buffers = self._buffers[B] = _Buffers(self, T, B, self.n_threads)
        return buffers

    def _point_at_gradient(self, buffers, grad):
        """Point the context of ``buffers`` at ``grad`` for the backward pass;
        the views of ``grad``."""
        grads, addresses = self._grad_addresses(grad)
        if buffers.grad is not grad:
            for name, where in addresses.items():
                setattr(buffers.ctx, name, where)
            buffers.grad = grad
        return grads

    @property
    def batch_passes(self):
        """The addresses of the C functions ``fg_train_forward`` and
        ``fg_train_backward``, the whole of a training batch's passes (the
        factors' too); None where a batch needs more (the product of a
        low-rank ``W`` or ``U``, threads)."""
        if self._low_rank or self.n_threads != 1:
            return None
        library = self._steps_library
        return tuple(ctypes.cast(getattr(library, name), ctypes.c_void_p).value
                     for name in ("fg_train_forward", "fg_train_backward"))

    def training_contexts(self, flat, grad, rows, T, sizes):
        """The C contexts of training batches of each of ``sizes`` rows and up
        to ``T`` steps, for :attr:`batch_passes`: reading the weights in
        ``flat``, the steps in ``rows`` (an array and the step between a row's
        steps, as :class:`StepRows`), their outputs' gradient in their
        ``"dout"`` buffer, writing the gradient into ``grad``. Returns the
        buffers of each size (their ``ctx`` and ``arrays``)."""
        data, step = rows
        if data.dtype != self.dtype or not data.flags.c_contiguous:
            raise ValueError(f"the steps must be a C-contiguous {self.dtype} array.")
        params, addresses = self._views(flat)
        found = []
        for B in sizes:
            buffers = self._batch_buffers(T, B)
            grads = self._point_at_gradient(buffers, grad)
            found.append(buffers)
            # the same arrays as the last epoch's, and nothing pointed ctx elsewhere
            last = buffers.prepared
            if (last is not None and last[0] is data and last[1] == step
                    and last[2] is flat and last[3] is grad):
                continue
            ctx = buffers.ctx
            ctx.X, ctx.step = address(data), step
            ctx.W, ctx.U, ctx.bg, ctx.bu, ctx.V, ctx.bo = addresses
            ctx.dout = address(buffers.arrays["dout"])
            ctx.factors = None
            if self.factored:
                sums, acc = self._factor_sums
                buffers.factors = _Factors(
                    address(data), None, step, self.layout.n_inputs,
                    *(address(a) for a in (
                        params["W1"], params["W2"], self._W2_T, buffers.projected,
                        buffers.projected_bases, sums, acc, grads["W1"])),
                )
                ctx.factors = ctypes.addressof(buffers.factors)
            buffers.prepared = (data, step, flat, grad)
        self._saved = None  # no batch for backward() to continue
        return found

    def _low_rank_products(self, params):
        """The effective ``W = W1 @ W2`` (unless ``factored``) and ``U = U1 @ U2``
        into the engine's buffers."""
        if self.layout.w_rank is not None and not self.factored:
            np.dot(params["W1"], params["W2"], out=self._W)
        if self.layout.u_rank is not None:
            np.dot(params["U1"], params["U2"], out=self._U)

    def _steps(self, X_aug):
        """``X_aug`` as a C-contiguous array of the dtype."""
        d1 = X_aug.shape[2]
        if d1 != self.layout.n_inputs + 1:
            raise ValueError(
                f"X_aug has {d1} columns, expected n_inputs + 1 = {self.layout.n_inputs + 1}."
            )
        if X_aug.dtype != self.dtype or not X_aug.flags.c_contiguous:
            X_aug = np.ascontiguousarray(X_aug, dtype=self.dtype)
        return X_aug

    def _rows(self, rows):
        """``rows`` (a :class:`StepRows`), checked for the C code to read."""
        data, bases, step, (T, B, d1) = rows
        d = self.layout.n_inputs
        if (d1 != d + 1 or data.dtype != self.dtype or not data.flags.c_contiguous
                or bases.dtype != np.int64 or bases.shape != (B,)
                or not bases.flags.c_contiguous):
            raise ValueError(
                f"StepRows must hold a C-contiguous {self.dtype} array and {B} int64 "
                f"bases, for {d} inputs a step."
            )
        if B and (bases.min() < 0 or bases.max() + (T - 1) * step + d > data.size):
            raise ValueError("StepRows read outside their array.")
        return rows

    def _row_source(self, X_aug, buffers):
        """Where the C code reads a batch's steps (``x_t`` without the ones
        column): the array's address, the bases of its rows and the step
        between a row's steps (see StepRows)."""
        if isinstance(X_aug, StepRows):
            return address(X_aug.data), X_aug.bases, X_aug.step
        B, d1 = X_aug.shape[1:]
        return address(X_aug), buffers.input_bases, B * d1

    def _inputs(self, X_aug, lengths):
        """``X_aug`` as a C-contiguous array of the dtype and ``lengths`` as int64."""
        T, B, _ = X_aug.shape
        X_aug = self._steps(X_aug)
        if lengths is None:
            lengths = np.full(B, T, np.int64)
        elif lengths.dtype != np.int64 or not lengths.flags.c_contiguous:
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        return X_aug, lengths


    # -- forward ----------------------------------------------------------
    def forward(self, flat, X_aug, lengths=None):
        """Outputs of a time-major batch, keeping what :meth:`backward` needs.

        As :meth:`FastGRNNEngine.forward`: ``X_aug`` (T, B, d + 1) time-major with
        a ones column, ``lengths`` (B,) or None; returns (B, n_outputs).
        """
        T, B = X_aug.shape[:2]
        buffers = self._batch_buffers(T, B)
        X_aug = self._rows(X_aug) if isinstance(X_aug, StepRows) else self._steps(X_aug)
        if lengths is None:  # the common case: an array and address made once
            lengths, lengths_address = buffers.full_lengths(T)
        else:
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)
            lengths_address = address(lengths)
        params, addresses = self._views(flat)
        if self._low_rank:
            self._low_rank_products(params)
        source = inputs = self._row_source(X_aug, buffers)
        if self.factored:  # the passes read the projected steps
            projected = self._projected(inputs, T, B, params["W1"], buffers)
            source = (address(projected), buffers.projected_bases, B * projected.shape[2])
        ctx = buffers.ctx
        buffers.prepared = None  # ctx reads this batch now
        ctx.T = T
        ctx.X, bases, ctx.step = source
        ctx.bases, ctx.lengths = address(bases), lengths_address
        ctx.W, ctx.U, ctx.bg, ctx.bu, ctx.V, ctx.bo = addresses
        ctx.sz, ctx.sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
        library = self._steps_library
        if self.n_threads == 1:
            library.fg_forward(ctx)
        else:
            library.fg_forward_begin(ctx)
            _run_parts(library.fg_forward_steps, ctx, self.n_threads)
            library.fg_forward_end(ctx)
        # X_aug and lengths stay referenced: the backward pass reads them (inputs
        # holds the address of X_aug's array)
        self._saved = (buffers, X_aug, inputs, lengths, params)
        return buffers.arrays["out"].copy()

    def readout_state(self, X_aug, P, U, sz, sn, lengths=None):
        """The readout ``r`` (B, H) of a time-major batch, as
        :meth:`FastGRNNEngine.readout_state`; buffers of this call: thread-safe."""
        X_aug, lengths = self._inputs(X_aug, lengths)
        T, B, _ = X_aug.shape
        d, H, dt = self.layout.n_inputs, self.layout.hidden_size, self.dtype
        weights = [np.ascontiguousarray(w, dt) for w in (P[0, :d], U, P[0, d], P[1, d])]
        arrays = dict(
            perm=np.empty(B, np.int32), nb=np.empty(T + 1, np.int32),
            off=np.empty(T + 1, np.int64), HP=np.empty((B, H), dt),
            S=np.empty((B, H), dt), AM=np.empty((B, H), np.int32), R=np.empty((B, H), dt),
            scratch=np.empty((1, _scratch_rows(H, d), H), dt),
        )
        ctx = _Context()
        for name, array in arrays.items():
            setattr(ctx, name, address(array))
        ctx.B, ctx.T, ctx.train, ctx.part, ctx.n_parts = B, T, 0, 0, 1
        ctx.readout = _READOUT_INDEX[self.readout]
        ctx.gate, ctx.update = self._kinds
        bases = np.arange(B, dtype=np.int64) * (d + 1)
        ctx.X, ctx.bases, ctx.step = address(X_aug), address(bases), B * (d + 1)
        ctx.lengths = address(lengths)
        ctx.W, ctx.U, ctx.bg, ctx.bu = (address(w) for w in weights)
        ctx.sz, ctx.sn = sz, sn
        self._library.fg_forward(ctx)  # V is NULL: the readout only
        return arrays["R"]

    # -- backward ---------------------------------------------------------
    def backward(self, doutputs, grad):
        """Write into ``grad`` the gradient of the loss whose output gradient is
        given (for the last :meth:`forward` call), as :meth:`FastGRNNEngine.backward`."""
        buffers, _, inputs, _, params = self._saved
        if doutputs.dtype != self.dtype or not doutputs.flags.c_contiguous:
            doutputs = np.ascontiguousarray(doutputs, dtype=self.dtype)
        grads = self._point_at_gradient(buffers, grad)
        ctx = buffers.ctx
        buffers.prepared = None
        ctx.dout = address(doutputs)
        library = self._steps_library
        if self.n_threads == 1:
            library.fg_backward(ctx)
        else:
            library.fg_backward_begin(ctx)
            _run_parts(library.fg_backward_steps, ctx, self.n_threads)
            library.fg_backward_end(ctx)
        lay = self.layout
        if lay.u_rank is not None:
            np.dot(self._grad_U, params["U2"].T, out=grads["U1"])
            np.dot(params["U1"].T, self._grad_U, out=grads["U2"])
        if self.factored:  # the C passes gave dW2
            self._factor_gradient(buffers, inputs, params["W2"], grads["W1"])
        elif lay.w_rank is not None:
            np.dot(self._grad_W, params["W2"].T, out=grads["W1"])
            np.dot(params["W1"].T, self._grad_W, out=grads["W2"])
        return grad

    def _projected(self, source, T, B, W1, buffers):
        """The steps ``[x W1, 1]`` (T, B, r + 1) of a time-major batch (read from
        ``source``: see _row_source), in ``buffers``."""
        projected = buffers.projected[:T]
        data, bases, step = source
        self._steps_library.fg_project(data, address(bases), step, T, B,
                                       self.layout.n_inputs, address(W1), address(projected))
        return projected

    def _factor_gradient(self, buffers, inputs, W2, out):
        """``dW1 = x.T (dpre W2.T)`` over the real steps of the last batch (read
        from ``inputs``, as :meth:`_projected` read them), into ``out``."""
        np.copyto(self._W2_T, W2.T)
        sums, acc = self._factor_sums
        data, bases, step = inputs
        self._steps_library.fg_factor_gradient(
            buffers.ctx, data, address(bases), step, self.layout.n_inputs,
            address(self._W2_T), address(sums), address(acc), address(out),
        )


def make_engine(engine, layout, gate_nonlinearity, update_nonlinearity, dtype,
                readout="last"):
    """The engine named ``engine`` (one of :data:`ENGINES`) for this model.

    Parameters
    ----------
    engine : {"auto", "numpy", "compiled"}
        ``"numpy"``: :class:`~sklearn_fastgrnn._cell.FastGRNNEngine`;
        ``"compiled"``: :class:`CompiledEngine`, or a
        :class:`~sklearn_fastgrnn._build.BuildError` (a RuntimeError) saying why
        it cannot be built; ``"auto"``: the compiled engine when it can be
        built, else the NumPy one (a failed build is not tried again in this
        process).
    layout : ParameterLayout
    gate_nonlinearity, update_nonlinearity : str
    dtype : numpy dtype
    readout : {"last", "mean", "max"}, default="last"

    Returns
    -------
    engine : FastGRNNEngine or CompiledEngine
        Both have ``forward``, ``backward``, ``readout_state``,
        ``stacked_weights`` and ``name`` ("numpy" or "compiled").
    """
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}.")
    if engine != "numpy":
        try:
            return CompiledEngine(
                layout, gate_nonlinearity, update_nonlinearity, dtype, readout
            )
        except BuildError as exc:
            if engine == "compiled":
                raise BuildError(
                    f"engine='compiled' cannot run: {exc} engine='auto' falls back "
                    "to the NumPy engine."
                ) from exc
    return FastGRNNEngine(layout, gate_nonlinearity, update_nonlinearity, dtype, readout)
