"""Does the default estimator learn? Test accuracy on real and synthetic sequence sets.

FastGRNNClassifier with its defaults (only ``random_state`` set) and with
``early_stopping=True``, side by side in one run with ``MLPClassifier`` (the
same seeds) and ``LogisticRegression`` on the flattened input (NaN padding as
0), 1-NN
(Euclidean), and a PyTorch GRU of the same hidden size trained with the same
recipe (Adam at 0.01, the same "auto" batch size, the same L2 penalty on the
weight matrices, gradient clipping at 5, chrono-initialised update gate, the
same stopping rule on the training loss).
Every set is z-scored per channel from its training part (``suite.py``).

    pip install "sklearn-fastgrnn[benchmarks]"
    python benchmarks/bench_accuracy.py [--seeds 3] [--datasets GunPoint,bump-150]
        [--gru-seeds 1] [--gru-max-cost 1.2e6] [--no-gru]

Prints one row per dataset: mean test accuracy over the seeds (and the lowest
seed) for FastGRNN, the MLP and the GRU, the median fit time of the defaults,
and the chance level.
"""

import argparse
import math
import time
import warnings

import numpy as np
import suite
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn import classifier as classifier_module
from sklearn_fastgrnn._stopping import PlateauMonitor, patience_epochs


def flat(X):
    return np.nan_to_num(X, nan=0.0).reshape(len(X), -1)


def gru_cost(n, T):
    """Optimiser steps the default recipe allows, times the sequence length."""
    steps = math.ceil(n / classifier_module._resolve_batch_size("auto", n))
    epochs = max(classifier_module.AUTO_MIN_EPOCHS,
                 math.ceil(classifier_module.AUTO_MIN_STEPS / steps))
    return epochs * steps * T


def gru_accuracy(data, seed, hidden_size=32):
    """A PyTorch GRU trained with FastGRNNClassifier's default recipe."""
    import torch

    X_train, y_train, X_test, y_test = data
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    classes, y_idx = np.unique(y_train, return_inverse=True)
    lengths = (~np.isnan(X_train).all(axis=2)).sum(axis=1)
    T = int(lengths.max())
    Xt = torch.as_tensor(np.nan_to_num(X_train, nan=0.0))
    yt = torch.as_tensor(y_idx)
    last = torch.as_tensor(lengths - 1)
    gru = torch.nn.GRU(X_train.shape[2], hidden_size, batch_first=True)
    with torch.no_grad():  # chrono: update gate (PyTorch's z) keeps ~1 + u steps
        u = torch.empty(hidden_size).uniform_(1.0, max(T - 1, 2))
        gru.bias_ih_l0[hidden_size : 2 * hidden_size] = torch.log(u)
        gru.bias_hh_l0[hidden_size : 2 * hidden_size] = 0.0
    head = torch.nn.Linear(hidden_size, len(classes))
    params = list(gru.parameters()) + list(head.parameters())
    matrices = [p for name, p in list(gru.named_parameters()) + list(head.named_parameters())
                if "weight" in name]
    alpha = FastGRNNClassifier().alpha
    optimizer = torch.optim.Adam(params, lr=0.01)
    n = len(Xt)
    batch = classifier_module._resolve_batch_size("auto", n)
    steps = math.ceil(n / batch)
    patience = patience_epochs(10, steps, classifier_module.AUTO_MIN_PATIENCE_STEPS)
    plateau_patience = patience_epochs(
        10, steps, classifier_module.AUTO_PLATEAU_PATIENCE_STEPS
    )
    prior = np.bincount(y_idx) / n
    chance = classifier_module.AUTO_PLATEAU_LEVEL * float(-(prior * np.log(prior)).sum())
    max_epochs = max(classifier_module.AUTO_MIN_EPOCHS,
                     math.ceil(classifier_module.AUTO_MIN_STEPS / steps))
    monitor = PlateauMonitor(1e-4)

    def logits(X, idx_last):
        out, _ = gru(X)
        return head(out[torch.arange(len(X)), idx_last])

    for epoch in range(max_epochs):
        order = torch.randperm(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(logits(Xt[idx], last[idx]), yt[idx])
            loss = loss + 0.5 * alpha * sum((m * m).sum() for m in matrices)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            total += loss.item() * len(idx)
        monitor.update(total / n, epoch + 1)
        if monitor.plateaued(plateau_patience if monitor.best >= chance else patience):
            break
    test_lengths = (~np.isnan(X_test).all(axis=2)).sum(axis=1)
    with torch.no_grad():
        pred = logits(torch.as_tensor(np.nan_to_num(X_test, nan=0.0)),
                      torch.as_tensor(test_lengths - 1)).argmax(1).numpy()
    return float(np.mean(classes[pred] == y_test))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default=",".join(suite.NAMES))
    parser.add_argument("--no-gru", action="store_true")
    parser.add_argument("--gru-seeds", type=int, default=1,
                        help="seeds of the GRU (eager PyTorch is about 10x slower)")
    parser.add_argument("--gru-max-cost", type=float, default=1.2e6,
                        help="skip the GRU where optimiser steps * T would exceed this")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    header = (f"{'dataset':22s} {'n':>5s} {'T':>5s} {'d':>3s} {'C':>3s} | {'default':>13s} "
              f"{'early_stop':>13s} {'fit s':>6s} | {'MLP':>13s} {'LogReg':>6s} {'1-NN':>5s} "
              f"{'GRU':>13s} | chance")
    print(header)
    print("-" * len(header))
    for name in args.datasets.split(","):
        data = suite.load(name)
        X_train, y_train, X_test, y_test = data
        n, T, d = X_train.shape
        C = len(np.unique(y_train))

        def run(**params):
            scores, times = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                clf = FastGRNNClassifier(random_state=seed, **params).fit(X_train, y_train)
                times.append(time.perf_counter() - start)
                scores.append(clf.score(X_test, y_test))
            return scores, times

        default, times = run()
        early, _ = run(early_stopping=True)
        mlp = [MLPClassifier(random_state=seed, max_iter=1000).fit(
            flat(X_train), y_train).score(flat(X_test), y_test) for seed in range(args.seeds)]
        logreg = LogisticRegression(max_iter=5000).fit(
            flat(X_train), y_train).score(flat(X_test), y_test)
        nn1 = KNeighborsClassifier(1).fit(flat(X_train), y_train).score(flat(X_test), y_test)
        gru = "skipped"
        if not args.no_gru and gru_cost(n, T) <= args.gru_max_cost:
            g = [gru_accuracy(data, seed) for seed in range(args.gru_seeds)]
            gru = f"{np.mean(g):.3f} ({min(g):.3f})"
        chance = np.bincount(np.unique(y_test, return_inverse=True)[1]).max() / len(y_test)
        print(f"{name:22s} {n:5d} {T:5d} {d:3d} {C:3d} | "
              f"{np.mean(default):.3f} ({min(default):.3f}) {np.mean(early):.3f} "
              f"({min(early):.3f}) {np.median(times):6.1f} | {np.mean(mlp):.3f} ({min(mlp):.3f}) "
              f"{logreg:6.3f} "
              f"{nn1:5.3f} {gru:>13s} | {chance:.3f}", flush=True)


if __name__ == "__main__":
    main()
