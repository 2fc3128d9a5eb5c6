"""Speed of FastGRNNClassifier against eager PyTorch and MLPClassifier, and of
the compiled training engine against the NumPy one.

Five measurements, all on random data with a fixed seed:

1. One training epoch (n = 4096, Adam, same batch size) of
   - ours: ``FastGRNNClassifier(..., window=1, change_channels=False,
     input_noise=0).partial_fit``
     on float32 input
     (the default engine: the compiled one where a C compiler is found),
   - torch: an eager PyTorch FastGRNN written below for this benchmark (one
     matmul for ``x @ W`` over all steps, ``addmm`` for the recurrence, autograd,
     ``torch.optim.Adam``, 2 threads),
   - MLP: ``MLPClassifier(hidden_layer_sizes=(H,)).partial_fit`` on the
     flattened input,
   interleaved (ours, torch, MLP, ours, ...), with a 0.25 s sleep before each
   timed run (BLAS threads keep spinning after work and slow the next library
   down), reporting medians and the geometric mean of ours / torch.
2. Single-sequence ``predict_proba`` latency (T = 32, d = 4, H = 32).
3. ``predict_proba`` throughput on 10,000 sequences (same model).
4. The engines (``--engines``): one training epoch of the compiled engine
   (``sklearn_fastgrnn._compiled_cell.CompiledEngine``) beside the NumPy engine
   at the seven shapes (n, T, d, H, B) of issue 17, through the engines
   directly with the mini-batch loop of ``FastGRNNClassifier``'s epoch
   (shuffled mini-batches gathered from the time-major copy and cut to their
   longest sequence, forward, cross-entropy, backward, L2 penalty, clipping,
   Adam, the last four in C with the compiled engine as the estimator has
   them; float32, one BLAS thread; the second epoch of a run is timed: the
   set-up and the first epoch, which allocates the buffers, are not),
   interleaved, medians of the calling thread's CPU time (``--wall`` for wall
   time; on a shared machine it counts the other processes' turns); and each
   shape's lower bound from rates
   measured in the same run, interleaved with the epochs (medians): the
   per-step product ``(B x H) @ (H x H)`` from compiled code (the faster of a
   register-blocked C loop and SciPy's sgemm called from C) and the fused
   elementwise work of a step (forward and backward) per hidden unit, over the
   real steps only:
   ``sum(lengths) * (2 H (3 H + 2 d + 1) / product rate + H * elementwise cost)``.
   The PLAID-like shape has lengths drawn uniformly from [100, 1344] (the
   longest set to 1344), NaN-padded.

5. The low-rank ``W`` (``--low-rank``): one epoch of the compiled engine, with
   the loop of 4., at the default models of the suite's six sets read in
   windows of 4 timesteps or more (``d`` = the window times 9 channels, ``w_rank``
   = ``H // 4``, their batch size and cell steps; PLAID's lengths uniform in
   [17, 224]), with ``W = W1 @ W2`` applied as the product and as its factors
   (``CompiledEngine(factor_low_rank=...)``), interleaved, medians of CPU time.

``--profile`` prints where one epoch of ours spends its time (cProfile): engine
forward and backward, loss, optimiser, batch gathering, the rest of the loop.

Run ``python benchmarks/bench_epoch.py`` (3-4 minutes on 2 cores) or
``--quick`` for a smoke run; ``--engines`` for the engine table alone (about a
minute; no PyTorch needed), ``--low-rank`` for the low-rank table alone. The
PyTorch table needs ``torch`` (``pip install
torch==2.13.0``).
"""

import argparse
import cProfile
import ctypes
import math
import pstats
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._build import build_library
from sklearn_fastgrnn._cell import (
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    predict_outputs,
    to_time_major,
)
from sklearn_fastgrnn._channels import cell_values
from sklearn_fastgrnn._compiled_adam import compiled_step
from sklearn_fastgrnn._compiled_cell import (
    _COMPILE_FLAGS,
    _OPTIONAL_FLAGS,
    CompiledEngine,
    _row_block,
    _tanh_source,
)
from sklearn_fastgrnn._compiled_epoch import compiled_epoch
from sklearn_fastgrnn._compiled_loss import PenaltyAndClip, compiled_loss
from sklearn_fastgrnn._losses import CrossEntropy
from sklearn_fastgrnn._optimizers import Adam
from sklearn_fastgrnn._threads import one_blas_thread

try:
    import torch
except ImportError:  # only the PyTorch table needs it
    torch = None

