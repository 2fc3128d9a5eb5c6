"""ONNX graph of a fitted FastGRNN model: a Scan over time, with padding in-graph.

The graph reads one float32 input ``X`` of shape (batch, time, channels) and
computes what ``predict_proba`` and ``predict`` compute, in float32 but for the
input term (steps 1 and 3, in float64, so that inputs near the float32 maximum
can not overflow halfway through a sum; its float32 value then saturates the
cell as in the Python engine):

1. the scaler of a Pipeline, if any: ``(X - mean) / scale`` per channel
   (``SequenceScaler``) or per (timestep, channel) column (``StandardScaler``);
2. the padding mask: a timestep is real up to the last one with a non-NaN
   channel, so the state stops at the last real step as in the Python engine;
3. ``x_t @ W`` for all timesteps at once (``(x_t @ W1) @ W2`` at low rank);
4. a Scan over time of the cell (``h @ U``, both non-linearities, the update),
   keeping the previous state at padded steps;
5. ``probabilities = softmax(h_T @ V + bias_out)`` and ``label``, the class of
   the largest logit.
"""

import json

import numpy as np
from sklearn.preprocessing import StandardScaler

from .._files import write_atomically
from .._nonlinearities import scalar_sigmoid
from .._version import __version__
from ..preprocessing import SequenceScaler
from .weights import check_classifier, check_scaler, unpack_model

__all__ = ["to_onnx"]

OPSET = 17
INPUT_NAME = "X"


