"""Safe weights file: a fitted model as safetensors tensors plus JSON metadata.

The file holds one tensor per ``coefs_`` key, one ``scaler.<attribute>`` tensor
per statistic of a scaler in a Pipeline, and one JSON document in the
safetensors metadata (key ``"sklearn_fastgrnn"``) with the hyper-parameters,
classes or outputs, input layout, Pipeline steps and package version. Loading
reads the tensors with safetensors and the metadata with :mod:`json`, validates
every value and rebuilds the estimators from them: nothing on the load path
unpickles, so loading an untrusted file can not execute code.

Format versions: 1 (release 0.1.0) holds a ``FastGRNNClassifier`` with one
label per sample; 2 adds ``outputs`` (``n_outputs``, ``out_activation``) and
the window, and holds a multilabel classifier or a ``FastGRNNRegressor`` (under
the key ``"regressor"``). Both load.
"""

import json
import math
import numbers
import os
import sys
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted

from .._channels import n_base_channels, uses_changes
from .._files import write_atomically
from .._size import fitted_size
from .._version import __version__
from ..classifier import LOGISTIC, SOFTMAX, FastGRNNClassifier
from ..compression import QuantizedFastGRNN
from ..preprocessing import SequenceScaler, make_fastgrnn_pipeline
from ..regressor import LOSSES, FastGRNNRegressor

__all__ = ["load_weights", "save_weights"]

FORMAT = "sklearn_fastgrnn.weights"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: release 0.1.0, a softmax classifier only
METADATA_KEY = "sklearn_fastgrnn"
SCALER_PREFIX = "scaler."
SCALERS = {"SequenceScaler": SequenceScaler, "StandardScaler": StandardScaler}
CLASSIFIER = "FastGRNNClassifier"
REGRESSOR = "FastGRNNRegressor"
# step kind -> (estimator class, its key in the metadata); the one list of the
# estimators a weights file (and every export) holds
ESTIMATORS = {CLASSIFIER: (FastGRNNClassifier, "classifier"),
              REGRESSOR: (FastGRNNRegressor, "regressor")}
REQUIRE_2D = "require_2d"
# safetensors dtype codes a weights file may hold: float weights, int64 counts
_TENSOR_DTYPES = ("F32", "F64", "I64")
# Bounds of what a file may hold. No trained model comes near them; beyond them
# a file is damaged or hostile, and predicting from it would overflow.
MAX_SIZE = 2**31 - 1  # timesteps, channels, features, outputs
MAX_ABS_WEIGHT = 1e15  # coefs_: keeps logits of a sigmoid/tanh cell far from overflow
MAX_SCALER_STATISTIC = 1e150  # |mean_|, scale_ and 1 / scale_ (so var_ <= 1e300)
MAX_LABEL_CHARS = 1024  # width of a string dtype beyond its longest label
MAX_MESSAGE_CHARS = 500  # an error quoting the file says at most this much of it


# ------------------------------------------------------------ model structure
def _new_require_2d():
    """A fresh ``require_2d`` step, as ``make_fastgrnn_pipeline("standard")`` builds it."""
    return clone(make_fastgrnn_pipeline(scaler="standard").named_steps[REQUIRE_2D])


def _step_kind(step):
    """``"require_2d"``, a scaler class name, an estimator kind or None."""
    for kind, (cls, _) in ESTIMATORS.items():
        if type(step) is cls:
            return kind
    if type(step) in SCALERS.values():
        return type(step).__name__
    if isinstance(step, FunctionTransformer) and (
        step.get_params() == _new_require_2d().get_params()
    ):
        return REQUIRE_2D
    return None


def _supported_kinds(kinds):
    """True for [require_2d,] [one scaler,] FastGRNNClassifier or FastGRNNRegressor."""
    rest = kinds[1:] if kinds[:1] == [REQUIRE_2D] else kinds
    return any(rest in ([est], *([name, est] for name in SCALERS)) for est in ESTIMATORS)


def unpack_model(model):
    """The estimator, scaler and steps of a model to export.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        A fitted estimator, or a fitted Pipeline whose steps are, in order, an
        optional ``require_2d`` step (as ``make_fastgrnn_pipeline`` builds it),
        an optional ``SequenceScaler`` or ``StandardScaler`` and a
        ``FastGRNNClassifier`` or ``FastGRNNRegressor``.

    Returns
    -------
    estimator : FastGRNNClassifier or FastGRNNRegressor
    scaler : SequenceScaler, StandardScaler or None
    steps : list of (name, kind, estimator), or None for a bare estimator
        ``kind`` is "require_2d", "SequenceScaler", "StandardScaler",
        "FastGRNNClassifier" or "FastGRNNRegressor".
    """
    if _step_kind(model) in ESTIMATORS:
        check_is_fitted(model)
        return model, None, None
    expected = (
        "a fitted FastGRNNClassifier or FastGRNNRegressor, or a Pipeline of "
        "[require_2d,] [SequenceScaler or StandardScaler,] one of them"
    )
    if isinstance(model, QuantizedFastGRNN):
        raise TypeError(
            f"Expected {expected}; got a QuantizedFastGRNN, whose integer arithmetic "
            "only the C export reproduces (format 'c', export_c)."
        )
    if not isinstance(model, Pipeline):
        raise TypeError(f"Expected {expected}; got {type(model).__name__}.")
    steps = [(name, _step_kind(step), step) for name, step in model.steps]
    if not _supported_kinds([kind for _, kind, _ in steps]):
        found = [kind or type(step).__name__ for _, kind, step in steps]
        raise TypeError(f"Expected {expected}; got a Pipeline of {found}.")
    for _, _, step in steps:
        check_is_fitted(step)
    scaler = next((step for _, kind, step in steps if kind in SCALERS), None)
    return steps[-1][2], scaler, steps