N_SAMPLES = 4096
N_CLASSES = 10
LEARNING_RATE = 0.01
SLEEP = 0.25
# ours / torch, geometric mean over the 12 shapes: issue 17's target with the
# compiled engine (0.25 with the NumPy engine alone)
TORCH_TARGET = 0.10
FULL_SHAPES = [
    (T, d, H, B)
    for T, d in [(8, 8), (32, 4), (128, 1)]
    for H in (16, 64)
    for B in (32, 256)
]
QUICK_SHAPES = [(8, 8, 16, 32), (128, 1, 64, 256)]


class TorchFastGRNN(torch.nn.Module if torch is not None else object):
    """The FastGRNN cell of docs/design.md ("The cell"), written eagerly in PyTorch."""

    def __init__(self, d, H, C, generator):
        super().__init__()

        def weight(*shape):
            return torch.nn.Parameter(0.1 * torch.randn(*shape, generator=generator))

        self.W, self.U, self.V = weight(d, H), weight(H, H), weight(H, C)
        self.bias_gate = torch.nn.Parameter(torch.ones(H))
        self.bias_update = torch.nn.Parameter(torch.ones(H))
        self.zeta = torch.nn.Parameter(torch.tensor(1.0))
        self.nu = torch.nn.Parameter(torch.tensor(-4.0))
        self.bias_out = torch.nn.Parameter(torch.zeros(C))

    def forward(self, x):
        """Logits of a time-major batch ``x`` (T, B, d)."""
        T, B, d = x.shape
        wx = (x.reshape(T * B, d) @ self.W).reshape(T, B, -1)
        sz, sn = torch.sigmoid(self.zeta), torch.sigmoid(self.nu)
        h = x.new_zeros(B, self.U.shape[0])
        for t in range(T):
            pre = torch.addmm(wx[t], h, self.U)
            z = torch.sigmoid(pre + self.bias_gate)
            c = torch.tanh(pre + self.bias_update)
            h = (sz * (1 - z) + sn) * c + z * h
        return h @ self.V + self.bias_out


def make_data(T, d, n=N_SAMPLES, seed=0):
    """Random float32 sequences (n, T, d) and labels in [0, N_CLASSES)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, n)
    return X, y


def epoch_ours(X, y, H, B):
    """One epoch of FastGRNNClassifier (a fresh estimator, so setup included),
    one timestep of ``d`` values a cell step (``window=1``, no change
    channels, no input noise) as the other two read them."""
    clf = FastGRNNClassifier(hidden_size=H, batch_size=B, window=1, change_channels=False,
                             input_noise=0.0, random_state=0)
    clf.partial_fit(X, y, classes=np.arange(N_CLASSES))
    return clf


def epoch_torch(X, y, H, B):
    """One epoch of the eager PyTorch FastGRNN: shuffled mini-batches, Adam."""
    n, _, d = X.shape
    gen = torch.Generator().manual_seed(0)
    model = TorchFastGRNN(d, H, N_CLASSES, gen)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    Xt = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2)))
    yt = torch.from_numpy(y)
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, B):
        idx = order[start : start + B]
        opt.zero_grad(set_to_none=True)
        logits = model(Xt.index_select(1, idx))
        loss = torch.nn.functional.cross_entropy(logits, yt[idx])
        loss.backward()
        opt.step()
    return model


def epoch_mlp(X, y, H, B):
    """One epoch of MLPClassifier on the flattened sequences."""
    mlp = MLPClassifier(
        hidden_layer_sizes=(H,), batch_size=B, learning_rate_init=LEARNING_RATE,
        random_state=0,
    )
    mlp.partial_fit(X.reshape(len(X), -1), y, classes=np.arange(N_CLASSES))
    return mlp


IMPLEMENTATIONS = {"ours": epoch_ours, "torch": epoch_torch, "MLP": epoch_mlp}


def timed(fn, *args):
    """Seconds of one call, after a pause that lets other libraries' threads idle."""
    time.sleep(SLEEP)
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def geomean(values):
    """Geometric mean."""
    return math.exp(sum(map(math.log, values)) / len(values))


