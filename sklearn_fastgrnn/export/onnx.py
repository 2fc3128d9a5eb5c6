"""ONNX graphs of a fitted FastGRNN model: a whole-sequence graph and a step graph.

The **sequence graph** (:func:`to_onnx`) reads one float32 input ``X`` of shape
(batch, time, channels) and computes what ``predict_proba`` and ``predict``
(classifier) or ``predict`` (regressor) compute, in float32 but for the input
term (steps 1 to 5, in float64, so that inputs near the float32 maximum can not
overflow halfway through a sum; its float32 value then saturates the cell as in
the Python engine):

1. the scaler of a Pipeline, if any: ``(X - mean) / scale`` per channel
   (``SequenceScaler``) or per (timestep, channel) column (``StandardScaler``);
2. with ``change_channels``, each timestep followed by the change channels
   ``c_t = |x_t - x_{t-1}|`` (0 at the first timestep) of the scaled input,
   capped at the float32 maximum and rounded to float32, then by
   ``log(c_t + change_offsets_)``, computed in float64 and rounded to float32
   (:mod:`~sklearn_fastgrnn._channels`): the cell channels, ``3 * channels``
   per timestep (else ``channels``);
3. the padding mask: a timestep is real up to the last one with a non-NaN
   channel (of ``X``), so the state stops at the last real step as in the
   Python engine;
4. with ``window_ = k > 1``, the timesteps after the last real one are filled
   with it and the time axis is padded to a multiple of ``k`` by repeating its
   last step (``_sequences.windowed``'s edge fill), then read as
   ``ceil(time / k)`` cell steps of ``k`` times the cell channels;
5. ``x_t @ W`` for all cell steps at once (``(x_t @ W1) @ W2`` at low rank);
6. a Scan over the cell steps (``h @ U``, both non-linearities, the update),
   keeping the previous state at padded steps, and the running sum (readout
   ``"mean"``) or maximum (``"max"``) of the states over the real steps;
7. the readout (the last state, the sum divided by the real cell steps, or
   the maximum), ``outputs = readout @ V + bias_out`` and the model's head:
   ``softmax`` and the label of the largest output (a classifier),
   ``sigmoid`` and ``outputs > 0`` (a multilabel classifier), the outputs or
   their ``exp`` (a regressor, ``loss="squared_error"`` or ``"poisson"``).

The **step graph** (``to_onnx(model, step=True)``) is one timestep of
:class:`~sklearn_fastgrnn.streaming.Streamer`, without control flow: inputs
``x`` (batch, channels) and ``state`` (batch, ``state_size``), outputs the
predictions for the sequences so far and ``new_state``. The state rows are
those of ``Streamer.state`` (float64; see :data:`STATE_LAYOUT_DOC`), so a state
moves between Python and an ONNX runtime either way. The cell is computed once
per call, on the window being filled completed with its last timestep; ``Where``
commits the result to the state only when the window is full, and the
predictions read it whenever the window holds a timestep. With
``change_channels`` the state also holds the stream's last timestep, which the
next change is taken from.
"""

import json

import numpy as np
from sklearn.preprocessing import StandardScaler

from .._channels import n_cell_channels
from .._files import write_atomically
from .._nonlinearities import scalar_sigmoid
from .._version import __version__
from ..preprocessing import SequenceScaler
from .weights import check_fitted_model, check_scaler, out_activation, unpack_model

__all__ = ["state_layout", "to_onnx"]

