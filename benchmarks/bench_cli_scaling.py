"""What the command line's input scaling does: digits as CSV, raw and x100 + 500.

Writes the bundled digits (8 rows of 8 pixels, flattened time-major, label
first) twice to a temporary directory, as they are and with every value
``x * 100 + 500``, and runs ``python -m sklearn_fastgrnn train --data ...
--target label --n-timesteps 8`` on each by default (the estimator's own
input scaling), with ``--scaler sequence`` (a scaler step in front), with
``--no-scale-input`` (no scaling at all), and the default with ``--int8``, over
``--seeds`` values of ``--random-state`` (the stratified 75/25 split and the
initialisation). Every other option keeps its default.

Run: ``python benchmarks/bench_cli_scaling.py [--seeds 3]``. Prints a Markdown
table of the median test accuracy of each row.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from sklearn_fastgrnn.datasets import load_digits_sequences

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = {
    "default (the estimator's scale_input)": [],
    "--scaler sequence": ["--scaler", "sequence"],
    "--no-scale-input": ["--no-scale-input"],
    "default --int8": ["--int8"],
}


def write_csv(path, X, y):
    flat = X.reshape(len(X), -1)
    lines = ["label," + ",".join(f"p{i}" for i in range(flat.shape[1]))]
    lines += [f"{label}," + ",".join(f"{v:g}" for v in row) for label, row in zip(y, flat)]
    path.write_text("\n".join(lines) + "\n")


def accuracy(data, options, seed, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_fastgrnn", "train", "--data", str(data), "--target",
         "label", "--n-timesteps", "8", "--random-state", str(seed), "--quiet",
         "--out", str(out), *options],
        capture_output=True, text=True, env=env, check=True,
    )
    return float(result.stdout.split("test accuracy: ")[1].split()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    X, y = load_digits_sequences()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        files = {"raw": tmp / "raw.csv", "x100 + 500": tmp / "shifted.csv"}
        write_csv(files["raw"], X, y)
        write_csv(files["x100 + 500"], X * 100 + 500, y)
        print(f"median test accuracy over {args.seeds} seeds\n")
        print("| options | " + " | ".join(files) + " |")
        print("|---|" + "---|" * len(files))
        for name, options in ROWS.items():
            cells = [np.median([accuracy(path, options, seed, tmp / "m.joblib")
                                for seed in range(args.seeds)]) for path in files.values()]
            print(f"| `{name}` | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
