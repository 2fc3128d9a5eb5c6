"""Does the default estimator learn? Test accuracy on real and synthetic sequence sets.

FastGRNNClassifier with its defaults (only ``random_state`` set) or with
candidate settings (``--params``), side by side in one run, on the same seeds
and the same input, with aeon's ``MiniRocketClassifier`` and scikit-learn's
``MLPClassifier`` on the flattened input (NaN padding as 0). Optional, since
they cost time (``--models``): FastGRNN with ``early_stopping=True``,
``LogisticRegression`` and 1-NN (Euclidean) on the flattened input, and a
PyTorch GRU of the same hidden size trained with the same recipe (Adam at 0.01,
the same "auto" batch size, the same L2 penalty on the weight matrices,
gradient clipping at 5, chrono-initialised update gate, the same stopping rule
on the training loss).

Every set is z-scored per channel from its training part (``suite.py``), or
fed raw (``--raw``: the package's values, unscaled), or both (``--both``),
as float64 arrays (what aeon's loaders and a NumPy z-scoring give) or float32
(``--dtype float32``). FastGRNN trains in float32 either way; on float64
input its raw and z-scored fits are the same model (the standardisation
inside ``fit`` gives both the same float32 numbers), while float32 arrays of
the two are different numbers, rounded in their own units, and train as two
seeds do.
MiniRocket needs equal lengths: a variable-length set is padded to the
longest series with zeros, aeon's ``Padder()`` default (``--minirocket-pad
last`` pads with each series' last value instead), outside the timed fit. Every model runs with
BLAS/OpenMP at one thread (MiniRocket with ``n_jobs=1``), and MiniRocket's
numba kernels are compiled before the first timed fit. The fits run seed by
seed, each model in turn (interleaved: the times of a seed's fits are taken
side by side, so that a slow spell of a shared machine falls on every model).

    pip install "sklearn-fastgrnn[benchmarks]"
    python benchmarks/bench_accuracy.py [--seeds 3] [--datasets real|GunPoint,bump-150]
        [--params hidden_size=64,readout='mean'] [--raw | --both] [--jobs 2]
        [--models fastgrnn,minirocket,mlp,early_stop,logreg,1nn,gru] [--minirocket-pad zero]
        [--dtype float64|float32]
        [--out results.jsonl]

Prints one row per dataset and input: mean test accuracy over the seeds (and
the lowest seed), median fit seconds and model KB for each model, the
published accuracies where the archive has the set, and the chance level
(majority class of the test set); then whether the issue-16 targets are met
on the real sets. ``--out`` writes one JSON record per (dataset, input,
model, seed) for ``compare_results.py``.
"""

import argparse
import ast
import json
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import suite

# Every model the benchmark can fit, and the ones it fits unless told otherwise.
MODELS = ("fastgrnn", "minirocket", "mlp", "early_stop", "logreg", "1nn", "gru")
DEFAULT_MODELS = ("fastgrnn", "minirocket", "mlp")
# Models without randomness: one fit, recorded as seed 0.
DETERMINISTIC = ("logreg", "1nn")
INPUTS = ("zscore", "raw")
# The float types the input arrays can have (--dtype).
DTYPES = {"float64": np.float64, "float32": np.float32}
PUBLISHED_COLUMNS = ("fcn", "resnet", "inceptiontime", "rocket", "minirocket_resampled")

# The issue-16 targets, checked on the real sets.
TARGET_MINIROCKET_CLOSE = 0.05  # within 5 points of MiniRocket ...
TARGET_MINIROCKET_SHARE = 2 / 3  # ... on at least two thirds of the sets
TARGET_MINIROCKET_WORST = 0.12  # and never more than 12 points below
TARGET_MODEL_KB = 10.0  # median model size
TARGET_TIME_RATIO = 5.0  # median fit time FastGRNN / MiniRocket
TARGET_RAW_GAP = 0.01  # raw input within 1 point of z-scored
# Two mean accuracies closer than this are a tie (equal counts of right answers
# averaged in another order differ in the last bits; unequal counts of any test
# set below a million series differ by far more).
TIE = 1e-9