# ------------------------------------------------------------- value bounds
def _weight_problem(value):
    """Why ``value`` can not be a ``coefs_`` tensor of a weights file, or None."""
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        return f"is an array of {value.dtype}, not of numbers"
    if not np.isfinite(value).all():
        return "contains NaN or inf"
    if value.size and np.abs(value).max() > MAX_ABS_WEIGHT:
        return (f"holds {np.abs(value).max():.3g} in magnitude, beyond the "
                f"{MAX_ABS_WEIGHT:.0e} a weights file allows")
    return None


def _statistic_problem(name, value):
    """Why ``value`` can not be the scaler statistic ``name`` of a file, or None."""
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        return f"is an array of {value.dtype}, not of numbers"
    if not np.isfinite(value).all():
        return "contains NaN or inf"
    if value.dtype.kind != "f":  # n_samples_seen_: counts
        return "must not be negative" if (value < 0).any() else None
    magnitude = np.abs(value)
    if name == "var_":
        bound = MAX_SCALER_STATISTIC**2
    else:
        bound = MAX_SCALER_STATISTIC
    if name == "scale_" and (value <= 0).any():
        return "must be positive"
    if name == "var_" and (value < 0).any():
        return "must not be negative"
    if (magnitude > bound).any() or (name == "scale_" and (value < 1 / bound).any()):
        return (f"holds values beyond the range a weights file allows "
                f"({1 / bound:.0e} to {bound:.0e} in magnitude)")
    return None


def check_scaler(scaler, consequence):
    """Raise a ValueError when a fitted scaler's statistics are damaged (NaN,
    infinite or beyond what a weights file allows); see :func:`check_fitted_model`."""
    for name in ("mean_", "var_", "scale_"):
        value = getattr(scaler, name, None)
        problem = None if value is None else _statistic_problem(name, value)
        if problem:
            raise ValueError(
                f"{type(scaler).__name__}.{name} {problem}: {consequence}. The scaler "
                "was fitted on values too large or was damaged; refit it."
            )


