"""Command line: ``python -m sklearn_fastgrnn {train,predict,info,export}``.

``train`` with no ``--data`` trains on the bundled digits read as sequences (8
rows of 8 pixels; first half to train, second half to test), prints a line per
epoch and the test accuracy, parameter count, size and time, and writes
``model.joblib``.
"""

import argparse
import csv
import io
import os
import sys
import time

import joblib
import numpy as np

from . import FastGRNNClassifier
from ._files import write_atomically
from .datasets import load_digits_sequences, split_halves


def _read_csv(path, target):
    """Rows of a CSV as (X 2D float, y or None); empty cells become NaN."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SystemExit(f"error: {path} is empty.") from None
        rows = [row for row in reader if row]
    if target is not None and target not in header:
        raise SystemExit(
            f"error: --target {target!r} is not a column of {path}; columns are "
            f"{header[:10]}{'...' if len(header) > 10 else ''}."
        )
    t = header.index(target) if target is not None else None
    y = None
    if t is not None:
        labels = [row[t] for row in rows]
        try:
            y = np.array([int(v) for v in labels])
        except ValueError:
            y = np.array(labels)
    try:
        X = np.array(
            [[float(v) if v.strip() else np.nan for i, v in enumerate(row) if i != t]
             for row in rows]
        )
    except ValueError as exc:
        raise SystemExit(
            f"error: {path} has a non-numeric feature value ({exc}). Every column "
            "but --target must be a number (empty cells are NaN padding)."
        ) from None
    return X, y


def _load_data(path, target, need_y):
    """X and y from a ``.npz`` (arrays ``X`` and ``y``) or a CSV file."""
    if not os.path.exists(path):
        raise SystemExit(f"error: data file {path} does not exist.")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise SystemExit(f"error: {path} has no array named 'X' (found {list(data)}).")
            X = data["X"]
            y = data["y"] if "y" in data else None
    elif path.endswith(".csv"):
        if need_y and target is None:
            raise SystemExit("error: a CSV needs --target, the name of the label column.")
        X, y = _read_csv(path, target)
    else:
        raise SystemExit(f"error: {path}: expected a .npz (arrays X, y) or a .csv file.")
    if need_y and y is None:
        raise SystemExit(f"error: {path} has no labels (array 'y' or --target column).")
    return X, y


def _dump_atomic(model, path):
    """Write ``model`` with joblib to ``path`` without ever leaving half a file."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    write_atomically(path, buffer.getvalue())


def _load_model(path):
    if not os.path.exists(path):
        raise SystemExit(f"error: model file {path} does not exist; train one first.")
    return joblib.load(path)


def _train(args):
    from sklearn.model_selection import train_test_split

    if args.data is None:
        X, y = load_digits_sequences(dtype=np.float32)
        X_train, X_test, y_train, y_test = split_halves(X, y)
        source = "digits as sequences (8 rows x 8 pixels), first half / second half"
    else:
        X, y = _load_data(args.data, args.target, need_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, stratify=y, random_state=args.random_state
        )
        source = f"{args.data}, stratified {1 - args.test_size:.0%} / {args.test_size:.0%}"
    clf = FastGRNNClassifier(
        hidden_size=args.hidden_size, n_timesteps=args.n_timesteps,
        max_iter=args.max_iter, random_state=args.random_state,
        verbose=0 if args.quiet else 1,
    )
    print(f"Training FastGRNN on {source}: {len(X_train)} train, {len(X_test)} test")
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    _dump_atomic(clf, args.out)
    print(f"test accuracy: {accuracy:.4f}")
    print(f"parameters: {clf.n_params_}")
    print(f"model size: {clf.model_size_bytes_ / 1024:.2f} KB")
    print(f"training time: {seconds:.1f} s ({clf.n_iter_} epochs)")
    print(f"model written to {args.out}")


def _predict(args):
    model = _load_model(args.model)
    X, _ = _load_data(args.data, args.target, need_y=False)
    predictions = model.predict(X)
    lines = "\n".join(str(p) for p in predictions) + "\n"
    if args.out is None:
        sys.stdout.write(lines)
    else:
        with open(args.out, "w") as f:
            f.write(lines)
        print(f"{len(predictions)} predictions written to {args.out}")


def _info(args):
    model = _load_model(args.model)
    clf = model.steps[-1][1] if hasattr(model, "steps") else model
    print(f"model: {type(model).__name__}")
    if clf is not model:
        print(f"steps: {[name for name, _ in model.steps]}")
    print(f"classes: {clf.classes_.tolist()}")
    print(
        f"input: {clf.n_timesteps_} timesteps x {clf.n_channels_} channels "
        f"({clf.n_features_in_} features in 2D)"
    )
    print(f"cell: hidden_size={clf.hidden_size}, gate={clf.gate_nonlinearity}, "
          f"update={clf.update_nonlinearity}")
    print(f"parameters: {clf.n_params_}")
    print(f"model size: {clf.model_size_bytes_} bytes ({clf.model_size_bytes_ / 1024:.2f} KB)")
    if hasattr(clf, "n_iter_"):  # a quantised model keeps no training history
        print(f"trained: {clf.n_iter_} epochs, final loss {clf.loss_:.5f}")
    print(clf.summary())


def _export(args):
    from .export import export_model

    model = _load_model(args.model)
    try:
        written = export_model(model, args.format, args.out)
    except (TypeError, ValueError, ImportError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"exported {args.format} to {written}")


def build_parser():
    """The argument parser of ``python -m sklearn_fastgrnn``."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_fastgrnn",
        description="Train, inspect, use and export FastGRNN sequence classifiers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a model and write it with joblib",
        description="Train on the bundled digits (default) or on --data, report the "
        "test accuracy, size and time, and write the model.",
    )
    train.add_argument("--data", help=".npz with arrays X and y, or a CSV file")
    train.add_argument("--target", help="label column of a CSV (other columns: the "
                       "flattened sequence, time-major)")
    train.add_argument("--n-timesteps", type=int, default=None,
                       help="timesteps per row of 2D data (default: one column per step)")
    train.add_argument("--test-size", type=float, default=0.25,
                       help="held-out fraction for --data (default 0.25)")
    train.add_argument("--hidden-size", type=int, default=32)
    train.add_argument("--max-iter", type=int, default=200)
    train.add_argument("--random-state", type=int, default=0)
    train.add_argument("--out", default="model.joblib", help="default: model.joblib")
    train.add_argument("--quiet", action="store_true", help="no line per epoch")
    train.set_defaults(func=_train)

    predict = sub.add_parser("predict", help="predict labels with a saved model")
    predict.add_argument("--model", required=True)
    predict.add_argument("--data", required=True, help=".npz with array X, or a CSV")
    predict.add_argument("--target", help="label column of a CSV to leave out")
    predict.add_argument("--out", help="file for the predictions (default: stdout)")
    predict.set_defaults(func=_predict)

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("--model", required=True)
    info.set_defaults(func=_info)

    export = sub.add_parser("export", help="write a deployment file of a saved model")
    export.add_argument("--model", required=True)
    export.add_argument("--format", required=True, choices=["safetensors", "onnx", "c"])
    export.add_argument("--out", required=True, help="file (safetensors, onnx) or directory (c)")
    export.set_defaults(func=_export)
    return parser


def main(argv=None):
    """Entry point of ``python -m sklearn_fastgrnn`` and ``sklearn-fastgrnn``."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