def bench_epochs(shapes, repeats):
    """Print the epoch table; returns the geometric mean of ours / torch."""
    print(f"One epoch, n={N_SAMPLES}, {N_CLASSES} classes, float32, Adam; "
          f"median of {repeats} interleaved runs (ms)")
    header = (f"{'T':>4} {'d':>2} {'H':>3} {'B':>4} | {'ours':>8} {'torch':>8} "
              f"{'MLP':>8} | {'ours/torch':>10} {'ours/MLP':>8}")
    print(header)
    print("-" * len(header))
    ratios_torch, ratios_mlp = [], []
    for T, d, H, B in shapes:
        X, y = make_data(T, d)
        for fn in IMPLEMENTATIONS.values():  # warm-up: imports, first calls, caches
            fn(X, y, H, B)
        times = {name: [] for name in IMPLEMENTATIONS}
        for _ in range(repeats):
            for name, fn in IMPLEMENTATIONS.items():
                times[name].append(timed(fn, X, y, H, B))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ratios_torch.append(med["ours"] / med["torch"])
        ratios_mlp.append(med["ours"] / med["MLP"])
        print(f"{T:>4} {d:>2} {H:>3} {B:>4} | {1e3 * med['ours']:8.1f} "
              f"{1e3 * med['torch']:8.1f} {1e3 * med['MLP']:8.1f} | "
              f"{ratios_torch[-1]:10.3f} {ratios_mlp[-1]:8.2f}", flush=True)
    gm = geomean(ratios_torch)
    print(f"geometric mean ours/torch: {gm:.3f} (target <= {TORCH_TARGET}: "
          f"{'met' if gm <= TORCH_TARGET else 'MISSED'}); ours/MLP: {geomean(ratios_mlp):.2f}")
    return gm


def per_call(fn, repeats, min_seconds=0.2):
    """Median over ``repeats`` of the mean time of one call (seconds)."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 4:
        fn()
        calls += 1
    results = []
    for _ in range(repeats):
        time.sleep(SLEEP)
        start = time.perf_counter()
        for _ in range(calls * 4):
            fn()
        results.append((time.perf_counter() - start) / (calls * 4))
    return statistics.median(results)


def bench_inference(repeats, T=32, d=4, H=32, n_throughput=10_000):
    """Print single-sequence latency and many-sequence throughput."""
    X, y = make_data(T, d, n=1024, seed=1)
    clf = FastGRNNClassifier(hidden_size=H, random_state=0, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        mlp = MLPClassifier(hidden_layer_sizes=(H,), random_state=0, max_iter=2)
        mlp.fit(X.reshape(len(X), -1), y)
    model = TorchFastGRNN(d, H, N_CLASSES, torch.Generator().manual_seed(0)).eval()

    one = X[:1]
    one_flat = one.reshape(1, -1)
    one_tm = torch.from_numpy(np.ascontiguousarray(one.transpose(1, 0, 2)))
    lengths = np.full(1, T)
    gate, update = clf.gate_nonlinearity, clf.update_nonlinearity
    cells = cell_values(clf, one)  # what the engine reads: values, changes, logarithms

    def torch_proba(x):
        with torch.no_grad():
            return torch.softmax(model(x), dim=1).numpy()

    latency = {
        "ours predict_proba": lambda: clf.predict_proba(one),
        "ours predict_outputs (engine)": lambda: predict_outputs(
            clf.coefs_, gate, update, cells, lengths, np.float32),
        "torch eager (no_grad, softmax)": lambda: torch_proba(one_tm),
        "MLP predict_proba (128 features)": lambda: mlp.predict_proba(one_flat),
    }
    print(f"\nSingle-sequence predict_proba latency (T={T}, d={d}, H={H}, float32), "
          f"median of {repeats}")
    for name, fn in latency.items():
        print(f"  {name:<34} {1e6 * per_call(fn, repeats):8.1f} us", flush=True)

    Xn, _ = make_data(T, d, n=n_throughput, seed=2)
    Xn_flat = Xn.reshape(len(Xn), -1)
    Xn_tm = torch.from_numpy(np.ascontiguousarray(Xn.transpose(1, 0, 2)))
    throughput = {
        "ours predict_proba": lambda: clf.predict_proba(Xn),
        "torch eager (no_grad, softmax)": lambda: torch_proba(Xn_tm),
        "MLP predict_proba": lambda: mlp.predict_proba(Xn_flat),
    }
    print(f"\npredict_proba on {n_throughput} sequences at once, median of {repeats}")
    for name, fn in throughput.items():
        seconds = per_call(fn, repeats, min_seconds=0.5)
        print(f"  {name:<34} {1e3 * seconds:8.1f} ms  "
              f"{n_throughput / seconds:12,.0f} sequences/s", flush=True)


# --------------------------------------------------------------------- engines
# (n, T, d, H, B) of issue 17; the third is variable length ("PLAID-like")
ENGINE_SHAPES = [
    (2048, 32, 4, 32, 64),
    (2048, 128, 9, 64, 64),
    (537, 1344, 1, 32, 53),
    (100, 1460, 1, 32, 10),
    (200, 427, 1, 32, 20),
    (50, 150, 1, 32, 8),
    (20000, 50, 3, 32, 64),
]
VARIABLE_LENGTH = {(537, 1344, 1, 32, 53): 100}  # shape: shortest length
QUICK_ENGINE_SHAPES = [ENGINE_SHAPES[0], ENGINE_SHAPES[5]]
ENGINE_CLASSES = {"numpy": FastGRNNEngine, "compiled": CompiledEngine}
ALPHA, CLIP = 1e-3, 5.0  # FastGRNNClassifier's defaults


def make_engine_data(n, T, d, shortest=None, seed=0):
    """Random float32 sequences (n, T, d), labels, and real lengths: all T, or
    uniform in [shortest, T] (the first T) with NaN padding."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d), dtype=np.float32)
    lengths = np.full(n, T, np.int64)
    if shortest is not None:
        lengths = rng.integers(shortest, T + 1, n)
        lengths[0] = T
        for i, length in enumerate(lengths):
            X[i, length:] = np.nan
    return X, rng.integers(0, N_CLASSES, n), lengths