# ----------------------------------------------------------------------- save
def _json_scalar(name, value):
    """``value`` as a JSON scalar (None, bool, int, float or str)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_, numbers.Real)):
        return value.item() if isinstance(value, np.generic) else value
    raise TypeError(f"{name}={value!r} is not a scalar that JSON can hold.")


def _encode_params(estimator):
    """Hyper-parameters as JSON.

    A dict (``class_weight``) becomes ``{"items": [[key, value], ...]}`` and a
    tuple (``sparsity_phases``) ``{"tuple": [...]}``, so that both come back as
    they were. A ``random_state`` given as a RandomState or Generator instance
    is stored as None: it only matters for training, never for prediction.
    """
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if name == "random_state" and isinstance(
            value, (np.random.RandomState, np.random.Generator)
        ):
            value = None
        try:
            if isinstance(value, dict):
                value = {"items": [[_json_scalar(name, k), _json_scalar(name, v)]
                                   for k, v in value.items()]}
            elif isinstance(value, (tuple, list)):
                items = [_json_scalar(name, v) for v in value]
                value = {"tuple": items} if isinstance(value, tuple) else items
            else:
                value = _json_scalar(name, value)
        except TypeError as exc:
            raise ValueError(
                f"Hyper-parameter {type(estimator).__name__}.{exc} A weights file "
                "stores hyper-parameters as JSON; set it to a plain value first."
            ) from None
        params[name] = value
    return params


def _encode_labels(values):
    """A 1D array of labels (or names) as ``{"dtype": ..., "values": [...]}``."""
    values = np.asarray(values)
    if values.dtype.kind not in "biufUO" or values.ndim != 1:
        raise ValueError(
            f"Labels of dtype {values.dtype} and shape {values.shape} can not be "
            "written to a weights file; use a 1D array of integer or string labels."
        )
    if values.dtype.kind == "O" and not all(isinstance(v, str) for v in values):
        raise ValueError(
            "Labels of dtype object must all be str to be written to a weights file; "
            f"got {sorted({type(v).__name__ for v in values})}."
        )
    return {"dtype": values.dtype.str, "values": values.tolist()}


def _encode_fitted(estimator, tensor_prefix=None):
    """Public fitted attributes: JSON values, and numeric arrays as tensors.

    Numeric arrays go to the returned tensors (named ``tensor_prefix + name``);
    string arrays (``feature_names_in_``) are stored as labels in the JSON.
    """
    attributes, tensors = {}, {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            if tensor_prefix is None:
                raise ValueError(
                    f"Fitted attribute {type(estimator).__name__}.{name} is a numeric "
                    "array, which a weights file can not store for this step."
                )
            tensors[tensor_prefix + name] = np.array(value, order="C")
        elif isinstance(value, np.ndarray):
            attributes[name] = {"labels": _encode_labels(value)}
        else:
            try:
                attributes[name] = _json_scalar(name, value)
            except TypeError as exc:
                raise ValueError(f"Fitted attribute {type(estimator).__name__}.{exc}") from None
    return attributes, tensors


def out_activation(est):
    """``out_activation_`` of a fitted estimator; "softmax" for a classifier
    without one (fitted attributes set by hand), as the classifier reads it."""
    default = None if isinstance(est, FastGRNNRegressor) else SOFTMAX
    return getattr(est, "out_activation_", default)


def _outputs_problem(est):
    """Why the fitted outputs of ``est`` (``out_activation_``, ``n_outputs_``,
    ``classes_``) do not describe a model a weights file holds, or None."""
    activation = out_activation(est)
    n_outputs = getattr(est, "n_outputs_", None)
    if isinstance(est, FastGRNNRegressor):
        expected = LOSSES.get(est.loss, (None, None))[1]
        if activation != expected:
            return (f"out_activation_ is {activation!r}, but loss={est.loss!r} predicts "
                    f"with {expected!r}: the loss was changed after fit")
        return None
    if activation not in (SOFTMAX, LOGISTIC):
        return f"out_activation_ is {activation!r}, not 'softmax' or 'logistic'"
    if n_outputs != len(est.classes_):
        return (f"n_outputs_ is {n_outputs}, but classes_ holds {len(est.classes_)} "
                "labels")
    if activation == LOGISTIC and not np.array_equal(est.classes_, np.arange(n_outputs)):
        return "a multilabel classifier's classes_ must be arange(n_outputs_)"
    return None


def check_hidden_size(est, consequence):
    """Refuse a model whose ``hidden_size_`` is not a positive integer, or not
    the integer ``hidden_size`` asks for."""
    size = getattr(est, "hidden_size_", None)
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"hidden_size_ must be a positive integer, got {size!r}: "
                         f"the model is damaged; {consequence}.")
    if est.hidden_size != "auto" and est.hidden_size != size:
        raise ValueError(f"hidden_size={est.hidden_size!r} was changed after fit: the "
                         f"weights have hidden_size_={size}; {consequence}.")


def check_fitted_model(est, consequence):
    """Raise a ValueError when a fitted estimator's weights can not predict.

    Checks what a weights file's loader checks: ``coefs_`` holds the tensors
    that the hyper-parameters and the outputs (``classes_`` or ``n_outputs_``)
    describe, with those shapes, every value is finite and at most
    ``MAX_ABS_WEIGHT`` in magnitude, ``out_activation_`` is one the
    estimator (and its ``loss``) has, ``hidden_size_`` is the size
    ``hidden_size`` asks for, ``window_phases_`` is from 1 to
    ``window_``, ``envelope_width_`` is 0 or at least 2, and the change
    offsets are valid (:func:`check_offsets`).
    Every export (weights file, ONNX, C) and the command line's model loading
    run it, so that a damaged or diverged model is refused instead of
    predicting NaN.

    Parameters
    ----------
    est : FastGRNNClassifier or FastGRNNRegressor
        Fitted.
    consequence : str
        What the problem prevents, for the message (e.g. "load_weights would
        refuse the file").
    """
    coefs = getattr(est, "coefs_", None)
    if not isinstance(coefs, dict):
        raise ValueError(f"coefs_ is a {type(coefs).__name__}, not a dict of arrays: "
                         f"{consequence}. The model is damaged; retrain it.")
    columns = np.shape(coefs.get("V", ()))[-1:]
    if hasattr(est, "classes_"):
        n_classes = len(est.classes_)
        if columns and columns[0] != n_classes:
            raise ValueError(
                f"classes_ holds {n_classes} labels, but coefs_['V'] has {columns[0]} "
                f"columns, one per class: {consequence}. classes_ was changed after fit "
                "or the model is damaged; set it back or refit."
            )
    elif columns and columns[0] != getattr(est, "n_outputs_", None):
        raise ValueError(
            f"n_outputs_ is {getattr(est, 'n_outputs_', None)}, but coefs_['V'] has "
            f"{columns[0]} columns, one per output: {consequence}. n_outputs_ was "
            "changed after fit or the model is damaged; set it back or refit."
        )
    problem = _outputs_problem(est)
    if problem:
        raise ValueError(f"{problem}: {consequence}. Set it back or refit.")
    check_phases(est, f"{consequence}. Set it back or refit")
    check_envelope(est, f"{consequence}. Set it back or refit")
    check_hidden_size(est, f"{consequence}. Set it back or refit")
    try:
        shapes = est._layout().shapes
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{exc} ({consequence})") from None
    fitted = {key: np.shape(value) for key, value in coefs.items()}
    if fitted != shapes:
        raise ValueError(
            f"coefs_ has shapes {fitted}, but the {_role(est)}'s hyper-parameters "
            f"describe {shapes}: {consequence}. They were changed after fit; set "
            "them back or refit."
        )
    for key, value in coefs.items():
        problem = _weight_problem(value)
        if problem:
            raise ValueError(
                f"coefs_[{key!r}] {problem}: {consequence}. The model diverged or was "
                "damaged; retrain it (smaller learning_rate_init, or alpha)."
            )
    check_offsets(est, consequence)


def check_phases(model, consequence):
    """Refuse a model whose ``window_phases_`` is not an integer from 1 to its
    ``window_`` (every export reads that many phases)."""
    phases, window = getattr(model, "window_phases_", 1), getattr(model, "window_", 1)
    if not (isinstance(phases, numbers.Integral) and not isinstance(phases, bool)
            and 1 <= phases <= window):
        raise ValueError(
            f"window_phases_ must be an integer from 1 to window_ ({window}), got "
            f"{phases!r}: {consequence}."
        )


def check_envelope(model, consequence):
    """Refuse a model whose ``envelope_width_`` is not 0 or an integer of at least
    2 (every export computes envelopes of that many timesteps)."""
    width = getattr(model, "envelope_width_", 0)
    if not (isinstance(width, numbers.Integral) and not isinstance(width, bool)
            and (width == 0 or 2 <= width <= MAX_SIZE)):
        raise ValueError(
            f"envelope_width_ must be 0 (no envelope) or an integer of at least 2, "
            f"got {width!r}: {consequence}."
        )


def check_offsets(model, consequence):
    """Refuse a model with change channels whose ``change_offsets_`` is not one
    positive finite value per channel the changes are taken of (every export
    holds them)."""
    if not uses_changes(model):
        return
    offsets = getattr(model, "change_offsets_", None)
    values = None if offsets is None else np.asarray(offsets)
    n_base = n_base_channels(model)
    if (values is None or values.shape != (n_base,)
            or values.dtype.kind not in "fiu"
            or not (np.isfinite(values) & (values > 0)).all()):
        raise ValueError(
            f"change_offsets_ must hold one positive finite value per channel the "
            f"changes are taken of ({n_base}), got {offsets!r}: the model is "
            f"damaged; {consequence}."
        )


def _role(est):
    """``"classifier"`` or ``"regressor"``: the estimator's key in the metadata."""
    return ESTIMATORS[_step_kind(est)][1]


def _encode_estimator(est):
    """JSON metadata and tensors of the estimator."""
    check_fitted_model(est, "load_weights would refuse the file")
    tensors = {key: np.array(value, order="C") for key, value in est.coefs_.items()}
    metadata = {"params": _encode_params(est)}
    if hasattr(est, "classes_"):
        metadata["classes"] = _encode_labels(est.classes_)
    metadata["outputs"] = {"n_outputs": int(est.n_outputs_),
                           "out_activation": out_activation(est)}
    metadata["input"] = {
        "n_timesteps": int(est.n_timesteps_),
        "n_channels": int(est.n_channels_),
        "n_features_in": int(est.n_features_in_),
        "window": int(est.window_),
        "window_phases": int(getattr(est, "window_phases_", 1)),
        "envelope_width": int(getattr(est, "envelope_width_", 0)),
        "change_channels": uses_changes(est),
        "change_offsets": (
            est.change_offsets_.tolist() if uses_changes(est) else None
        ),
        "feature_names_in": (
            est.feature_names_in_.tolist() if hasattr(est, "feature_names_in_") else None
        ),
    }
    return metadata, tensors


def save_weights(model, path):
    """Write a fitted model to a safetensors weights file.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        A fitted estimator, or a fitted Pipeline of an optional ``require_2d``
        step, an optional ``SequenceScaler`` or ``StandardScaler`` and the
        estimator (what ``make_fastgrnn_pipeline`` builds).
    path : str or path-like
        Destination; written atomically (a temporary file renamed over it), so
        a failed save never leaves a partial file or destroys an existing one.

    Returns
    -------
    path : str
    """
    safetensors = _import_safetensors()
    est, _, steps = unpack_model(model)
    described, tensors = _encode_estimator(est)
    pipeline = None
    if steps is not None:
        pipeline = []
        for name, kind, step in steps:
            entry = {"name": name, "kind": kind}
            if kind in SCALERS:
                entry["params"] = _encode_params(step)
            if kind not in ESTIMATORS:
                entry["attributes"], step_tensors = _encode_fitted(
                    step, SCALER_PREFIX if kind in SCALERS else None
                )
                for key, value in step_tensors.items():
                    problem = _statistic_problem(key[len(SCALER_PREFIX):], value)
                    if problem:
                        raise ValueError(
                            f"{type(step).__name__}.{key[len(SCALER_PREFIX):]} "
                            f"{problem}: load_weights would refuse the file. Rescale "
                            "the data (for example divide it by a constant) and refit."
                        )
                tensors.update(step_tensors)
            pipeline.append(entry)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sklearn_fastgrnn_version": __version__,
        _role(est): described,
        "pipeline": pipeline,
    }
    data = safetensors.numpy.save(tensors, metadata={METADATA_KEY: json.dumps(metadata)})
    write_atomically(path, data)
    return os.fspath(path)