OPSET = 17
INPUT_NAME = "X"
STEP_INPUT, STATE_INPUT, STATE_OUTPUT = "x", "state", "new_state"
STATE_LAYOUT_DOC = """\
One row per stream, float64, ``2 * H + k * c + p + 3`` values (``H`` the hidden
size, ``k`` the window, ``d`` the input channels, ``c`` the cell channels: ``3 d``
with ``change_channels``, else ``d``; ``p``: ``d`` with ``change_channels``, else
0), as ``Streamer.state``: ``[h (H) | pool (H) | steps | filled | window (k * c)
| previous (p) | n_timesteps_seen]``: the hidden state; the sum (readout
"mean") or maximum ("max") of the committed states (zeros for "last"); the cell
steps committed; the timesteps of the window being filled (0 to k - 1); that
window, time-major, each timestep as the cell reads it (only its first
``filled`` timesteps count); the last timestep received (as the estimator
receives it: scaled), which the next change is taken from; the timesteps
received. Zeros are the state of an empty sequence."""


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
    """Nodes and initializers of one (sub)graph, with unique names."""

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

    def ints(self, hint, value):
        """An int64 initializer (shapes, indices, axes)."""
        return self.const(hint, value, np.int64)

    def op(self, op_type, inputs, hint=None, n_outputs=1, output=None, **attributes):
        """Add a node and return its output name (a list when ``n_outputs > 1``).

        ``output`` names the (single) output, for a graph output.
        """
        if output is not None:
            outputs = [output]
        else:
            outputs = [self._name(hint or op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), outputs, **attributes)
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def cast(self, x, to, hint=None):
        return self.op("Cast", [x], hint, to=to)

    def where(self, condition, a, b, hint=None):
        return self.op("Where", [condition, a, b], hint)


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


# ------------------------------------------------------------ shared pieces
def _cell(g, est, h, xw):
    """Nodes of one cell step: ``h_t`` (float32, (batch, H)) from ``h`` and ``xw = x_t @ W``."""
    coefs = est.coefs_
    if "U" in coefs:
        hu = g.op("MatMul", [h, g.const("U", coefs["U"])], "h_U")
    else:
        hu = g.op("MatMul", [g.op("MatMul", [h, g.const("U1", coefs["U1"])], "h_U1"),
                             g.const("U2", coefs["U2"])], "h_U")
    pre = g.op("Add", [xw, hu], "pre")
    gate = _ONNX_NONLINEARITIES[est.gate_nonlinearity]
    update = _ONNX_NONLINEARITIES[est.update_nonlinearity]
    z = gate(g, g.op("Add", [pre, g.const("bias_gate", coefs["bias_gate"])]))
    c = update(g, g.op("Add", [pre, g.const("bias_update", coefs["bias_update"])]))
    # h_t = K * c + z * (h - sz * c),  K = sigmoid(zeta) + sigmoid(nu), as the engine
    sz = scalar_sigmoid(coefs["zeta"])
    K = sz + scalar_sigmoid(coefs["nu"])
    keep = g.op("Mul", [z, g.op("Sub", [h, g.op("Mul", [c, g.const("sigmoid_zeta", sz)])])])
    return g.op("Add", [g.op("Mul", [c, g.const("K", K)]), keep], "h_new")


def _pooled(g, readout, pool, h_new):
    """The readout pool after a step: the running sum ("mean") or maximum ("max").

    The maximum keeps NaN as NumPy's does: ``h_new`` replaces the pool where it
    is larger or NaN, and a NaN pool stays.
    """
    if readout == "mean":
        return g.op("Add", [pool, h_new], "pool_sum")
    larger = g.op("Or", [g.op("Greater", [h_new, pool]), g.op("IsNaN", [h_new])])
    return g.where(larger, h_new, pool, "pool_max")


def _input_term(g, est, x):
    """``x @ W`` (``(x @ W1) @ W2`` at low rank) of float64 ``x``, rounded to float32."""
    coefs, TP = est.coefs_, g.onnx.TensorProto

    def weight(key):  # stored float32 like the other weights, multiplied in float64
        return g.cast(g.const(key, coefs[key]), TP.DOUBLE, key + "_double")

    if "W" in coefs:
        xw = g.op("MatMul", [x, weight("W")], "x_W")
    else:
        xw = g.op("MatMul", [g.op("MatMul", [x, weight("W1")], "x_W1"), weight("W2")], "x_W")
    return g.cast(xw, TP.FLOAT, "x_W_float")


