"""Multilabel sequences: digits as [even, greater than 4, prime], FastGRNN against MLPClassifier.

scikit-learn's digits read as sequences (``load_digits_sequences``: 8 rows of
8 pixels in [0, 1]; ``split_halves``: first half to train, second half, other
writers, to test), each image labelled with a 3-column indicator: the digit
is even, greater than 4, prime (2, 3, 5, 7). ``FastGRNNClassifier`` (defaults,
only ``random_state``; or ``--params``) trains one sigmoid output per label;
``MLPClassifier`` (``max_iter=1000``) reads the 64 flattened pixels. Same
seeds, one run, BLAS at one thread.

Two ways of training:

- ``fit``: the whole training half at once;
- ``partial_fit``: the training half cut into ``--chunks`` chunks (a fixed
  permutation per seed), every chunk one ``partial_fit`` call, ``--passes``
  passes over the chunks; scored after each pass of ``--checkpoints``. Both
  models see the same chunks in the same order; ``classes=np.arange(3)`` (one
  entry per label column) on the first call. Before training, the script shows
  what ``MLPClassifier.partial_fit`` does with a multilabel ``y`` when
  ``classes`` is ``np.unique(y)`` (the label values, as its docstring
  suggests) and when it is ``np.arange(n_labels)``, on the installed
  scikit-learn (scikit-learn #12505).

    python benchmarks/bench_multilabel.py [--seeds 3] [--params hidden_size=64]
        [--chunks 9] [--checkpoints 10,30,100] [--zscore] [--out multilabel.jsonl]

Prints subset accuracy (every label right), Hamming loss (the share of wrong
labels) and fit seconds, mean (worst seed) over the seeds, and the level of
predicting each label's more frequent training value. ``--out`` writes one
JSON record per (model, mode, passes, seed).
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import suite
from bench_accuracy import flat, fmt_s, git_commit, params_text, parse_params, pickle_kb

MODELS = ("fastgrnn", "mlp")
LABELS = ("even", "greater than 4", "prime")


def multilabel_digits(scale=False):
    """(X_train, Y_train, X_test, Y_test): digits rows, 3-column indicator targets."""
    from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

    X, y = load_digits_sequences()
    Y = np.stack([y % 2 == 0, y > 4, np.isin(y, [2, 3, 5, 7])], axis=1).astype(int)
    X_train, X_test, Y_train, Y_test = split_halves(X, Y)
    return suite._finish(X_train, Y_train, X_test, Y_test, scale)


def constant_level(Y_train, Y_test):
    """Subset accuracy and Hamming loss of predicting each label's more frequent training value."""
    from sklearn.metrics import accuracy_score, hamming_loss

    constant = np.broadcast_to((Y_train.mean(axis=0) > 0.5).astype(int), Y_test.shape)
    return float(accuracy_score(Y_test, constant)), float(hamming_loss(Y_test, constant))


def scores(model, X_test, Y_test):
    from sklearn.metrics import accuracy_score, hamming_loss

    pred = model.predict(X_test)
    return {"subset_accuracy": float(accuracy_score(Y_test, pred)),
            "hamming_loss": float(hamming_loss(Y_test, pred))}


def make(model, seed, params):
    from sklearn.neural_network import MLPClassifier

    from sklearn_fastgrnn import FastGRNNClassifier

    if model == "fastgrnn":
        return FastGRNNClassifier(random_state=seed, **params)
    return MLPClassifier(random_state=seed, max_iter=1000)


def inputs_for(model, X):
    return X if model == "fastgrnn" else flat(X)


def run_fit(model, data, seed, params):
    X_train, Y_train, X_test, Y_test = data
    est = make(model, seed, params)
    start = time.perf_counter()
    est.fit(inputs_for(model, X_train), Y_train)
    fit_s = time.perf_counter() - start
    return [{"mode": "fit", "passes": None, **scores(est, inputs_for(model, X_test), Y_test),
             "fit_s": fit_s, "n_iter": int(est.n_iter_),
             "stop_reason": getattr(est, "stop_reason_", None), "pickle_kb": pickle_kb(est),
             "model_kb": (est.model_size_bytes_ / 1024 if model == "fastgrnn"
                          else pickle_kb(est))}]


def run_partial_fit(model, data, seed, params, n_chunks, checkpoints):
    """``partial_fit`` over fixed chunks; a record after each checkpoint pass."""
    X_train, Y_train, X_test, Y_test = data
    est = make(model, seed, params)
    chunks = np.array_split(np.random.default_rng(seed).permutation(len(X_train)), n_chunks)
    X_in, X_test_in = inputs_for(model, X_train), inputs_for(model, X_test)
    classes = np.arange(Y_train.shape[1])
    records, fit_s, calls = [], 0.0, 0
    for done in range(1, max(checkpoints) + 1):
        start = time.perf_counter()
        for chunk in chunks:
            if calls == 0:
                est.partial_fit(X_in[chunk], Y_train[chunk], classes=classes)
            else:
                est.partial_fit(X_in[chunk], Y_train[chunk])
            calls += 1
        fit_s += time.perf_counter() - start
        if done in checkpoints:
            records.append({"mode": "partial_fit", "passes": done, "calls": calls,
                            **scores(est, X_test_in, Y_test), "fit_s": fit_s,
                            "n_iter": int(est.n_iter_), "pickle_kb": pickle_kb(est)})
    return records


