"""Streaming: latency of one update, throughput of many streams, and early decisions.

All in one run, interleaved (each timed run a loop of calls of about 0.1 s,
after a 0.25 s sleep), medians over ``--repeats``, ratios within the run:

1. latency of one ``update`` of one stream (one timestep of 4 channels, H = 32,
   10 classes): the Python ``Streamer`` (``model.streamer()``: float64
   arithmetic, and ``dtype="float32"``) and the compiled streamer
   (``compile_predictor(model).streamer()``, the C step function), each with
   float32 and float64 input, against ``MLPClassifier((32,)).predict_proba`` on
   one 128-feature row; beside them the compiled predictor's
   ``predict_proba`` of one whole (1, 32, 4) sequence, float32 and float64;
2. throughput: one ``update`` of 1,000 concurrent streams (a (1000, 4) timestep),
   as timesteps per second, Python and compiled;
3. the earliness curve on suite sets (``--datasets``, default GunPoint and
   ItalyPowerDemand, z-scored as ``benchmarks/suite.py`` loads them): a
   default ``FastGRNNClassifier(random_state=0)`` and the same with
   ``readout="mean"``, then ``predict_early`` on the test set at thresholds
   0.5 to 0.9999: accuracy against the mean earliness (decision step /
   sequence length; 1.0 reads every timestep).

Run ``python benchmarks/bench_streaming.py`` (about 3 minutes; ``--parts``
to run some of the three). Needs a C compiler (``$CC``, cc, gcc or clang)
and, for the suite sets, the ``benchmarks`` extra (aeon).
"""

import argparse
import os
import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.export import compile_predictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_latency import fitted, interleaved

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)
EARLY_MODELS = {"default": {}, "readout='mean'": {"readout": "mean"}}
N_STREAMS = 1000


def latency(repeats):
    """Medians of one update of one stream, and of the references, in seconds."""
    X, ours, mlp = fitted(128, 32, 10, shape=(1024, 32, 4))
    compiled = compile_predictor(ours)
    row = X[:1].reshape(1, -1).copy()
    one32 = X[:1].copy()
    one64 = one32.astype(np.float64)
    x32 = X[0, 0].copy()
    x64 = x32.astype(np.float64)
    python, python32 = ours.streamer(), ours.streamer(dtype="float32")
    c = compiled.streamer()
    return interleaved({
        "MLP predict_proba, 128 features": lambda: mlp.predict_proba(row),
        "Python streamer update, float64 x": lambda: python.update(x64),
        "Python streamer update, float32 x": lambda: python.update(x32),
        "Python float32 streamer, float32 x": lambda: python32.update(x32),
        "compiled streamer update, float32 x": lambda: c.update(x32),
        "compiled streamer update, float64 x": lambda: c.update(x64),
        "compiled predict_proba (1, 32, 4) float32": lambda: compiled.predict_proba(one32),
        "compiled predict_proba (1, 32, 4) float64": lambda: compiled.predict_proba(one64),
    }, repeats)


def throughput(repeats):
    """Medians of one update of ``N_STREAMS`` streams, in seconds."""
    X, ours, _ = fitted(128, 32, 10, shape=(1024, 32, 4))
    compiled = compile_predictor(ours)
    x32 = np.random.default_rng(3).standard_normal((N_STREAMS, 4), dtype=np.float32)
    x64 = x32.astype(np.float64)
    python, python32 = ours.streamer(N_STREAMS), ours.streamer(N_STREAMS, dtype="float32")
    c = compiled.streamer(N_STREAMS)
    return interleaved({
        "Python streamer, float64 x": lambda: python.update(x64),
        "Python float32 streamer, float32 x": lambda: python32.update(x32),
        "compiled streamer, float32 x": lambda: c.update(x32),
        "compiled streamer, float64 x": lambda: c.update(x64),
    }, repeats, seconds=0.3)


def earliness(name, params):
    """Rows (threshold, accuracy, mean earliness) of ``predict_early`` on a suite set."""
    import suite

    X_train, y_train, X_test, y_test = suite.load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastGRNNClassifier(random_state=0, **params).fit(X_train, y_train)
    lengths = (~np.isnan(X_test).all(axis=2)).sum(axis=1)
    rows = []
    for threshold in THRESHOLDS:
        y_pred, steps = clf.predict_early(X_test, threshold)
        rows.append((threshold, float(np.mean(y_pred == y_test)), float(np.mean(steps / lengths))))
    rows.append(("end", float(clf.score(X_test, y_test)), 1.0))
    return clf, X_test.shape, rows


def report_latency(repeats):
    times = latency(repeats)
    mlp = times["MLP predict_proba, 128 features"]
    print(f"One call, median of {repeats} interleaved runs (H = 32, 4 channels, 10 classes)")
    print(f"| {'call':<44} | {'time':>9} | {'/ MLP':>6} |")
    print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 7}:|")
    for name, seconds in times.items():
        print(f"| {name:<44} | {1e6 * seconds:6.1f} us | {seconds / mlp:6.3f} |")
    targets = [
        ("compiled step / MLP (target <= 0.05)", "compiled streamer update, float32 x", 0.05),
        ("compiled step, float64 x / MLP (target <= 0.05)",
         "compiled streamer update, float64 x", 0.05),
        ("Python step / MLP (target <= 0.5)", "Python streamer update, float64 x", 0.5),
        ("Python step, float32 x / MLP (target <= 0.5)", "Python streamer update, float32 x",
         0.5),
        ("compiled one sequence, float64 / MLP (target <= 0.1)",
         "compiled predict_proba (1, 32, 4) float64", 0.1),
    ]
    print("\nRatios (this run)")
    for label, name, target in targets:
        value = times[name] / mlp
        print(f"  {label:<56} {value:6.3f}  {'met' if value <= target else 'MISSED'}")


def report_throughput(repeats):
    many = throughput(repeats)
    print(f"\n{N_STREAMS:,} concurrent streams, one update (median of {repeats})")
    print(f"| {'streamer':<36} | {'one update':>10} | {'timesteps / s':>13} |")
    print(f"|{'-' * 38}|{'-' * 11}:|{'-' * 14}:|")
    for name, seconds in many.items():
        print(f"| {name:<36} | {1e3 * seconds:7.2f} ms | {N_STREAMS / seconds:13,.0f} |")


def report_earliness(name):
    curves = {label: earliness(name, params) for label, params in EARLY_MODELS.items()}
    clf, shape, _ = curves["default"]
    print(f"\nEarliness on {name} (test set {shape[0]} x {shape[1]} x {shape[2]}; "
          f"window_ = {clf.window_}): accuracy / mean earliness")
    print("| threshold | " + " | ".join(EARLY_MODELS) + " |")
    print("|---|" + "---:|" * len(EARLY_MODELS))
    for i, threshold in enumerate([*THRESHOLDS, "end"]):
        cells = [f"{rows[i][1]:.3f} / {rows[i][2]:.3f}" for _, _, rows in curves.values()]
        print(f"| {threshold} | " + " | ".join(cells) + " |")


def main():
    """Command line: see the module docstring and --help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--datasets", default="GunPoint,ItalyPowerDemand",
                        help="suite sets for the earliness curve, comma-separated")
    parser.add_argument("--parts", default="latency,throughput,earliness",
                        help="what to run, comma-separated")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "latency" in parts:
        report_latency(args.repeats)
    if "throughput" in parts:
        report_throughput(args.repeats)
    if "earliness" in parts:
        for name in args.datasets.split(","):
            report_earliness(name)


if __name__ == "__main__":
    main()