def _with_changes(g, x, previous, offsets):
    """Float64 timesteps ``x`` (last axis: the channels) followed by their change
    channels ``|x - previous|``, capped at the float32 maximum and rounded to
    float32, and ``log(change + offsets)``, computed in float64 and rounded to
    float32, as :func:`~sklearn_fastgrnn._channels.with_changes`."""
    TP = g.onnx.TensorProto
    change = g.op("Abs", [g.op("Sub", [x, previous])], "change")
    cap = g.const("float32_max", np.finfo(np.float32).max, np.float64)
    change = g.cast(g.op("Min", [change, cap], "change_capped"), TP.FLOAT, "change_float")
    change = g.cast(change, TP.DOUBLE, "change_double")
    # a capped change plus a float32 offset is far below the float64 maximum
    total = g.op("Add", [change, g.const("change_offsets", offsets, np.float64)], "change_offset")
    log = g.cast(g.op("Log", [total], "log_change"), TP.FLOAT, "log_change_float")
    return g.op("Concat", [x, change, g.cast(log, TP.DOUBLE, "log_change_double")],
                "cell_channels", axis=-1)


def _all_nan(g, x, d):
    """Whether every channel of ``x`` (last axis ``d``) is NaN, keeping that axis."""
    TP = g.onnx.TensorProto
    n_nan = g.op("MatMul", [g.cast(g.op("IsNaN", [x]), TP.FLOAT),
                            g.const("ones", np.ones((d, 1)))], "n_nan")
    return g.op("Greater", [n_nan, g.const("d", d - 0.5)], "all_nan")


def _head(g, est, outputs, labels_from=None):
    """The model's predictions from the outputs ``r @ V + bias_out``.

    Returns the graph outputs as ``[(name, elem_type, shape)]``; the output
    names are fixed: ``probabilities`` and ``label`` (classifier),
    ``predictions`` (regressor).
    """
    onnx, TP = g.onnx, g.onnx.TensorProto
    activation, n_outputs = out_activation(est), est.n_outputs_
    if activation == "softmax":
        g.op("Softmax", [outputs], axis=1, output="probabilities")
        index = g.op("ArgMax", [outputs], "index", axis=1, keepdims=0)
        classes, label_type = _label_tensor(onnx, np.asarray(est.classes_), g._name("classes"))
        g.initializers.append(classes)
        g.op("Gather", [classes.name, index], axis=0, output="label")
        return [("probabilities", TP.FLOAT, ["batch", n_outputs]),
                ("label", label_type, ["batch"])]
    if activation == "logistic":  # multilabel: one sigmoid per label, predict outputs > 0
        g.op("Sigmoid", [outputs], output="probabilities")
        positive = g.op("Greater", [outputs, g.const("zero", 0.0)], "positive")
        g.op("Cast", [positive], to=TP.INT64, output="label")
        return [("probabilities", TP.FLOAT, ["batch", n_outputs]),
                ("label", TP.INT64, ["batch", n_outputs])]
    if activation == "exp":
        outputs = g.op("Exp", [outputs], "exp_outputs")
    elif activation != "identity":
        raise ValueError(f"out_activation_={activation!r} has no ONNX translation.")
    if n_outputs == 1:  # predict returns one output as a 1D array
        g.op("Squeeze", [outputs, g.ints("axis1", [1])], output="predictions")
        return [("predictions", TP.FLOAT, ["batch"])]
    g.op("Identity", [outputs], output="predictions")
    return [("predictions", TP.FLOAT, ["batch", n_outputs])]


def _label_tensor(onnx, classes, name="classes"):
    """``classes_`` as an ONNX tensor: int64, string, bool or double labels."""
    TP = onnx.TensorProto
    if classes.dtype.kind == "b":
        return onnx.numpy_helper.from_array(classes, name), TP.BOOL
    if classes.dtype.kind in "iu":
        if classes.dtype.kind == "u" and classes.max() > np.iinfo(np.int64).max:
            raise ValueError("Class labels above the int64 range can not be exported.")
        values = classes.astype(np.int64)
        return onnx.numpy_helper.from_array(values, name), TP.INT64
    if classes.dtype.kind == "f":
        values = classes.astype(np.float64)
        return onnx.numpy_helper.from_array(values, name), TP.DOUBLE
    if classes.dtype.kind in "UO" and all(isinstance(c, str) for c in classes):
        tensor = onnx.helper.make_tensor(
            name, TP.STRING, [len(classes)], [c.encode("utf-8") for c in classes]
        )
        return tensor, TP.STRING
    raise ValueError(
        f"Class labels of dtype {classes.dtype} can not be an ONNX label output; use "
        "integer, float or string labels."
    )