class EngineEpoch:
    """One epoch through engine ``name`` with the loop of the estimator's epoch.

    The set-up (the time-major copy, initial weights, the engine and Adam) is
    made by the constructor, outside the timed :meth:`run`: what is timed is
    the mini-batch loop (gathering, forward, loss, backward, L2, clipping, Adam),
    with the loss, L2 penalty, clipping and Adam step the estimator uses with
    that engine (in C with the compiled one). Where the estimator runs an
    epoch's batches in one C call (the compiled engine on one thread, ``W``
    at full rank or as its factors: ``_compiled_epoch.py``), so does this
    loop, reading the sequences as the estimator does.
    """

    def __init__(self, name, X, y, lengths, H, B, seed=0, n_threads=1, w_rank=None,
                 factor_low_rank=None):
        n, T, d = X.shape
        self.Xa, self.y, self.lengths, self.B = to_time_major(X, np.float32), y, lengths, B
        self.X = np.ascontiguousarray(X, np.float32)  # the C epoch loop reads the sequences
        self.layout = layout = ParameterLayout(d, H, N_CLASSES, w_rank)
        self.flat = init_parameters(layout, np.random.RandomState(seed), 1.0, -4.0,
                                    np.float32, scheme="chrono", n_timesteps=T)
        options = {} if name == "numpy" else {"n_threads": n_threads,
                                              "factor_low_rank": factor_low_rank}
        self.engine = ENGINE_CLASSES[name](layout, "sigmoid", "tanh", np.float32, **options)
        self.optimizer = Adam(layout.size, np.float32)
        self.grad = np.empty_like(self.flat)
        compiled = name == "compiled"
        self.loss = compiled_loss(CrossEntropy()) if compiled else CrossEntropy()
        self.finish = PenaltyAndClip(layout.n_weights, ALPHA, CLIP, compiled)
        self.step = (compiled_step(self.optimizer, self.flat, self.grad) if compiled
                     else self.optimizer.step)
        self.order = np.random.default_rng(seed).permutation(n)
        self.weights = np.ones(n, np.float32)
        self.buffers = {
            size: np.empty((T, size, d + 1), np.float32)
            for size in {min(B, n), n % B or B}
        }
        self.in_c = compiled and compiled_epoch(
            self.engine, self.loss, self.finish, self.step, self.flat, self.grad)

    def run(self):
        """The mini-batch loop of one epoch; returns the last loss (in C: the
        epoch's mean loss)."""
        Xa, lengths, flat, grad, engine = self.Xa, self.lengths, self.flat, self.grad, self.engine
        if self.in_c:  # as TrainingRun's epoch in C, with every weight 1
            X, order, B = self.X, self.order, self.B
            n, T, d = X.shape
            weights = np.full(n, np.float32(1) / np.float32(B))
            weights[n - (n % B or B):] = np.float32(1) / np.float32(n % B or B)
            sums = np.array([float(len(order[i : i + B])) for i in range(0, n, B)])
            result = self.in_c.run((X, d), order * (T * d), lengths[order], self.y[order],
                                   weights, sums, B, LEARNING_RATE)
            if result.failed is not None:
                raise RuntimeError("the benchmark's training diverged")
            return result.total_loss / result.total_weight
        with one_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(self.order), self.B):
                idx = self.order[start : start + self.B]
                buf = self.buffers[len(idx)]
                np.take(Xa, idx, axis=1, out=buf)
                batch_lengths = lengths[idx]
                T_batch = int(batch_lengths.max())
                padded = batch_lengths if batch_lengths.min() < T_batch else None
                w = self.weights[idx]
                w = w / w.dtype.type(w.sum())
                outputs = engine.forward(flat, buf[:T_batch], padded)
                doutputs = np.empty_like(outputs)
                loss = self.loss(outputs, self.y[idx], w, doutputs)
                engine.backward(doutputs, grad)
                loss += self.finish(flat, grad)  # the L2 penalty, then clipping
                if not np.isfinite(loss):
                    raise RuntimeError("the benchmark's training diverged")
                self.step(flat, grad, LEARNING_RATE)
        return loss


