"""Command line: ``python -m sklearn_fastgrnn {train,predict,info,export,digits}``.

``train`` with no ``--data`` trains on the bundled digits read as sequences (8
rows of 8 pixels; first half to train, second half to test), prints one line
about training (``--verbose``: one per epoch) and the test accuracy, parameter
count, size and time, and writes
``model.joblib``. The estimator standardises its input itself (its
``scale_input``, folded into the weights), so the model file is the estimator
alone unless ``--scaler`` puts a scaler step in front (a Pipeline); it passes
the estimator only the options given, so the others keep the estimator's
defaults; ``--int8`` writes the quantised model, behind the same scaler.

``--task`` says whether ``train`` fits a ``FastGRNNClassifier`` or a
``FastGRNNRegressor``; without it the targets decide (:func:`infer_task`): labels
that are not numbers, and whole numbers of at most ``MAX_INFERRED_CLASSES``
distinct values, are classes, other numbers are values to predict; a 2D ``y``
(``.npz`` only) of 0 and 1 is a multilabel indicator, any other a regression
of several outputs. ``train`` prints which task it chose and why.

A CSV's first row is its header unless ``--no-header``; ``--target`` and
``--id-column`` name a column by header name or 0-based index. ``--model``
takes a joblib file or a ``.safetensors`` weights file (read with
``load_weights``, never unpickled).

Every failure ends with one ``error: ...`` line on stderr, saying what was
wrong and what to do, and a non-zero exit status: 130 after Ctrl-C (at any
moment, and nothing is written), 2 for a malformed command line (argparse), 1
otherwise. ``--debug`` (or ``SKLEARN_FASTGRNN_DEBUG=1``) shows the traceback
instead.
"""

import argparse
import csv
import io
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import zipfile

# Ctrl-C: exit status 130 (128 + SIGINT, as a shell reports it), one line, and
# no file written; from the first line on, before the imports below take their
# second (the package root imports nothing heavy, see __init__.py)
INTERRUPTED_STATUS = 130
INTERRUPTED = "error: interrupted (Ctrl-C); nothing was written, files already there are kept."


def _exit_interrupted(signum=None, frame=None):
    print(INTERRUPTED, file=sys.stderr)
    raise SystemExit(INTERRUPTED_STATUS)


