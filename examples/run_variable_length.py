"""Variable-length sequences: pad, scale and classify
==================================================

Sequences often come as a ragged list, each with its own length. Here each 8x8
digit is read as a sequence of its rows, cut after a random 3 to 8 rows (as if
the digit were still being written). ``pad_sequences`` stacks the list into one
NaN-padded 3D array; a ``SequenceScaler`` standardises each channel over the real
timesteps only, and the ``FastGRNNClassifier`` stops each sequence at its last
real step. So the padded batch predicts exactly what each sequence predicts on
its own, at its own length.
"""

import numpy as np

from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline, pad_sequences


def main():
    X, y = load_digits_sequences()
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, len(X))
    sequences = [image[:t] * 16.0 for image, t in zip(X, lengths)]  # pixels 0-16
    print(f"{len(sequences)} sequences of 8 channels, lengths {lengths.min()}-{lengths.max()}")

    X_padded = pad_sequences(sequences)
    n_padding = np.isnan(X_padded).all(axis=2).sum()
    print(f"padded: shape {X_padded.shape}, {n_padding} padding timesteps")

    half = len(X) // 2
    model = make_fastgrnn_pipeline("sequence", hidden_size=32, early_stopping=True, random_state=0)
    model.fit(X_padded[:half], y[:half])
    scaler = model.named_steps["sequencescaler"]
    print(f"per-channel mean_ {np.round(scaler.mean_, 1)}")

    predicted = model.predict(X_padded[half:])
    test_lengths = lengths[half:]
    print(f"test accuracy {np.mean(predicted == y[half:]):.3f}")
    for t in range(3, 9):
        at_t = test_lengths == t
        print(f"  {t} rows seen: accuracy {np.mean(predicted[at_t] == y[half:][at_t]):.3f} "
              f"({at_t.sum()} sequences)")

    alone = np.array([model.predict_proba(seq[None])[0] for seq in sequences[half:]])
    gap = np.abs(alone - model.predict_proba(X_padded[half:])).max()
    print(f"each sequence alone vs padded batch: largest probability difference {gap:.1e}")


if __name__ == "__main__":
    main()