# ----------------------------------------------------------------------- load
class _Metadata:
    """Typed access to the JSON metadata, with errors that name the field."""

    def __init__(self, document, source):
        self.document, self.source = document, source

    def error(self, message):
        """The ValueError of an invalid file; the message cut to 500 characters,
        since it may quote values of the file (names, strings) of any length."""
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        return ValueError(f"Invalid weights file {self.source}: {message}")

    def get(self, field, kinds, *, optional=False):
        """Value at the dotted ``field``, checked to be an instance of ``kinds``."""
        node = self.document
        for part in field.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            elif optional:
                return None
            else:
                raise self.error(f"the metadata has no field {field!r}.")
        if node is None and optional:
            return None
        if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(f"metadata field {field!r} must be {names}, got {_short(node)}.")
        return node

    def positive_int(self, field, maximum=MAX_SIZE):
        """An int in [1, ``maximum``] at ``field``."""
        value = self.get(field, (int,))
        if not 1 <= value <= maximum:
            raise self.error(
                f"metadata field {field!r} must be between 1 and {maximum}, got {value}."
            )
        return value

    @property
    def writer_version(self):
        return self.get("sklearn_fastgrnn_version", (str,), optional=True)


def _short(value, limit=200):
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scalars(values):
    """True for a JSON list of scalars (None, str, int, float, bool)."""
    return isinstance(values, list) and all(
        v is None or isinstance(v, (str, int, float)) for v in values
    )