def _on_sigint(handler):
    """Install a SIGINT handler; the previous one, or None when none was installed:
    outside the main thread, or when SIGINT is ignored (a background job)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        return None
    return signal.signal(signal.SIGINT, handler)


_PREVIOUS_SIGINT = _on_sigint(_exit_interrupted)

import joblib  # noqa: E402 - after the Ctrl-C handler
import numpy as np  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from . import FastGRNNClassifier, FastGRNNRegressor, __version__  # noqa: E402
from ._channels import uses_changes  # noqa: E402
from ._files import check_writable, write_atomically  # noqa: E402
from ._nonlinearities import NONLINEARITIES  # noqa: E402
from .compression import QuantizedFastGRNN, quantize  # noqa: E402
from .datasets import load_digits_sequences, split_halves  # noqa: E402
from .export import FORMATS  # noqa: E402
from .preprocessing import make_fastgrnn_pipeline  # noqa: E402
from .regressor import LOSSES  # noqa: E402

if _PREVIOUS_SIGINT is not None:  # imported, not run: give the handler back
    signal.signal(signal.SIGINT, _PREVIOUS_SIGINT)

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
def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path, header):
    """``(names, rows)`` of a CSV: the header's column names (None without one)
    and the non-empty lines as ``(line number, cells)``, all of one width."""
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
        raise _fail(f"{path} is empty; a CSV needs a header line (unless --no-header) "
                    "and one line per sample.")
    names = None
    if header:
        (_, names), rows = rows[0], rows[1:]
        if not rows:
            raise _fail(f"{path} has a header but no data lines; add one line per "
                        "sample (or pass --no-header if that line is a sample).")
        if all(_is_number(name) for name in names):
            warnings.warn(
                f"the first line of {path} holds only numbers, yet it is read as the "
                "header (column names). If it is a sample, pass --no-header."
            )
    width = len(names) if header else len(rows[0][1])
    for number, row in rows:
        if len(row) != width:
            against = (f"the header has {width} columns" if header
                       else f"line {rows[0][0]} has {width}")
            raise _fail(
                f"line {number} of {path} has {len(row)} values but {against}; every "
                "line needs one value per column (leave a cell empty for NaN padding)."
            )
    return names, rows


def _column(spec, names, width, path, option):
    """The index of the CSV column ``spec``: a header name, or a 0-based index."""
    if names is not None and spec in names:
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        index = None
    if index is not None and -width <= index < width:
        return index % width
    indices = f"a 0-based index from 0 to {width - 1} (-1 for the last column)"
    if names is None:
        raise _fail(f"{option} {spec!r} is not a column of {path}, which has no header "
                    f"(--no-header) and {width} columns; pass {indices}.")
    raise _fail(
        f"{option} {spec!r} is not a column of {path}; columns are "
        f"{names[:10]}{'...' if len(names) > 10 else ''}, or pass {indices}."
    )


def _targets(values):
    """A target column: integers when every cell is one, else finite floats when
    every cell is one, else strings (labels)."""
    try:
        return np.array([int(v) for v in values])
    except ValueError:
        pass
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)
    return numbers if np.isfinite(numbers).all() else np.array(values)


def _read_table(path, target, id_column, header):
    """``(X, y, ids, id_name)`` of a CSV; ``y``/``ids`` are None without their column."""
    names, rows = _read_csv(path, header)
    width = len(rows[0][1])
    t = _column(target, names, width, path, "--target") if target is not None else None
    k = (_column(id_column, names, width, path, "--id-column")
         if id_column is not None else None)
    if t is not None and t == k:
        raise _fail(f"--target and --id-column name the same column of {path}; the key "
                    "column and the label column must differ.")
    y = _targets([row[t] for _, row in rows]) if t is not None else None
    ids = [row[k] for _, row in rows] if k is not None else None
    id_name = (names[k] if names is not None else "id") if k is not None else None
    columns = [i for i in range(width) if i not in (t, k)]
    if not columns:
        raise _fail(f"{path} has no feature columns besides --target and --id-column.")
    X = np.empty((len(rows), len(columns)))
    for r, (number, row) in enumerate(rows):
        for j, i in enumerate(columns):
            value = row[i].strip()
            try:
                X[r, j] = float(value) if value else np.nan
            except ValueError:
                name = repr(names[i]) if names is not None else f"{i} (0-based)"
                ref = names[i] if names is not None else i
                hint = "".join([
                    f" If {name} is the label column, pass --target {ref}."
                    if target is None else "",
                    f" If it is a key, pass --id-column {ref}." if id_column is None else "",
                ])
                raise _fail(
                    f"line {number} of {path} has the non-numeric value {value!r} in "
                    f"column {name}. Every column but --target and --id-column must "
                    f"be a number (empty cells are NaN padding).{hint}"
                ) from None
    return X, y, ids, id_name


def _npy_header(archive, member):
    """``(shape, dtype, data bytes in the member)`` of an ``.npy`` member of a zip
    archive, read from its header alone (nothing is allocated for the data)."""
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read(f)
        return shape, dtype, archive.getinfo(member).file_size - f.tell()


def _read_npz(path):
    """Arrays ``X`` and ``y`` (or None) of a ``.npz`` file, read without pickle.

    The header of each array is read first: an object array (which only pickle
    reads) and an array whose header claims more data than the archive holds
    (a damaged or truncated file) are refused before anything is allocated.
    """
    advice = "Write it with numpy.savez(path, X=np.asarray(X, dtype=float), y=np.asarray(y))."
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
            if "X" not in names:
                raise _fail(f"{path} has no array named 'X' (found {names}).")
            for name in ("X", "y"):
                if name not in names:
                    continue
                shape, dtype, available = _npy_header(archive, name + ".npy")
                if dtype.hasobject:
                    raise _fail(
                        f"array {name!r} of {path} holds Python objects (dtype object), "
                        "which are not read because unpickling can run code. " + advice
                    )
                needed = math.prod(shape) * dtype.itemsize
                if needed > available:
                    raise _fail(
                        f"array {name!r} of {path} is damaged or truncated: its header "
                        f"says shape {shape} of {dtype} ({_bytes(needed)}), but the "
                        f"archive holds {_bytes(max(available, 0))} of it. " + advice
                    )
        with np.load(path, allow_pickle=False) as data:
            return data["X"], (data["y"] if "y" in names else None)
    except (zipfile.BadZipFile, EOFError, OSError, TypeError, ValueError) as exc:
        raise _fail(
            f"{path} is not a readable .npz archive of plain arrays ({_one_line(exc)}); "
            f"it may be truncated, or pickled (which is not read: it can run code). {advice}"
        ) from None


def _bytes(n):
    """``n`` bytes in words: "812 bytes", "3.1 MB", "80.0 GB"."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return _count(n, "byte")


def _load_data(path, args, need_y):
    """``(X, y, ids, id_name)`` from a ``.npz`` (arrays ``X`` and ``y``) or a CSV file."""
    if not os.path.isfile(path):
        raise _fail(f"data file {path} does not exist.")
    if path.endswith(".npz"):
        if args.id_column is not None:
            raise _fail(f"--id-column names a column of a CSV file; {path} is a .npz "
                        "archive.")
        X, y = _read_npz(path)
        ids = id_name = None
    elif path.endswith(".csv"):
        if need_y and args.target is None:
            raise _fail("a CSV needs --target, the name (or 0-based index) of the label "
                        "column.")
        X, y, ids, id_name = _read_table(path, args.target, args.id_column,
                                         not args.no_header)
    else:
        raise _fail(f"{path}: expected a .npz (arrays X, y) or a .csv file.")
    if need_y and y is None:
        raise _fail(f"{path} has no labels (array 'y' or --target column).")
    return X, y, ids, id_name


# ---------------------------------------------------------------------- models
ESTIMATORS = (FastGRNNClassifier, FastGRNNRegressor, QuantizedFastGRNN)


def _estimator_of(model):
    """The FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN of a model, or None."""
    if isinstance(model, Pipeline) and model.steps:
        model = model.steps[-1][1]
    return model if isinstance(model, ESTIMATORS) else None


def _is_weights_file(path):
    """True when ``path`` starts as a safetensors file does: an 8-byte
    little-endian header length that fits in the file, then ``{``."""
    with open(path, "rb") as f:
        start = f.read(9)
    return (len(start) == 9 and start[8:9] == b"{"
            and int.from_bytes(start[:8], "little") <= os.path.getsize(path) - 8)


