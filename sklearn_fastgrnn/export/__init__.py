"""Deployment files of a fitted model: safe weights, ONNX and C.

- :func:`save_weights` / :func:`load_weights`: a safetensors file with JSON
  metadata; loading never unpickles.
- :func:`to_onnx`: an ONNX graph (a Scan over time) for onnxruntime and friends,
  or a graph of one timestep with the streams' state in and out (``step=True``;
  :func:`state_layout` says where each part of the state is).
- :func:`export_c`: a dependency-free C header and source.
- :func:`compile_predictor`: that C code built with the system compiler and
  called from Python (ctypes).
- :func:`export_model`: one entry point for the three files, used by the command
  line; :data:`FORMATS` names them (the command line's ``--format`` choices).

The optional packages (``pip install 'sklearn-fastgrnn[export]'``) are imported
only when a function that needs them is called.
"""

import importlib
import os

_LAZY = {
    "save_weights": ".weights",
    "load_weights": ".weights",
    "to_onnx": ".onnx",
    "state_layout": ".onnx",
    "export_c": ".c",
    "compile_predictor": ".compiled",
}


def _write_safetensors(model, out):
    return __getattr__("save_weights")(model, out)


def _write_onnx(model, out):
    __getattr__("to_onnx")(model, path=out)
    return os.fspath(out)


def _write_c(model, out):
    __getattr__("export_c")(model, out)
    return os.fspath(out)


# format name -> writer(model, out); the one list of formats (CLI choices, docs test)
_WRITERS = {"safetensors": _write_safetensors, "onnx": _write_onnx, "c": _write_c}
FORMATS = tuple(_WRITERS)

__all__ = ["FORMATS", "compile_predictor", "export_c", "export_model", "load_weights",
           "save_weights", "state_layout", "to_onnx"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_model(model, format, out):
    """Write a fitted model in one of the deployment formats.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        A fitted estimator (or a Pipeline of a scaler and the estimator, for
        the formats that support it).
    format : {"safetensors", "onnx", "c"}
        One of :data:`FORMATS`. "safetensors": a weights file
        (:func:`save_weights`); "onnx": an ONNX model file (:func:`to_onnx`);
        "c": a directory with a C header and source (:func:`export_c`).
    out : str or path-like
        The file to write ("safetensors", "onnx") or the directory ("c").

    Returns
    -------
    out : str
        What was written.
    """
    writer = _WRITERS.get(format) if isinstance(format, str) else None
    if writer is None:
        raise ValueError(f"Unknown export format {format!r}; choose one of {list(FORMATS)}.")
    return writer(model, out)