def _decode_params(meta, field):
    """The hyper-parameters at ``field``, undoing :func:`_encode_params`."""
    params = {}
    for name, value in meta.get(field, (dict,)).items():
        kind = items = None
        if isinstance(value, dict) and len(value) == 1:
            [(kind, items)] = value.items()
        if kind == "tuple" and _scalars(items):
            value = tuple(items)
        elif kind == "items" and isinstance(items, list) and all(
            _scalars(item) and len(item) == 2 for item in items
        ):
            value = dict(items)
        elif not (_scalars([value]) or _scalars(value)):
            raise meta.error(
                f"hyper-parameter {field}.{name} is malformed: {_short(value)}."
            )
        params[name] = value
    return params


def _decode_labels(meta, field):
    dtype_str = meta.get(field + ".dtype", (str,))
    values = meta.get(field + ".values", (list,))
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biufUO":
        raise meta.error(f"{field} has an unsupported dtype {dtype_str!r}.")
    expected = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float),
                "U": (str,), "O": (str,)}[dtype.kind]
    for value in values:
        if not isinstance(value, expected) or (
            isinstance(value, bool) and dtype.kind != "b"
        ):
            raise meta.error(f"{field} holds {_short(value)}, which is not of dtype {dtype}.")
    if dtype.kind == "U":  # the width is allocated per label: bound it by the labels
        longest = max((len(value) for value in values), default=0)
        if dtype.itemsize // 4 > max(longest, MAX_LABEL_CHARS):
            raise meta.error(
                f"{field} has dtype {dtype_str!r}, far wider than its longest label "
                f"({longest} characters)."
            )
    try:
        return np.array(values, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise meta.error(f"{field} does not fit dtype {dtype}: {exc}.") from None


def _build(estimator_class, meta, field, defaults=None):
    """An ``estimator_class`` with the validated hyper-parameters at ``field``.

    ``defaults`` are the values of parameters that the file does not name (a
    file of an older release, written before they existed).
    """
    estimator = estimator_class()
    params = {**(defaults or {}), **_decode_params(meta, field)}
    try:
        estimator.set_params(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise meta.error(
            f"the hyper-parameters in {field} are not valid for "
            f"{estimator_class.__name__} of sklearn_fastgrnn {__version__} (file "
            f"written by version {meta.writer_version}): {exc}"
        ) from None
    return estimator


# The fitted attributes each kind of step has, besides its tensors: name ->
# "size" (an int in [1, MAX_SIZE]), "count" (a number >= 0) or "names" (labels,
# optional). Every one but "names" must be present; no other name is accepted.
_FITTED = {
    "SequenceScaler": {"n_features_in_": "size", "n_timesteps_": "size",
                       "n_channels_": "size", "n_steps_seen_": "count",
                       "feature_names_in_": "names"},
    "StandardScaler": {"n_features_in_": "size", "n_samples_seen_": "count",
                       "feature_names_in_": "names"},
    REQUIRE_2D: {"n_features_in_": "size", "feature_names_in_": "names"},
}
# Statistics of each scaler, stored as tensors, and when each is present
# (a StandardScaler leaves some as None, depending on with_mean/with_std).
_STATISTICS = {
    "SequenceScaler": {"mean_": lambda p: True, "var_": lambda p: True,
                       "scale_": lambda p: True},
    "StandardScaler": {"mean_": lambda p: p["with_mean"] or p["with_std"],
                       "var_": lambda p: p["with_std"], "scale_": lambda p: p["with_std"],
                       "n_samples_seen_": None},  # a count, or one count per column
}


def _set_fitted(estimator, meta, field, kind, clf, in_tensors=()):
    """Set the fitted attributes stored at ``field``, checking each against ``clf``.

    ``in_tensors`` names the attributes that the file holds as tensors instead.
    """
    stored = meta.get(field, (dict,))
    schema = {name: role for name, role in _FITTED[kind].items() if name not in in_tensors}
    statistics = _STATISTICS.get(kind, {})
    for name, value in stored.items():
        if name not in schema and not (name in statistics and value is None):
            raise meta.error(f"{field}.{name} is not a fitted attribute name of {kind}.")
    for name, role in schema.items():
        where = f"{field}.{name}"
        if role == "names":
            if stored.get(name) is None:
                continue
            value = _decode_labels(meta, where + ".labels")
            if value.dtype.kind not in "UO" or len(value) != clf.n_features_in_:
                raise meta.error(f"{where} must be {clf.n_features_in_} strings.")
            value = value.astype(object)
        elif role == "size":
            value = meta.positive_int(where)
        else:
            value = meta.get(where, (int, float))
            if not (math.isfinite(value) and value >= 0):
                raise meta.error(f"metadata field {where!r} must be a count >= 0, got {value}.")
        setattr(estimator, name, value)
    if estimator.n_features_in_ != clf.n_features_in_:
        raise meta.error(
            f"{field}.n_features_in_ is {estimator.n_features_in_}, the {_role(clf)} reads "
            f"{clf.n_features_in_} features."
        )
    if kind == "SequenceScaler" and (estimator.n_timesteps_, estimator.n_channels_) != (
        clf.n_timesteps_, clf.n_channels_
    ):
        raise meta.error(
            f"the SequenceScaler saw sequences of {estimator.n_timesteps_} x "
            f"{estimator.n_channels_}, the {_role(clf)} {clf.n_timesteps_} x "
            f"{clf.n_channels_}."
        )
    names = getattr(clf, "feature_names_in_", None)
    mine = getattr(estimator, "feature_names_in_", None)
    if mine is not None and names is not None and list(mine) != list(names):
        raise meta.error(f"{field}.feature_names_in_ differ from the {_role(clf)}'s.")


def _read_file(path):
    """``(metadata, tensors)`` of a safetensors file; no pickle involved."""
    safetensors = _import_safetensors()
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as f:
            header = f.metadata() or {}
            dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
            bad = {key: dt for key, dt in dtypes.items() if dt not in _TENSOR_DTYPES}
            tensors = {} if bad else {key: f.get_tensor(key) for key in dtypes}
    except safetensors.SafetensorError as exc:
        raise ValueError(
            f"{path} is not a readable safetensors file ({exc}). It may be truncated "
            "or not a weights file written by save_weights."
        ) from None
    if bad:
        raise ValueError(
            f"Invalid weights file {path}: tensors {_short(bad)} have unsupported "
            f"dtypes; expected one of {list(_TENSOR_DTYPES)}."
        )
    if METADATA_KEY not in header:
        raise ValueError(
            f"{path} is a safetensors file without sklearn_fastgrnn metadata: it was "
            "not written by sklearn_fastgrnn.export.save_weights."
        )
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Invalid weights file {path}: its metadata is not valid JSON ({exc})."
        ) from None
    except RecursionError:
        raise ValueError(
            f"Invalid weights file {path}: its metadata nests JSON arrays or objects "
            "deeper than any weights file does (beyond the parser's depth limit)."
        ) from None
    except ValueError:  # an integer of more digits than int() converts
        raise ValueError(
            f"Invalid weights file {path}: its metadata holds an integer of more "
            f"than {sys.get_int_max_str_digits()} digits, which no weights file does."
        ) from None
    if not isinstance(document, dict):
        raise ValueError(f"Invalid weights file {path}: its metadata is not a JSON object.")
    return _Metadata(document, path), tensors


def _estimator_kind(meta, version):
    """The kind of estimator the file holds ("FastGRNNClassifier" or
    "FastGRNNRegressor"), from its one metadata key "classifier" or "regressor"."""
    found = [kind for kind, (_, key) in ESTIMATORS.items()
             if meta.get(key, (dict,), optional=True) is not None]
    if version == 1 and found != [CLASSIFIER]:  # release 0.1.0 wrote classifiers only
        raise meta.error("format_version 1 holds a classifier, under 'classifier' only.")
    if len(found) != 1:
        keys = [key for _, key in ESTIMATORS.values()]
        raise meta.error(f"the metadata must hold exactly one of the fields {keys}; "
                         f"it holds {[ESTIMATORS[kind][1] for kind in found]}.")
    return found[0]


def _load_outputs(meta, est, key, version):
    """Set ``n_outputs_``, ``out_activation_`` (and ``classes_``) from ``key``.

    Returns the ``n_outputs`` the file states (None in version 1), which a
    classifier's ``classes`` decide: checked once the tensors are.
    """
    if version == 1:  # a softmax classifier
        activation, n_outputs = SOFTMAX, None
    else:
        activation = meta.get(key + ".outputs.out_activation", (str,))
        n_outputs = meta.positive_int(key + ".outputs.n_outputs")
    if isinstance(est, FastGRNNRegressor):
        expected = LOSSES[est.loss][1]
        if activation != expected:
            raise meta.error(f"{key}.outputs.out_activation is {_short(activation)}, but "
                             f"loss={est.loss!r} predicts with {expected!r}.")
        est.out_activation_, est.n_outputs_, est._loss_name = activation, n_outputs, est.loss
        return n_outputs
    est.classes_ = _decode_labels(meta, key + ".classes")
    if activation == SOFTMAX:
        if len(est.classes_) < 2 or not np.array_equal(np.unique(est.classes_), est.classes_):
            raise meta.error(f"{key}.classes must be at least 2 distinct sorted labels.")
    elif activation == LOGISTIC:
        if not np.array_equal(est.classes_, np.arange(len(est.classes_))) or (
            est.classes_.dtype.kind not in "iu"
        ):
            raise meta.error(f"{key}.classes of a multilabel classifier (out_activation "
                             "'logistic') must be the integers 0 to n_outputs - 1.")
    else:
        raise meta.error(f"{key}.outputs.out_activation must be 'softmax' or 'logistic', "
                         f"got {_short(activation)}.")
    est.out_activation_, est.n_outputs_ = activation, len(est.classes_)
    return n_outputs


def _envelope_width(meta, role):
    """The ``envelope_width_`` stored at ``role.input`` (0 in files from before it)."""
    field = role + ".input.envelope_width"
    width = meta.get(field, (int,), optional=True)
    if width is None:
        return 0
    if not (width == 0 or 2 <= width <= MAX_SIZE):
        raise meta.error(
            f"metadata field {field!r} must be 0 (no envelope) or between 2 and "
            f"{MAX_SIZE}, got {width}."
        )
    return width


def _change_offsets(meta, role, n_channels):
    """The ``change_offsets_`` stored at ``role.input``: ``n_channels`` positive floats."""
    field = role + ".input.change_offsets"
    values = meta.get(field, (list,))
    if len(values) != n_channels or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
        for v in values
    ):
        raise meta.error(
            f"{field} must be {n_channels} positive finite numbers, one per channel."
        )
    return np.array(values, dtype=np.float64)