def _read_model(path):
    """The model of a weights file (never unpickled) or of a joblib file."""
    if path.endswith(".safetensors") or _is_weights_file(path):
        from .export import load_weights

        try:
            return load_weights(path)
        except ImportError as exc:
            raise _fail(exc) from None
        except ValueError as exc:
            raise _fail(
                f"{exc} Pass a weights file written by 'python -m sklearn_fastgrnn "
                "export --format safetensors' (or save_weights), or a joblib file."
            ) from None
    try:
        return joblib.load(path)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of unpickling means "not a model"
        raise _fail(
            f"{path} is not a model file ({type(exc).__name__} while reading it with "
            "joblib). Pass a .safetensors weights file, or a file written by 'python "
            "-m sklearn_fastgrnn train' or by joblib.dump of a fitted model."
        ) from None


def _load_model(path, *, any_estimator=False):
    """The fitted model of a joblib or weights file, or a one-line error saying what
    is wrong.

    A ``.safetensors`` file (by name or content) is read with ``load_weights``,
    without pickle; any other file with joblib, which accepts only files written
    by ``train`` (or ``joblib.dump`` of a fitted model); ``any_estimator`` also
    takes any other fitted estimator with ``predict``.
    """
    if not os.path.isfile(path):
        raise _fail(f"model file {path} does not exist; train one first.")
    model = _read_model(path)
    clf = _estimator_of(model)
    if clf is None and not (any_estimator and hasattr(model, "predict")):
        raise _fail(
            f"{path} holds a {type(model).__name__}, not a FastGRNNClassifier, "
            "FastGRNNRegressor, QuantizedFastGRNN or Pipeline ending in one. Pass a "
            "file written by "
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
    _check_damage(model, clf, path)
    return model


def _check_damage(model, clf, path):
    """Refuse a model file whose weights or scaler statistics are damaged (NaN,
    infinite, shapes that do not match), as ``load_weights`` refuses such a file."""
    from .export.weights import SCALERS, check_fitted_model, check_scaler

    steps = model.steps[:-1] if isinstance(model, Pipeline) else []
    try:
        if isinstance(clf, (FastGRNNClassifier, FastGRNNRegressor)):
            check_fitted_model(clf, "it would predict NaN or fail")
        for _, step in steps:
            if type(step) in SCALERS.values():
                check_scaler(step, "it would scale to NaN")
    except ValueError as exc:
        raise _fail(f"{path} holds a damaged model: {exc}") from None


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
        raise _fail(f"can not write {what} to {path}: {_reason(exc)}. Pass another "
                    "--out.") from None


# -------------------------------------------------------------------- commands
CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)  # --task choices
# whole-number targets with at most this many distinct values are inferred to be
# classes (enough for the many-class sets of the accuracy suite); more are values
MAX_INFERRED_CLASSES = 100