def parse_params(text):
    """``"hidden_size=64,readout='mean'"`` -> ``{"hidden_size": 64, "readout": "mean"}``.

    Values are Python literals (numbers, strings, tuples, None, booleans);
    commas inside a tuple are fine.
    """
    if not text:
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"--params must read key=value,...; got {text!r}") from exc
    if call.args or any(k.arg is None for k in call.keywords):
        raise ValueError(f"--params must read key=value,...; got {text!r}")
    params = {}
    for keyword in call.keywords:
        try:
            params[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError as exc:
            raise ValueError(
                f"--params value of {keyword.arg!r} is not a Python literal "
                f"(quote strings: {keyword.arg}='...')"
            ) from exc
    return params


def params_text(params):
    """The canonical ``key=value,...`` spelling of a parameter dict ("defaults" if empty)."""
    return ",".join(f"{k}={v!r}" for k, v in sorted(params.items())) or "defaults"


def flat(X):
    return np.nan_to_num(X, nan=0.0).reshape(len(X), -1)


def lengths_of(X):
    return (~np.isnan(X).all(axis=2)).sum(axis=1)


def chance_level(y_test):
    """Accuracy of always predicting the test set's majority class."""
    return float(np.bincount(np.unique(y_test, return_inverse=True)[1]).max() / len(y_test))


def pickle_kb(model):
    return len(pickle.dumps(model)) / 1024


# ---------------------------------------------------------------- MiniRocket
# How MiniRocket's input is padded to equal length: aeon's Padder fill_value.
MINIROCKET_PADS = {"zero": 0, "last": "last"}


def to_aeon(X, pad="zero"):
    """(n, T, d) NaN-padded -> aeon's (n, d, T), the short series padded by aeon's Padder.

    ``pad="zero"`` (Padder's default) or ``"last"`` (each series' last value).
    """
    from aeon.transformations.collection.unequal_length import Padder

    lengths = lengths_of(X)
    T = X.shape[1]
    if (lengths == T).all():
        return np.ascontiguousarray(X.transpose(0, 2, 1), dtype=np.float64)
    series = [np.asarray(x[:L].T, dtype=np.float64) for x, L in zip(X, lengths)]
    return Padder(padded_length=T, fill_value=MINIROCKET_PADS[pad]).fit_transform(series)


MINIROCKET_MIN_LENGTH = 9  # aeon's MiniRocket refuses shorter series (digits by rows: 8)
_warm = set()


def _minirocket(kind):
    """aeon's MiniRocketClassifier (``kind="classifier"``) or MiniRocketRegressor."""
    if kind == "classifier":
        from aeon.classification.convolution_based import MiniRocketClassifier

        return MiniRocketClassifier
    from aeon.regression.convolution_based import MiniRocketRegressor

    return MiniRocketRegressor


def warm_up_minirocket(kind="classifier"):
    """Compile (or load from numba's cache) MiniRocket's kernels outside the timed fits."""
    if kind in _warm:  # once a process
        return
    _warm.add(kind)
    rng = np.random.default_rng(0)
    for d in (1, 2):
        X = rng.standard_normal((10, d, 40))
        y = np.arange(10) % 2 if kind == "classifier" else rng.standard_normal(10)
        _minirocket(kind)(n_kernels=84, random_state=0).fit(X, y).predict(X)


def fitted_minirocket(kind, data, seed, pad="zero"):
    """aeon's MiniRocket ``kind`` fitted on the training part of ``data``:
    ``(model, test input in aeon's layout, fit seconds)``."""
    X_train, y_train, X_test, _ = data
    A_train, A_test = to_aeon(X_train, pad), to_aeon(X_test, pad)
    short = MINIROCKET_MIN_LENGTH - A_train.shape[2]
    if short > 0:  # MiniRocket's kernels need 9 timepoints: zeros after, as aeon advises
        A_train, A_test = (np.pad(A, ((0, 0), (0, 0), (0, short))) for A in (A_train, A_test))
    model = _minirocket(kind)(random_state=seed, n_jobs=1)
    start = time.perf_counter()
    model.fit(A_train, y_train)
    return model, A_test, time.perf_counter() - start


def fit_minirocket(data, seed, pad="zero"):
    clf, A_test, fit_s = fitted_minirocket("classifier", data, seed, pad)
    accuracy = float(np.mean(clf.predict(A_test) == data[3]))
    return {"accuracy": accuracy, "fit_s": fit_s, "model_kb": pickle_kb(clf),
            "pickle_kb": pickle_kb(clf), "n_iter": None}


# ---------------------------------------------------------------- FastGRNN
def fit_fastgrnn(data, seed, params):
    from sklearn_fastgrnn import FastGRNNClassifier

    X_train, y_train, X_test, y_test = data
    clf = FastGRNNClassifier(random_state=seed, **params)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    return {"accuracy": float(clf.score(X_test, y_test)), "fit_s": fit_s,
            "model_kb": clf.model_size_bytes_ / 1024, "pickle_kb": pickle_kb(clf),
            "n_iter": int(clf.n_iter_), "stop_reason": getattr(clf, "stop_reason_", None)}


# ---------------------------------------------------------------- flat baselines
def fit_flat(model, data):
    X_train, y_train, X_test, y_test = data
    start = time.perf_counter()
    model.fit(flat(X_train), y_train)
    fit_s = time.perf_counter() - start
    n_iter = getattr(model, "n_iter_", None)
    if n_iter is not None:
        n_iter = int(np.max(n_iter))
    return {"accuracy": float(model.score(flat(X_test), y_test)), "fit_s": fit_s,
            "model_kb": pickle_kb(model), "pickle_kb": pickle_kb(model), "n_iter": n_iter}


# ---------------------------------------------------------------- GRU
def gru_cost(n, T):
    """Optimiser steps the default recipe allows, times the sequence length."""
    from sklearn_fastgrnn import _base as base_module

    steps = math.ceil(n / base_module.resolve_batch_size("auto", n))
    epochs = max(base_module.AUTO_MIN_EPOCHS,
                 math.ceil(base_module.AUTO_MIN_STEPS / steps))
    return epochs * steps * T


def train_gru(X_train, targets, n_outputs, loss, chance, seed, hidden_size=32):
    """A PyTorch GRU trained with the estimators' default recipe.

    Chrono gate bias, Adam at 0.01, the "auto" batch size, the default L2
    ``alpha`` on the weight matrices, gradients clipped at 5, and the stopping
    rule of ``max_iter``/``n_iter_no_change="auto"`` (its patience longer while
    the loss is at ``chance`` or above). ``targets`` is a tensor, ``loss(outputs,
    targets)`` the data loss of a mini-batch. Returns ``(outputs, epochs,
    n_params)``, ``outputs(X)`` the GRU's outputs for NaN-padded sequences.
    """
    import torch

    from sklearn_fastgrnn import FastGRNNClassifier
    from sklearn_fastgrnn import _base as base_module
    from sklearn_fastgrnn._stopping import PlateauMonitor, patience_epochs

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    lengths = lengths_of(X_train)
    T = int(lengths.max())
    Xt = torch.as_tensor(np.nan_to_num(X_train, nan=0.0))
    last = torch.as_tensor(lengths - 1)
    gru = torch.nn.GRU(X_train.shape[2], hidden_size, batch_first=True)
    with torch.no_grad():  # chrono: update gate (PyTorch's z) keeps ~1 + u steps
        u = torch.empty(hidden_size).uniform_(1.0, max(T - 1, 2))
        gru.bias_ih_l0[hidden_size : 2 * hidden_size] = torch.log(u)
        gru.bias_hh_l0[hidden_size : 2 * hidden_size] = 0.0
    head = torch.nn.Linear(hidden_size, n_outputs)
    params = list(gru.parameters()) + list(head.parameters())
    matrices = [p for name, p in list(gru.named_parameters()) + list(head.named_parameters())
                if "weight" in name]
    optimizer = torch.optim.Adam(params, lr=0.01)
    n = len(Xt)
    alpha = FastGRNNClassifier()._resolve_alpha(n)  # the default penalty for n sequences
    batch = base_module.resolve_batch_size("auto", n)
    steps = math.ceil(n / batch)
    patience = patience_epochs(10, steps, base_module.AUTO_MIN_PATIENCE_STEPS)
    plateau_patience = patience_epochs(10, steps, base_module.AUTO_PLATEAU_PATIENCE_STEPS)
    max_epochs = max(base_module.AUTO_MIN_EPOCHS, math.ceil(base_module.AUTO_MIN_STEPS / steps))
    monitor = PlateauMonitor(1e-4)

    def forward(X, idx_last):
        out, _ = gru(X)
        return head(out[torch.arange(len(X)), idx_last])

    epochs = 0
    for epoch in range(max_epochs):
        epochs = epoch + 1
        order = torch.randperm(n)
        total = 0.0
        for start_idx in range(0, n, batch):
            idx = order[start_idx : start_idx + batch]
            value = loss(forward(Xt[idx], last[idx]), targets[idx])
            value = value + 0.5 * alpha * sum((m * m).sum() for m in matrices)
            optimizer.zero_grad()
            value.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            total += value.item() * len(idx)
        monitor.update(total / n, epoch + 1)
        if monitor.plateaued(plateau_patience if monitor.best >= chance else patience):
            break

    def outputs(X):
        with torch.no_grad():
            return forward(torch.as_tensor(np.nan_to_num(X, nan=0.0)),
                           torch.as_tensor(lengths_of(X) - 1)).numpy()

    return outputs, epochs, sum(p.numel() for p in params)


def gru_fit(data, seed, hidden_size=32):
    """A PyTorch GRU classifier trained with FastGRNNClassifier's default recipe
    (:func:`train_gru`; chance level: the stopping rule's, of the class prior)."""
    import torch

    from sklearn_fastgrnn import _base as base_module

    X_train, y_train, X_test, y_test = data
    start = time.perf_counter()
    classes, y_idx = np.unique(y_train, return_inverse=True)
    prior = np.bincount(y_idx) / len(y_idx)
    chance = base_module.AUTO_PLATEAU_LEVEL * float(-(prior * np.log(prior)).sum())
    outputs, epochs, n_params = train_gru(
        X_train, torch.as_tensor(y_idx), len(classes), torch.nn.functional.cross_entropy,
        chance, seed, hidden_size)
    fit_s = time.perf_counter() - start
    pred = outputs(X_test).argmax(1)
    return {"accuracy": float(np.mean(classes[pred] == y_test)), "fit_s": fit_s,
            "model_kb": 4 * n_params / 1024, "pickle_kb": None, "n_iter": epochs}


# ---------------------------------------------------------------- one dataset
def fit_one(model, data, seed, args):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    if model == "fastgrnn":
        return fit_fastgrnn(data, seed, args.params)
    if model == "early_stop":
        return fit_fastgrnn(data, seed, {**args.params, "early_stopping": True})
    if model == "minirocket":
        return fit_minirocket(data, seed, args.minirocket_pad)
    if model == "mlp":
        return fit_flat(MLPClassifier(random_state=seed, max_iter=1000), data)
    if model == "logreg":
        return fit_flat(LogisticRegression(max_iter=5000), data)
    if model == "1nn":
        return fit_flat(KNeighborsClassifier(1), data)
    if model == "gru":
        return gru_fit(data, seed)
    raise ValueError(f"unknown model {model!r}")


def run_dataset(name, args):
    """Fit every model on every input kind of one dataset; returns its records."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    warnings.simplefilter("ignore", ConvergenceWarning)
    records = []
    with threadpool_limits(limits=1):
        if "minirocket" in args.models:
            warm_up_minirocket()
        for kind in args.inputs:
            data = suite.load(name, scale=(kind == "zscore"), dtype=DTYPES[args.dtype])
            X_train, y_train, X_test, y_test = data
            n, T, d = X_train.shape
            info = {"dataset": name, "input": kind, "dtype": args.dtype, "n": n, "T": T, "d": d,
                    "C": int(len(np.unique(y_train))), "n_test": len(y_test),
                    "chance": chance_level(y_test), "real": name in suite.REAL}
            records += model_records(info, data, args, fit_one, DETERMINISTIC)
    return records


def model_records(info, data, args, fit_one, deterministic):
    """The records of every model of ``args`` over its seeds on one dataset
    (``info``: what describes the dataset), fitted by ``fit_one``: seed by
    seed, each model in turn, so that the fits whose times are compared run
    side by side on a shared machine."""
    n, T = info["n"], info["T"]
    seeds = {}
    for model in args.models:
        if model == "gru" and gru_cost(n, T) > args.gru_max_cost:
            continue
        seeds[model] = [0] if model in deterministic else range(
            args.gru_seeds if model == "gru" else args.seeds)
    runs = [(model, seed) for seed in range(max(map(len, seeds.values()), default=0))
            for model in seeds if seed in seeds[model]]
    records = []
    for model, seed in runs:
        result = fit_one(model, data, seed, args)
        params = args.params if model in ("fastgrnn", "early_stop") else {}
        if model == "early_stop":
            params = {**params, "early_stopping": True}
        if model == "minirocket":
            params = {"pad": args.minirocket_pad}
        records.append({**info, "model": model, "seed": seed,
                        "params": params_text(params), "label": args.label,
                        "commit": args.commit, **result})
    return records


# ---------------------------------------------------------------- the table
def group(records):
    """{(dataset, input, model): [records over the seeds]}."""
    out = {}
    for r in records:
        out.setdefault((r["dataset"], r["input"], r["model"]), []).append(r)
    return out


def cell(rs):
    if not rs:
        return "-"
    acc = [r["accuracy"] for r in rs]
    return f"{np.mean(acc):.3f} ({min(acc):.3f})" if len(acc) > 1 else f"{acc[0]:.3f}"


def median_of(rs, key):
    values = [r[key] for r in rs if r.get(key) is not None]
    return float(np.median(values)) if values else None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def fmt_s(seconds):
    """Seconds with two decimals below 10 s, one above."""
    return "-" if seconds is None else f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def print_table(records, names, args):
    groups = group(records)
    published = suite.published()
    models = args.models
    head = f"{'dataset':22s} {'input':6s} {'n':>5s} {'T':>5s} {'d':>3s} {'C':>3s}"
    for m in models:
        head += f" | {m:>13s} {'fit s':>6s} {'KB':>7s}"
    head += " | chance | " + " ".join(f"{c[:8]:>8s}" for c in PUBLISHED_COLUMNS)
    print(head)
    print("-" * len(head))
    for name in names:
        for kind in args.inputs:
            rows = [groups.get((name, kind, m), []) for m in models]
            any_row = next((rs[0] for rs in rows if rs), None)
            if any_row is None:
                continue
            line = (f"{name:22s} {kind:6s} {any_row['n']:5d} {any_row['T']:5d} "
                    f"{any_row['d']:3d} {any_row['C']:3d}")
            for rs in rows:
                line += (f" | {cell(rs):>13s} {fmt_s(median_of(rs, 'fit_s')):>6s} "
                         f"{fmt(median_of(rs, 'model_kb'), '7.1f'):>7s}")
            pub = published.get(name, {})
            line += f" | {any_row['chance']:6.3f} | " + " ".join(
                f"{fmt(pub.get(c), '8.3f'):>8s}" for c in PUBLISHED_COLUMNS)
            print(line)
    if any(name in suite.PUBLISHED_ALIASES for name in names):
        print("Published: " + "; ".join(
            f"{k}'s row is the archive's {v} (a different, larger test set)"
            for k, v in suite.PUBLISHED_ALIASES.items()))
    print("Published columns (benchmarks/published.csv): FCN, ResNet (dl-4-tsc), InceptionTime, "
          "ROCKET, default split; MiniRocket mean of 30 resamples.")


# ---------------------------------------------------------------- the targets
def mean_acc(groups, name, kind, model):
    rs = groups.get((name, kind, model))
    return float(np.mean([r["accuracy"] for r in rs])) if rs else None


def met(ok):
    return "met" if ok else "NOT MET"


def print_targets(records, names, args):
    """Check the issue-16 targets on the real sets of this run."""
    groups = group(records)
    real = [n for n in names if n in suite.REAL]
    print()
    print(f"Targets (issue 16) on the {len(real)} real sets of this run, FastGRNN "
          f"{params_text(args.params)}:")
    if not real or "fastgrnn" not in args.models:
        print("  n/a: needs real sets and the fastgrnn model")
        return
    for kind in args.inputs:
        sets = [n for n in real if (n, kind, "fastgrnn") in groups]
        if not sets:
            continue
        # The references on z-scored input where this run has them: what a
        # user gets by scaling the data for them.
        ref_kind = "zscore" if "zscore" in args.inputs else kind
        print(f"  {kind} input ({len(sets)} sets; references on {ref_kind} input):")
        fg = {n: mean_acc(groups, n, kind, "fastgrnn") for n in sets}

        mlp = {n: mean_acc(groups, n, ref_kind, "mlp") for n in sets}
        have = [n for n in sets if mlp[n] is not None]
        if have:
            below = [f"{n} {fg[n]:.4f} < {mlp[n]:.4f}" for n in have
                     if fg[n] < mlp[n] - TIE]
            print(f"    >= MLP on every set: {met(not below)} "
                  f"({len(have) - len(below)}/{len(have)})" + (": " + ", ".join(below)
                                                                 if below else ""))
        else:
            print("    >= MLP on every set: n/a (no MLP in this run)")

        mr = {n: mean_acc(groups, n, ref_kind, "minirocket") for n in sets}
        have = [n for n in sets if mr[n] is not None]
        if have:
            gaps = {n: mr[n] - fg[n] for n in have}
            close = [n for n in have if gaps[n] <= TARGET_MINIROCKET_CLOSE]
            worst = max(have, key=gaps.get)
            share_ok = len(close) >= TARGET_MINIROCKET_SHARE * len(have)
            print(f"    within {TARGET_MINIROCKET_CLOSE * 100:.0f} points of MiniRocket on >= 2/3: "
                  f"{met(share_ok)} ({len(close)}/{len(have)}; further: " + (", ".join(
                      f"{n} {0.0 - gaps[n] * 100:+.1f}" for n in have if n not in close) or "none")
                  + ")")
            print(f"    never more than {TARGET_MINIROCKET_WORST * 100:.0f} points below "
                  f"MiniRocket: {met(gaps[worst] <= TARGET_MINIROCKET_WORST)} (worst {worst} "
                  f"{0.0 - gaps[worst] * 100:+.1f})")
        else:
            print("    MiniRocket targets: n/a (no MiniRocket in this run)")

        at_chance = [f"{r['dataset']} seed {r['seed']} {r['accuracy']:.3f} <= {r['chance']:.3f}"
                     for n in sets for r in groups[(n, kind, "fastgrnn")]
                     if r["accuracy"] <= r["chance"]]
        margin = min((r["accuracy"] - r["chance"], r["dataset"])
                     for n in sets for r in groups[(n, kind, "fastgrnn")])
        print(f"    no seed at chance: {met(not at_chance)} " + (
            "(" + ", ".join(at_chance) + ")" if at_chance else
            f"(smallest margin {margin[0] * 100:+.1f} points, {margin[1]})"))

        kb = [median_of(groups[(n, kind, "fastgrnn")], "model_kb") for n in sets]
        print(f"    median model <= {TARGET_MODEL_KB:.0f} KB: "
              f"{met(np.median(kb) <= TARGET_MODEL_KB)} ({np.median(kb):.1f} KB; "
              f"{min(kb):.1f}-{max(kb):.1f})")

        ratios = {n: median_of(groups[(n, kind, "fastgrnn")], "fit_s")
                  / median_of(groups[(n, kind, "minirocket")], "fit_s")
                  for n in sets if (n, kind, "minirocket") in groups}
        if ratios:
            worst = max(ratios, key=ratios.get)
            median_ratio = float(np.median(list(ratios.values())))
            print(f"    median fit time <= {TARGET_TIME_RATIO:.0f}x MiniRocket's (same input, "
                  f"same run): {met(median_ratio <= TARGET_TIME_RATIO)} ({median_ratio:.1f}x; "
                  f"{min(ratios.values()):.1f}x-{ratios[worst]:.1f}x, worst {worst})")
        else:
            print("    fit time ratio: n/a (no MiniRocket on this input)")

    if set(INPUTS) <= set(args.inputs):
        sets = [n for n in real if (n, "raw", "fastgrnn") in groups
                and (n, "zscore", "fastgrnn") in groups]
        gaps = {n: mean_acc(groups, n, "zscore", "fastgrnn")
                - mean_acc(groups, n, "raw", "fastgrnn") for n in sets}
        worse = [f"{n} {-g * 100:+.1f}" for n, g in gaps.items() if g > TARGET_RAW_GAP]
        worst = max(gaps, key=gaps.get)
        detail = ", ".join(worse) if worse else f"worst {worst} {0.0 - gaps[worst] * 100:+.1f}"
        print(f"  raw within {TARGET_RAW_GAP * 100:.0f} point of z-scored on every set: "
              f"{met(not worse)} ({len(sets) - len(worse)}/{len(sets)}; {detail})")
    else:
        print("  raw within 1 point of z-scored: n/a (run with --both)")


# ---------------------------------------------------------------- main
def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sklearn_fastgrnn"],
                               cwd=os.path.dirname(here), capture_output=True, text=True
                               ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def dataset_names(text, collection=suite):
    """The datasets ``--datasets`` names, from ``collection`` (a suite module)."""
    names = []
    for part in text.split(","):
        if part == "real":
            names += collection.REAL
        elif part == "synthetic":
            names += list(collection.SYNTHETIC)
        elif part == "all":
            names += collection.NAMES
        elif part in collection.NAMES:
            names.append(part)
        else:
            raise SystemExit(f"unknown dataset {part!r}; expected real, synthetic, all or "
                             f"one of {collection.NAMES}")
    return list(dict.fromkeys(names))


def suite_arguments(description, models, default_models, estimator, gru_help,
                    gru_max_cost):
    """The parser of the options every suite benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="all",
                        help="comma-separated names, or real, synthetic, all")
    parser.add_argument("--models", default=",".join(default_models),
                        help=f"comma-separated, from {','.join(models)}")
    parser.add_argument("--params", default="",
                        help=f"{estimator.__name__} settings, key=value,... (Python literals)")
    parser.add_argument("--label", default=None,
                        help="a name for this run in the records (default: the params)")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--raw", action="store_true", help="unscaled input only")
    kinds.add_argument("--both", action="store_true", help="z-scored and raw input")
    parser.add_argument("--jobs", type=int, default=1, help="processes to spread datasets over")
    parser.add_argument("--out", default=None, help="write one JSON record per fit here")
    parser.add_argument("--append", action="store_true", help="append to --out")
    parser.add_argument("--minirocket-pad", choices=list(MINIROCKET_PADS), default="zero",
                        help="pad variable-length sets for MiniRocket with zeros or the last value")
    parser.add_argument("--gru-seeds", type=int, default=1, help=gru_help)
    parser.add_argument("--gru-max-cost", type=float, default=gru_max_cost,
                        help="skip the GRU where optimiser steps * T would exceed this")
    return parser