def _import_onnx():
    """The onnx package, or an ImportError saying how to get it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install "
            "'sklearn-fastgrnn[export]' (or pip install onnx onnxruntime)."
        ) from exc
    return onnx


class _GraphBuilder:
    """Nodes and float32 initializers of one (sub)graph, with unique names."""

    def __init__(self, onnx, prefix, counter):
        self.onnx, self.prefix, self.counter = onnx, prefix, counter
        self.nodes, self.initializers = [], []

    def _name(self, hint):
        self.counter[0] += 1
        return f"{self.prefix}{hint}_{self.counter[0]}"

    def const(self, hint, value, dtype=np.float32):
        """Add an initializer holding ``value`` and return its name."""
        name = self._name(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, inputs, hint=None, n_outputs=1, **attributes):
        """Add a node and return its output name (a list when ``n_outputs > 1``)."""
        outputs = [self._name(hint or op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), outputs, **attributes)
        )
        return outputs[0] if n_outputs == 1 else outputs


def _quant_sigmoid(g, x):  # clip((x + 1) / 2, 0, 1)
    half = g.const("half", 0.5)
    shifted = g.op("Add", [g.op("Mul", [x, half]), half])
    return g.op("Clip", [shifted, g.const("zero", 0.0), g.const("one", 1.0)])


def _quant_tanh(g, x):  # clip(x, -1, 1)
    return g.op("Clip", [x, g.const("minus_one", -1.0), g.const("one", 1.0)])


# name -> builder(g, x) of the nodes computing it; keyed by _nonlinearities.NONLINEARITIES
_ONNX_NONLINEARITIES = {
    "sigmoid": lambda g, x: g.op("Sigmoid", [x]),
    "tanh": lambda g, x: g.op("Tanh", [x]),
    "relu": lambda g, x: g.op("Relu", [x]),
    "quant_sigmoid": _quant_sigmoid,
    "quant_tanh": _quant_tanh,
}


def _cell_body(onnx, clf, counter):
    """The Scan body: ``(h, xw_t, real_t) -> h_t`` with ``xw_t = x_t @ W``."""
    coefs, H = clf.coefs_, clf.coefs_["V"].shape[0]
    g = _GraphBuilder(onnx, "cell_", counter)
    TP = onnx.TensorProto
    h, xw, real = "h_prev", "xw_t", "real_t"
    if "U" in coefs:
        hu = g.op("MatMul", [h, g.const("U", coefs["U"])], "h_U")
    else:
        hu = g.op("MatMul", [g.op("MatMul", [h, g.const("U1", coefs["U1"])], "h_U1"),
                             g.const("U2", coefs["U2"])], "h_U")
    pre = g.op("Add", [xw, hu], "pre")
    gate = _ONNX_NONLINEARITIES[clf.gate_nonlinearity]
    update = _ONNX_NONLINEARITIES[clf.update_nonlinearity]
    z = gate(g, g.op("Add", [pre, g.const("bias_gate", coefs["bias_gate"])]))
    c = update(g, g.op("Add", [pre, g.const("bias_update", coefs["bias_update"])]))
    # h_t = K * c + z * (h - sz * c),  K = sigmoid(zeta) + sigmoid(nu), as the engine
    sz = scalar_sigmoid(coefs["zeta"])
    K = sz + scalar_sigmoid(coefs["nu"])
    keep = g.op("Mul", [z, g.op("Sub", [h, g.op("Mul", [c, g.const("sigmoid_zeta", sz)])])])
    h_new = g.op("Add", [g.op("Mul", [c, g.const("K", K)]), keep], "h_new")
    h_out = g.op("Where", [real, h_new, h], "h_out")
    graph = onnx.helper.make_graph(
        g.nodes, "fastgrnn_cell",
        inputs=[
            onnx.helper.make_tensor_value_info(h, TP.FLOAT, ["batch", H]),
            onnx.helper.make_tensor_value_info(xw, TP.FLOAT, ["batch", H]),
            onnx.helper.make_tensor_value_info(real, TP.BOOL, ["batch", 1]),
        ],
        outputs=[onnx.helper.make_tensor_value_info(h_out, TP.FLOAT, ["batch", H])],
        initializer=g.initializers,
    )
    return graph


def _label_tensor(onnx, classes):
    """``classes_`` as an ONNX tensor: int64, string, bool or double labels."""
    TP = onnx.TensorProto
    if classes.dtype.kind == "b":
        return onnx.numpy_helper.from_array(classes, "classes"), TP.BOOL
    if classes.dtype.kind in "iu":
        if classes.dtype.kind == "u" and classes.max() > np.iinfo(np.int64).max:
            raise ValueError("Class labels above the int64 range can not be exported.")
        values = classes.astype(np.int64)
        return onnx.numpy_helper.from_array(values, "classes"), TP.INT64
    if classes.dtype.kind == "f":
        values = classes.astype(np.float64)
        return onnx.numpy_helper.from_array(values, "classes"), TP.DOUBLE
    if classes.dtype.kind in "UO" and all(isinstance(c, str) for c in classes):
        tensor = onnx.helper.make_tensor(
            "classes", TP.STRING, [len(classes)], [c.encode("utf-8") for c in classes]
        )
        return tensor, TP.STRING
    raise ValueError(
        f"Class labels of dtype {classes.dtype} can not be an ONNX label output; use "
        "integer, float or string labels."
    )


def _scale(g, scaler, clf, x):
    """The scaler step: per channel (SequenceScaler) or per column (StandardScaler)."""
    if isinstance(scaler, SequenceScaler):
        shape, mean, scale = (clf.n_channels_,), scaler.mean_, scaler.scale_
    else:  # StandardScaler: one statistic per (timestep, channel) column
        shape = (clf.n_timesteps_, clf.n_channels_)
        mean = scaler.mean_ if scaler.with_mean else None
        scale = scaler.scale_ if scaler.with_std else None
    if mean is not None:
        x = g.op("Sub", [x, g.const("scaler_mean", np.reshape(mean, shape), np.float64)])
    if scale is not None:
        x = g.op("Div", [x, g.const("scaler_scale", np.reshape(scale, shape), np.float64)])
    return x


def to_onnx(model, path=None):
    """Build (and optionally write) the ONNX model of a fitted model.

    Parameters
    ----------
    model : FastGRNNClassifier or Pipeline
        A fitted classifier, or a Pipeline of an optional ``require_2d`` step,
        an optional ``SequenceScaler`` or ``StandardScaler`` and the classifier.
    path : str or path-like, default=None
        When given, the model is also written there (atomically).

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model``. Input ``X``: float32 of
        shape ``(batch, time, n_channels_)``, NaN-padded at the end for shorter
        sequences; ``time`` is free, except after a ``StandardScaler``, whose
        statistics fix it to ``n_timesteps_``. A model fitted on 2D input reads
        ``X.reshape(n, n_timesteps_, n_channels_)``. Outputs ``probabilities``
        (float32, (batch, n_classes), columns in the order of ``classes_``) and
        ``label`` ((batch,), int64 for integer classes, string for string
        classes, double for float classes).

    Notes
    -----
    The graph does not validate its input. Trailing all-NaN timesteps are
    padding, and a padded sequence gives exactly the probabilities of the
    unpadded one. Any other NaN in a sequence (inside a step, a leading all-NaN
    step, an all-NaN sequence), which ``predict`` rejects, gives NaN
    probabilities for that row only (onnxruntime then labels it ``classes_[0]``).
    """
    onnx = _import_onnx()
    clf, scaler, _ = unpack_model(model)
    check_classifier(clf, "to_onnx refuses it")
    if scaler is not None:
        check_scaler(scaler, "to_onnx refuses it")
    coefs = clf.coefs_
    H, C, d = coefs["V"].shape[0], coefs["V"].shape[1], clf.n_channels_
    TP = onnx.TensorProto
    counter = [0]
    g = _GraphBuilder(onnx, "", counter)
    fixed_time = isinstance(scaler, StandardScaler)  # its statistics are per timestep
    time_dim = clf.n_timesteps_ if fixed_time else "time"

    x = g.op("Cast", [INPUT_NAME], "X_double", to=TP.DOUBLE)
    x = _scale(g, scaler, clf, x) if scaler is not None else x
    # padding: real timesteps run up to the last one with a non-NaN channel
    n_nan = g.op("MatMul", [g.op("Cast", [g.op("IsNaN", [INPUT_NAME])], to=TP.FLOAT),
                            g.const("ones", np.ones((d, 1)))], "n_nan")
    step_real = g.op("Cast", [g.op("Less", [n_nan, g.const("d", d - 0.5)])], to=TP.FLOAT)
    last_real = g.op("ArgMax", [step_real], "last_real", axis=1, keepdims=1,
                     select_last_index=1)
    shape = g.op("Shape", [INPUT_NAME])
    T = g.op("Gather", [shape, g.const("axis1", 1, np.int64)], "T", axis=0)
    steps = g.op("Range", [g.const("start", 0, np.int64), T, g.const("delta", 1, np.int64)])
    steps = g.op("Reshape", [steps, g.const("shape_1_T_1", [1, -1, 1], np.int64)])
    real = g.op("LessOrEqual", [steps, last_real], "real")  # (batch, time, 1)

    def weight(key):  # stored float32 like the other weights, multiplied in float64
        return g.op("Cast", [g.const(key, coefs[key])], key + "_double", to=TP.DOUBLE)

    if "W" in coefs:
        xw = g.op("MatMul", [x, weight("W")], "x_W")
    else:
        xw = g.op("MatMul", [g.op("MatMul", [x, weight("W1")], "x_W1"), weight("W2")], "x_W")
    xw = g.op("Cast", [xw], "x_W_float", to=TP.FLOAT)

    batch = g.op("Slice", [shape, g.const("s0", [0], np.int64), g.const("s1", [1], np.int64)])
    h0 = g.op("ConstantOfShape", [g.op("Concat", [batch, g.const("H", [H], np.int64)], axis=0)],
              "h0", value=onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    body = _cell_body(onnx, clf, counter)
    h_T = g.op("Scan", [h0, xw, real], "h_T", body=body, num_scan_inputs=2,
               scan_input_axes=[1, 1])

    logits = g.op("Add", [g.op("MatMul", [h_T, g.const("V", coefs["V"])]),
                          g.const("bias_out", coefs["bias_out"])], "logits")
    g.nodes.append(onnx.helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    index = g.op("ArgMax", [logits], "index", axis=1, keepdims=0)
    classes, label_type = _label_tensor(onnx, np.asarray(clf.classes_))
    g.initializers.append(classes)
    g.nodes.append(onnx.helper.make_node("Gather", ["classes", index], ["label"], axis=0))

    graph = onnx.helper.make_graph(
        g.nodes, "sklearn_fastgrnn",
        inputs=[onnx.helper.make_tensor_value_info(
            INPUT_NAME, TP.FLOAT, ["batch", time_dim, d])],
        outputs=[
            onnx.helper.make_tensor_value_info("probabilities", TP.FLOAT, ["batch", C]),
            onnx.helper.make_tensor_value_info("label", label_type, ["batch"]),
        ],
        initializer=g.initializers,
        doc_string=(
            "FastGRNN classifier. Input X: float32 (batch, time, channels), "
            "trailing all-NaN timesteps are padding. Outputs: probabilities "
            "(batch, n_classes), label (batch,)."
        ),
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="sklearn_fastgrnn",
        producer_version=__version__,
    )
    onnx.helper.set_model_props(proto, {
        "classes": json.dumps(np.asarray(clf.classes_).tolist()),
        "n_timesteps": str(clf.n_timesteps_),
        "n_channels": str(d),
        "gate_nonlinearity": clf.gate_nonlinearity,
        "update_nonlinearity": clf.update_nonlinearity,
    })
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        write_atomically(path, proto.SerializeToString())
    return proto