def _load_estimator(meta, tensors, version):
    """The fitted estimator described at ``classifier`` or ``regressor``, with its
    tensors."""
    kind = _estimator_kind(meta, version)
    cls, role = ESTIMATORS[kind]
    est = _build(cls, meta, role + ".params", cls._legacy_params)
    n_outputs = _load_outputs(meta, est, role, version)
    T = meta.positive_int(role + ".input.n_timesteps")
    d = meta.positive_int(role + ".input.n_channels")
    n_features = meta.positive_int(role + ".input.n_features_in")
    if n_features != T * d:
        raise meta.error(
            f"{role}.input.n_features_in={n_features} is not n_timesteps * "
            f"n_channels = {T * d}."
        )
    est.n_timesteps_, est.n_channels_, est.n_features_in_ = T, d, n_features
    est.window_ = 1
    # version 1 (release 0.1.0) had no window; a file of a later version names it
    if version > 1 or meta.get(role + ".input.window", (int,), optional=True) is not None:
        est.window_ = meta.positive_int(role + ".input.window")
    # files written before the window phases read one
    est.window_phases_ = 1
    if meta.get(role + ".input.window_phases", (int,), optional=True) is not None:
        est.window_phases_ = meta.positive_int(role + ".input.window_phases", est.window_)
    est.envelope_width_ = _envelope_width(meta, role)
    # files written before the change channels have none
    est.change_channels_ = bool(meta.get(role + ".input.change_channels", (bool,),
                                         optional=True))
    est.change_offsets_ = (
        _change_offsets(meta, role, n_base_channels(est)) if est.change_channels_ else None
    )
    names = meta.get(role + ".input.feature_names_in", (list,), optional=True)
    if names is not None:
        if len(names) != n_features or not all(isinstance(n, str) for n in names):
            raise meta.error(
                f"{role}.input.feature_names_in must be {n_features} strings."
            )
        est.feature_names_in_ = np.asarray(names, dtype=object)
    # "auto" names no size: the weights' V has a row per hidden unit
    V = tensors.get("V")
    auto = est.hidden_size == "auto" and V is not None and V.ndim == 2
    est.hidden_size_ = int(V.shape[0]) if auto else est._resolve_hidden_size()
    try:
        shapes = est._layout().shapes
    except ValueError as exc:
        raise meta.error(str(exc)) from None
    found = {key for key in tensors if not key.startswith(SCALER_PREFIX)}
    if found != set(shapes):
        raise meta.error(
            f"the tensors do not match the model: missing {sorted(set(shapes) - found)}, "
            f"unexpected {sorted(found - set(shapes))}."
        )
    dtypes = {key: str(tensors[key].dtype) for key in shapes}
    if len(set(dtypes.values())) != 1 or dtypes["V"] not in ("float32", "float64"):
        raise meta.error(f"the coefs_ tensors must all be float32 or all float64; got {dtypes}.")
    for key, shape in shapes.items():
        if tensors[key].shape != shape:
            raise meta.error(
                f"tensor {key!r} has shape {tensors[key].shape}, expected {shape}."
            )
        problem = _weight_problem(tensors[key])
        if problem:
            raise meta.error(f"tensor {key!r} {problem}.")
    if n_outputs is not None and n_outputs != est.n_outputs_:
        raise meta.error(f"{role}.outputs.n_outputs is {n_outputs}, but {role}.classes "
                         f"holds {est.n_outputs_} labels.")
    est.coefs_ = {key: np.array(tensors[key]) for key in shapes}
    est.n_params_, est.model_size_bytes_ = fitted_size(est)
    return est


