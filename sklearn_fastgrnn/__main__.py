"""Command line: ``python -m sklearn_fastgrnn {train,predict,info,export}``.

``train`` with no ``--data`` trains on the bundled digits read as sequences (8
rows of 8 pixels; first half to train, second half to test), prints a line per
epoch and the test accuracy, parameter count, size and time, and writes
``model.joblib``.

Every failure ends with one ``error: ...`` line on stderr, saying what was
wrong and what to do, and a non-zero exit status: 2 for a malformed command
line (argparse), 1 otherwise. ``--debug`` (or ``SKLEARN_FASTGRNN_DEBUG=1``)
shows the traceback instead.
"""

import argparse
import csv
import io
import os
import sys
import time
import traceback
import warnings
import zipfile

import joblib
import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from . import FastGRNNClassifier
from ._files import check_writable, write_atomically
from .compression import QuantizedFastGRNN
from .datasets import load_digits_sequences, split_halves
from .export import FORMATS

DEBUG_VARIABLE = "SKLEARN_FASTGRNN_DEBUG"


def _one_line(text):
    return " ".join(str(text).split())


def _fail(message):
    """The ``SystemExit`` that prints ``error: message`` (one line) and exits with 1."""
    return SystemExit(f"error: {_one_line(message)}")


def _reason(exc):
    """The operating system's reason of an ``OSError``, without temporary file names."""
    return exc.strerror or str(exc)


