"""ONNX graphs of a fitted FastGRNN model: a whole-sequence graph and a step graph.

The **sequence graph** (:func:`to_onnx`) reads one float32 input ``X`` of shape
(batch, time, channels) and computes what ``predict_proba`` and ``predict``
(classifier) or ``predict`` (regressor) compute, in float32 but for the input
term (steps 1 to 5, in float64, so that inputs near the float32 maximum can not
overflow halfway through a sum; its float32 value then saturates the cell as in
the Python engine):

1. the scaler of a Pipeline, if any: ``(X - mean) / scale`` per channel
   (``SequenceScaler``) or per (timestep, channel) column (``StandardScaler``);
2. with ``envelope_width_ = w >= 2``, each timestep ``x_t`` of the scaled input
   followed by the largest, then the smallest value of each channel over
   ``x_{t-w+1}`` to ``x_t`` (the sequence read after ``w - 1`` copies of its
   first timestep; exact in any dtype): the base values, ``3 * channels`` per
   timestep (else the ``channels`` of ``x_t``); then, with
   ``change_channels``, each timestep's base values followed by their change
   channels ``c_t = |b_t - b_{t-1}|`` (0 at the first timestep), capped at the
   float32 maximum and rounded to float32, then by
   ``log(c_t + change_offsets_)``, computed in float64 and rounded to float32
   (:mod:`~sklearn_fastgrnn._channels`): the cell channels, three times the
   base values per timestep (else the base values);
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
   the maximum); with ``window_phases_ = p > 1``, steps 4 to 7 read every
   sequence in ``p`` phases, phase ``j`` after ``s_j`` copies of its first
   cell-input timestep (:func:`~sklearn_fastgrnn._sequences.phase_shifts`),
   stacked along the batch axis, and the readout is the mean of the phases'
   (summed in phase order, divided by ``p``); then
   ``outputs = readout @ V + bias_out`` and the model's head:
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
``change_channels`` the state also holds the base values of the stream's last
timestep, which the next change is taken from, and with envelope channels the
stream's last ``envelope_width_ - 1`` timesteps, which the next envelope reads
(at a stream's first timestep, ``envelope_width_ - 1`` copies of it). With
``window_phases_ = p > 1`` the state row holds one block per phase, read as
``p`` rows per stream: at a stream's first timestep phase ``j`` takes ``s_j``
copies of it before it, and the predictions read the mean of the phases'
readouts.
"""

import json

import numpy as np
from sklearn.preprocessing import StandardScaler

from .._channels import envelope_width, n_base_channels, n_cell_channels, uses_changes
from .._files import write_atomically
from .._nonlinearities import scalar_sigmoid
from .._sequences import phase_shifts
from .._version import __version__
from ..preprocessing import SequenceScaler
from .weights import check_fitted_model, check_scaler, out_activation, unpack_model

__all__ = ["state_layout", "to_onnx"]

OPSET = 17
INPUT_NAME = "X"
STEP_INPUT, STATE_INPUT, STATE_OUTPUT = "x", "state", "new_state"
STATE_LAYOUT_DOC = """\
One row per stream, float64, ``2 * H + k * c + p + q + 3`` values (``H`` the
hidden size, ``k`` the window, ``d`` the input channels, ``w`` the
``envelope_width_``, ``b`` the base values of a timestep: ``3 d`` with envelope
channels (``w >= 2``), else ``d``; ``c`` the cell channels: ``3 b`` with
``change_channels``, else ``b``; ``p``: ``b`` with ``change_channels``, else 0;
``q``: ``(w - 1) * d`` with envelope channels, else 0), as ``Streamer.state``:
``[h (H) | pool (H) | steps | filled | window (k * c) | previous (p) | history
(q) | n_timesteps_seen]`` (with ``P = window_phases_ > 1``, ``P`` blocks ``[h |
pool | steps | filled | window]``, one per phase, before ``previous``: ``P * (2
* H + 2 + k * c) + p + q + 1`` values): the hidden state; the sum (readout
"mean") or maximum ("max") of the committed states (zeros for "last"); the cell
steps committed; the timesteps of the window being filled (0 to k - 1); that
window, time-major, each timestep as the cell reads it (only its first
``filled`` timesteps count); the base values of the last timestep received (its
values as the estimator receives them: scaled, then with envelope channels its
largest and smallest values), which the next change is taken from; the last
``w - 1`` timesteps received, oldest first, timestep-major, as the estimator
receives them (zeros before the first; read as ``w - 1`` copies of a stream's
first timestep), which the next envelope reads; the timesteps received. Zeros
are the state of an empty sequence."""