def infer_task(y):
    """The task of targets ``y`` when ``--task`` is not given, and why.

    - a 2D ``y``: a multilabel indicator (classification) when every entry is 0
      or 1, else several outputs to regress;
    - labels that are not numbers (strings, booleans): classification;
    - numbers with a fractional part, or NaN: regression;
    - whole numbers: classification when there are at most
      ``MAX_INFERRED_CLASSES`` distinct values, else regression.

    Returns
    -------
    task : {"classification", "regression"}
    reason : str
        The rule that decided, in words, for the output of ``train``.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        if y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all():
            return CLASSIFICATION, (f"y has {y.shape[1]} columns of 0 and 1: a multilabel "
                                    "indicator")
        return REGRESSION, f"y has {y.shape[1]} columns of numbers: several outputs"
    if y.dtype.kind not in "iuf":
        return CLASSIFICATION, "y holds labels that are not numbers"
    values = np.unique(y)
    whole = np.isfinite(values).all() and (values == np.round(values)).all()
    if y.dtype.kind == "f" and not whole:
        return REGRESSION, "y holds numbers with a fractional part"
    if len(values) > MAX_INFERRED_CLASSES:
        return REGRESSION, (f"y holds {len(values)} distinct whole numbers, more than the "
                            f"{MAX_INFERRED_CLASSES} read as classes")
    return CLASSIFICATION, (f"y holds {len(values)} distinct whole numbers, at most "
                            f"{MAX_INFERRED_CLASSES} are read as classes")


def _task(args, y, source):
    """``(task, line)``: the task of ``train``, checked against ``y`` and the options,
    and the line that says which it is."""
    if args.task is not None:
        task, line = args.task, f"task: {args.task} (--task)"
    else:
        task, reason = infer_task(y)
        other = REGRESSION if task == CLASSIFICATION else CLASSIFICATION
        line = f"task: {task} (inferred: {reason}; --task {other} to override)"
    given = "--task regression" if args.task else f"the task inferred from {source}"
    if task == REGRESSION:
        if np.asarray(y).dtype.kind not in "biuf":
            first = next(v for v in np.ravel(y) if not _is_number(str(v)))
            raise _fail(
                f"{given} needs numbers to predict, but the targets of {source} hold "
                f"{str(first)!r}. Pass --task classification to predict labels."
            )
        if args.class_weight is not None:
            raise _fail(f"--class-weight weighs classes, but {given} is regression. "
                        "Pass --task classification, or leave --class-weight out.")
    elif args.loss is not None:
        given = "--task classification" if args.task else f"the task inferred from {source}"
        raise _fail(f"--loss chooses the loss of a regression, but {given} is "
                    "classification. Pass --task regression, or leave --loss out.")
    return task, line


def _check_labels(y, path, split=True, inferred=False):
    """Refuse labels that a stratified split (when ``split``) and a classifier
    can not use."""
    classes, counts = np.unique(y, return_counts=True)
    regression = (" If y holds values to predict rather than classes, pass --task "
                  "regression." if inferred else "")
    if len(classes) < 2:
        raise _fail(
            f"the labels of {path} hold one class only ({classes[0].tolist()!r}); a "
            "classifier needs samples of at least two classes." + regression
        )
    if split and counts.min() < 2:
        raise _fail(
            f"class {classes[counts.argmin()].tolist()!r} of {path} has one sample; "
            "the stratified train/test split needs at least two of every class. Add "
            "samples, drop that class, or train on all the data (--test-size 0)."
            + regression
        )


SCALERS = {  # --scaler: (make_fastgrnn_pipeline's scaler, what it does)
    "sequence": ("sequence", "SequenceScaler, each channel to mean 0 and variance 1 "
                 "over all timesteps"),
    "standard": ("standard", "StandardScaler, each column of the 2D layout to mean 0 "
                 "and variance 1"),
    "none": (None, "the estimator's own (scale_input: each channel to mean 0 and "
             "variance 1 over all timesteps, folded into its weights)"),
}


def _estimator_params(args, task):
    """Parameters of the estimator: those given, the others its defaults."""
    given = {
        "hidden_size": args.hidden_size, "batch_size": args.batch_size,
        "learning_rate_init": args.learning_rate, "max_iter": args.max_iter,
        "early_stopping": args.early_stopping, "scale_input": args.scale_input,
        "validation_fraction": args.validation_fraction,
        "w_rank": args.w_rank, "u_rank": args.u_rank,
        "sparsity_w": args.sparsity, "sparsity_u": args.sparsity,
        "gate_nonlinearity": args.gate_nonlinearity,
        "update_nonlinearity": args.update_nonlinearity,
        "dtype": args.dtype,
    }
    if task == CLASSIFICATION:
        given["class_weight"] = args.class_weight
    else:
        given["loss"] = args.loss
    params = {name: value for name, value in given.items() if value is not None}
    return dict(params, random_state=args.random_state, verbose=int(args.verbose))


def _class_weight(text):
    """``--class-weight``: "balanced", or ``LABEL=WEIGHT`` pairs separated by commas."""
    if text == "balanced":
        return text
    weights = {}
    for pair in text.split(","):
        label, equals, weight = pair.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = None
        if not equals or not label.strip() or value is None or not (
            math.isfinite(value) and value > 0
        ):
            raise argparse.ArgumentTypeError(
                f"expected 'balanced' or LABEL=WEIGHT pairs with positive weights, "
                f"separated by commas (e.g. 0=1,1=5); got {text!r}")
        label = label.strip()
        weights[int(label) if label.lstrip("-").isdigit() else label] = value
    return weights


def _quantized(model, X_train):
    """The int8 model of a fitted estimator or Pipeline, its scaler kept in front."""
    try:
        if not isinstance(model, Pipeline):
            return quantize(model, X_train)
        preprocess = model[:-1]
        q = quantize(model[-1], preprocess.transform(X_train))
    except TypeError as exc:  # a model quantize does not take
        raise _fail(f"--int8: {exc} Nothing was written; train without --int8.") from None
    return Pipeline([*model.steps[:-1], ("quantizedfastgrnn", q)])


def _split(X, y, args, stratify):
    """``(X_train, X_test, y_train, y_test, what)``: the held-out split of
    ``--test-size`` (stratified by class when ``stratify``; none at 0), or the
    digits' halves by default."""
    from sklearn.model_selection import train_test_split

    if args.test_size == 0:
        return X, X[:0], y, y[:0], "all of it (--test-size 0: no test split)"
    if args.data is None and args.test_size is None:
        return (*split_halves(X, y), "first half / second half")
    size = 0.25 if args.test_size is None else args.test_size
    return (*train_test_split(X, y, test_size=size, stratify=y if stratify else None,
                              random_state=args.random_state),
            f"{'stratified' if stratify else 'random'} {1 - size:.0%} / {size:.0%}")


def _training_summary(clf, seconds):
    """One line: epochs, time, why training stopped and the weights kept."""
    reason = getattr(clf, "stop_reason_", None)
    line = f"training: {_count(clf.n_iter_, 'epoch')} in {seconds:.1f} s"
    if reason:
        line += f"; {reason}"
    if getattr(clf, "best_epoch_", None) is not None:
        line += f"; kept {clf._kept_weights_text()}"
    return line


def _make_model(args, task, n_timesteps):
    """The Pipeline of the scaler and the estimator (or the estimator alone)."""
    scaler = SCALERS[args.scaler][0]
    params = _estimator_params(args, task)
    if task == CLASSIFICATION:
        model = make_fastgrnn_pipeline(scaler=scaler, n_timesteps=n_timesteps, **params)
    else:  # the same scaling steps, then the regressor
        steps = make_fastgrnn_pipeline(scaler=scaler, n_timesteps=n_timesteps).steps[:-1]
        model = Pipeline([*steps, ("fastgrnnregressor",
                                   FastGRNNRegressor(n_timesteps=n_timesteps, **params))])
    return model if scaler is not None else model[-1]


