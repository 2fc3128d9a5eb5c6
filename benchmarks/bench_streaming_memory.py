"""Peak memory of streaming ``partial_fit`` over a memmap dataset on disk.

Each run trains one epoch of a ``FastGRNNClassifier`` (hidden_size=16,
batch_size=64, float32) chunk by chunk over the first ``n`` sequences of a
``numpy.memmap`` file, in a fresh child process. Just before training, the child
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and reads its
resident set size; after training it reads the peak (``VmHWM``). The growth,
peak minus baseline, is the memory that training needs on top of the loaded
program. Streamed, it should depend on the chunk size and not on the dataset
size; the last row loads the whole dataset into memory and trains on it, for
contrast.

Linux only (``/proc``). Run: ``python benchmarks/bench_streaming_memory.py``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SEQUENCE_SHAPE = (8, 8)  # T, d
BYTES_PER_SEQUENCE = 4 * SEQUENCE_SHAPE[0] * SEQUENCE_SHAPE[1]  # float32
MIB = 2**20
# (chunk MiB, dataset size as a multiple of the chunk, streamed?)
RUNS = [(1, 10, True), (1, 40, True), (1, 160, True), (4, 10, True), (4, 40, True), (1, 40, False)]


def proc_status_kib(*keys):
    """Values (KiB) of ``keys`` in /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return [int(fields[key].split()[0]) for key in keys]


def write_dataset(x_path, y_path, n_sequences, chunk):
    """Random sequences labelled by the sign of their sum over channel 0."""
    rng = np.random.default_rng(0)
    with open(x_path, "wb") as fx, open(y_path, "wb") as fy:
        for start in range(0, n_sequences, chunk):
            X = rng.standard_normal((min(chunk, n_sequences - start), *SEQUENCE_SHAPE))
            X.astype(np.float32).tofile(fx)
            (X[:, :, 0].sum(axis=1) > 0).astype(np.int64).tofile(fy)


def train(x_path, y_path, n_sequences, chunk, streamed):
    """Child process: one epoch, then print the memory figures as JSON."""
    from sklearn_fastgrnn import FastGRNNClassifier

    clf = FastGRNNClassifier(hidden_size=16, batch_size=64, random_state=0)
    classes = np.array([0, 1])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    (baseline,) = proc_status_kib("VmRSS")
    if streamed:
        for start in range(0, n_sequences, chunk):
            n = min(chunk, n_sequences - start)
            X = np.memmap(x_path, np.float32, "r", offset=start * BYTES_PER_SEQUENCE,
                          shape=(n, *SEQUENCE_SHAPE))
            y = np.memmap(y_path, np.int64, "r", offset=start * 8, shape=(n,))
            clf.partial_fit(X, y, classes=classes)
            del X, y  # unmap the window before the next one
    else:
        X = np.fromfile(x_path, np.float32, n_sequences * int(np.prod(SEQUENCE_SHAPE)))
        y = np.fromfile(y_path, np.int64, n_sequences)
        clf.partial_fit(X.reshape(n_sequences, *SEQUENCE_SHAPE), y, classes=classes)
    (peak,) = proc_status_kib("VmHWM")
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, "seen": int(clf.t_)}))


def run_child(x_path, y_path, n_sequences, chunk, streamed):
    command = [sys.executable, __file__, "--child", str(x_path), str(y_path),
               str(n_sequences), str(chunk), str(int(streamed))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"training run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("This benchmark reads /proc/self/status: it runs on Linux only.")
    largest = max(mib * ratio * MIB // BYTES_PER_SEQUENCE for mib, ratio, _ in RUNS)
    header = ("mode", "chunk MiB", "dataset MiB", "dataset/chunk", "baseline RSS MiB",
              "peak RSS MiB", "growth MiB", "growth/chunk")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        x_path, y_path = Path(tmp) / "X.f32", Path(tmp) / "y.i64"
        write_dataset(x_path, y_path, largest, MIB // BYTES_PER_SEQUENCE)
        for chunk_mib, ratio, streamed in RUNS:
            chunk = chunk_mib * MIB // BYTES_PER_SEQUENCE
            n = chunk * ratio
            result = run_child(x_path, y_path, n, chunk, streamed)
            assert result["seen"] == n
            baseline, peak = result["baseline_kib"] / 1024, result["peak_kib"] / 1024
            growth = peak - baseline
            dataset = f"{n * BYTES_PER_SEQUENCE / MIB:.0f}"
            if streamed:
                cells = ["streamed", chunk_mib, dataset, ratio]
            else:
                cells = ["in memory", "-", dataset, "-"]
            cells += [f"{baseline:.0f}", f"{peak:.0f}", f"{growth:.1f}",
                      f"{growth / chunk_mib:.1f}" if streamed else "-"]
            rows.append("| " + " | ".join(map(str, cells)) + " |")
            print(f"done: {cells[0]}, {dataset} MiB", file=sys.stderr, flush=True)
    print(f"FastGRNN partial_fit, one epoch, sequences {SEQUENCE_SHAPE} float32, "
          f"hidden_size=16, batch_size=64; dataset MiB counts X (int64 labels add 1/32)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(rows))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, metavar=("X", "Y", "N", "CHUNK", "STREAMED"))
    args = parser.parse_args()
    if args.child:
        x, y, n, chunk, streamed = args.child
        train(x, y, int(n), int(chunk), bool(int(streamed)))
    else:
        main()
