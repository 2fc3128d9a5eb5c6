"""Speed of FastGRNNClassifier against eager PyTorch and MLPClassifier.

Three measurements, all on random data with a fixed seed:

1. One training epoch (n = 4096, Adam, same batch size) of
   - ours: ``FastGRNNClassifier(...).partial_fit`` on float32 input,
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

``--profile`` prints where one epoch of ours spends its time (cProfile): engine
forward and backward, loss, optimiser, batch gathering, the rest of the loop.

Run ``python benchmarks/bench_epoch.py`` (2-3 minutes on 2 cores) or
``--quick`` for a smoke run. Needs ``torch`` (``pip install torch==2.13.0``).
"""

import argparse
import cProfile
import math
import pstats
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import predict_outputs

try:
    import torch
except ImportError as exc:  # the benchmark is about the comparison
    raise SystemExit(
        "This benchmark compares against PyTorch: pip install torch==2.13.0"
    ) from exc

N_SAMPLES = 4096
N_CLASSES = 10
LEARNING_RATE = 0.01
SLEEP = 0.25
FULL_SHAPES = [
    (T, d, H, B)
    for T, d in [(8, 8), (32, 4), (128, 1)]
    for H in (16, 64)
    for B in (32, 256)
]
QUICK_SHAPES = [(8, 8, 16, 32), (128, 1, 64, 256)]


class TorchFastGRNN(torch.nn.Module):
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
    """One epoch of FastGRNNClassifier (a fresh estimator, so setup included)."""
    clf = FastGRNNClassifier(hidden_size=H, batch_size=B, random_state=0)
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
    print(f"geometric mean ours/torch: {gm:.3f} (target <= 0.25: "
          f"{'met' if gm <= 0.25 else 'MISSED'}); ours/MLP: {geomean(ratios_mlp):.2f}")
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

    def torch_proba(x):
        with torch.no_grad():
            return torch.softmax(model(x), dim=1).numpy()

    latency = {
        "ours predict_proba": lambda: clf.predict_proba(one),
        "ours predict_outputs (engine)": lambda: predict_outputs(
            clf.coefs_, gate, update, one, lengths, np.float32),
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


# (file, function) of the parts of one epoch, as cProfile names them
PARTS = {
    "forward": ("_cell.py", "forward"),
    "backward": ("_cell.py", "backward"),
    "loss": ("_losses.py", "cross_entropy"),
    "optimizer": ("_optimizers.py", "step"),
    "clip": ("_optimizers.py", "clip_by_global_norm"),
    "batch": ("classifier.py", "_batch"),
    "epoch": ("classifier.py", "epoch"),
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
            for part, (file, name) in PARTS.items():
                if path.endswith(file) and func == name:
                    cumulative[part] = cumulative.get(part, 0.0) + ct
        share = {p: cumulative.get(p, 0.0) for p in PARTS}
        share["optimizer"] += share.pop("clip")
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
                        help="only the epoch table")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, show where one epoch of ours goes")
    args = parser.parse_args()
    torch.set_num_threads(2)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.profile:
        profile_epochs(shapes)
        return
    repeats = args.repeats or (3 if args.quick else 5)
    bench_epochs(shapes, repeats)
    if not args.skip_inference:
        bench_inference(repeats)


if __name__ == "__main__":
    main()