def _load_scaler(meta, field, kind, tensors, clf):
    """The fitted scaler described at ``field``, with its ``scaler.*`` tensors."""
    scaler = _build(SCALERS[kind], meta, field + ".params")
    statistics = _STATISTICS[kind]
    # statistics are per column of the 2D input (StandardScaler) or per channel
    width = clf.n_features_in_ if kind == "StandardScaler" else clf.n_channels_
    found = {}
    for key, value in tensors.items():
        if not key.startswith(SCALER_PREFIX):
            continue
        name = key[len(SCALER_PREFIX):]
        if name not in statistics:
            raise meta.error(f"tensor {key!r} is not named after a fitted attribute.")
        if value.shape != (width,):
            raise meta.error(
                f"tensor {key!r} must hold {width} finite values; got shape {value.shape}."
            )
        problem = _statistic_problem(name, value)
        if problem:
            raise meta.error(f"tensor {key!r} {problem}.")
        found[name] = np.array(value)
    _set_fitted(scaler, meta, field + ".attributes", kind, clf, in_tensors=found)
    params = scaler.get_params()
    required = [name for name, needed in statistics.items() if needed and needed(params)]
    missing = [name for name in required if name not in found]
    if missing:
        raise meta.error(f"the {kind} has no tensors {['scaler.' + m for m in missing]}.")
    unexpected = [name for name, needed in statistics.items()
                  if needed and not needed(params) and name in found]
    if unexpected:
        raise meta.error(
            f"the {kind} has tensors {['scaler.' + m for m in unexpected]}, which its "
            f"parameters {params} do not compute."
        )
    for name, needed in statistics.items():
        if needed is not None or name in found:  # else a count, set from the metadata
            setattr(scaler, name, found.get(name))
    return scaler