# ----------------------------------------------------------------- input files
def _read_csv(path, target):
    """Rows of a CSV as (X 2D float, y or None); empty cells become NaN."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise _fail(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
            "CSV as UTF-8."
        ) from None
    except csv.Error as exc:
        raise _fail(f"{path} is not a readable CSV file ({exc}).") from None
    rows = [(number, row) for number, row in enumerate(lines, start=1) if row]
    if not rows:
        raise _fail(f"{path} is empty; a CSV needs a header line and one line per sample.")
    (_, header), rows = rows[0], rows[1:]
    if not rows:
        raise _fail(f"{path} has a header but no data lines; add one line per sample.")
    for number, row in rows:
        if len(row) != len(header):
            raise _fail(
                f"line {number} of {path} has {len(row)} values but the header has "
                f"{len(header)} columns; every line needs one value per column "
                "(leave a cell empty for NaN padding)."
            )
    if target is not None and target not in header:
        raise _fail(
            f"--target {target!r} is not a column of {path}; columns are "
            f"{header[:10]}{'...' if len(header) > 10 else ''}."
        )
    t = header.index(target) if target is not None else None
    y = None
    if t is not None:
        labels = [row[t] for _, row in rows]
        try:
            y = np.array([int(v) for v in labels])
        except ValueError:
            y = np.array(labels)
    columns = [i for i in range(len(header)) if i != t]
    X = np.empty((len(rows), len(columns)))
    for r, (number, row) in enumerate(rows):
        for j, i in enumerate(columns):
            value = row[i].strip()
            try:
                X[r, j] = float(value) if value else np.nan
            except ValueError:
                hint = (f" If {header[i]!r} is the label column, pass --target "
                        f"{header[i]}." if target is None else "")
                raise _fail(
                    f"line {number} of {path} has the non-numeric value {value!r} in "
                    f"column {header[i]!r}. Every column but --target must be a number "
                    f"(empty cells are NaN padding).{hint}"
                ) from None
    return X, y


def _read_npz(path):
    """Arrays ``X`` and ``y`` (or None) of a ``.npz`` file, read without pickle."""
    advice = "Write it with numpy.savez(path, X=np.asarray(X, dtype=float), y=np.asarray(y))."
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data)
            if "X" not in names:
                raise _fail(f"{path} has no array named 'X' (found {names}).")
            arrays = {}
            for name in ("X", "y"):
                if name in names:
                    try:
                        arrays[name] = data[name]
                    except ValueError:  # an object array: only pickle reads it
                        raise _fail(
                            f"array {name!r} of {path} holds Python objects (dtype "
                            "object), which are not read because unpickling can run "
                            f"code. {advice}"
                        ) from None
            return arrays["X"], arrays.get("y")
    except (zipfile.BadZipFile, EOFError, OSError, TypeError, ValueError) as exc:
        raise _fail(
            f"{path} is not a readable .npz archive of plain arrays ({_one_line(exc)}); "
            f"it may be truncated, or pickled (which is not read: it can run code). {advice}"
        ) from None


def _load_data(path, target, need_y):
    """X and y from a ``.npz`` (arrays ``X`` and ``y``) or a CSV file."""
    if not os.path.isfile(path):
        raise _fail(f"data file {path} does not exist.")
    if path.endswith(".npz"):
        X, y = _read_npz(path)
    elif path.endswith(".csv"):
        if need_y and target is None:
            raise _fail("a CSV needs --target, the name of the label column.")
        X, y = _read_csv(path, target)
    else:
        raise _fail(f"{path}: expected a .npz (arrays X, y) or a .csv file.")
    if need_y and y is None:
        raise _fail(f"{path} has no labels (array 'y' or --target column).")
    return X, y


# ---------------------------------------------------------------------- models
def _classifier_of(model):
    """The FastGRNNClassifier or QuantizedFastGRNN of a model, or None."""
    if isinstance(model, Pipeline) and model.steps:
        model = model.steps[-1][1]
    return model if isinstance(model, (FastGRNNClassifier, QuantizedFastGRNN)) else None


def _load_model(path, *, any_classifier=False):
    """The fitted model of a joblib file, or a one-line error saying what is wrong.

    Only files written by ``train`` (or ``joblib.dump`` of a fitted model) are
    accepted; ``any_classifier`` also takes any other fitted estimator with
    ``predict``.
    """
    if not os.path.isfile(path):
        raise _fail(f"model file {path} does not exist; train one first.")
    try:
        model = joblib.load(path)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of unpickling means "not a model"
        hint = (" It is a weights file: load it with sklearn_fastgrnn.export."
                "load_weights and joblib.dump the model." if path.endswith(".safetensors")
                else "")
        raise _fail(
            f"{path} is not a model file ({type(exc).__name__} while reading it with "
            f"joblib). Pass a file written by 'python -m sklearn_fastgrnn train' or by "
            f"joblib.dump of a fitted model.{hint}"
        ) from None
    clf = _classifier_of(model)
    if clf is None and not (any_classifier and hasattr(model, "predict")):
        raise _fail(
            f"{path} holds a {type(model).__name__}, not a FastGRNNClassifier, "
            "QuantizedFastGRNN or Pipeline ending in one. Pass a file written by "
            "'python -m sklearn_fastgrnn train'."
        )
    if not isinstance(clf, QuantizedFastGRNN):  # always fitted
        try:
            check_is_fitted(model)
            if clf is not None:
                check_is_fitted(clf, "coefs_")
        except (NotFittedError, TypeError):
            raise _fail(
                f"{path} holds an unfitted {type(model).__name__}; fit it before "
                "saving, or train one with 'python -m sklearn_fastgrnn train'."
            ) from None
    return model


def _write(path, data, what):
    """Write ``data`` to ``path`` atomically; a failure is an error line."""
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise _fail(f"could not write {what} to {path}: {_reason(exc)}. {path} was "
                    "left as it was.") from None


def _check_out(path, what):
    try:
        check_writable(path)
    except OSError as exc:
        raise _fail(f"can not write {what} to {path}: {exc}. Pass another --out.") from None


# -------------------------------------------------------------------- commands
def _check_labels(y, path):
    """Refuse labels that a stratified split and a classifier can not use."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise _fail(
            f"the labels of {path} hold one class only ({classes[0].tolist()!r}); a "
            "classifier needs samples of at least two classes."
        )
    if counts.min() < 2:
        raise _fail(
            f"class {classes[counts.argmin()].tolist()!r} of {path} has one sample; "
            "the stratified train/test split needs at least two of every class. Add "
            "samples or drop that class."
        )


def _train(args):
    from sklearn.model_selection import train_test_split

    _check_out(args.out, "the model")
    if args.data is None:
        X, y = load_digits_sequences(dtype=np.float32)
        X_train, X_test, y_train, y_test = split_halves(X, y)
        source = "digits as sequences (8 rows x 8 pixels), first half / second half"
    else:
        X, y = _load_data(args.data, args.target, need_y=True)
        if np.ndim(y) != 1 or len(X) != len(y):
            raise _fail(f"{args.data} has {len(X)} samples in X but y of shape "
                        f"{np.shape(y)}; y needs one label per sample.")
        _check_labels(y, args.data)
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
    print(f"test accuracy: {accuracy:.4f}")
    print(f"parameters: {clf.n_params_}")
    print(f"model size: {clf.model_size_bytes_ / 1024:.2f} KB")
    print(f"training time: {seconds:.1f} s ({clf.n_iter_} epochs)")
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    _write(args.out, buffer.getvalue(), "the model")
    print(f"model written to {args.out}")