def _test_scores(model, X_test, y_test, task):
    """The test results: ``{"accuracy": ...}``, or ``{"R²": ..., "RMSE": ...}``."""
    predictions = model.predict(X_test)
    if task == CLASSIFICATION:  # a multilabel row is right when every label is
        right = np.reshape(predictions == y_test, (len(y_test), -1)).all(axis=1)
        return {"accuracy": float(np.mean(right))}
    from sklearn.metrics import r2_score

    y_test = np.asarray(y_test, dtype=float)
    errors = np.asarray(predictions, dtype=float) - y_test
    r2 = r2_score(y_test, predictions) if len(y_test) > 1 else float("nan")
    return {"R²": float(r2), "RMSE": float(np.sqrt(np.mean(errors**2)))}


def _scores_text(scores, separator=": "):
    return ", ".join(f"{name}{separator}{value:.4f}" if name != "RMSE" else
                     f"{name}{separator}{value:.4g}" for name, value in scores.items())


def _train(args):
    _check_out(args.out, "the model")
    n_timesteps = args.n_timesteps
    if args.data is None:
        X, y = load_digits_sequences(dtype=np.float32)
        if args.scaler == "standard":  # a StandardScaler reads the 2D layout
            X, n_timesteps = X.reshape(len(X), -1), n_timesteps or X.shape[1]
        source = "digits as sequences (8 rows x 8 pixels)"
        task, task_line = _task(args, y, "the digits")
    else:
        X, y, _, _ = _load_data(args.data, args, need_y=True)
        if np.ndim(y) not in (1, 2) or len(X) != len(y):
            raise _fail(f"{args.data} has {len(X)} samples in X but y of shape "
                        f"{np.shape(y)}; y needs one target per sample (or, 2D, one row "
                        "of targets per sample).")
        if args.scaler == "standard" and np.ndim(X) == 3:
            n, T, d = np.shape(X)
            raise _fail(
                f"--scaler standard scales each column of 2D data, but X of {args.data} "
                f"is 3D {(n, T, d)}. Use --scaler sequence (per channel) or no --scaler, "
                f"or save X as 2D {(n, T * d)} and pass --n-timesteps {T}."
            )
        task, task_line = _task(args, y, args.data)
        if task == CLASSIFICATION and np.ndim(y) == 1:
            _check_labels(y, args.data, split=args.test_size != 0,
                          inferred=args.task is None)
        source = args.data
    stratify = task == CLASSIFICATION and np.ndim(y) == 1
    X_train, X_test, y_train, y_test, split = _split(X, y, args, stratify)
    model = _make_model(args, task, n_timesteps)
    print(f"Training FastGRNN on {source}, {split}: {len(X_train)} train, "
          f"{len(X_test)} test")
    print(task_line)
    scaling = SCALERS[args.scaler][1]
    if args.scaler == "none" and args.scale_input is False:
        scaling = "none, the model reads the values as they are (--no-scale-input)"
    print(f"input scaling: {scaling}")
    start = time.perf_counter()
    model.fit(X_train, y_train)
    _ctrl_c.check()  # the estimator returns what it has on Ctrl-C: write nothing
    seconds = time.perf_counter() - start
    print(_training_summary(_estimator_of(model), seconds))
    tested = len(X_test) > 0
    scores = _test_scores(model, X_test, y_test, task) if tested else None
    note = ""
    if task == CLASSIFICATION and np.ndim(y) == 2:
        note = " (subset accuracy: every label of a sample right)"
    elif task == REGRESSION and np.ndim(y) == 2:
        note = " (R² averaged over the outputs, RMSE over all of them)"
    if args.int8:
        model, float_scores = _quantized(model, X_train), scores
        if tested:
            scores = _test_scores(model, X_test, y_test, task)
            print(f"test {_scores_text(scores)} (int8; {_scores_text(float_scores, ' ')} "
                  f"before quantisation){note}")
    elif tested:
        print(f"test {_scores_text(scores)}{note}")
    if not tested:
        measure = "accuracy" if task == CLASSIFICATION else "R² and RMSE"
        print(f"test {measure}: not measured (--test-size 0 trains on all the data)")
    clf = _estimator_of(model)
    print(f"parameters: {clf.n_params_}")
    print(f"model size: {clf.model_size_bytes_ / 1024:.2f} KB"
          + (" (int8)" if args.int8 else ""))
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    _write(args.out, buffer.getvalue(), "the model")
    print(f"model written to {args.out}")


def _digits(args):
    """Write the bundled digits as a data file: arrays X, y (.npz) or a CSV with
    a key, a label and 64 value columns (8 timesteps of 8 pixels, time-major)."""
    _check_out(args.out, "the digits")
    X, y = load_digits_sequences()
    if args.out.endswith(".npz"):
        buffer = io.BytesIO()
        np.savez(buffer, X=X, y=y)
        data = buffer.getvalue()
    elif args.out.endswith(".csv"):
        flat = X.reshape(len(X), -1)
        header = ["key", "label", *(f"t{t}c{c}" for t in range(8) for c in range(8))]
        data = _csv_text(header, [[f"digit{i}", str(label), *(repr(float(v)) for v in row)]
                                  for i, (label, row) in enumerate(zip(y, flat))]).encode()
    else:
        raise _fail(f"--out {args.out}: name a .npz or a .csv file.")
    _write(args.out, data, "the digits")
    print(f"{len(X)} digits (8 timesteps x 8 channels, labels 0-9) written to {args.out}")