def checked_arguments(parser, models, estimator, collection=suite):
    """The parsed options, checked (a misspelt setting fails now, not in a worker),
    and the names of the datasets to run."""
    args = parser.parse_args()
    try:
        args.params = parse_params(args.params)
    except ValueError as exc:
        parser.error(str(exc))
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in models]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; expected some of {list(models)}")
    args.label = args.label or params_text(args.params)
    args.inputs = list(INPUTS) if args.both else ["raw"] if args.raw else ["zscore"]
    args.commit = git_commit()
    if args.params:
        try:
            estimator().set_params(**args.params)
        except ValueError as exc:
            parser.error(str(exc))
    return args, dataset_names(args.datasets, collection)


def run_suite(names, args, run_dataset, score, header=""):
    """Run ``run_dataset(name, args)`` for every dataset (over ``--jobs``
    processes), writing ``--out`` and a line per dataset with the mean ``score``
    of each model; returns the records."""
    out = None
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        out = open(args.out, "a" if args.append else "w")
    print(f"# {len(names)} sets, inputs {','.join(args.inputs)}, models {','.join(args.models)}, "
          f"{args.seeds} seeds{header}, commit {args.commit}, jobs {args.jobs}", flush=True)
    records, started = [], time.perf_counter()

    def collect(name, rs):
        records.extend(rs)
        if out is not None:
            for r in rs:
                out.write(json.dumps(r, default=repr) + "\n")
            out.flush()
        summary = ", ".join(
            f"{m} {np.mean([r[score] for r in rs if r['model'] == m and r['input'] == k]):.3f}"
            f"{'' if len(args.inputs) == 1 else '/' + k}"
            for k in args.inputs for m in args.models
            if any(r["model"] == m and r["input"] == k for r in rs))
        print(f"# done {name} at {time.perf_counter() - started:.0f} s: {score} {summary}",
              flush=True)
        for r in rs:
            for message in r.get("warnings") or ():
                print(f"#   {r['model']} seed {r['seed']} {r['input']}: {message}", flush=True)

    try:
        if args.jobs <= 1:
            for name in names:
                collect(name, run_dataset(name, args))
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = {pool.submit(run_dataset, name, args): name for name in names}
                for future in as_completed(futures):
                    collect(futures[future], future.result())
    finally:
        if out is not None:
            out.close()
    print()
    return records


def main():
    from sklearn_fastgrnn import FastGRNNClassifier

    parser = suite_arguments(__doc__.splitlines()[0], MODELS, DEFAULT_MODELS,
                             FastGRNNClassifier, "seeds of the GRU (eager PyTorch is about "
                             "10x slower)", gru_max_cost=1.2e6)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float64",
                        help="the input arrays' type: float64 as aeon's loaders and a NumPy "
                             "z-scoring give them, or float32")
    args, names = checked_arguments(parser, MODELS, FastGRNNClassifier)
    header = (f", FastGRNN {args.label}"
              if {"fastgrnn", "early_stop"} & set(args.models) else "")
    header += f", {args.dtype} input"
    records = run_suite(names, args, run_dataset, "accuracy", header)
    print_table(records, names, args)
    print_targets(records, names, args)


if __name__ == "__main__":
    sys.exit(main())