def _scale(g, scaler, est, x):
    """The scaler step: per channel (SequenceScaler) or per (timestep, channel)
    column (StandardScaler)."""
    if isinstance(scaler, SequenceScaler):
        shape, mean, scale = (est.n_channels_,), scaler.mean_, scaler.scale_
    else:  # StandardScaler: one statistic per (timestep, channel) column
        shape = (est.n_timesteps_, est.n_channels_)
        mean = scaler.mean_ if scaler.with_mean else None
        scale = scaler.scale_ if scaler.with_std else None
    if mean is not None:
        x = g.op("Sub", [x, g.const("scaler_mean", np.reshape(mean, shape), np.float64)])
    if scale is not None:
        x = g.op("Div", [x, g.const("scaler_scale", np.reshape(scale, shape), np.float64)])
    return x


# ------------------------------------------------------------ sequence graph
def _scan_body(onnx, est, counter):
    """The Scan body: ``(h, [pool,] xw_t, real_t) -> (h_t, [pool_t])``."""
    H = est.coefs_["V"].shape[0]
    g = _GraphBuilder(onnx, "cell_", counter)
    TP = onnx.TensorProto
    pooled = est.readout in ("mean", "max")
    h, pool, xw, real = "h_prev", "pool_prev", "xw_t", "real_t"
    h_new = _cell(g, est, h, xw)
    outputs = [g.where(real, h_new, h, "h_out")]
    if pooled:
        outputs.append(g.where(real, _pooled(g, est.readout, pool, h_new), pool, "pool_out"))

    def info(name, elem=TP.FLOAT, width=H):
        return onnx.helper.make_tensor_value_info(name, elem, ["batch", width])

    return onnx.helper.make_graph(
        g.nodes, "fastgrnn_cell",
        inputs=[info(h), *([info(pool)] if pooled else []), info(xw),
                info(real, TP.BOOL, 1)],
        outputs=[info(name) for name in outputs],
        initializer=g.initializers,
    )


