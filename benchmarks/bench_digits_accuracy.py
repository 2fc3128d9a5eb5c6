"""Test accuracy on digits read as sequences: FastGRNN against GRU, LSTM and MLP.

The split of the issue: first half of scikit-learn's digits to train, second half
(other writers) to test; each image is 8 timesteps (rows) of 8 pixels in [0, 1].
FastGRNN runs with its defaults (only ``hidden_size`` and ``random_state`` set);
the PyTorch GRU and LSTM (optional, ``pip install torch==2.13.0``) train with Adam
at the same learning rate and batch size for 60 epochs, keeping the last epoch;
MLPClassifier reads the 64 flattened pixels.

    python benchmarks/bench_digits_accuracy.py [--seeds 5]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves


def torch_rnn_accuracy(kind, hidden_size, seed, data, epochs=60):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    X_train, X_test, y_train, y_test = (torch.as_tensor(a) for a in data)
    rnn = getattr(torch.nn, kind)(X_train.shape[2], hidden_size, batch_first=True)
    head = torch.nn.Linear(hidden_size, 10)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=0.01)
    for _ in range(epochs):
        order = torch.randperm(len(X_train))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(
                head(rnn(X_train[idx])[0][:, -1]), y_train[idx]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = head(rnn(X_test)[0][:, -1]).argmax(1)
    return float((predicted == y_test).float().mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    X, y = load_digits_sequences(dtype=np.float32)
    data = split_halves(X, y)
    X_train, X_test, y_train, y_test = data
    rows = {}

    def record(name, fn):
        start = time.perf_counter()
        scores = [fn(seed) for seed in range(args.seeds)]
        rows[name] = (np.mean(scores), np.std(scores), time.perf_counter() - start)
        print(f"{name:28s} {rows[name][0]:.4f} +- {rows[name][1]:.4f}  "
              f"({rows[name][2]:.0f} s)", flush=True)

    warnings.simplefilter("ignore", ConvergenceWarning)
    for H in (32, 64, 128):
        record(f"FastGRNN H={H}", lambda s, H=H: FastGRNNClassifier(
            hidden_size=H, random_state=s).fit(X_train, y_train).score(X_test, y_test))
    flat_train, flat_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    record("MLPClassifier (100,) flat", lambda s: MLPClassifier(
        random_state=s, max_iter=500).fit(flat_train, y_train).score(flat_test, y_test))
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: GRU and LSTM rows skipped")
        return
    for kind in ("GRU", "LSTM"):
        for H in (32, 64):
            record(f"PyTorch {kind} H={H}",
                   lambda s, kind=kind, H=H: torch_rnn_accuracy(kind, H, s, data))


if __name__ == "__main__":
    main()
