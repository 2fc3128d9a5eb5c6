"""Out-of-core training: stream a memmap dataset through ``partial_fit``
=====================================================================

A dataset on disk can be larger than what a process may hold in memory. This
example writes 48,000 noisy copies of the digit sequences to a ``numpy.memmap``
file chunk by chunk, never holding more than one chunk of 2,000 sequences. It
then trains a ``FastGRNNClassifier`` with ``partial_fit``, one pass over the
file per epoch, chunk by chunk in a shuffled order: a first pass fits a
``SequenceScaler`` with ``partial_fit``; every later pass scales a chunk and
trains on it. The peak resident memory of the process is reported at the end.

Each chunk is a fresh ``numpy.memmap`` window on the file, dropped after use:
the pages of a mapping count in the resident set size while it is mapped, so one
mapping over the whole file would look (though the kernel may reclaim them) as
large as the file after an epoch.
"""

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.preprocessing import SequenceScaler

N_SEQUENCES = 48_000
CHUNK = 2_000
N_EPOCHS = 2
SEQUENCE_SHAPE = (8, 8)  # 8 timesteps (image rows) of 8 channels (pixels)


def peak_rss_mib():
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes or KiB


def write_dataset(x_path, y_path, X_source, y_source, rng):
    """Write noisy, rescaled copies of ``X_source`` chunk by chunk (0-16 pixels)."""
    with open(x_path, "wb") as fx, open(y_path, "wb") as fy:
        for start in range(0, N_SEQUENCES, CHUNK):
            n = min(CHUNK, N_SEQUENCES - start)
            pick = rng.integers(0, len(X_source), n)
            brightness = rng.uniform(8.0, 24.0, (n, 1, 1))
            X = X_source[pick] * brightness + rng.normal(0.0, 1.5, (n, *SEQUENCE_SHAPE))
            X.astype(np.float32).tofile(fx)
            y_source[pick].astype(np.int64).tofile(fy)


def memmap_chunks(x_path, y_path, order):
    """Yield ``(X, y)`` memmap windows of the chunks starting at ``order``."""
    row_bytes = np.dtype(np.float32).itemsize * np.prod(SEQUENCE_SHAPE)
    for start in order:
        n = min(CHUNK, N_SEQUENCES - start)
        X = np.memmap(x_path, np.float32, "r", offset=start * row_bytes, shape=(n, *SEQUENCE_SHAPE))
        y = np.memmap(y_path, np.int64, "r", offset=start * 8, shape=(n,))
        yield X, y


def main():
    rng = np.random.default_rng(0)
    X_digits, y_digits = load_digits_sequences(dtype=np.float32)
    X_train, X_test, y_train, y_test = split_halves(X_digits, y_digits)
    classes = np.unique(y_digits)
    with tempfile.TemporaryDirectory() as tmp:
        x_path, y_path = Path(tmp) / "X.f32", Path(tmp) / "y.i64"
        write_dataset(x_path, y_path, X_train, y_train, rng)
        dataset_mib = (x_path.stat().st_size + y_path.stat().st_size) / 2**20
        chunk_mib = dataset_mib * CHUNK / N_SEQUENCES
        print(f"dataset on disk: {N_SEQUENCES} sequences {SEQUENCE_SHAPE}, {dataset_mib:.1f} MiB; "
              f"chunk: {CHUNK} sequences, {chunk_mib:.2f} MiB")
        baseline = peak_rss_mib()

        starts = np.arange(0, N_SEQUENCES, CHUNK)
        scaler = SequenceScaler()
        for X, _ in memmap_chunks(x_path, y_path, starts):
            scaler.partial_fit(X)
        print(f"pass 0: channel means {np.round(scaler.mean_, 1)}")

        clf = FastGRNNClassifier(hidden_size=32, batch_size=64, random_state=0)
        test = (X_test * 16.0).astype(np.float32)  # the pixel scale of the stream
        for epoch in range(1, N_EPOCHS + 1):
            tic = time.perf_counter()
            for X, y in memmap_chunks(x_path, y_path, rng.permutation(starts)):
                clf.partial_fit(scaler.transform(X), y, classes=classes)
            accuracy = clf.score(scaler.transform(test), y_test)
            print(f"epoch {epoch}: {len(starts)} chunks in {time.perf_counter() - tic:.1f} s, "
                  f"last chunk loss {clf.loss_:.3f}, test accuracy {accuracy:.3f}")

    peak = peak_rss_mib()
    print(f"peak RSS: {baseline:.0f} MiB before training, {peak:.0f} MiB after "
          f"(+{peak - baseline:.1f} MiB for a {dataset_mib:.1f} MiB dataset, "
          f"{chunk_mib:.2f} MiB chunks)")


if __name__ == "__main__":
    main()