def _sequence_graph(onnx, est, scaler, g):
    """Nodes of the sequence graph; returns its inputs and outputs."""
    TP = onnx.TensorProto
    coefs, d, k = est.coefs_, est.n_channels_, int(getattr(est, "window_", 1))
    c, H = n_cell_channels(est), coefs["V"].shape[0]
    fixed_time = isinstance(scaler, StandardScaler)  # its statistics are per timestep
    time_dim = est.n_timesteps_ if fixed_time else "time"

    x = g.cast(INPUT_NAME, TP.DOUBLE, "X_double")
    x = _scale(g, scaler, est, x) if scaler is not None else x
    if c > d:  # the previous timestep of each, the first its own (a change of 0)
        first_twice = g.op("Pad", [x, g.ints("pads_time_start", [0, 1, 0, 0, 0, 0])],
                           "first_twice", mode="edge")
        previous = g.op("Slice", [first_twice, g.ints("zero", [0]), g.ints("minus_one", [-1]),
                                  g.ints("axis1", [1])], "previous_timestep")
        x = _with_changes(g, x, previous, est.change_offsets_)
    # padding: real timesteps run up to the last one with a non-NaN channel
    step_real = g.cast(g.op("Not", [_all_nan(g, INPUT_NAME, d)]), TP.FLOAT, "step_real")
    last_real = g.op("ArgMax", [step_real], "last_real", axis=1, keepdims=1,
                     select_last_index=1)  # (batch, 1, 1); T - 1 for a row of NaN
    shape = g.op("Shape", [INPUT_NAME])
    batch = g.op("Slice", [shape, g.ints("s0", [0]), g.ints("s1", [1])], "batch")
    T = g.op("Slice", [shape, g.ints("s1", [1]), g.ints("s2", [2])], "T")
    if k > 1:  # windows of k timesteps, the last one edge-filled (_sequences.windowed)
        index = g.op("Expand", [last_real, g.op("Concat", [batch, g.ints("one", [1]),
                                                          g.ints("d", [c])], axis=0)])
        last = g.op("GatherElements", [x, index], "last_timestep", axis=1)
        steps = g.op("Range", [g.const("start", 0, np.int64),
                               g.op("Squeeze", [T, g.ints("axis0", [0])]),
                               g.const("delta", 1, np.int64)])
        steps = g.op("Reshape", [steps, g.ints("shape_1_T_1", [1, -1, 1])])
        real_t = g.op("LessOrEqual", [steps, last_real], "timestep_real")
        x = g.where(real_t, x, last, "edge_filled")
        window = g.ints("k", [k])
        fill = g.op("Sub", [g.op("Mul", [g.op("Div", [g.op("Add", [T, g.ints("k_1", [k - 1])]),
                                                      window]), window]), T], "fill")
        # pads: the starts of the three axes, then their ends (time: ``fill``)
        pads = g.op("Concat", [g.ints("zeros4", [0, 0, 0, 0]), fill, g.ints("zero", [0])],
                    "pads", axis=0)
        x = g.op("Pad", [x, pads], "edge_padded", mode="edge")
        x = g.op("Reshape", [x, g.ints("shape_windows", [0, -1, k * c])], "windows")
        last_real = g.op("Div", [last_real, g.const("k_scalar", k, np.int64)], "last_real_window")
        n_steps = g.op("Div", [g.op("Add", [T, g.ints("k_1", [k - 1])]), window], "n_windows")
    else:
        n_steps = T
    steps = g.op("Range", [g.const("start", 0, np.int64),
                           g.op("Squeeze", [n_steps, g.ints("axis0", [0])]),
                           g.const("delta", 1, np.int64)])
    steps = g.op("Reshape", [steps, g.ints("shape_1_T_1", [1, -1, 1])])
    real = g.op("LessOrEqual", [steps, last_real], "real")  # (batch, steps, 1)
    xw = _input_term(g, est, x)

    zeros = onnx.numpy_helper.from_array(np.zeros(1, np.float32))
    state_shape = g.op("Concat", [batch, g.ints("H", [H])], axis=0)
    h0 = g.op("ConstantOfShape", [state_shape], "h0", value=zeros)
    body = _scan_body(onnx, est, g.counter)
    if est.readout == "last":
        r = g.op("Scan", [h0, xw, real], "h_T", body=body, num_scan_inputs=2,
                 scan_input_axes=[1, 1])
    else:
        start = zeros if est.readout == "mean" else onnx.numpy_helper.from_array(
            np.full(1, -np.inf, np.float32))
        pool0 = g.op("ConstantOfShape", [state_shape], "pool0", value=start)
        _, pool = g.op("Scan", [h0, pool0, xw, real], "scan", n_outputs=2, body=body,
                       num_scan_inputs=2, scan_input_axes=[1, 1])
        if est.readout == "mean":  # the sum over the real cell steps / their number
            count = g.op("Add", [g.op("Reshape", [last_real, g.ints("shape_b1", [-1, 1])]),
                                 g.const("one", 1, np.int64)], "real_steps")
            r = g.op("Div", [pool, g.cast(count, TP.FLOAT)], "mean_state")
        else:
            r = pool
    outputs = g.op("Add", [g.op("MatMul", [r, g.const("V", coefs["V"])]),
                           g.const("bias_out", coefs["bias_out"])], "outputs")
    graph_outputs = _head(g, est, outputs)
    inputs = [(INPUT_NAME, TP.FLOAT, ["batch", time_dim, d])]
    return inputs, graph_outputs