def _check_width(model, X, path):
    """Say "pass --target" when a 2D X has one column more than the model reads."""
    clf = _estimator_of(model)
    if clf is not None and np.ndim(X) == 2 and X.shape[1] == clf.n_features_in_ + 1:
        raise _fail(
            f"{path} has {X.shape[1]} feature columns, one more than the model reads "
            f"({clf.n_features_in_}). If one of them is the label column, pass "
            "--target NAME to leave it out (a key column: --id-column NAME)."
        )


def _csv_text(header, rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def _prediction_rows(model, predictions):
    """``(header, rows)`` of 2D predictions (several outputs, or a multilabel
    indicator): one column per output, named after the label (multilabel) or
    ``output_<j>``."""
    classes = getattr(_estimator_of(model), "classes_", None)
    width = predictions.shape[1]
    if classes is not None and len(classes) == width:
        header = [str(c) for c in classes]
    else:
        header = [f"output_{j}" for j in range(width)]
    return header, [[str(v) for v in row] for row in predictions]


def _predict(args):
    if args.out is not None:
        _check_out(args.out, "the predictions")
    model = _load_model(args.model, any_estimator=True)
    if args.proba and not hasattr(model, "predict_proba"):
        if isinstance(_estimator_of(model), FastGRNNRegressor):
            raise _fail(f"the model of {args.model} is a FastGRNNRegressor: it predicts "
                        "values, not class probabilities. Predict without --proba.")
        raise _fail(f"the {type(model).__name__} of {args.model} has no "
                    "predict_proba; predict without --proba.")
    X, _, ids, id_name = _load_data(args.data, args, need_y=False)
    _check_width(model, X, args.data)
    key = [[i] for i in ids] if ids is not None else [[] for _ in range(len(X))]
    id_header = [id_name] if ids is not None else []
    if args.proba:
        proba = model.predict_proba(X)
        header = [*id_header, *map(str, model.classes_)]
        text = _csv_text(header, [k + [str(float(p)) for p in row]
                                  for k, row in zip(key, proba)])
        what = "rows of class probabilities"
    else:
        predictions = model.predict(X)
        if np.ndim(predictions) == 2:  # several outputs, or a multilabel indicator
            header, rows = _prediction_rows(model, predictions)
            text = _csv_text([*id_header, *header], [k + r for k, r in zip(key, rows)])
        elif ids is None:
            text = "\n".join(str(p) for p in predictions) + "\n"
        else:
            text = _csv_text([id_name, "prediction"],
                             [k + [str(p)] for k, p in zip(key, predictions)])
        what = "predictions"
    if args.out is None:
        sys.stdout.write(text)
    else:
        _write(args.out, text.encode(), "the predictions")
        print(f"{len(X)} {what} written to {args.out}")


def _count(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _info(args):
    model = _load_model(args.model)
    clf = _estimator_of(model)
    print(f"model: {type(model).__name__}")
    if clf is not model:
        print(f"steps: {[name for name, _ in model.steps]}")
    activation = getattr(clf, "out_activation_", "softmax")
    if isinstance(clf, FastGRNNRegressor):
        print(f"task: regression, {_count(clf.n_outputs_, 'output')}, loss={clf.loss}"
              + (" (predictions are exp of the outputs)" if activation == "exp" else ""))
    elif activation == "logistic":
        print(f"task: multilabel classification, {_count(len(clf.classes_), 'label')} "
              f"{clf.classes_.tolist()}, one sigmoid output each")
    else:
        print(f"classes: {clf.classes_.tolist()}")
    print(
        f"input: {_count(clf.n_timesteps_, 'timestep')} x "
        f"{_count(clf.n_channels_, 'channel')} "
        f"({_count(clf.n_features_in_, 'feature')} in 2D)"
    )
    print(f"cell: hidden_size={clf.hidden_size_}, gate={clf.gate_nonlinearity}, "
          f"update={clf.update_nonlinearity}, readout={getattr(clf, 'readout', 'last')}, "
          f"window={getattr(clf, 'window_', 1)}, "
          f"window_phases={getattr(clf, 'window_phases_', 1)}, "
          f"envelope_width={getattr(clf, 'envelope_width_', 0)}, "
          f"change_channels={uses_changes(clf)}")
    print(f"parameters: {clf.n_params_}")
    if hasattr(clf, "n_iter_"):  # a quantised or weights-file model has no history
        print(f"trained: {clf.n_iter_} epochs, final loss {clf.loss_:.5f}")
    print(clf.summary())
    print("The model size counts the weights of the model that a deployment "
          "stores (EdgeML's accounting: 4 bytes a float32, 1 an int8, and a sparse "
          "matrix its non-zeros with their indices).")
    size = os.path.getsize(args.model)
    if args.model.endswith(".safetensors") or _is_weights_file(args.model):
        print(f"file: {args.model}, {size} bytes: a weights file, every tensor dense in "
              "its training dtype, with JSON metadata (no optimiser state).")
    else:
        print(f"file: {args.model}, {size} bytes: the joblib file also holds the "
              "settings and, for a float model, the optimiser state and training "
              "history that partial_fit continues from.")


def _export(args):
    from .export import export_model

    model = _load_model(args.model)
    clf = _estimator_of(model)
    if isinstance(clf, QuantizedFastGRNN) and args.format != "c":
        raise _fail(f"{args.model} is an int8 model (--int8), whose integer arithmetic "
                    "only --format c reproduces.")
    if clf is not model and args.format == "c":
        raise _fail(
            f"{args.model} scales its input first (steps "
            f"{[name for name, _ in model.steps]}) and the C code runs the model "
            "alone, so it would read unscaled data. For C, train without --scaler "
            "(and --int8 for integer-only arithmetic); onnx and safetensors keep the "
            "scaler."
        )
    try:
        written = export_model(model, args.format, args.out)
    except (TypeError, ValueError, ImportError) as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(f"could not write {args.out}: {_reason(exc)}. Files already there "
                    "were left as they were.") from None
    print(f"exported {args.format} to {written}")


# ---------------------------------------------------------------------- parser
def _bounded(kind, low, high=None, *, closed="both"):
    """An argparse type: ``kind`` from ``low`` to ``high`` (None: no upper bound);
    ``closed`` is "both", "neither", "left" or "right": which bounds are allowed."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n' * (kind is int)} "
                                             f"{kind.__name__}") from None
        if not math.isfinite(value):  # float("nan") and float("inf") parse
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        low_ok = closed in ("both", "left")
        high_ok = closed in ("both", "right")
        below = value < low if low_ok else value <= low
        above = high is not None and (value > high if high_ok else value >= high)
        if below or above:
            rule = f"{'>=' if low_ok else '>'} {low}"
            if high is not None:
                rule += f" and {'<=' if high_ok else '<'} {high}"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


def _or_auto(parse):
    """An argparse type: "auto", or what ``parse`` reads."""
    def parse_or_auto(text):
        return "auto" if text == "auto" else parse(text)
    return parse_or_auto


def _add_debug(parser, default):
    parser.add_argument(
        "--debug", action="store_true", default=default,
        help=f"show the traceback of a failure (or set {DEBUG_VARIABLE}=1)",
    )


def _add_data(parser, labels):
    """``--data`` and the options that say how to read a CSV."""
    parser.add_argument(
        "--data", required=not labels, help=(
            f".npz with arrays X{' and y' if labels else ''}, or a CSV file: its first "
            "row is the header (column names) unless --no-header, and every column but "
            "--target and --id-column is a number of the flattened sequence, time-major"
            + (" (default: the bundled digits)" if labels else "")
        ),
    )
    parser.add_argument(
        "--target", metavar="COLUMN", help=("label column of a CSV" if labels else
                          "label column of a CSV, to leave out")
        + ": its header name or 0-based index (-1 for the last)",
    )
    parser.add_argument(
        "--id-column", metavar="COLUMN",
        help="key column of a CSV (name or 0-based index), left out of the features"
        + ("" if labels else " and written first in the output"),
    )
    parser.add_argument("--no-header", action="store_true",
                        help="the CSV's first row is a sample, not column names")


def _add_training(parser):
    """The options of the estimator users tune; unset ones keep its defaults."""
    positive = _bounded(int, 1)
    fraction = _bounded(float, 0, 1, closed="neither")
    group = parser.add_argument_group(
        "training", "FastGRNNClassifier or FastGRNNRegressor parameters; those not "
        "given keep the estimator's defaults")
    group.add_argument("--hidden-size", type=_or_auto(positive), metavar="N|auto",
                       help="hidden state size (auto: 32, or 64 for more than 10 classes "
                       "or targets)")
    group.add_argument("--max-iter", type=_or_auto(positive), metavar="N|auto",
                       help="most epochs")
    group.add_argument("--batch-size", type=_or_auto(positive), metavar="N|auto",
                       help="samples per step")
    group.add_argument("--learning-rate", type=_bounded(float, 0, closed="neither"),
                       help="initial learning rate (learning_rate_init)")
    group.add_argument("--scale-input", action=argparse.BooleanOptionalAction,
                       help="the estimator standardises each channel and folds the map "
                       "into its weights (scale_input; on by default)")
    group.add_argument("--early-stopping", action=argparse.BooleanOptionalAction,
                       help="stop when the score on a validation split stops improving "
                       "and keep the best epoch's weights")
    group.add_argument("--validation-fraction", type=fraction,
                       help="share of the training data held out for early stopping")
    group.add_argument("--w-rank", type=positive, help="rank of W = W1 @ W2 (low rank)")
    group.add_argument("--u-rank", type=positive, help="rank of U = U1 @ U2 (low rank)")
    group.add_argument("--sparsity", type=_bounded(float, 0, 1, closed="right"), help=(
        "share of the entries of W and U kept (sparsity_w and sparsity_u), in (0, 1]"))
    for part, default in (("gate", "sigmoid"), ("update", "tanh")):
        group.add_argument(f"--{part}-nonlinearity", choices=list(NONLINEARITIES), help=(
            f"non-linearity of the {part} ({part}_nonlinearity; the estimator's "
            f"default: {default})"))
    group.add_argument("--dtype", choices=["float32", "float64"],
                       help="precision of training (default float32)")
    group.add_argument("--class-weight", type=_class_weight, metavar="balanced|LABEL=W,...",
                       help="classification: weights of the classes in the loss: "
                       "'balanced' (inverse to their frequency) or pairs such as 0=1,1=5")
    group.add_argument("--loss", choices=list(LOSSES), help=(
        "regression: the loss (default squared_error; poisson for counts or rates, "
        "predicting exp of the outputs)"))
    group.add_argument("--int8", action="store_true",
                       help="quantise to int8 after training and write the int8 "
                       "model (behind the scaler)")


def build_parser():
    """The argument parser of ``python -m sklearn_fastgrnn``."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_fastgrnn",
        description="Train, inspect, use and export FastGRNN sequence classifiers and "
        "regressors.",
    )
    _add_debug(parser, False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = "a .joblib file written by train, or a .safetensors weights file"

    train = sub.add_parser(
        "train", help="train a model and write it with joblib",
        description="Train on the bundled digits (default) or on --data, report the "
        "test accuracy (R² and RMSE for regression), size and time, and write the "
        "model. The estimator standardises each channel itself (--scaler adds a "
        "scaler step in front). A CSV's first row is its header "
        "unless --no-header. Without --task, the targets decide: labels that are not "
        f"numbers, and whole numbers of at most {MAX_INFERRED_CLASSES} distinct values, "
        "are classes; other numbers are values to predict (regression); a 2D y of a "
        ".npz file is a multilabel indicator when it holds only 0 and 1, else several "
        "outputs.",
    )
    _add_data(train, labels=True)
    train.add_argument("--n-timesteps", type=_bounded(int, 1), default=None,
                       help="timesteps per row of 2D data (default: one column per step)")
    train.add_argument("--scaler", choices=list(SCALERS), default="none", help=(
        "a scaler step in front of the estimator: sequence, each channel over all "
        "timesteps; standard, each column of 2D data; none (default): the "
        "estimator's own scaling, folded into its weights (every export reads "
        "raw values)"))
    train.add_argument("--test-size", type=_bounded(float, 0, 1, closed="left"), help=(
        "held-out fraction, in [0, 1): 0 trains on all the data (default: 0.25 of "
        "--data, the second half of the digits)"))
    train.add_argument("--task", choices=TASKS, help=(
        "fit a FastGRNNClassifier (classification) or a FastGRNNRegressor "
        "(regression); default: inferred from the targets, and said"))
    train.add_argument("--random-state", type=int, default=0)
    train.add_argument("--out", default="model.joblib", help="default: model.joblib")
    progress = train.add_mutually_exclusive_group()
    progress.add_argument("--verbose", action="store_true",
                          help="print a line per epoch (by default one line sums up training)")
    progress.add_argument("--quiet", action="store_true",
                          help="no line per epoch (the default; kept for scripts)")
    _add_training(train)
    train.set_defaults(func=_train)

    predict = sub.add_parser(
        "predict", help="predict labels or values with a saved model",
        description="Predict a label (or, with --proba, the probability of each "
        "class) or a regressor's value per sample; several outputs (or the labels "
        "of a multilabel model) are written as a CSV with one column each. A CSV's "
        "first row is its header unless --no-header.",
    )
    predict.add_argument("--model", required=True, help=model_help)
    _add_data(predict, labels=False)
    predict.add_argument("--proba", action="store_true", help=(
        "write a CSV of class probabilities, one column per class (labels as header); "
        "classifiers only"))
    predict.add_argument("--out", help="file for the predictions (default: stdout)")
    predict.set_defaults(func=_predict)

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("--model", required=True, help=model_help)
    info.set_defaults(func=_info)

    export = sub.add_parser("export", help="write a deployment file of a saved model")
    export.add_argument("--model", required=True, help=model_help)
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, help="file (safetensors, onnx) or directory (c)")
    export.set_defaults(func=_export)

    digits = sub.add_parser(
        "digits", help="write the bundled digits as a .npz or .csv data file",
        description="Write scikit-learn's digits, read as 8 timesteps of 8 pixels, to "
        "try the other commands: a .npz with arrays X (1797, 8, 8) and y, or a CSV "
        "with a key column, a label column and 64 values per line (time-major).",
    )
    digits.add_argument("--out", required=True, help="a .npz or a .csv file")
    digits.set_defaults(func=_digits)
    for command in (train, predict, info, export, digits):
        _add_debug(command, argparse.SUPPRESS)  # after the command too; keeps the top one
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one ``warning: ...`` line, without the source line."""
    print(f"warning: {_one_line(message)}", file=sys.stderr if file is None else file)


class _CtrlC:
    """SIGINT while a command runs: remember it, then interrupt as Python does.

    The classifier catches the KeyboardInterrupt of a Ctrl-C in training and
    returns the model it has; the command line must not write that model, so
    ``train`` asks :meth:`check` after fitting.
    """

    def __init__(self):
        self.pressed = False

    def __call__(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def check(self):
        if self.pressed:
            raise KeyboardInterrupt


_ctrl_c = _CtrlC()


def main(argv=None):
    """Entry point of ``python -m sklearn_fastgrnn`` and ``sklearn-fastgrnn``."""
    global _ctrl_c
    _ctrl_c = _CtrlC()
    previous = _on_sigint(_ctrl_c)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _check_options(parser, args):
    """Refuse options that contradict ``--task`` (a malformed command line, status 2)."""
    if getattr(args, "task", None) == CLASSIFICATION and args.loss is not None:
        parser.error("argument --loss: chooses the loss of a regression; it does not "
                     "apply to --task classification")
    if getattr(args, "task", None) == REGRESSION and args.class_weight is not None:
        parser.error("argument --class-weight: weighs classes; it does not apply to "
                     "--task regression")


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    if args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        try:
            return args.func(args)
        except SystemExit as exc:  # an explained failure: show what caused it too
            if exc.__context__ is not None:
                traceback.print_exception(exc.__context__)
            raise
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # Ctrl-C in training: the model is not written, whatever it keeps
        warnings.filterwarnings("ignore", "Training interrupted by the user")
        try:
            return args.func(args)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            _exit_interrupted()
        except BrokenPipeError:  # the reader of stdout left (``| head``): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
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