def _window_phases(est):
    """The phases of the windows a fitted estimator averages (1 when it has none)."""
    return int(getattr(est, "window_phases_", 1))


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
    # a capped change plus a finite offset does not overflow float64
    total = g.op("Add", [change, g.const("change_offsets", offsets, np.float64)], "change_offset")
    log = g.cast(g.op("Log", [total], "log_change"), TP.FLOAT, "log_change_float")
    return g.op("Concat", [x, change, g.cast(log, TP.DOUBLE, "log_change_double")],
                "cell_channels", axis=-1)


def _with_envelope(g, x, span, width):
    """Float64 sequences ``x`` (batch, time, d) followed, at each timestep, by the
    largest and then the smallest value of each channel over its last ``width``
    timesteps, as :func:`~sklearn_fastgrnn._channels.with_envelope`.

    ``span`` is ``x`` after the ``width - 1`` timesteps before its first (at the
    start of a sequence, copies of its first timestep): (batch, time + width - 1,
    d).
    """
    return g.op("Concat", [x, _running_extreme(g, span, width, "Max"),
                           _running_extreme(g, span, width, "Min")], "base_values", axis=-1)


def _running_extreme(g, span, width, extreme):
    """``extreme`` ("Max" or "Min") of each channel of ``span`` (batch, time, d)
    over every ``width`` consecutive timesteps: (batch, time - width + 1, d),
    the first over timesteps 0 to ``width - 1``.

    By doubling spans, as :func:`~sklearn_fastgrnn._channels.running_extreme`:
    the extreme over ``s + lag`` timesteps (``lag <= s``) from ``t`` is that of
    the spans of ``s`` from ``t`` and from ``t + lag``.
    """
    def widened(spans, lag):  # the extremes over `lag` more timesteps
        axis = g.ints("axis1", [1])
        earlier = g.op("Slice", [spans, g.ints("start", [0]), g.ints("stop", [-lag]), axis])
        later = g.op("Slice", [spans, g.ints("start", [lag]),
                               g.ints("stop", [np.iinfo(np.int64).max]), axis])
        return g.op(extreme, [earlier, later], f"running_{extreme.lower()}")

    covered = 1
    while 2 * covered <= width:
        span, covered = widened(span, covered), 2 * covered
    return widened(span, width - covered) if width > covered else span


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