def timed_epoch(name, X, y, lengths, H, B, n_threads=1, clock=time.perf_counter,
                pause=SLEEP, **low_rank):
    """Seconds of one epoch's mini-batch loop, after an untimed set-up and first
    epoch (buffers allocated and touched: a later epoch of a fit) and a pause;
    ``low_rank``: ``w_rank`` and ``factor_low_rank`` of :class:`EngineEpoch`."""
    epoch = EngineEpoch(name, X, y, lengths, H, B, n_threads=n_threads, **low_rank)
    epoch.run()
    time.sleep(pause)
    start = clock()
    epoch.run()
    return clock() - start


_RATES_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
typedef float real;
#define H $H
#define RB $RB
#define FG_SIMD _Pragma("omp simd")
$tanh

/* reps steps of the engine's per-step product: B rows (blocks of RB, rows
   reached through pointers) times M (H x H); each step reads the last */
void rate_products(real *A, real *out, const real *M, int64_t B, int64_t reps)
{
    int64_t s, b0, r, j, k;
    for (s = 0; s < reps; ++s) {
        real *in = s & 1 ? out : A, *res = s & 1 ? A : out;
        for (b0 = 0; b0 < B; b0 += RB) {
            const int64_t rb = B - b0 < RB ? B - b0 : RB;
            real acc[RB][H];
            const real *rows[RB];
            for (r = 0; r < RB; ++r) {
                rows[r] = in + (b0 + (r < rb ? r : 0)) * H;
                FG_SIMD for (j = 0; j < H; ++j) {
                    acc[r][j] = 0;
                }
            }
            for (k = 0; k < H; ++k) {
                for (r = 0; r < RB; ++r) {
                    const real v = rows[r][k];
                    FG_SIMD for (j = 0; j < H; ++j) {
                        acc[r][j] += v * M[k * H + j];
                    }
                }
            }
            for (r = 0; r < rb; ++r) {
                FG_SIMD for (j = 0; j < H; ++j) {
                    res[(b0 + r) * H + j] = (real)1e-3 * acc[r][j];
                }
            }
        }
    }
}

typedef void (*gemm_t)(char *, char *, int *, int *, int *, real *, real *, int *,
                       real *, int *, real *, real *, int *);

/* the same product by BLAS sgemm (row-major A (B x H) @ M as column-major) */
void rate_sgemm(void *sgemm, real *A, real *out, real *M, int64_t B, int64_t reps)
{
    gemm_t gemm = (gemm_t)sgemm;
    char no = 'N';
    int h = H, b = (int)B;
    real one = (real)1e-3, zero = 0;
    int64_t s;
    for (s = 0; s < reps; ++s) {
        real *in = s & 1 ? out : A, *res = s & 1 ? A : out;
        gemm(&no, &no, &h, &b, &h, &one, M, &h, in, &h, &zero, res, &h);
    }
}

/* reps passes of the cell's elementwise work, forward and backward, over n
   units: sigmoid gate, tanh update, the state, the factors, dpre, the sums */
