"""Prediction latency and throughput: ours, the compiled predictor, MLPClassifier.

All in one run, interleaved (each timed run a loop of calls of about 0.1 s,
after a 0.25 s sleep), medians over ``--repeats``, ratios within the run:

1. one (1, 32, 4) float32 sequence at H = 32 (10 classes): our
   ``predict_proba`` and the compiled predictor against
   ``MLPClassifier(hidden_layer_sizes=(32,)).predict_proba`` on one 128-feature row;
2. the routing row: 5 features read as one timestep (``n_timesteps=1``), H = 8,
   4 classes, against ``MLPClassifier((8,))`` on the same 5 features;
3. 10,000 sequences at once: the compiled predictor's ``predict_proba``
   against ours through the NumPy engine (``engine="numpy"``, the reference),
   with ours through the default engine beside them (the compiled training
   engine's batch path where a C compiler is found).

Run ``python benchmarks/bench_latency.py`` (about a minute). Needs a C compiler
for the compiled predictor (``$CC``, cc, gcc or clang).
"""

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.export import compile_predictor

SLEEP = 0.25


def fitted(n_features, H, n_classes, n_timesteps=None, shape=None, seed=0):
    """Ours and an MLP, each fitted for 2 epochs on random data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape or (1024, n_features), dtype=np.float32)
    y = rng.integers(0, n_classes, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = FastGRNNClassifier(H, n_timesteps=n_timesteps, max_iter=2, random_state=0).fit(X, y)
        mlp = MLPClassifier((H,), max_iter=2, random_state=0).fit(X.reshape(len(X), -1), y)
    return X, ours, mlp


def calls_for(fn, seconds):
    """How many calls of ``fn`` take about ``seconds``."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:
        fn()
        calls += 1
    return max(1, 4 * calls)


def interleaved(functions, repeats, seconds=0.1):
    """Median seconds per call of each function, the functions interleaved."""
    counts = {name: calls_for(fn, seconds) for name, fn in functions.items()}
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            time.sleep(SLEEP)
            start = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            times[name].append((time.perf_counter() - start) / counts[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    """Command line: see the module docstring and --help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    X, ours, mlp = fitted(128, 32, 10, shape=(1024, 32, 4))
    compiled = compile_predictor(ours)
    one, row = X[:1].copy(), X[:1].reshape(1, -1).copy()
    R, ours_r, mlp_r = fitted(5, 8, 4, n_timesteps=1, seed=1)
    r1 = R[:1].copy()
    latency = interleaved({
        "ours predict_proba (1, 32, 4)": lambda: ours.predict_proba(one),
        "compiled predict_proba (1, 32, 4)": lambda: compiled.predict_proba(one),
        "MLP predict_proba, 128 features": lambda: mlp.predict_proba(row),
        "ours predict_proba, routing row": lambda: ours_r.predict_proba(r1),
        "MLP predict_proba, routing row": lambda: mlp_r.predict_proba(r1),
    }, args.repeats)
    print(f"One-call latency, median of {args.repeats} interleaved runs")
    for name, seconds in latency.items():
        print(f"  {name:<36} {1e6 * seconds:8.1f} us")
    mlp_one = latency["MLP predict_proba, 128 features"]
    ratios = {
        "ours / MLP, one sequence (target <= 1.0)":
            (latency["ours predict_proba (1, 32, 4)"] / mlp_one, 1.0),
        "ours / MLP, routing row (target <= 0.8)":
            (latency["ours predict_proba, routing row"]
             / latency["MLP predict_proba, routing row"], 0.8),
        "compiled / MLP, one sequence (target <= 0.1)":
            (latency["compiled predict_proba (1, 32, 4)"] / mlp_one, 0.1),
    }

    Xn = np.random.default_rng(2).standard_normal((10_000, 32, 4), dtype=np.float32)
    numpy_engine = copy.deepcopy(ours).set_params(engine="numpy")  # the same fitted model
    throughput = interleaved({
        "ours predict_proba, engine='numpy'": lambda: numpy_engine.predict_proba(Xn),
        f"ours predict_proba, engine_={ours.engine_!r}": lambda: ours.predict_proba(Xn),
        "compiled predict_proba": lambda: compiled.predict_proba(Xn),
    }, args.repeats, seconds=0.5)
    print(f"\n10,000 sequences (32, 4) at once, median of {args.repeats}")
    for name, seconds in throughput.items():
        print(f"  {name:<36} {1e3 * seconds:8.1f} ms {10_000 / seconds:12,.0f} sequences/s")
    speedup = (throughput["ours predict_proba, engine='numpy'"]
               / throughput["compiled predict_proba"])
    ratios["compiled / NumPy engine throughput (target >= 2)"] = (speedup, -2.0)
    print("\nRatios (this run)")
    for name, (value, target) in ratios.items():
        met = value >= -target if target < 0 else value <= target
        print(f"  {name:<46} {value:6.3f}  {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