# ------------------------------------------------------------ step graph
def state_layout(model):
    """Where each part of a stream's state row is, as the step graph and
    ``Streamer.state`` hold it.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        Fitted.

    Returns
    -------
    dict
        ``size`` (values per row) and, per part, its column: ``h``, ``pool``,
        ``window`` and (``change_channels`` only) ``previous`` as ``[start,
        stop)`` pairs, ``steps``, ``filled`` and ``n_timesteps_seen`` as column
        indices.
    """
    est, _, _ = unpack_model(model)
    H, d, c = est.coefs_["V"].shape[0], est.n_channels_, n_cell_channels(est)
    window_end = 2 * H + 2 + int(getattr(est, "window_", 1)) * c
    seen = window_end + (d if c > d else 0)  # after the last timestep, for the changes
    layout = {"size": seen + 1, "h": [0, H], "pool": [H, 2 * H], "steps": 2 * H,
              "filled": 2 * H + 1, "window": [2 * H + 2, window_end]}
    if seen > window_end:
        layout["previous"] = [window_end, seen]
    layout["n_timesteps_seen"] = seen
    return layout


def _step_graph(onnx, est, scaler, g):
    """Nodes of the step graph (one timestep of ``Streamer.update``); returns its
    inputs and outputs."""
    TP = onnx.TensorProto
    layout = state_layout(est)
    d, k = est.n_channels_, int(getattr(est, "window_", 1))
    c = n_cell_channels(est)
    state = STATE_INPUT

    def part(name):
        where = layout[name]
        start, stop = where if isinstance(where, list) else (where, where + 1)
        return g.op("Slice", [state, g.ints("start", [start]), g.ints("stop", [stop]),
                              g.ints("axis1", [1])], name)

    def as_float(x):
        return g.cast(x, TP.FLOAT)

    h, pool = as_float(part("h")), as_float(part("pool"))
    steps, filled, seen = part("steps"), part("filled"), part("n_timesteps_seen")
    buffer = g.op("Reshape", [part("window"), g.ints("shape_bkd", [0, k, c])], "buffer")

    x = g.cast(STEP_INPUT, TP.DOUBLE, "x_double")
    x = _scale(g, scaler, est, x) if scaler is not None else x
    active = g.op("Not", [_all_nan(g, STEP_INPUT, d)], "active")  # (batch, 1)
    new_previous = []
    if c > d:  # the change from the previous timestep; 0 for the first since a reset
        previous = part("previous")
        zero = g.const("zero", 0.0, np.float64)
        first = g.op("And", [g.op("Equal", [steps, zero]), g.op("Equal", [filled, zero])],
                     "first_timestep")
        new_previous = [g.where(active, x, previous, "previous_new")]
        x = _with_changes(g, x, g.where(first, x, previous, "previous_or_own"),
                          est.change_offsets_)
    position = g.ints("positions", np.arange(k).reshape(1, k, 1))
    to_3d = g.ints("axis2", [2])
    filled_i = g.cast(filled, TP.INT64, "filled_int")
    write = g.op("And", [g.op("Equal", [position, g.op("Unsqueeze", [filled_i, to_3d])]),
                         g.op("Unsqueeze", [active, to_3d])], "write")
    buffer = g.where(write, g.op("Unsqueeze", [x, g.ints("axis1", [1])]), buffer, "buffer_new")
    filled = g.op("Add", [filled, g.cast(active, TP.DOUBLE)], "filled_now")  # 0 to k
    filled_i = g.cast(filled, TP.INT64, "filled_now_int")
    # the window completed with its last timestep, as predict completes a sequence's
    last_index = g.op("Max", [g.op("Sub", [filled_i, g.ints("one", [1])]), g.ints("zero", [0])])
    shape = g.op("Shape", [STEP_INPUT])
    batch = g.op("Slice", [shape, g.ints("s0", [0]), g.ints("s1", [1])], "batch")
    index = g.op("Expand", [g.op("Unsqueeze", [last_index, to_3d]),
                            g.op("Concat", [batch, g.ints("one", [1]), g.ints("d", [c])],
                                 axis=0)])
    last = g.op("GatherElements", [buffer, index], "last_timestep", axis=1)
    inside = g.op("Less", [position, g.op("Unsqueeze", [filled_i, to_3d])])
    window = g.op("Reshape", [g.where(inside, buffer, last),
                              g.ints("shape_window", [0, k * c])], "window")
    h_step = _cell(g, est, h, _input_term(g, est, window))
    pool_step = _pooled(g, est.readout, pool, h_step) if est.readout != "last" else pool
    if est.readout == "max":  # the first step's state is the maximum
        first = g.op("Equal", [steps, g.const("zero", 0.0, np.float64)])
        pool_step = g.where(first, h_step, pool_step, "pool_first")

    # commit a full window; read the state with the window so far
    full = g.op("Equal", [filled_i, g.ints("k", [k])], "full")
    pending = g.op("Greater", [filled_i, g.ints("zero", [0])], "pending")
    new_parts = [
        g.cast(g.where(full, h_step, h), TP.DOUBLE),
        g.cast(g.where(full, pool_step, pool), TP.DOUBLE),
        g.op("Add", [steps, g.cast(full, TP.DOUBLE)], "steps_new"),
        g.where(full, g.const("zero", 0.0, np.float64), filled, "filled_new"),
        g.op("Reshape", [buffer, g.ints("shape_window", [0, k * c])]),
        *new_previous,
        g.op("Add", [seen, g.cast(active, TP.DOUBLE)], "seen_new"),
    ]
    g.op("Concat", new_parts, axis=1, output=STATE_OUTPUT)
    if est.readout == "last":
        r = g.where(pending, h_step, h, "h_read")
    else:
        pool_read = g.where(pending, pool_step, pool, "pool_read")
        steps_read = g.op("Add", [steps, g.cast(pending, TP.DOUBLE)], "steps_read")
        if est.readout == "mean":
            count = g.op("Max", [steps_read, g.const("one", 1.0, np.float64)])
            r = g.op("Div", [pool_read, as_float(count)], "mean_state")
        else:  # before any step the readout is 0
            r = g.where(g.op("Greater", [steps_read, g.const("zero", 0.0, np.float64)]),
                        pool_read, g.const("zero", 0.0), "max_state")
    outputs = g.op("Add", [g.op("MatMul", [r, g.const("V", est.coefs_["V"])]),
                           g.const("bias_out", est.coefs_["bias_out"])], "outputs")
    graph_outputs = _head(g, est, outputs)
    size = layout["size"]
    inputs = [(STEP_INPUT, TP.FLOAT, ["batch", d]), (STATE_INPUT, TP.DOUBLE, ["batch", size])]
    return inputs, [*graph_outputs, (STATE_OUTPUT, TP.DOUBLE, ["batch", size])]