def _phase_windows(g, x, last_real, batch, T, k, c, shifts):
    """The cell input ``x`` (batch, T, c) of every phase, windowed and stacked.

    Phase ``j`` reads timestep ``u`` as row ``clamp(u - s_j, 0, L - 1)`` of its
    sequence (``L - 1 = last_real``): ``s_j`` copies of the first row before it
    and its last real row repeated after it, to ``ceil((T + max(s)) / k)``
    windows for every phase. The phases are stacked phase-major along the batch
    axis. Returns the windows (phases * batch, windows, k * c), the last real
    window of each row (phases * batch, 1, 1), the number of windows (1,) and
    the stacked batch size (1,).
    """
    phases = len(shifts)
    rows = g.op("Mul", [batch, g.ints("phases", [phases])], "phase_rows")
    # each row's shift: phase j's batch rows take s_j
    shift = g.op("Expand", [g.ints("shifts", np.reshape(shifts, (phases, 1, 1, 1))),
                            g.op("Concat", [g.ints("phases", [phases]), batch,
                                            g.ints("ones2", [1, 1])], axis=0)])
    shift = g.op("Reshape", [shift, g.ints("shape_r11", [-1, 1, 1])], "row_shift")
    last_row = g.op("Tile", [last_real, g.ints("phase_tiles", [phases, 1, 1])], "last_row")
    window = g.ints("k", [k])
    n_steps = g.op("Div", [g.op("Add", [T, g.ints("shift_k_1", [max(shifts) + k - 1])]),
                           window], "n_windows")
    timesteps = g.op("Range", [g.const("start", 0, np.int64),
                               g.op("Squeeze", [g.op("Mul", [n_steps, window]),
                                                g.ints("axis0", [0])]),
                               g.const("delta", 1, np.int64)])
    timesteps = g.op("Reshape", [timesteps, g.ints("shape_1_T_1", [1, -1, 1])])
    source = g.op("Max", [g.op("Min", [g.op("Sub", [timesteps, shift]), last_row]),
                          g.ints("zero", [0])], "phase_source")  # (rows, windows * k, 1)
    x = g.op("Tile", [x, g.ints("phase_tiles", [phases, 1, 1])], "x_phases")
    x = g.op("GatherElements", [x, g.op("Expand", [source, g.ints("shape_11c", [1, 1, c])])],
             "phase_timesteps", axis=1)
    x = g.op("Reshape", [x, g.ints("shape_windows", [0, -1, k * c])], "windows")
    last_window = g.op("Div", [g.op("Add", [last_row, shift]), g.const("k_scalar", k, np.int64)],
                       "last_real_window")
    return x, last_window, n_steps, rows


def _phase_mean(g, r, axis, phases):
    """The mean of the readouts ``r`` over its ``axis`` of the ``phases`` phases:
    ``(r_0 + ... + r_{p-1}) / p``, summed in that order."""
    total = None
    for j in range(phases):
        r_j = g.op("Gather", [r, g.const("phase", j, np.int64)], f"readout_{j}", axis=axis)
        total = r_j if total is None else g.op("Add", [total, r_j], "readout_sum")
    return g.op("Div", [total, g.const("n_phases", phases)], "phase_mean")