def _load_pipeline(meta, tensors, clf):
    """The Pipeline described at ``pipeline`` around ``clf``."""
    entries = meta.get("pipeline", (list,))
    steps = []
    for i, _ in enumerate(entries):
        field = f"pipeline.{i}"
        name = meta.get(field + ".name", (str,))
        kind = meta.get(field + ".kind", (str,))
        if kind in ESTIMATORS:
            if kind != _step_kind(clf):
                raise meta.error(f"{field}.kind {kind!r} is not the estimator the file "
                                 f"holds ({_step_kind(clf)}).")
            step = clf
        elif kind in SCALERS:
            step = _load_scaler(meta, field, kind, tensors, clf)
        elif kind == REQUIRE_2D:
            step = _new_require_2d()
            _set_fitted(step, meta, field + ".attributes", kind, clf)
        else:
            raise meta.error(f"{field}.kind {kind!r} is not a supported step.")
        if getattr(step, "n_features_in_", clf.n_features_in_) != clf.n_features_in_:
            raise meta.error(
                f"step {name!r} reads {step.n_features_in_} features, the {_role(clf)} "
                f"{clf.n_features_in_}."
            )
        steps.append((name, kind, step))
    if not _supported_kinds([kind for _, kind, _ in steps]) or steps[-1][2] is not clf:
        raise meta.error(f"pipeline steps {[k for _, k, _ in steps]} are not supported.")
    if not any(kind in SCALERS for _, kind, _ in steps) and any(
        key.startswith(SCALER_PREFIX) for key in tensors
    ):
        raise meta.error("the file has scaler tensors but no scaler step.")
    try:
        return Pipeline([(name, step) for name, _, step in steps])
    except (TypeError, ValueError) as exc:
        raise meta.error(f"invalid pipeline step names: {exc}") from None


def _probe(model, clf, meta):
    """Predict once with the loaded model, on the smallest input it accepts.

    One timestep of zeros, so that the cost never depends on the sizes in the
    metadata; 2D input only for a StandardScaler, whose statistics (tensors
    checked against the file) fix its width.
    """
    scaler = model.steps[-2][1] if isinstance(model, Pipeline) and len(model.steps) > 1 else None
    if isinstance(scaler, StandardScaler):
        if getattr(scaler, "scale_", None) is None and getattr(scaler, "mean_", None) is None:
            model, probe = clf, np.zeros((1, 1, clf.n_channels_))  # an identity scaler
        else:
            probe = np.zeros((1, clf.n_features_in_))
    else:
        probe = np.zeros((1, 1, clf.n_channels_))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # probe has no feature names
            if isinstance(clf, FastGRNNRegressor):
                predicted = model.predict(probe)
            else:
                predicted = model.predict_proba(probe)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the file is invalid
        raise meta.error(f"the model it describes can not predict: {exc!r}") from None
    valid = np.isfinite(predicted).all()
    if clf.out_activation_ == SOFTMAX:
        valid = valid and np.allclose(predicted.sum(axis=1), 1.0)
    elif clf.out_activation_ == LOGISTIC:
        valid = valid and ((predicted >= 0) & (predicted <= 1)).all()
    if not valid:
        raise meta.error(f"the model it describes predicts {_short(predicted.tolist())} "
                         "on zeros.")


def load_weights(path):
    """Read a weights file written by :func:`save_weights`.

    Only safetensors and JSON are parsed; every tensor and metadata field is
    checked (names, shapes, dtypes, finiteness, hyper-parameters) before the
    estimators are built, and the result must predict on a probe input.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        Fitted, predicting exactly as the saved model did; a Pipeline when a
        Pipeline was saved. The optimiser state is not in the file: ``fit``
        trains anew (joblib files keep the state for ``partial_fit``).

    Raises
    ------
    ValueError
        On a truncated or malformed file, missing or unexpected tensors, wrong
        shapes or dtypes, bad JSON metadata or an unknown format version.
    """
    meta, tensors = _read_file(path)
    fmt = meta.get("format", (str,))
    if fmt != FORMAT:
        raise meta.error(f"format is {fmt!r}, expected {FORMAT!r}.")
    version = meta.get("format_version", (int,))
    if version not in READABLE_VERSIONS:
        raise meta.error(
            f"format_version {version} is not supported by sklearn_fastgrnn "
            f"{__version__}, which reads versions {READABLE_VERSIONS[0]} to "
            f"{READABLE_VERSIONS[-1]}. Load it with the version that wrote it "
            f"({meta.writer_version})."
        )
    clf = _load_estimator(meta, tensors, version)
    if meta.get("pipeline", (list,), optional=True) is None:
        if any(key.startswith(SCALER_PREFIX) for key in tensors):
            raise meta.error("the file has scaler tensors but no pipeline.")
        model = clf
    else:
        model = _load_pipeline(meta, tensors, clf)
    _probe(model, clf, meta)
    return model


def _import_safetensors():
    """The safetensors package with its numpy API, or an ImportError saying how to get it."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(
            "Weights files need the safetensors package: pip install "
            "'sklearn-fastgrnn[export]' (or pip install safetensors)."
        ) from exc
    return safetensors