# ------------------------------------------------------------------- entry
def _description(est, step):
    """The graph's doc string: what goes in and what comes out."""
    kind = type(est).__name__
    if step:
        what = (f"{kind}, one timestep per call. Inputs: x float32 (batch, channels), a "
                "row of NaN adding nothing to its stream; state float64 (batch, "
                "state_size), zeros for an empty sequence. Outputs: the predictions for "
                "the sequences so far, and new_state.")
    else:
        what = (f"{kind}. Input X: float32 (batch, time, channels), trailing all-NaN "
                "timesteps are padding.")
    if n_cell_channels(est) > est.n_channels_:
        what += (" The cell reads each channel, its absolute change since the previous "
                 "timestep" + (", which the state keeps," if step else "") + " and the "
                 "logarithm of the change plus the channel's offset.")
    if out_activation(est) in ("softmax", "logistic"):
        return what + " Outputs: probabilities (batch, n_outputs), label."
    return what + " Outputs: predictions."


def to_onnx(model, path=None, *, step=False):
    """Build (and optionally write) the ONNX model of a fitted model.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or Pipeline
        A fitted estimator, or a Pipeline of an optional ``require_2d`` step,
        an optional ``SequenceScaler`` or ``StandardScaler`` and the estimator.
        Any readout, window, non-linearities and ranks; a classifier with one
        label per sample (softmax) or a multilabel indicator (sigmoid per
        label); a regressor with ``loss="squared_error"`` or ``"poisson"``.
    path : str or path-like, default=None
        When given, the model is also written there (atomically).
    step : bool, default=False
        False: the sequence graph, whole (NaN-padded) sequences in. True: the
        step graph, one timestep of every stream in, with the streams' state
        in and out, as :class:`~sklearn_fastgrnn.streaming.Streamer` (see
        Notes). A Pipeline with a ``StandardScaler`` has statistics per
        timestep only up to ``n_timesteps_``, so it has no step graph.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model``.

        Sequence graph: input ``X``, float32 of shape ``(batch, time,
        n_channels_)``, NaN-padded at the end for shorter sequences; ``time``
        is free, except after a ``StandardScaler``, whose statistics fix it to
        ``n_timesteps_``. A model fitted on 2D input reads ``X.reshape(n,
        n_timesteps_, n_channels_)``.

        Step graph: inputs ``x``, float32 ``(batch, n_channels_)``, and
        ``state``, float64 ``(batch, state_size)``; one more output,
        ``new_state``, of the shape of ``state``.

        Outputs, in this order. A classifier: ``probabilities`` (float32,
        ``(batch, n_classes)``, columns in the order of ``classes_``) and
        ``label`` (``(batch,)``: int64 for integer classes, string for string
        classes, bool for boolean, double for float classes). A multilabel
        classifier: ``probabilities`` (float32, ``(batch, n_labels)``) and
        ``label``, the indicator (int64, ``(batch, n_labels)``, as
        ``predict``). A regressor: ``predictions`` (float32, ``(batch,)`` for
        one output, else ``(batch, n_outputs)``).

    Notes
    -----
    The graphs do not validate their input. Trailing all-NaN timesteps are
    padding, and a padded sequence gives exactly the predictions of the
    unpadded one. Any other NaN in a sequence (inside a step, a leading all-NaN
    step, an all-NaN sequence), which ``predict`` rejects, gives NaN
    probabilities or predictions for that row only (onnxruntime then labels it
    ``classes_[0]``).

    The step graph's state rows are :attr:`Streamer.state
    <sklearn_fastgrnn.streaming.Streamer.state>` rows (:func:`state_layout`):
    zeros start every stream, a row of NaN in ``x`` leaves that stream as it
    was, and ``new_state`` is the ``state`` of the next call. A state from the
    graph can be assigned to a streamer's ``state`` and back. A state not made
    by either (counts out of range) gives meaningless predictions.
    """
    onnx = _import_onnx()
    est, scaler, _ = unpack_model(model)
    check_fitted_model(est, "to_onnx refuses it")
    if scaler is not None:
        check_scaler(scaler, "to_onnx refuses it")
    if step and isinstance(scaler, StandardScaler):
        raise ValueError(
            "to_onnx(step=True) streams one timestep at a time, but this Pipeline's "
            f"StandardScaler holds statistics per timestep for {est.n_timesteps_} "
            "timesteps only. Stream a model with a SequenceScaler (one statistic per "
            "channel: make_fastgrnn_pipeline(scaler='sequence')), or use the sequence "
            "graph (step=False)."
        )
    g = _GraphBuilder(onnx, "", [0])
    build = _step_graph if step else _sequence_graph
    inputs, outputs = build(onnx, est, scaler, g)
    graph = onnx.helper.make_graph(
        g.nodes, "sklearn_fastgrnn_step" if step else "sklearn_fastgrnn",
        inputs=[onnx.helper.make_tensor_value_info(*spec) for spec in inputs],
        outputs=[onnx.helper.make_tensor_value_info(*spec) for spec in outputs],
        initializer=g.initializers,
        doc_string=_description(est, step),
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="sklearn_fastgrnn",
        producer_version=__version__,
    )
    props = {
        "estimator": type(est).__name__,
        "out_activation": out_activation(est),
        "n_outputs": str(est.n_outputs_),
        "n_timesteps": str(est.n_timesteps_),
        "n_channels": str(est.n_channels_),
        "window": str(int(getattr(est, "window_", 1))),
        "readout": est.readout,
        "gate_nonlinearity": est.gate_nonlinearity,
        "update_nonlinearity": est.update_nonlinearity,
    }
    if hasattr(est, "classes_"):
        props["classes"] = json.dumps(np.asarray(est.classes_).tolist())
    if step:
        props["state_layout"] = json.dumps(state_layout(est))
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        write_atomically(path, proto.SerializeToString())
    return proto