def _sequence_graph(onnx, est, scaler, g):
    """Nodes of the sequence graph; returns its inputs and outputs."""
    TP = onnx.TensorProto
    coefs, d, k = est.coefs_, est.n_channels_, int(getattr(est, "window_", 1))
    c, H = n_cell_channels(est), coefs["V"].shape[0]
    fixed_time = isinstance(scaler, StandardScaler)  # its statistics are per timestep
    time_dim = est.n_timesteps_ if fixed_time else "time"

    x = g.cast(INPUT_NAME, TP.DOUBLE, "X_double")
    x = _scale(g, scaler, est, x) if scaler is not None else x
    width = envelope_width(est)
    if width:  # each sequence after width - 1 copies of its first timestep
        span = g.op("Pad", [x, g.ints("pads_time_start", [0, width - 1, 0, 0, 0, 0])],
                    "first_repeated", mode="edge")
        x = _with_envelope(g, x, span, width)
    if uses_changes(est):  # the previous timestep of each, the first its own (a change of 0)
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
    phases = _window_phases(est)
    if phases > 1:  # every phase's windows, stacked: (phases * batch, windows, k * c)
        x, last_real, n_steps, batch = _phase_windows(g, x, last_real, batch, T, k, c,
                                                      phase_shifts(k, phases))
    elif k > 1:  # windows of k timesteps, the last one edge-filled (_sequences.windowed)
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
    if phases > 1:  # rows phase-major: phase j's sequences are rows j * batch ...
        r = _phase_mean(g, g.op("Reshape", [r, g.ints("shape_pbH", [phases, -1, H])]), 0, phases)
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
        ``window``, (``change_channels`` only) ``previous`` and (envelope
        channels, ``envelope_width_ >= 2``, only) ``history`` as ``[start,
        stop)`` pairs, ``steps``, ``filled`` and ``n_timesteps_seen`` as column
        indices. With ``window_phases_ = p > 1`` the row starts with one block
        ``[h | pool | steps | filled | window]`` per phase: ``phases`` lists
        them, each with its ``shift`` and its parts' columns, and ``h`` to
        ``window`` are those of phase 0 (there is no ``phases`` for one phase).
    """
    est, _, _ = unpack_model(model)
    H, d, c = est.coefs_["V"].shape[0], est.n_channels_, n_cell_channels(est)
    k, phases = int(getattr(est, "window_", 1)), _window_phases(est)
    block_size = 2 * H + 2 + k * c

    def block(start):
        return {"h": [start, start + H], "pool": [start + H, start + 2 * H],
                "steps": start + 2 * H, "filled": start + 2 * H + 1,
                "window": [start + 2 * H + 2, start + block_size]}

    window_end = phases * block_size
    # the last timestep's base values, for the changes
    previous_end = window_end + (n_base_channels(est) if uses_changes(est) else 0)
    # the last envelope_width_ - 1 timesteps, for the envelope
    seen = previous_end + max(envelope_width(est) - 1, 0) * d
    layout = {"size": seen + 1, **block(0)}
    if phases > 1:
        layout["phases"] = [{"shift": int(shift), **block(j * block_size)}
                            for j, shift in enumerate(phase_shifts(k, phases))]
    if previous_end > window_end:
        layout["previous"] = [window_end, previous_end]
    if seen > previous_end:
        layout["history"] = [previous_end, seen]
    layout["n_timesteps_seen"] = seen
    return layout


def _step_graph(onnx, est, scaler, g):
    """Nodes of the step graph (one timestep of ``Streamer.update``); returns its
    inputs and outputs.

    With ``window_phases_ = p > 1`` the blocks of the state are read as ``batch
    * p`` rows (row ``i * p + j``: phase ``j`` of stream ``i``), each stepped as
    the one block of a single phase, and the readouts are averaged over phases.
    """
    TP = onnx.TensorProto
    layout = state_layout(est)
    d, k = est.n_channels_, int(getattr(est, "window_", 1))
    c, H = n_cell_channels(est), est.coefs_["V"].shape[0]
    phases = _window_phases(est)
    block_size = 2 * H + 2 + k * c  # one phase's [h | pool | steps | filled | window]
    state = STATE_INPUT
    # the rows the cell steps: a stream's state, or one row per (stream, phase)
    rows = state if phases == 1 else g.op(
        "Reshape", [g.op("Slice", [state, g.ints("start", [0]),
                                   g.ints("stop", [phases * block_size]),
                                   g.ints("axis1", [1])], "blocks"),
                    g.ints("shape_rows", [-1, block_size])], "phase_rows")

    def part(name, source=rows):  # phase 0's columns are those of a block in a row
        where = layout[name]
        start, stop = where if isinstance(where, list) else (where, where + 1)
        return g.op("Slice", [source, g.ints("start", [start]), g.ints("stop", [stop]),
                              g.ints("axis1", [1])], name)

    def as_float(x):
        return g.cast(x, TP.FLOAT)

    def per_phase(x, width, hint):  # (batch, width) -> (batch * p, width), stream-major
        x = g.op("Expand", [g.op("Unsqueeze", [x, g.ints("axis1", [1])]),
                            g.ints("shape_1p1", [1, phases, 1])])
        return g.op("Reshape", [x, g.ints("shape_rows", [-1, width])], hint)

    h, pool = as_float(part("h")), as_float(part("pool"))
    steps, filled, seen = part("steps"), part("filled"), part("n_timesteps_seen", state)
    buffer = g.op("Reshape", [part("window"), g.ints("shape_bkd", [0, k, c])], "buffer")

    counts = {"steps": steps, "filled": filled}  # the rows': a stream's with one phase

    def first_timestep():  # a stream's first timestep since a reset: phase 0 has read nothing
        zero = g.const("zero", 0.0, np.float64)

        def is_zero(count):  # phase 0's, whose block starts a stream's row
            return g.op("Equal", [counts[count] if phases == 1 else part(count, state), zero])

        return g.op("And", [is_zero("steps"), is_zero("filled")], "first_timestep")

    x = g.cast(STEP_INPUT, TP.DOUBLE, "x_double")
    x = _scale(g, scaler, est, x) if scaler is not None else x
    active = g.op("Not", [_all_nan(g, STEP_INPUT, d)], "active")  # (batch, 1)
    first = first_timestep() if phases > 1 else None
    new_previous, new_history = [], []
    width = envelope_width(est)
    if width:  # the envelope over the last width - 1 timesteps and this one
        history = part("history", state)
        first = first_timestep() if first is None else first
        own = g.op("Unsqueeze", [x, g.ints("axis1", [1])], "x_timestep")  # (batch, 1, d)
        before = g.where(g.op("Unsqueeze", [first, g.ints("axis2", [2])]), own,
                         g.op("Reshape", [history, g.ints("shape_history", [0, width - 1, d])]),
                         "history_or_own")
        span = g.op("Concat", [before, own], "span", axis=1)  # (batch, width, d)
        later = g.op("Slice", [span, g.ints("start", [1]), g.ints("stop", [width]),
                               g.ints("axis1", [1])], "history_later")
        new_history = [g.where(active, g.op("Reshape", [later, g.ints(
            "shape_history_row", [0, (width - 1) * d])]), history, "history_new")]
        x = g.op("Reshape", [_with_envelope(g, own, span, width),
                             g.ints("shape_base", [0, n_base_channels(est)])], "x_base")
    if uses_changes(est):  # the change from the previous timestep; 0 for the first since a reset
        previous = part("previous", state)
        first = first_timestep() if first is None else first
        new_previous = [g.where(active, x, previous, "previous_new")]
        x = _with_changes(g, x, g.where(first, x, previous, "previous_or_own"),
                          est.change_offsets_)
    position = g.ints("positions", np.arange(k).reshape(1, k, 1))
    to_3d = g.ints("axis2", [2])
    filled_i = g.cast(filled, TP.INT64, "filled_int")
    if phases == 1:
        write = g.op("And", [g.op("Equal", [position, g.op("Unsqueeze", [filled_i, to_3d])]),
                             g.op("Unsqueeze", [active, to_3d])], "write")
    else:  # the timestep once, and at the stream's first s_j copies of it before
        x = per_phase(x, c, "x_phases")
        starting = g.cast(g.op("And", [first, active]), TP.DOUBLE, "starting")
        copies = g.op("Mul", [g.op("Unsqueeze", [starting, to_3d]),
                              g.const("shifts", np.reshape(phase_shifts(k, phases),
                                                           (1, phases, 1)), np.float64)])
        taken = g.op("Add", [per_phase(g.cast(active, TP.DOUBLE), 1, "active_rows"),
                             g.op("Reshape", [copies, g.ints("shape_rows", [-1, 1])])],
                     "taken")  # (batch * p, 1): 0, 1 or s_j + 1
        until = g.op("Add", [filled_i, g.cast(taken, TP.INT64)], "filled_until")
        write = g.op("And", [
            g.op("GreaterOrEqual", [position, g.op("Unsqueeze", [filled_i, to_3d])]),
            g.op("Less", [position, g.op("Unsqueeze", [until, to_3d])])], "write")
    buffer = g.where(write, g.op("Unsqueeze", [x, g.ints("axis1", [1])]), buffer, "buffer_new")
    if phases == 1:
        taken = g.cast(active, TP.DOUBLE)
    filled = g.op("Add", [filled, taken], "filled_now")  # 0 to k
    filled_i = g.cast(filled, TP.INT64, "filled_now_int")
    # the window completed with its last timestep, as predict completes a sequence's
    last_index = g.op("Max", [g.op("Sub", [filled_i, g.ints("one", [1])]), g.ints("zero", [0])])
    if phases == 1:
        shape = g.op("Shape", [STEP_INPUT])
        batch = g.op("Slice", [shape, g.ints("s0", [0]), g.ints("s1", [1])], "batch")
        index = g.op("Expand", [g.op("Unsqueeze", [last_index, to_3d]),
                                g.op("Concat", [batch, g.ints("one", [1]), g.ints("d", [c])],
                                     axis=0)])
    else:  # broadcast over the rows
        index = g.op("Expand", [g.op("Unsqueeze", [last_index, to_3d]),
                                g.ints("shape_11c", [1, 1, c])])
    last = g.op("GatherElements", [buffer, index], "last_timestep", axis=1)
    inside = g.op("Less", [position, g.op("Unsqueeze", [filled_i, to_3d])])
    window = g.op("Reshape", [g.where(inside, buffer, last),
                              g.ints("shape_window", [0, k * c])], "window")
    h_step = _cell(g, est, h, _input_term(g, est, window))
    pool_step = _pooled(g, est.readout, pool, h_step) if est.readout != "last" else pool
    if est.readout == "max":  # the first step's state is the maximum
        first_step = g.op("Equal", [steps, g.const("zero", 0.0, np.float64)])
        pool_step = g.where(first_step, h_step, pool_step, "pool_first")

    # commit a full window; read the state with the window so far
    full = g.op("Equal", [filled_i, g.ints("k", [k])], "full")
    pending = g.op("Greater", [filled_i, g.ints("zero", [0])], "pending")
    new_blocks = [
        g.cast(g.where(full, h_step, h), TP.DOUBLE),
        g.cast(g.where(full, pool_step, pool), TP.DOUBLE),
        g.op("Add", [steps, g.cast(full, TP.DOUBLE)], "steps_new"),
        g.where(full, g.const("zero", 0.0, np.float64), filled, "filled_new"),
        g.op("Reshape", [buffer, g.ints("shape_window", [0, k * c])]),
    ]
    seen_new = g.op("Add", [seen, g.cast(active, TP.DOUBLE)], "seen_new")
    if phases > 1:  # back to one row per stream
        new_blocks = [g.op("Reshape", [g.op("Concat", new_blocks, axis=1),
                                       g.ints("shape_blocks", [-1, phases * block_size])],
                           "blocks_new")]
    g.op("Concat", [*new_blocks, *new_previous, *new_history, seen_new], axis=1,
         output=STATE_OUTPUT)
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
    if phases > 1:
        r = _phase_mean(g, g.op("Reshape", [r, g.ints("shape_bpH", [-1, phases, H])]), 1,
                        phases)
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
    width = envelope_width(est)
    if width:
        what += (f" Each channel is read with its largest and smallest value over the last "
                 f"{width} timesteps" + (", of which the state keeps all but this one" if step
                                         else "") + ".")
    if uses_changes(est):
        what += (" The cell reads each " + ("of these values" if width else "channel")
                 + ", its absolute change since the previous timestep"
                 + (", which the state keeps," if step else "") + " and the "
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

    With ``window_phases_ = p > 1`` both graphs read every sequence in ``p``
    phases of the windows and average the phases' readouts, as ``predict``
    averages their outputs (equal up to float32 rounding); the step graph's
    state then holds one block per phase (:func:`state_layout`), and the
    metadata property ``window_phases`` is ``p`` (absent for one phase).

    With envelope channels (``envelope_width_ = w >= 2``) both graphs read
    each channel with its largest and smallest value over the last ``w``
    timesteps, the step graph's state holds the last ``w - 1`` timesteps
    (``history`` in :func:`state_layout`), and the metadata property
    ``envelope_width`` is ``w`` (absent without envelope channels).

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
    if _window_phases(est) > 1:  # absent: one phase
        props["window_phases"] = str(_window_phases(est))
    if envelope_width(est):  # absent: no envelope channels
        props["envelope_width"] = str(envelope_width(est))
    if hasattr(est, "classes_"):
        props["classes"] = json.dumps(np.asarray(est.classes_).tolist())
    if step:
        props["state_layout"] = json.dumps(state_layout(est))
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        write_atomically(path, proto.SerializeToString())
    return proto
