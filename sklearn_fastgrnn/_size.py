"""Model size as EdgeML counts it: bytes per tensor, the size report and its table.

The rules (docs/design.md, section "Model size"): a float32 entry costs 4 bytes,
a non-zero of a matrix trained sparse 8 (value and a 4-byte index); an int8
entry 1 byte, plus its row index when sparse (:func:`index_bytes`). KB in the
paper's tables are ``bytes / 1024``.

:func:`model_size_bytes`, :func:`size_report` and :func:`summary` are public
from :mod:`sklearn_fastgrnn.compression`.
"""

import math

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._channels import offsets_of, uses_changes
from ._sparsity import sparse_keys

DENSE_BYTES = 4  # a float32 entry
SPARSE_BYTES = 8  # a float32 non-zero stored sparse: value + 4-byte index (EdgeML)
INT8_BYTES = 1
SCALAR_BYTES = 4  # zeta, nu and the scale of each int8 tensor


def index_bytes(n_rows):
    """Bytes of the row index of a sparse int8 entry: uint8 up to 256 rows, else uint16."""
    return 1 if n_rows <= 256 else 2


def tensor_bytes(value, *, sparse=False, int8=False):
    """Bytes of one tensor as EdgeML counts them (docs/compression.md).

    Dense float32: 4 per entry; sparse float32: 8 per non-zero (value and a
    4-byte index); dense int8: 1 per entry; sparse int8: 1 per non-zero plus its
    row index (:func:`index_bytes`).
    """
    value = np.asarray(value)
    if not sparse:
        return (INT8_BYTES if int8 else DENSE_BYTES) * value.size
    nonzeros = int(np.count_nonzero(value))
    if int8:
        return (INT8_BYTES + index_bytes(value.shape[0])) * nonzeros
    return SPARSE_BYTES * nonzeros


def model_size_bytes(coefs, sparse=()):
    """Size in bytes of a float32 model, as EdgeML counts it.

    Parameters
    ----------
    coefs : dict of ndarray
        A fitted model's ``coefs_``.
    sparse : iterable of str, default=()
        Keys of the matrices stored sparse (8 bytes per non-zero); every other
        tensor (biases, ``zeta``, ``nu``, ``V``, ``bias_out`` included) costs 4
        bytes per entry.

    Returns
    -------
    int
        KB in the paper's tables are ``bytes / 1024``.
    """
    sparse = set(sparse)
    return int(sum(tensor_bytes(v, sparse=k in sparse) for k, v in coefs.items()))


def fitted_size(model):
    """``(n_params_, model_size_bytes_)`` of a fitted model from its ``coefs_``.

    ``n_params_`` counts every entry of every tensor and the change offsets;
    ``model_size_bytes_`` is :func:`model_size_bytes` with the matrices the
    model trained sparse, and 8 bytes per change offset (a float64 each).
    """
    coefs = model.coefs_
    n_params = int(sum(math.prod(np.shape(value)) for value in coefs.values()))
    n_bytes = model_size_bytes(coefs, sparse_keys(model))
    for row in offset_rows(model):
        n_params += row["params"]
        n_bytes += row["bytes"]
    return n_params, n_bytes


def offset_rows(model):
    """The row of :func:`size_report` of a model's change offsets (none without)."""
    offsets = offsets_of(model)
    if offsets is None:
        return []
    return [size_row("change_offsets", offsets, "float64", 8 * len(offsets))]


def size_row(tensor, value, storage, n_bytes):
    """One row of :func:`size_report`."""
    value = np.asarray(value)
    return {
        "tensor": tensor, "shape": value.shape, "params": int(value.size),
        "nonzeros": int(np.count_nonzero(value)), "storage": storage, "bytes": int(n_bytes),
    }


def size_report(model):
    """One row per stored tensor of a fitted model: what it costs.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN

    Returns
    -------
    list of dict
        Keys ``tensor``, ``shape``, ``params``, ``nonzeros``, ``storage``
        (e.g. "float32", "float32 sparse", "int8", "int8 sparse") and ``bytes``;
        the bytes sum to ``model.model_size_bytes_``.
    """
    own_rows = getattr(model, "_size_rows", None)
    if own_rows is not None:  # a model with its own storage (QuantizedFastGRNN)
        return own_rows()
    check_is_fitted(model, "coefs_")
    sparse = set(sparse_keys(model))
    return [
        size_row(key, value, "float32 sparse" if key in sparse else "float32",
                 tensor_bytes(value, sparse=key in sparse))
        for key, value in model.coefs_.items()
    ] + offset_rows(model)


def _plural(n, word, suffix="s"):
    return f"{n} {word}" + ("" if n == 1 else suffix)


def outputs_words(model):
    """What the outputs of a fitted model are, in words: "3 classes", "4 labels
    (multilabel)", "1 output (squared_error loss)"."""
    activation = getattr(model, "out_activation_", None)
    classes = getattr(model, "classes_", None)
    if activation == "logistic":
        return _plural(len(classes), "label") + " (multilabel)"
    if classes is not None:  # softmax, or a model that predates out_activation_
        return _plural(len(classes), "class", "es")
    loss = getattr(model, "loss", None)
    return _plural(int(model.n_outputs_), "output") + (f" ({loss} loss)" if loss else "")


def summary(model):
    """A printable table of parameters, non-zeros and bytes per tensor, and KB.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN
        Fitted.

    Returns
    -------
    str
        The first line names the model, its non-linearities, its outputs
        (classes, labels of a multilabel classifier, or a regressor's outputs
        and loss), its envelope and change channels, and its readout and
        window (and its phases) when they are not the last state and one
        timestep per step.
    """
    rows = size_report(model)
    width = max(12, *(len(r["tensor"]) for r in rows))
    extras = []
    if getattr(model, "envelope_width_", 0):
        extras.append(f"envelopes of {model.envelope_width_} timesteps")
    if uses_changes(model):
        extras.append("change channels")
    if getattr(model, "readout", "last") != "last":
        extras.append(f"{model.readout} readout")
    if getattr(model, "window_", 1) != 1:
        phases = getattr(model, "window_phases_", 1)
        extras.append(f"windows of {model.window_} timesteps"
                      + (f" read in {phases} phases" if phases > 1 else ""))
    lines = [
        f"{type(model).__name__}: {model.gate_nonlinearity} gate, "
        f"{model.update_nonlinearity} update, "
        + ", ".join([*extras, outputs_words(model)]),
        f"{'tensor':<{width}} {'shape':<10} {'params':>7} {'non-zeros':>9}  "
        f"{'storage':<15} {'bytes':>7}",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        lines.append(
            f"{r['tensor']:<{width}} {shape:<10} {r['params']:>7} {r['nonzeros']:>9}  "
            f"{r['storage']:<15} {r['bytes']:>7}"
        )
    params = sum(r["params"] for r in rows if r["tensor"] != "scales")
    nonzeros = sum(r["nonzeros"] for r in rows if r["tensor"] != "scales")
    total = sum(r["bytes"] for r in rows)
    lines.append(f"{'total':<{width}} {'':<10} {params:>7} {nonzeros:>9}  {'':<15} {total:>7}")
    lines.append(f"model size: {total} bytes = {total / 1024:.2f} KB")
    return "\n".join(lines)