void rate_elementwise(const real *pre, real *h, real *dh, real *sums, int64_t n,
                      int64_t reps)
{
    const real sz = (real)0.7, szsn = (real)0.72;
    int64_t s, j;
    for (s = 0; s < reps; ++s) {
        FG_SIMD for (j = 0; j < n; ++j) {
            const real z = (real)0.5 * fg_tanh((real)0.5 * (pre[j] + (real)0.1)) + (real)0.5;
            const real c = fg_tanh(pre[j] - (real)0.1);
            const real hp = h[j];
            const real e = hp - sz * c;
            const real fz = e * z * ((real)1 - z), fc = (szsn - sz * z) * ((real)1 - c * c);
            const real g = dh[j];
            h[j] = szsn * c + z * e;
            sums[j] += g * fz;
            sums[n + j] += g * c;
            sums[2 * n + j] += g * z * c;
            sums[3 * n + j] += g * (fz + fc);
            dh[j] = (real)0.5 * g * z + (real)0.5;  /* stays away from subnormals */
        }
    }
}
"""


def _sgemm_pointer():
    """Address of SciPy's sgemm (its Cython capsule), or None."""
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return None
    capsule = cython_blas.__pyx_capi__["sgemm"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def _best_seconds(fn, repeats=5, clock=time.perf_counter):
    """Smallest time of ``repeats`` calls (a rate is a property of the machine)."""
    best = math.inf
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


class Rates:
    """The machine's rates at a shape (B, H), measured from compiled code.

    :meth:`measure` returns the per-step product's GFLOP/s (the faster of the
    register-blocked C loop and sgemm called from C) and the fused elementwise
    work of the cell, forward and backward, in ns per hidden unit: each the best
    of 3 calls of about 0.2 GFLOP (products) or 2e7 units (elementwise).
    """

    def __init__(self, H, B):
        from string import Template

        source = Template(_RATES_SOURCE).substitute(
            H=H, RB=_row_block(H), tanh=_tanh_source("f"))
        self.library = ctypes.CDLL(build_library(source, "fastgrnn-rates", _COMPILE_FLAGS,
                                                 optional=_OPTIONAL_FLAGS))
        self.sgemm = _sgemm_pointer()
        rng = np.random.default_rng(0)
        self.A = rng.standard_normal((B, H), dtype=np.float32)
        self.out = np.empty_like(self.A)
        self.M = (rng.standard_normal((H, H), dtype=np.float32) / np.sqrt(H)).astype(np.float32)
        self.reps = max(1, int(2e8 / (2 * B * H * H)))
        self.flops = 2.0 * B * H * H * self.reps
        n_units = B * H
        self.pre = rng.standard_normal(n_units, dtype=np.float32)
        self.h, self.dh = np.zeros(n_units, np.float32), np.ones(n_units, np.float32)
        self.sums = np.zeros(4 * n_units, np.float32)
        self.n_units, self.unit_reps = n_units, max(1, int(2e7 / n_units))

    def measure(self, clock=time.perf_counter):
        """(product GFLOP/s, which product, elementwise ns per unit), timed by ``clock``."""
        p = ctypes.c_void_p
        args = [p(self.A.ctypes.data), p(self.out.ctypes.data), p(self.M.ctypes.data),
                ctypes.c_int64(len(self.A)), ctypes.c_int64(self.reps)]
        rates = {"C loop": self.flops / _best_seconds(
            lambda: self.library.rate_products(*args), 3, clock) / 1e9}
        if self.sgemm is not None:
            with one_blas_thread():
                rates["sgemm"] = self.flops / _best_seconds(
                    lambda: self.library.rate_sgemm(p(self.sgemm), *args), 3, clock) / 1e9
        best = max(rates, key=rates.get)
        seconds = _best_seconds(lambda: self.library.rate_elementwise(
            p(self.pre.ctypes.data), p(self.h.ctypes.data), p(self.dh.ctypes.data),
            p(self.sums.ctypes.data), ctypes.c_int64(self.n_units),
            ctypes.c_int64(self.unit_reps)), 3, clock)
        return rates[best], best, 1e9 * seconds / (self.n_units * self.unit_reps)


def engine_bound(n_real, d, H, product_rate, elementwise_ns):
    """Lower bound of an epoch (seconds) over ``n_real`` real steps: the products
    (forward ``[x h] @ [W; U]``, backward ``dpre @ U.T``, ``dU``, ``[dW; db]``)
    at ``product_rate`` GFLOP/s and the elementwise work of H units a step."""
    flops = 2.0 * H * (3 * H + 2 * d + 1)
    return n_real * (flops / (product_rate * 1e9) + H * elementwise_ns * 1e-9)


def bench_engines(shapes, repeats, wall=False):
    """Print the engine table; returns the geometric mean of numpy / compiled.

    Times are the CPU time of the calling thread, which does all the work (one
    BLAS thread; the compiled code runs in it), unless ``wall``: on a shared
    machine, wall time also counts the other processes' turns.
    """
    clock = time.perf_counter if wall else time.thread_time
    print(f"One epoch through the engines, float32, one BLAS thread, {N_CLASSES} "
          f"classes; median of {repeats} interleaved runs (ms, "
          f"{'wall' if wall else 'CPU'} time); bound from rates measured in this run "
          "(real steps only)")
    header = (f"{'n':>6} {'T':>5} {'d':>2} {'H':>3} {'B':>3} | {'numpy':>8} "
              f"{'compiled':>8} {'speed-up':>8} | {'GFLOP/s':>7} {'ns/unit':>7} "
              f"{'bound':>7} {'/bound':>6}")
    print(header)
    print("-" * len(header))
    speedups, worst_bound = [], 0.0
    for shape in shapes:
        n, T, d, H, B = shape
        X, y, lengths = make_engine_data(n, T, d, VARIABLE_LENGTH.get(shape))
        for name in ENGINE_CLASSES:  # warm-up: builds, caches
            EngineEpoch(name, X, y, lengths, H, B).run()
        rates = Rates(H, B)
        times = {name: [] for name in ENGINE_CLASSES}
        measured = []
        for _ in range(repeats):  # the rates too, beside the epochs they bound
            for name in ENGINE_CLASSES:
                # no pause: one BLAS thread, no worker threads left spinning (a
                # pause lets the other processes of a shared machine evict the caches)
                times[name].append(timed_epoch(name, X, y, lengths, H, B, clock=clock,
                                               pause=0.0))
            measured.append(rates.measure(clock))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rate = statistics.median(m[0] for m in measured)
        elementwise = statistics.median(m[2] for m in measured)
        bound = engine_bound(int(lengths.sum()), d, H, rate, elementwise)
        speedups.append(med["numpy"] / med["compiled"])
        worst_bound = max(worst_bound, med["compiled"] / bound)
        print(f"{n:>6} {T:>5} {d:>2} {H:>3} {B:>3} | {1e3 * med['numpy']:8.1f} "
              f"{1e3 * med['compiled']:8.1f} {speedups[-1]:7.2f}x | {rate:7.1f} "
              f"{elementwise:7.3f} {1e3 * bound:7.1f} {med['compiled'] / bound:6.2f}",
              flush=True)
    gm = geomean(speedups)
    print(f"geometric mean speed-up {gm:.2f}x (target >= 2.5: {'met' if gm >= 2.5 else 'MISSED'}); "
          f"lowest {min(speedups):.2f}x (target >= 1.5: "
          f"{'met' if min(speedups) >= 1.5 else 'MISSED'}); worst compiled / bound "
          f"{worst_bound:.2f} (target <= 2.5: {'met' if worst_bound <= 2.5 else 'MISSED'})")
    return gm


# (set, n, T, d, H, w_rank, B): the default models of the suite's sets read in
# windows of 4 timesteps or more (d = window x 9 channels, T their cell steps)
LOW_RANK_SHAPES = [
    ("Coffee", 28, 48, 54, 32, 8, 8),
    ("ArrowHead", 36, 51, 45, 32, 8, 8),
    ("OSULeaf", 200, 48, 81, 32, 8, 20),
    ("PLAID", 537, 224, 54, 64, 16, 54),
    ("ACSF1", 100, 51, 261, 32, 8, 10),
    ("PigCVP", 104, 50, 360, 64, 16, 10),
]
LOW_RANK_SHORTEST = {"PLAID": 17}  # variable length: the shortest (100 timesteps / 6)
QUICK_LOW_RANK_SHAPES = [LOW_RANK_SHAPES[0], LOW_RANK_SHAPES[4]]


def bench_low_rank(shapes, repeats, wall=False):
    """Print the table of the low-rank W as the product and as its factors;
    returns the geometric mean of product / factors."""
    clock = time.perf_counter if wall else time.thread_time
    print(f"One epoch of the compiled engine with W = W1 @ W2, float32, one BLAS thread, "
          f"{N_CLASSES} classes; median of {repeats} interleaved runs (ms, "
          f"{'wall' if wall else 'CPU'} time)")
    header = (f"{'set':>10} {'n':>4} {'T':>4} {'d':>4} {'H':>3} {'r':>3} {'B':>3} | "
              f"{'product':>8} {'factors':>8} {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    speedups = []
    for name, n, T, d, H, r, B in shapes:
        X, y, lengths = make_engine_data(n, T, d, LOW_RANK_SHORTEST.get(name))
        times = {False: [], True: []}
        for factor in times:  # warm-up: builds, caches
            EngineEpoch("compiled", X, y, lengths, H, B, w_rank=r, factor_low_rank=factor).run()
        for _ in range(repeats):
            for factor in times:
                times[factor].append(timed_epoch("compiled", X, y, lengths, H, B, clock=clock,
                                                 pause=0.0, w_rank=r, factor_low_rank=factor))
        product, factors = (statistics.median(times[factor]) for factor in (False, True))
        speedups.append(product / factors)
        print(f"{name:>10} {n:>4} {T:>4} {d:>4} {H:>3} {r:>3} {B:>3} | {1e3 * product:8.1f} "
              f"{1e3 * factors:8.1f} {speedups[-1]:7.2f}x", flush=True)
    gm = geomean(speedups)
    print(f"geometric mean speed-up of the factors {gm:.2f}x, lowest {min(speedups):.2f}x")
    return gm


# (file, function) of the parts of one epoch, as cProfile names them
# part -> (the files that define it, function name); forward and backward are
# the engine's (the compiled one, or the NumPy one without a C compiler)
PARTS = {  # part: the (files, function) whose cumulative times it sums
    "forward": [(("_cell.py", "_compiled_cell.py"), "forward")],
    "backward": [(("_cell.py", "_compiled_cell.py"), "backward")],
    # the loss with its L2 penalty and clipping (the loss objects, or their C calls)
    "loss": [(("_losses.py", "_compiled_loss.py"), "__call__")],
    "optimizer": [(("_optimizers.py",), "step"), (("_compiled_adam.py",), "__call__")],
    "batch": [(("_training.py",), "_batch")],
    "epoch": [(("_training.py",), "epoch")],
}


def profile_epochs(shapes):
    """Print how one epoch of ours splits, from cProfile's cumulative times.

    cProfile adds about 1 us per Python-level call (about 20 per mini-batch), so
    the total is a little above the unprofiled time.
    """
    print("Where one epoch of ours goes (cProfile, % of partial_fit; 'rest' is the "
          "epoch loop itself, 'setup' validation and setup outside the epoch)")
    names = ["forward", "backward", "loss", "optimizer", "batch", "rest", "setup"]
    print(f"{'T':>4} {'d':>2} {'H':>3} {'B':>4} | {'ms':>7} | "
          + " ".join(f"{n:>9}" for n in names))
    for T, d, H, B in shapes:
        X, y = make_data(T, d)
        epoch_ours(X, y, H, B)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(epoch_ours, X, y, H, B)
        total = time.perf_counter() - start
        cumulative = {}
        for (path, _, func), (_, _, _, ct, _) in pstats.Stats(profiler).stats.items():
            for part, functions in PARTS.items():
                if any(path.endswith(files) and func == name for files, name in functions):
                    cumulative[part] = cumulative.get(part, 0.0) + ct
        share = {p: cumulative.get(p, 0.0) for p in PARTS}
        epoch = share.pop("epoch")
        share["rest"] = epoch - sum(share.values())
        share["setup"] = total - epoch
        print(f"{T:>4} {d:>2} {H:>3} {B:>4} | {1e3 * total:7.1f} | "
              + " ".join(f"{100 * share[n] / total:8.1f}%" for n in names), flush=True)


def main():
    """Command line: see the module docstring and --help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 shapes, 3 repeats: a smoke run of about 30 seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per implementation (default 5, quick 3)")
    parser.add_argument("--skip-inference", action="store_true",
                        help="no latency and throughput")
    parser.add_argument("--engines", action="store_true",
                        help="only the table of the compiled and NumPy engines")
    parser.add_argument("--skip-engines", action="store_true",
                        help="no tables of the engines")
    parser.add_argument("--low-rank", action="store_true",
                        help="only the table of the low-rank W as the product and its factors")
    parser.add_argument("--wall", action="store_true",
                        help="the engine table in wall time (default: CPU time)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, show where one epoch of ours goes")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    if args.engines:
        bench_engines(QUICK_ENGINE_SHAPES if args.quick else ENGINE_SHAPES, repeats,
                      args.wall)
        return
    low_rank_shapes = QUICK_LOW_RANK_SHAPES if args.quick else LOW_RANK_SHAPES
    if args.low_rank:
        bench_low_rank(low_rank_shapes, repeats, args.wall)
        return
    if torch is None:
        raise SystemExit("The epoch table compares against PyTorch: pip install "
                         "torch==2.13.0 (or run --engines alone).")
    torch.set_num_threads(2)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.profile:
        profile_epochs(shapes)
        return
    bench_epochs(shapes, repeats)
    if not args.skip_engines:
        print()
        bench_engines(QUICK_ENGINE_SHAPES if args.quick else ENGINE_SHAPES, repeats,
                      args.wall)
        print()
        bench_low_rank(low_rank_shapes, repeats, args.wall)
    if not args.skip_inference:
        bench_inference(repeats)


if __name__ == "__main__":
    main()