def mlp_partial_fit_behaviour(data):
    """What MLPClassifier.partial_fit does with a multilabel y, for two ``classes``."""
    import sklearn
    from sklearn.neural_network import MLPClassifier

    X_train, Y_train, _, _ = data
    X, Y = flat(X_train), Y_train
    lines = [f"MLPClassifier.partial_fit with a multilabel y (scikit-learn {sklearn.__version__}):"]
    for text, classes in (("np.unique(Y)", np.unique(Y)),
                          ("np.arange(n_labels)", np.arange(Y.shape[1]))):
        est = MLPClassifier(random_state=0)
        try:
            est.partial_fit(X[:100], Y[:100], classes=classes)
            est.partial_fit(X[100:200], Y[100:200])
            outcome = (f"works: classes_ {est.classes_.tolist()}, out_activation_ "
                       f"{est.out_activation_!r}, predict shape {est.predict(X[:5]).shape}")
        except Exception as exc:  # noqa: BLE001 - the point is to show it
            outcome = f"{type(exc).__name__}: {exc}"
        lines.append(f"  classes={text} = {classes.tolist()}: {outcome}")
    return lines


def mean_worst(rs, key, lower_is_better=False):
    values = [r[key] for r in rs]
    worst = max(values) if lower_is_better else min(values)
    return f"{np.mean(values):.3f} ({worst:.3f})" if len(values) > 1 else f"{values[0]:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--params", default="",
                        help="FastGRNNClassifier settings, key=value,... (Python literals)")
    parser.add_argument("--label", default=None, help="a name for this run in the records")
    parser.add_argument("--chunks", type=int, default=9,
                        help="partial_fit chunks of the training half (9: about 100 each)")
    parser.add_argument("--checkpoints", default="10,30,100",
                        help="passes over the chunks after which partial_fit is scored")
    parser.add_argument("--zscore", action="store_true",
                        help="z-score the pixels per channel (default: [0, 1] as loaded)")
    parser.add_argument("--out", default=None, help="write one JSON record per result here")
    parser.add_argument("--append", action="store_true", help="append to --out")
    args = parser.parse_args()
    try:
        params = parse_params(args.params)
        checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if c})
    except ValueError as exc:
        parser.error(str(exc))
    if not checkpoints or checkpoints[0] < 1:
        parser.error("--checkpoints must be positive numbers of passes")
    label = args.label or params_text(params)
    commit = git_commit()

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    warnings.simplefilter("ignore", ConvergenceWarning)
    data = multilabel_digits(scale=args.zscore)
    X_train, Y_train, X_test, Y_test = data
    n, T, d = X_train.shape
    chance_acc, chance_hamming = constant_level(Y_train, Y_test)
    info = {"dataset": "digits-multilabel", "input": "zscore" if args.zscore else "raw",
            "n": n, "T": T, "d": d, "labels": Y_train.shape[1], "n_test": len(X_test),
            "chance_subset_accuracy": chance_acc, "chance_hamming_loss": chance_hamming}
    print(f"# digits multilabel {list(LABELS)}: n {n}, T {T}, d {d}, test {len(X_test)}, "
          f"input {info['input']}, {args.seeds} seeds, FastGRNN {label}, commit {commit}; "
          f"label rates (train) {np.round(Y_train.mean(axis=0), 3).tolist()}", flush=True)
    behaviour = mlp_partial_fit_behaviour(data)
    print("\n".join(behaviour), flush=True)

    out = None
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        out = open(args.out, "a" if args.append else "w")
    records = []
    with threadpool_limits(limits=1):
        for model in MODELS:
            for seed in range(args.seeds):
                rs = run_fit(model, data, seed, params) + run_partial_fit(
                    model, data, seed, params, args.chunks, checkpoints)
                for r in rs:
                    r.update({**info, "model": model, "seed": seed,
                              "params": params_text(params if model == "fastgrnn" else {}),
                              "label": label, "commit": commit})
                    records.append(r)
                    if out is not None:
                        out.write(json.dumps(r, default=repr) + "\n")
                        out.flush()
                print(f"# done {model} seed {seed}: " + ", ".join(
                    f"{r['mode']}{'' if r['passes'] is None else ' ' + str(r['passes'])} "
                    f"{r['subset_accuracy']:.3f}" for r in rs), flush=True)
    if out is not None:
        out.close()

    print()
    head = (f"{'model':9s} {'training':22s} {'subset accuracy':>16s} {'Hamming loss':>16s} "
            f"{'fit s':>6s} {'epochs':>7s}")  # fit: n_iter_; partial_fit: its calls
    print(head)
    print("-" * len(head))
    modes = [("fit", None)] + [("partial_fit", p) for p in checkpoints]
    for model in MODELS:
        for mode, passes in modes:
            rs = [r for r in records if r["model"] == model and r["mode"] == mode
                  and r["passes"] == passes]
            what = ("fit" if mode == "fit" else
                    f"partial_fit {passes} x {args.chunks}")
            epochs = np.median([r["n_iter"] if mode == "fit" else r["calls"] for r in rs])
            print(f"{model:9s} {what:22s} {mean_worst(rs, 'subset_accuracy'):>16s} "
                  f"{mean_worst(rs, 'hamming_loss', lower_is_better=True):>16s} "
                  f"{fmt_s(float(np.median([r['fit_s'] for r in rs]))):>6s} "
                  f"{int(epochs):7d}")
    print(f"{'constant':9s} {'each label majority':22s} {chance_acc:16.3f} {chance_hamming:16.3f}")
    print()
    print("epochs: fit's n_iter_ (median), or the partial_fit calls made, each one epoch over "
          "its chunk (MLPClassifier's n_iter_ does not count them). Fit seconds of partial_fit "
          "add up its calls until the checkpoint.")


if __name__ == "__main__":
    sys.exit(main())