def _check_width(model, X, path):
    """Say "pass --target" when a 2D X has one column more than the model reads."""
    clf = _classifier_of(model)
    if clf is not None and np.ndim(X) == 2 and X.shape[1] == clf.n_features_in_ + 1:
        raise _fail(
            f"{path} has {X.shape[1]} feature columns, one more than the model reads "
            f"({clf.n_features_in_}). If one of them is the label column, pass "
            "--target NAME to leave it out."
        )


def _predict(args):
    if args.out is not None:
        _check_out(args.out, "the predictions")
    model = _load_model(args.model, any_classifier=True)
    X, _ = _load_data(args.data, args.target, need_y=False)
    _check_width(model, X, args.data)
    predictions = model.predict(X)
    lines = "\n".join(str(p) for p in predictions) + "\n"
    if args.out is None:
        sys.stdout.write(lines)
    else:
        _write(args.out, lines.encode(), "the predictions")
        print(f"{len(predictions)} predictions written to {args.out}")


def _info(args):
    model = _load_model(args.model)
    clf = _classifier_of(model)
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
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(f"could not write {args.out}: {_reason(exc)}. Files already there "
                    "were left as they were.") from None
    print(f"exported {args.format} to {written}")


# ---------------------------------------------------------------------- parser
def _bounded(kind, low, high=None, *, closed=True):
    """An argparse type: ``kind`` in [low, high] (or (low, high) when not ``closed``)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n' * (kind is int)} "
                                             f"{kind.__name__}") from None
        below = value < low if closed else value <= low
        above = high is not None and (value > high if closed else value >= high)
        if below or above:
            if high is None:
                raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
            raise argparse.ArgumentTypeError(
                f"must be between {low} and {high}, both excluded, got {text}")
        return value
    return parse


def _add_debug(parser, default):
    parser.add_argument(
        "--debug", action="store_true", default=default,
        help=f"show the traceback of a failure (or set {DEBUG_VARIABLE}=1)",
    )


def build_parser():
    """The argument parser of ``python -m sklearn_fastgrnn``."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_fastgrnn",
        description="Train, inspect, use and export FastGRNN sequence classifiers.",
    )
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    positive = _bounded(int, 1)

    train = sub.add_parser(
        "train", help="train a model and write it with joblib",
        description="Train on the bundled digits (default) or on --data, report the "
        "test accuracy, size and time, and write the model.",
    )
    train.add_argument("--data", help=".npz with arrays X and y, or a CSV file")
    train.add_argument("--target", help="label column of a CSV (other columns: the "
                       "flattened sequence, time-major)")
    train.add_argument("--n-timesteps", type=positive, default=None,
                       help="timesteps per row of 2D data (default: one column per step)")
    train.add_argument("--test-size", type=_bounded(float, 0, 1, closed=False),
                       default=0.25, help="held-out fraction for --data (default 0.25)")
    train.add_argument("--hidden-size", type=positive, default=32)
    train.add_argument("--max-iter", type=positive, default=200)
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
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, help="file (safetensors, onnx) or directory (c)")
    export.set_defaults(func=_export)
    for command in (train, predict, info, export):
        _add_debug(command, argparse.SUPPRESS)  # after the command too; keeps the top one
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one ``warning: ...`` line, without the source line."""
    print(f"warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Entry point of ``python -m sklearn_fastgrnn`` and ``sklearn-fastgrnn``."""
    args = build_parser().parse_args(argv)
    if args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        try:
            return args.func(args)
        except SystemExit as exc:  # an explained failure: show what caused it too
            if exc.__context__ is not None:
                traceback.print_exception(exc.__context__)
            raise
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            raise _fail("interrupted; no file was written.") from None
        except MemoryError:
            raise _fail("out of memory; use less data or a smaller --hidden-size.") from None
        except (ValueError, TypeError) as exc:  # bad data or settings, explained
            raise _fail(exc) from None
        except OSError as exc:
            name = f"{exc.filename}: " if exc.filename else ""
            raise _fail(f"{name}{_reason(exc)}.") from None
        except Exception as exc:  # noqa: BLE001 - a bug: say how to see it
            raise _fail(
                f"unexpected {type(exc).__name__}: {exc}. Rerun with --debug (or "
                f"{DEBUG_VARIABLE}=1) for the traceback, and report it."
            ) from None


if __name__ == "__main__":
    main()
