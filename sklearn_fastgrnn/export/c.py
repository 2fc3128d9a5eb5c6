"""C export: a header and a source that run a fitted FastGRNN, streamed or on whole sequences.

The generated code is C99, uses only the C standard library and libm, and
allocates nothing (every buffer is a fixed-size local array or the caller's
state). For a model exported under ``name`` the header declares a state and a
step API, for samples that arrive one timestep at a time::

    typedef struct {...} name_state;          the state of one stream
    void name_init(name_state *state);        an empty sequence
    int name_step(name_state *state, const float *x);        one timestep
    int name_outputs(const name_state *state, T *outputs);   the outputs so far

and read-outs of the state as fit the model (``out_activation_``)::

    int name_proba(const name_state *state, float *proba);   classifiers
    int name_label(const name_state *state);                 single label: the class index
    int name_labels(const name_state *state, int32_t *labels);  multilabel: outputs > 0
    int name_value(const name_state *state, float *y);       regressors: the prediction

The whole-sequence functions are those steps in a loop (init, a step per
timestep, a read-out)::

    int name_sequence_outputs(const float *x, int length, T *outputs);
    int name_logits(const float *x, int length, T *logits);      classifiers
    int name_predict_proba(const float *x, int length, float *proba);  classifiers
    int name_predict(const float *x, int length);                 single label
    int name_predict(const float *x, int length, int32_t *labels);  multilabel
    int name_predict(const float *x, int length, float *y);       regressors

``T`` is ``float`` for a float32 model and ``int32_t`` (Q12) for an int8 one.
``x`` holds one timestep of ``NAME_N_CHANNELS`` values (``name_step``), or
``length`` timesteps time-major (``x[t * NAME_N_CHANNELS + c]``; a shorter
sequence is passed with its own length, no NaN padding). A cell step reads
``NAME_WINDOW`` timesteps: ``name_step`` keeps them in the state until the
window is full, and a read-out of a partly filled window completes it with its
last timestep (as ``predict`` completes a sequence's last window), without
committing it. The functions return -1 when a pointer is NULL, ``length < 1``
or a state has taken ``INT32_MAX`` cell steps, and otherwise 0 (``name_label``
and the single-label ``name_predict``: the class index).

A model with change channels (``change_channels_``) reads each timestep as
``NAME_CELL_CHANNELS = 3 * NAME_N_CHANNELS`` values: ``x``; then the change
``c = |x - x_previous|`` of each channel (0 at the first timestep after
``name_init``), computed in double, capped at ``FLT_MAX`` and rounded to float;
then ``log(c + offset)``, with the channel's offset of ``change_offsets_``
(a ``float`` table of the source), summed and taken in double and rounded to
float, as :func:`~sklearn_fastgrnn._channels.with_changes` does in float32.
``name_step`` computes them from the raw timestep and keeps that in the state
(``previous``); the windows hold the expanded timesteps, and the int8 code
quantises every cell channel with its own mean and multiplier.

A model with envelope channels (``envelope_width_ = w >= 2``, the header's
``NAME_ENVELOPE_WIDTH``) first extends each timestep ``x`` to its ``3 *
NAME_N_CHANNELS`` base values: ``x``, then the largest and then the smallest
value of each channel over the last ``w`` timesteps, as
:func:`~sklearn_fastgrnn._channels.with_envelope` computes them (exactly: an
extreme rounds nothing). ``name_step`` keeps the last ``w - 1`` timesteps as
given in the state (``history``, oldest first; at the first timestep after
``name_init`` they are ``w - 1`` copies of it). The change channels are then
taken of the base values, ``previous`` holds those of the last timestep, and
the cell reads ``NAME_CELL_CHANNELS`` values a timestep: ``9 *
NAME_N_CHANNELS`` with change channels, else ``3 * NAME_N_CHANNELS``.

A model with window phases (``window_phases_ = p > 1``) reads every stream in
``p`` phases, phase ``j`` after ``NAME_PHASE_SHIFT(j) = (j * NAME_WINDOW) /
NAME_WINDOW_PHASES`` copies of its first timestep (the header defines both
macros): ``name_state`` holds a ``name_phase`` per phase (``h``, ``pool``,
``steps``, ``filled``, ``window``) and the input values it keeps (``previous``,
``history``) once; at the first timestep after ``name_init`` phase ``j`` takes
that timestep ``s_j + 1`` times, after it every phase takes every timestep,
and the outputs are those of the mean of the phases' readouts: summed in phase
order and divided by ``p`` (float), or ``div_round`` of their int64 sum by
``p`` (int8, as ``QuantizedFastGRNN``). A model with one phase gets the code
of a model without phases.

A fitted :class:`~sklearn_fastgrnn.FastGRNNClassifier` or
:class:`~sklearn_fastgrnn.FastGRNNRegressor` is written with float32 weights
and float32 arithmetic. A :class:`~sklearn_fastgrnn.compression.QuantizedFastGRNN`
is written with its int8 tensors and runs its integer arithmetic exactly:
``name_outputs`` gives the integers of ``QuantizedFastGRNN.quantized_outputs``
and of its streamer. Matrices trained sparse are stored sparse, column by
column: the number of non-zeros of each column, then the row index (uint8 below
256 rows, else uint16) and the value of each non-zero.

Thread safety: the code has no global state (only constant tables): every
function may run in several threads at once, each on its own state.
"""

import os
import re
import textwrap
from typing import NamedTuple

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .. import compression
from .._cell import READOUTS
from .._channels import (
    ENVELOPE_PARTS,
    envelope_width,
    n_base_channels,
    n_cell_channels,
    offsets_of,
    uses_changes,
)
from .._files import write_all_atomically
from .._nonlinearities import scalar_sigmoid
from .._sequences import phase_shifts
from .._size import index_bytes
from .._sparsity import sparse_keys
from .._version import __version__
from ..classifier import FastGRNNClassifier
from ..compression import QuantizedFastGRNN
from ..regressor import FastGRNNRegressor
from .weights import check_envelope, check_fitted_model, check_offsets, check_phases

__all__ = ["export_c"]

# Both dicts are keyed by the names of _nonlinearities.NONLINEARITIES (v: the argument)
_FLOAT_NONLINEARITIES = {
    "sigmoid": "sigmoid_f(v)",
    "tanh": "tanh_f(v)",
    "relu": "v > 0.0f ? v : 0.0f",
    "quant_sigmoid": "v < -1.0f ? 0.0f : (v > 1.0f ? 1.0f : 0.5f * v + 0.5f)",
    "quant_tanh": "v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v)",
}
# tanh and sigmoid of the float32 code: branch-free, so that a compiler
# vectorises the loop over the hidden units with plain -O3 (without
# -ffast-math, whose finite-math assumption turned large pre-activations into
# NaN), accurate to a few float32 ulps, saturating for any finite input and NaN
# for NaN. The sigmoid is 0.5 tanh(v / 2) + 0.5, as the NumPy engine computes it.
_FLOAT_TANH = """
/* tanh(v) = sign(v) m / (m + 2) with m = expm1(2|v|), |v| clamped to 9 (where
   tanh is 1 in float32; NaN stays NaN). expm1(x) = 2^n expm1(r) + 2^n - 1 for
   x = n ln2 + r, |r| <= ln2 / 2, and expm1(r) by its Taylor polynomial of
   degree 7 (error below 1e-8 of it): no cancellation near 0. */
static inline float tanh_f(float v)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float a = v < 0.0f ? -v : v;
    float x, n, r, q, m, t;
    union {
        uint32_t bits;
        float value;
    } scale;
    int32_t e;
    a = a > 9.0f ? 9.0f : a;
    x = 2.0f * a;
    n = (x * 1.44269504f + shifter) - shifter;
    r = (x - n * 0.693145752f) - n * 1.42860677e-6f; /* ln2 in two parts: n ln2 exact */
    q = r + r * r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f + r * (8.33333333e-3f
        + r * (1.38888889e-3f + r * 1.98412698e-4f)))));
    e = (n >= 0.0f && n <= 26.0f) ? (int32_t)n : 0; /* n is in [0, 26] unless v is NaN */
    scale.bits = (uint32_t)(e + 127) << 23;
    m = scale.value * q + (scale.value - 1.0f);
    t = m / (m + 2.0f);
    return v < 0.0f ? -t : t;
}
"""
_FLOAT_SIGMOID = """
static inline float sigmoid_f(float v)
{
    return 0.5f * tanh_f(0.5f * v) + 0.5f;
}
"""
# compression.integer_nonlinearity, statement by statement (v: int64_t, Q12)
_INTEGER_NONLINEARITIES = {
    "sigmoid": "return rshift_round(ONE + (v < 0 ? -tanh_magnitude(-v, 8) : "
               "tanh_magnitude(v, 8)), 1);",
    "tanh": "return v < 0 ? -tanh_magnitude(-v, 7) : tanh_magnitude(v, 7);",
    "relu": "return v > 0 ? v : 0;",
    "quant_sigmoid": "return clamp(rshift_round(v + ONE, 1), 0, ONE);",
    "quant_tanh": "return clamp(v, -ONE, ONE);",
}


class ReadOut(NamedTuple):
    """What the C code offers to read the outputs of a model with one ``out_activation_``."""

    task: str  # "classifier" or "regressor"
    proba: str | None  # "softmax" or "sigmoid": name_proba, name_predict_proba
    predict: str  # "label" (an index), "labels" (an indicator) or "value" (floats)
    description: str


# out_activation_ of the estimators -> the read-outs of the C code (the one list
# of output activations the C export and the compiled predictor know)
READ_OUTS = {
    "softmax": ReadOut("classifier", "softmax", "label",
                       "a classifier: softmax of the outputs (logits) over the classes"),
    "logistic": ReadOut("classifier", "sigmoid", "labels",
                        "a multilabel classifier: a sigmoid per label, labels where "
                        "the output is > 0"),
    "identity": ReadOut("regressor", None, "value",
                        "a regressor: the predictions are the outputs"),
    "exp": ReadOut("regressor", None, "value",
                   "a Poisson regressor: the predictions are exp(outputs)"),
}


def export_c(model, directory, *, name="fastgrnn"):
    """Write ``<name>.h`` and ``<name>.c`` for a fitted model into ``directory``.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN
        Fitted; a QuantizedFastGRNN (from
        :func:`~sklearn_fastgrnn.compression.quantize`) gives integer-only code.
        Any readout, input window, window phases and output activation.
    directory : str or path-like
        Created if missing.
    name : str, default="fastgrnn"
        Prefix of the file names, functions, types and macros: a C identifier.

    Returns
    -------
    list of str
        The paths written: the header, then the source. Both are written
        atomically, together: a failure leaves both files as they were.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(
            f"name={name!r} is not a C identifier: use letters, digits and '_', "
            "not starting with a digit."
        )
    writer = writer_for(model, name)
    source = writer.source()  # before the header: it decides the helpers used
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(os.fspath(directory), f"{name}.{ext}") for ext in ("h", "c")]
    write_all_atomically(
        {path: text.encode("ascii") for path, text in zip(paths, (writer.header(), source))}
    )
    return paths


def writer_for(model, name):
    """The writer of a model's C code, after checking that it can be written."""
    if isinstance(model, QuantizedFastGRNN):
        check_model(model)
        return _QuantizedWriter(model, name)
    if isinstance(model, (FastGRNNClassifier, FastGRNNRegressor)):
        check_model(model)
        return _FloatWriter(model, name)
    raise TypeError(
        f"export_c needs a fitted FastGRNNClassifier, FastGRNNRegressor or "
        f"QuantizedFastGRNN, got {type(model).__name__}. For a Pipeline, export its "
        "last step and apply the preprocessing before calling the C function."
    )


def check_model(model, consequence="export_c refuses it"):
    """Raise when a model can not be written as C code (not fitted, damaged, or a
    readout or output activation the C code does not know)."""
    if isinstance(model, QuantizedFastGRNN):
        _check_quantized(model)
        check_offsets(model, consequence)
    else:
        check_is_fitted(model, "coefs_")
        check_fitted_model(model, consequence)
    activation = getattr(model, "out_activation_", "softmax")
    if activation not in READ_OUTS:
        raise ValueError(
            f"out_activation_={activation!r} is not one the C code can read out "
            f"({sorted(READ_OUTS)}): {consequence}."
        )
    if getattr(model, "readout", "last") not in READOUTS:
        raise ValueError(
            f"readout={model.readout!r} is not one of {list(READOUTS)}: {consequence}."
        )


def _check_quantized(q):
    """Refuse an int8 model whose tensors are not int8 or whose outputs do not
    match ``classes_`` (a damaged or edited model)."""
    for key, value in q.weights_.items():
        if np.asarray(value).dtype != np.int8:
            raise ValueError(f"weights_[{key!r}] of the QuantizedFastGRNN is "
                             f"{np.asarray(value).dtype}, not int8: the model is damaged; "
                             "quantize the model again.")
    damaged = "export_c refuses it. The model is damaged; quantize the model again"
    check_phases(q, damaged)
    check_envelope(q, damaged)
    V = q.weights_[q.chain_keys("V")[-1]]
    if hasattr(q, "classes_") and np.shape(V)[-1] != len(q.classes_):
        raise ValueError(
            f"classes_ holds {len(q.classes_)} labels, but the int8 output matrix has "
            f"{np.shape(V)[-1]} columns, one per class: export_c refuses it. classes_ "
            "was changed after quantize or the model is damaged."
        )
    if np.shape(V)[-1] != q.n_outputs_:
        raise ValueError(
            f"n_outputs_ is {q.n_outputs_}, but the int8 output matrix has "
            f"{np.shape(V)[-1]} columns: export_c refuses it. The model is damaged."
        )


def _float_literal(value):
    return f"{float(np.float32(value)):.9e}f"


def _double_literal(value):
    return f"{float(value):.17e}"


def _array(ctype, name, values, fmt=str):
    """``static const ctype name[n] = {...};`` with lines of at most 96 characters."""
    items = [fmt(v) for v in np.ravel(values)]
    lines, line = [], "   "
    for item in items:
        if len(line) + len(item) + 2 > 96:
            lines.append(line)
            line = "   "
        line += f" {item},"
    lines.append(line)
    body = "\n".join(lines)
    return f"static const {ctype} {name}[{len(items)}] = {{\n{body}\n}};\n"


def _members(fields):
    """The member lines of a struct of ``(ctype, field, length, comment)`` fields."""
    return "\n".join(f"    {ctype} {field}{f'[{length}]' if length else ''}; /* {comment} */"
                     for ctype, field, length, comment in fields)


def _comment_lines(text):
    """``text`` as lines of a block comment (`` * `` and at most 76 characters)."""
    return "".join(f" * {line}\n" for line in textwrap.wrap(text, 76))


def _indent(code, spaces):
    """``code`` with every line but the first indented by ``spaces`` more."""
    return code.replace("\n", "\n" + " " * spaces)


class _Writer:
    """The parts of the source that the float32 and int8 variants share.

    Subclasses give the C types (``value_ctype`` of matrix entries, ``state_ctype``
    of ``h`` and of the window, ``out_ctype`` of the outputs, ``total_ctype`` of
    the sum of the window phases' readouts), the arrays, the
    ``cell`` function, the conversion of an input value (``read_input``), the
    mean of the pool and the output layer.
    """

    value_ctype = value_format = out_ctype = state_ctype = total_ctype = description = None

    def __init__(self, model, name):
        self.model = model
        self.name, self.NAME = name, name.upper()
        self.activation = getattr(model, "out_activation_", "softmax")
        self.read_out = READ_OUTS[self.activation]
        self.readout = getattr(model, "readout", "last")
        self.window = int(getattr(model, "window_", 1))
        self.n_channels = int(model.n_channels_)
        self.changes = uses_changes(model)
        # envelope channels: the largest and smallest value of each channel over
        # the last envelope_width timesteps (0: none)
        self.envelope_width = envelope_width(model)
        self.base_channels = n_base_channels(model)
        self.cell_channels = n_cell_channels(model)
        # window phases: phase j reads the input after shifts[j] copies of its first timestep
        self.phases = int(getattr(model, "window_phases_", 1))
        self.shifts = [int(s) for s in phase_shifts(self.window, self.phases)]
        self.used = set()  # product helpers the chains need

    # -- names and macros ------------------------------------------------------
    def sym(self, key):
        return f"{self.name}_{key}"

    @property
    def macros(self):
        N = self.NAME
        # D: the channels of the input; B: the base values of a timestep (with
        # the envelope channels), of which the change channels are taken; CD:
        # the values of a timestep as the cell reads it; E: the envelope's width
        D = f"{N}_N_CHANNELS"
        base = f"{ENVELOPE_PARTS} * {D}" if self.envelope_width else D
        cell = f"{N}_CELL_CHANNELS" if self.cell_channels != self.n_channels else D
        return {"H": f"{N}_HIDDEN_SIZE", "D": D, "B": base, "CD": cell,
                "K": f"{N}_WINDOW", "C": f"{N}_N_OUTPUTS", "IN": f"({N}_WINDOW * {cell})",
                "P": f"{N}_WINDOW_PHASES", "E": f"{N}_ENVELOPE_WIDTH"}

    @property
    def pool_ctype(self):
        return self.state_ctype

    # -- matrices --------------------------------------------------------------
    def matrix(self, key, values, sparse, variant=""):
        """C arrays of one matrix and a call template computing ``out = v @ M``
        (with the product helpers of ``variant``: "" or "_d", in double)."""
        rows, cols = values.shape
        if not sparse:
            self.used.add(("dense", variant))
            decl = _array(self.value_ctype, self.sym(key), values, self.value_format)
            return decl, (f"dense_product{variant}({{v}}, {self.sym(key)}, {rows}, {cols}, "
                          "{out});")
        small = index_bytes(rows) == 1
        suffix, index = ("u8", "uint8_t") if small else ("u16", "uint16_t")
        self.used.add((suffix, variant))
        columns = values.T
        col, row = np.nonzero(columns)  # column-major order of the non-zeros
        decl = (
            _array(index, self.sym(key + "_count"), np.count_nonzero(columns, axis=1))
            + _array(index, self.sym(key + "_row"), row)
            + _array(self.value_ctype, self.sym(key + "_value"), columns[col, row],
                     self.value_format)
        )
        call = (
            f"sparse_product_{suffix}{variant}({{v}}, {self.sym(key + '_count')}, "
            f"{self.sym(key + '_row')}, {self.sym(key + '_value')}, {cols}, {{out}});"
        )
        return decl, call

    def product_helpers(self, v_type, m_type, acc_type, zero, variant=""):
        text = ""
        if ("dense", variant) in self.used:
            text += f"""
/* out[j] = sum_i v[i] * m[i * cols + j], summed in the order of i; the inner
   loop runs along a row of m, so that it vectorises without reordering sums */
static void dense_product{variant}(const {v_type} *restrict v, const {m_type} *restrict m,
                          int rows, int cols, {acc_type} *restrict out)
{{
    int i, j;
    for (j = 0; j < cols; ++j) {{
        out[j] = {zero};
    }}
    for (i = 0; i < rows; ++i) {{
        const {v_type} vi = v[i];
        const {m_type} *restrict row = m + (size_t)i * cols;
        for (j = 0; j < cols; ++j) {{
            out[j] += vi * row[j];
        }}
    }}
}}
"""
        for suffix, index in (("u8", "uint8_t"), ("u16", "uint16_t")):
            if (suffix, variant) in self.used:
                text += f"""
/* the same over the non-zeros of each column: count[j] pairs (row, value) */
static void sparse_product_{suffix}{variant}(const {v_type} *v, const {index} *count,
                             const {index} *row, const {m_type} *value, int cols,
                             {acc_type} *out)
{{
    int j, k, next = 0;
    for (j = 0; j < cols; ++j) {{
        {acc_type} acc = {zero};
        for (k = 0; k < count[j]; ++k, ++next) {{
            acc += v[row[next]] * value[next];
        }}
        out[j] = acc;
    }}
}}
"""
        return text

    # -- header ----------------------------------------------------------------
    def state_fields(self):
        """``(ctype, field, length macro, comment)`` of the state struct, in order:
        the cell's (a phase's, with window phases), then :meth:`raw_fields`."""
        return self.cell_fields() + self.raw_fields()

    def cell_fields(self):
        """The fields of the state of the cell: with window phases, of a phase's."""
        m = self.macros
        fields = [(self.state_ctype, "h", m["H"], "the hidden state after the last cell step")]
        if self.readout != "last":
            what = "the sum of the states" if self.readout == "mean" else "their maximum"
            fields.append((self.pool_ctype, "pool", m["H"], f"{self.readout} readout: {what}"))
        fields.append(("int32_t", "steps", None, "cell steps taken"))
        if self.window > 1:
            fields.append(("int32_t", "filled", None, "timesteps in window (a cell step "
                           f"reads {self.window})"))
            fields.append((self.state_ctype, "window", f"{m['K']} * {m['CD']}",
                           "the window being filled, time-major"))
        return fields

    def raw_fields(self):
        """The fields of the float input values the state keeps (one copy, with
        window phases too): the base values of the last timestep (change
        channels), then the last timesteps as given (envelope channels)."""
        m, fields = self.macros, []
        if self.changes:
            what = ("the last timestep's base values: the next change is taken from them"
                    if self.envelope_width else
                    "the last timestep as given: the next change is taken from it")
            fields.append(("float", "previous", m["B"], what))
        if self.envelope_width:
            fields.append(("float", "history", f"({m['E']} - 1) * {m['D']}",
                           "the envelope's last timesteps as given, oldest first"))
        return fields

    @property
    def n_raw(self):
        """The values of :meth:`raw_fields`: those between the phases' blocks and
        the timesteps seen in a streamer's state row."""
        history = max(self.envelope_width - 1, 0) * self.n_channels
        return self.base_channels * self.changes + history

    def declarations(self):
        """The public functions, as declared in the header."""
        n, out, read = self.name, self.out_ctype, self.read_out
        lines = [
            f"void {n}_init({n}_state *state);",
            f"int {n}_step({n}_state *state, const float *x);",
            f"int {n}_outputs(const {n}_state *state, {out} *outputs);",
        ]
        if read.proba:
            lines.append(f"int {n}_proba(const {n}_state *state, float *proba);")
        lines.append({
            "label": f"int {n}_label(const {n}_state *state);",
            "labels": f"int {n}_labels(const {n}_state *state, int32_t *labels);",
            "value": f"int {n}_value(const {n}_state *state, float *y);",
        }[read.predict])
        lines.append("")
        lines.append(f"int {n}_sequence_outputs(const float *x, int length, {out} *outputs);")
        if read.task == "classifier":
            lines.append(f"int {n}_logits(const float *x, int length, {out} *logits);")
        if read.proba:
            lines.append(f"int {n}_predict_proba(const float *x, int length, float *proba);")
        lines.append({
            "label": f"int {n}_predict(const float *x, int length);",
            "labels": f"int {n}_predict(const float *x, int length, int32_t *labels);",
            "value": f"int {n}_predict(const float *x, int length, float *y);",
        }[self.read_out.predict])
        return "\n".join(lines)

    def header(self):
        N, n, model = self.NAME, self.name, self.model
        if self.read_out.task == "classifier":
            labels = ", ".join(str(c) for c in model.classes_)
            outputs = f" * Outputs follow classes_: {labels}\n"
            classes = f"#define {N}_N_CLASSES {len(model.classes_)}\n"
        else:
            outputs, classes = f" * {self.n_outputs} output(s).\n", ""
        struct = _members(self.state_fields())
        phase_type = phase_macros = phases = ""
        if self.phases > 1:
            # the cell's fields are a phase's: the state holds a block per phase
            block, shared = self.cell_fields(), self.raw_fields()
            phase_type = f"""/* The state of phase j of a stream, which reads the stream after
   {N}_PHASE_SHIFT(j) copies of its first timestep. */
typedef struct {{
{_members(block)}
}} {n}_phase;

"""
            struct = _members([(f"{n}_phase", "phase", f"{N}_WINDOW_PHASES",
                               "the phases, from phase 0"), *shared])
            phase_macros = (f"#define {N}_WINDOW_PHASES {self.phases}\n"
                            f"#define {N}_PHASE_SHIFT(j) ((j) * {N}_WINDOW / {N}_WINDOW_PHASES)\n")
            phases = _comment_lines(
                f"Window phases: {self.phases}. Phase j reads the input after "
                f"{N}_PHASE_SHIFT(j) copies of its first timestep "
                f"({', '.join(map(str, self.shifts))}), and the outputs are those of "
                f"the mean of the phases' readouts. The state holds a block per phase "
                f"({n}_phase).")
        returns = (f" ({n}_label and {n}_predict: the class index)"
                   if self.read_out.predict == "label" else "")
        description = self.read_out.description[0].upper() + self.read_out.description[1:]
        cell_reads = cell_macro = envelope_macro = ""
        if self.envelope_width:
            cell_reads = _comment_lines(
                f"Envelope channels: {n}_step extends each timestep x to "
                f"{ENVELOPE_PARTS} * {N}_N_CHANNELS base values: x, then the largest and "
                f"then the smallest value of each channel over the last "
                f"{N}_ENVELOPE_WIDTH timesteps (x and the {N}_ENVELOPE_WIDTH - 1 before "
                f"it, which the state keeps; at the first timestep after {n}_init, "
                f"copies of it). " + (
                    f"The cell reads each timestep as {N}_CELL_CHANNELS values: the base "
                    f"values; then the change c = |base - the previous base| of each, in "
                    f"double, capped at FLT_MAX and rounded to float (0 at the first "
                    f"timestep after {n}_init); then log(c + offset), the value's offset "
                    f"(change_offsets_) added and the logarithm taken in double, rounded "
                    f"to float. {n}_step computes them and keeps the previous base values "
                    f"in the state." if self.changes else
                    f"The cell reads the base values ({N}_CELL_CHANNELS a timestep)."))
            envelope_macro = f"#define {N}_ENVELOPE_WIDTH {self.envelope_width}\n"
        elif self.changes:
            cell_reads = (
                f" * The cell reads each timestep as {N}_CELL_CHANNELS values: x; then the\n"
                f" * change c = |x - the previous x| of each channel, in double, capped at\n"
                f" * FLT_MAX and rounded to float (0 at the first timestep after {n}_init);\n"
                f" * then log(c + offset), the channel's offset (change_offsets_) added and\n"
                f" * the logarithm taken in double, rounded to float. {n}_step computes\n"
                f" * them and keeps the previous x in the state.\n"
            )
        if self.cell_channels != self.n_channels:
            cell_macro = f"#define {N}_CELL_CHANNELS {self.cell_channels}\n"
        return f"""/* {n}.h: a FastGRNN model (sklearn_fastgrnn {__version__}).
 *
 * {description}.
 * {self.description}
 * Readout: {self.readout}; a cell step reads {self.window} timestep(s).
{phases}{cell_reads}{outputs} *
 * Streaming: {n}_init(&state) once, {n}_step(&state, x) for each timestep
 * (x: {N}_N_CHANNELS values) as it arrives, a read-out of the state when
 * needed. Whole sequences: x[t * {N}_N_CHANNELS + c] for t < length
 * (time-major, no padding). The functions return -1 if a pointer is NULL or
 * length < 1, else 0{returns}.
 * C99, the standard library and libm only; no dynamic memory; no global state:
 * the functions may run in several threads at once, each on its own state.
 */
#ifndef {N}_H
#define {N}_H

#include <stdint.h>

#define {N}_N_CHANNELS {self.n_channels}
{envelope_macro}{cell_macro}#define {N}_WINDOW {self.window}
{phase_macros}#define {N}_N_OUTPUTS {self.n_outputs}
{classes}#define {N}_HIDDEN_SIZE {self.hidden_size}

{phase_type}/* The state of one stream: set by {n}_init, advanced by {n}_step. */
typedef struct {{
{struct}
}} {n}_state;

{self.declarations()}

#endif
"""

    # -- the step API ----------------------------------------------------------
    def state_code(self):
        """``init``, ``step`` and ``outputs``, on the subclass's ``cell``."""
        if self.phases > 1:
            return self.phases_state_code()
        n, m, k = self.name, self.macros, self.window
        H, CD, IN = m["H"], m["CD"], m["IN"]
        pooled = self.readout != "last"
        init_window = f"""
    state->filled = 0;
    for (j = 0; j < {IN}; ++j) {{
        state->window[j] = 0;
    }}""" if k > 1 else ""
        # x goes to the cell as it is: no conversion, no change or envelope channels
        as_given = self.reads_base_as_given() and not self.envelope_width
        if k > 1:
            feed = f"""{{
        {self.state_ctype} *slot = state->window + (size_t)state->filled * {CD};
        {_indent(self.store_timestep("slot"), 8)}
        if (++state->filled < {k}) {{
            return 0;
        }}
        state->filled = 0;
        cell(state->h, state->window, state->h);
    }}"""
        elif as_given:
            feed = "cell(state->h, x, state->h);"
        else:
            feed = f"""{_indent(self.store_timestep("in"), 4)}
    cell(state->h, in, state->h);"""
        locals_step = "" if k > 1 or as_given else f"    {self.state_ctype} in[{CD}];\n"
        locals_step += self.base_local()
        commit = self.commit_code("state")
        locals_out, read = self.readout_code("state")
        init_pool = "\n        state->pool[j] = 0;" if pooled else ""
        index = "    int j;\n" if re.search(r"\bj\b", feed + commit) else ""
        return f"""{self.envelope_code()}{self.changes_code()}
void {n}_init({n}_state *state)
{{
    int j;
    if (state == NULL) {{
        return;
    }}
    for (j = 0; j < {H}; ++j) {{
        state->h[j] = 0;{init_pool}
    }}
    state->steps = 0;{init_window}{self.init_raw()}
}}

int {n}_step({n}_state *state, const float *x)
{{
{locals_step}{index}    if (state == NULL || x == NULL || state->steps == INT32_MAX) {{
        return -1;
    }}
    {feed}{commit}
    state->steps += 1;
    return 0;
}}

int {n}_outputs(const {n}_state *state, {self.out_ctype} *outputs)
{{
    {self.state_ctype} r[{H}];
{locals_out}    int j;
    if (state == NULL || outputs == NULL) {{
        return -1;
    }}
    {read}
    output_layer(r, outputs);
    return 0;
}}
"""

    def phases_state_code(self):
        """``init``, ``step`` and ``outputs`` of a model with window phases: a block
        of state per phase (``name_phase``, of a window > 1), the readout the mean
        of the phases' readouts."""
        n, N, m, k = self.name, self.NAME, self.macros, self.window
        H, CD, IN, P = m["H"], m["CD"], m["IN"], m["P"]
        T = self.state_ctype
        init_pool = "\n            phase->pool[j] = 0;" if self.readout != "last" else ""
        locals_out, read = self.readout_code("phase")
        store = self.store_timestep("row")
        index = "    int j;\n" if re.search(r"\bj\b", store) else ""
        return f"""{self.envelope_code()}{self.changes_code()}
/* Timestep row, as the cell reads it, into the window of a phase: a full
   window is one cell step */
static void push({n}_phase *phase, const {T} *row)
{{
    {T} *slot = phase->window + (size_t)phase->filled * {CD};
    int j;
    for (j = 0; j < {CD}; ++j) {{
        slot[j] = row[j];
    }}
    if (++phase->filled < {k}) {{
        return;
    }}
    phase->filled = 0;
    cell(phase->h, phase->window, phase->h);{self.commit_code("phase")}
    phase->steps += 1;
}}

/* The readout r of a phase: of its committed steps, and of its partly filled
   window completed with its last timestep (not committed) */
static void phase_readout(const {n}_phase *phase, {T} *r)
{{
{locals_out}    int j;
    {read}
}}

void {n}_init({n}_state *state)
{{
    int b, j;
    if (state == NULL) {{
        return;
    }}
    for (b = 0; b < {P}; ++b) {{
        {n}_phase *phase = state->phase + b;
        for (j = 0; j < {H}; ++j) {{
            phase->h[j] = 0;{init_pool}
        }}
        phase->steps = 0;
        phase->filled = 0;
        for (j = 0; j < {IN}; ++j) {{
            phase->window[j] = 0;
        }}
    }}{self.init_raw()}
}}

int {n}_step({n}_state *state, const float *x)
{{
    {T} row[{CD}];
{self.base_local()}    int b, copies, first;
{index}    if (state == NULL || x == NULL) {{
        return -1;
    }}
    for (b = 0; b < {P}; ++b) {{
        if (state->phase[b].steps == INT32_MAX) {{
            return -1;
        }}
    }}
    first = {self.first_timestep()};
    {_indent(store, 4)}
    for (b = 0; b < {P}; ++b) {{
        /* the first timestep since {n}_init goes in {N}_PHASE_SHIFT(b) more times */
        for (copies = first ? {N}_PHASE_SHIFT(b) : 0; copies >= 0; --copies) {{
            push(state->phase + b, row);
        }}
    }}
    return 0;
}}

int {n}_outputs(const {n}_state *state, {self.out_ctype} *outputs)
{{
    {T} r[{H}];
    {self.total_ctype} total[{H}];
    int b, j;
    if (state == NULL || outputs == NULL) {{
        return -1;
    }}
    for (j = 0; j < {H}; ++j) {{
        total[j] = 0;
    }}
    for (b = 0; b < {P}; ++b) {{ /* the mean of the phases' readouts, summed in order */
        phase_readout(state->phase + b, r);
        for (j = 0; j < {H}; ++j) {{
            total[j] += r[j];
        }}
    }}
    for (j = 0; j < {H}; ++j) {{
        r[j] = {self.mean("total[j]", P)};
    }}
    output_layer(r, outputs);
    return 0;
}}
"""

    def init_raw(self):
        """The statements of ``init`` that clear the input values the state keeps
        (:meth:`raw_fields`: the previous timestep, the envelope's history)."""
        return "".join(f"""
    for (j = 0; j < {length}; ++j) {{
        state->{field}[j] = 0;
    }}""" for _, field, length, _ in self.raw_fields())

    def first_timestep(self):
        """C expression: ``state`` has taken no timestep since ``init``."""
        if self.phases > 1:  # phase 0 reads the input without copies
            return "state->phase[0].steps == 0 && state->phase[0].filled == 0"
        return "state->steps == 0" + (" && state->filled == 0" if self.window > 1 else "")

    def commit_code(self, s):
        """C statements of the readout pool after a cell step of ``s`` (the state or a
        phase: a pointer with ``h``, ``pool`` and ``steps``), ``steps`` not yet counted."""
        H = self.macros["H"]
        if self.readout == "mean":
            return f"""
    for (j = 0; j < {H}; ++j) {{
        {s}->pool[j] += {s}->h[j];
    }}"""
        if self.readout == "max":
            return f"""
    for (j = 0; j < {H}; ++j) {{
        if ({s}->steps == 0 || {s}->h[j] > {s}->pool[j]) {{
            {s}->pool[j] = {s}->h[j];
        }}
    }}"""
        return ""

    def readout_code(self, s):
        """The locals and statements writing into ``r`` the readout of ``s`` (the
        state or a phase): of its committed steps, or of those and its partly filled
        window completed with its last timestep."""
        m = self.macros
        H, CD, IN = m["H"], m["CD"], m["IN"]
        committed = {
            "last": f"r[j] = {s}->h[j];",
            "mean": f"r[j] = {s}->steps > 0 ? {self.mean(f'{s}->pool[j]', f'{s}->steps')} : 0;",
            "max": f"r[j] = {s}->steps > 0 ? {s}->pool[j] : 0;",
        }[self.readout]
        read = f"""for (j = 0; j < {H}; ++j) {{
        {committed}
    }}"""
        if self.window == 1:
            return "", read
        completed = {
            "last": "r[j] = h[j];",
            "mean": "r[j] = " + self.mean(f"{s}->pool[j] + h[j]",
                                          f"(int64_t){s}->steps + 1") + ";",
            "max": f"r[j] = {s}->steps == 0 || h[j] > {s}->pool[j] ? h[j] : {s}->pool[j];",
        }[self.readout]
        locals_out = f"    {self.state_ctype} h[{H}], in[{IN}];\n    int filled;\n"
        read = f"""filled = {s}->filled;
    if (filled > 0) {{ /* the window completed with its last timestep, not committed */
        for (j = 0; j < {IN}; ++j) {{
            in[j] = {s}->window[j < filled * {CD} ? j : (filled - 1) * {CD} + j % {CD}];
        }}
        cell({s}->h, in, h);
        for (j = 0; j < {H}; ++j) {{
            {completed}
        }}
    }} else {{
        {_indent(read, 4)}
    }}"""
        return locals_out, read

    def reads_base_as_given(self):
        """Whether the cell reads the base values of a timestep as they are: no
        conversion (float32), no change channels."""
        return not self.changes and self.read_input("x[j]", "j") == "x[j]"

    def base_local(self):
        """The declaration of ``base``, the base values of a timestep, when
        :meth:`store_timestep` computes them before the cell values."""
        if self.envelope_width and not self.reads_base_as_given():
            return f"    float base[{self.macros['B']}];\n"
        return ""

    def store_timestep(self, target):
        """C statements writing timestep ``x`` into ``target`` as the cell reads it:
        its base values (with its envelope channels, through the local ``base`` of
        :meth:`base_local`), then their change channels or their conversion."""
        if self.envelope_width and self.reads_base_as_given():
            return f"with_envelope(state, x, {target});"
        code, base = "", "x"
        if self.envelope_width:
            code, base = "with_envelope(state, x, base);\n", "base"
        if self.changes:
            return code + f"with_changes(state, {base}, {target});"
        return code + f"""for (j = 0; j < {self.macros["B"]}; ++j) {{
    {target}[j] = {self.read_input(f"{base}[j]", "j")};
}}"""

    def envelope_code(self):
        """The static ``with_envelope`` of a model with envelope channels, else nothing."""
        if not self.envelope_width:
            return ""
        n, D, E = self.name, self.macros["D"], self.macros["E"]
        return f"""
/* The base values of timestep x, into base: x; then the largest, then the
   smallest value of each channel over the last {E}
   timesteps: x and the history, which is {E} - 1 copies of x
   at the first timestep since {n}_init; as sklearn_fastgrnn._channels.
   with_envelope. x then joins the history (oldest first), whose oldest
   timestep leaves it */
static void with_envelope({n}_state *state, const float *x, float *base)
{{
    float *history = state->history;
    const int length = ({E} - 1) * {D};
    int i, j;
    if ({self.first_timestep()}) {{
        for (i = 0; i < length; ++i) {{
            history[i] = x[i % {D}];
        }}
    }}
    for (j = 0; j < {D}; ++j) {{
        float largest = x[j], smallest = x[j];
        for (i = j; i < length; i += {D}) {{
            largest = history[i] > largest ? history[i] : largest;
            smallest = history[i] < smallest ? history[i] : smallest;
        }}
        base[j] = x[j];
        base[{D} + j] = largest;
        base[2 * {D} + j] = smallest;
    }}
    for (i = 0; i + {D} < length; ++i) {{
        history[i] = history[i + {D}];
    }}
    for (j = 0; j < {D}; ++j) {{
        history[length - {D} + j] = x[j];
    }}
}}
"""

    def changes_code(self):
        """The offsets and the static ``with_changes`` of a model with change
        channels, else nothing."""
        if not self.changes:
            return ""
        # the change channels of the base values (x without envelope channels)
        n, D = self.name, self.macros["B"]
        first = self.first_timestep()
        base = (". With envelope channels x holds the base values\n"
                "   of a timestep (with_envelope), and previous those of the last one"
                if self.envelope_width else "")
        # double values (8 bytes each, as model_size_bytes_ counts them), the
        # model's to the bit; the sum with a change is taken in double, as
        # _channels.log_change does
        offsets = _array("double", self.sym("change_offsets"), offsets_of(self.model),
                         _double_literal)
        return f"""
/* the offset of each channel's logarithm (change_offsets_) */
{offsets}
/* Timestep x as the cell reads it, into in: x; then c = |x - the previous
   timestep| of each channel, in double, capped at FLT_MAX and rounded to float
   (0 at the first timestep since {n}_init); then log(c + offset) in double,
   rounded to float; as sklearn_fastgrnn._channels.with_changes. x becomes the
   previous timestep{base} */
static void with_changes({n}_state *state, const float *x, {self.state_ctype} *in)
{{
    const int first = {first};
    int j;
    for (j = 0; j < {D}; ++j) {{
        double change = first ? 0.0 : fabs((double)x[j] - (double)state->previous[j]);
        float capped = change > FLT_MAX ? FLT_MAX : (float)change;
        float logarithm = (float)log((double)capped + (double){n}_change_offsets[j]);
        in[j] = {self.read_input("x[j]", "j")};
        in[{D} + j] = {self.read_input("capped", f"{D} + j")};
        in[2 * {D} + j] = {self.read_input("logarithm", f"2 * {D} + j")};
        state->previous[j] = x[j];
    }}
}}
"""

    @property
    def includes(self):
        """The ``#include`` lines of the source: FLT_MAX caps the change channels."""
        return ("#include <float.h>\n" * self.changes
                + "#include <math.h>\n#include <stddef.h>\n")

    # -- read-outs -------------------------------------------------------------
    def read_out_code(self):
        """The static read-outs of outputs and the public functions built on them."""
        n, C, out = self.name, self.macros["C"], self.out_ctype
        v = self.output_value
        read = self.read_out
        text = ""
        if read.proba == "softmax":
            text += f"""
static void proba_of(const {out} *o, float *proba)
{{
    float top = {v("0")}, total = 0.0f;
    int k;
    for (k = 1; k < {C}; ++k) {{
        if ({v("k")} > top) {{
            top = {v("k")};
        }}
    }}
    for (k = 0; k < {C}; ++k) {{
        proba[k] = expf({v("k")} - top);
        total += proba[k];
    }}
    for (k = 0; k < {C}; ++k) {{
        proba[k] /= total;
    }}
}}
"""
        elif read.proba == "sigmoid":
            text += f"""
static void proba_of(const {out} *o, float *proba)
{{
    int k;
    for (k = 0; k < {C}; ++k) {{
        float value = {v("k")};
        if (value >= 0.0f) {{
            proba[k] = 1.0f / (1.0f + expf(-value));
        }} else {{
            float e = expf(value);
            proba[k] = e / (1.0f + e);
        }}
    }}
}}
"""
        if read.predict == "label":
            text += f"""
/* the first largest output */
static int label_of(const {out} *o)
{{
    int k, best = 0;
    for (k = 1; k < {C}; ++k) {{
        if (o[k] > o[best]) {{
            best = k;
        }}
    }}
    return best;
}}
"""
        elif read.predict == "labels":
            text += f"""
static void labels_of(const {out} *o, int32_t *labels)
{{
    int k;
    for (k = 0; k < {C}; ++k) {{
        labels[k] = o[k] > 0;
    }}
}}
"""
        else:
            text += f"""
static void value_of(const {out} *o, float *y)
{{
    int k;
    for (k = 0; k < {C}; ++k) {{
        y[k] = {self.prediction("k")};
    }}
}}
"""
        # the state's read-outs, then the whole-sequence functions
        if read.proba:
            text += f"""
int {n}_proba(const {n}_state *state, float *proba)
{{
    {out} o[{C}];
    if (proba == NULL || {n}_outputs(state, o) != 0) {{
        return -1;
    }}
    proba_of(o, proba);
    return 0;
}}
"""
        text += {
            "label": f"""
int {n}_label(const {n}_state *state)
{{
    {out} o[{C}];
    if ({n}_outputs(state, o) != 0) {{
        return -1;
    }}
    return label_of(o);
}}
""",
            "labels": f"""
int {n}_labels(const {n}_state *state, int32_t *labels)
{{
    {out} o[{C}];
    if (labels == NULL || {n}_outputs(state, o) != 0) {{
        return -1;
    }}
    labels_of(o, labels);
    return 0;
}}
""",
            "value": f"""
int {n}_value(const {n}_state *state, float *y)
{{
    {out} o[{C}];
    if (y == NULL || {n}_outputs(state, o) != 0) {{
        return -1;
    }}
    value_of(o, y);
    return 0;
}}
""",
        }[read.predict]
        text += f"""
int {n}_sequence_outputs(const float *x, int length, {out} *outputs)
{{
    {n}_state state;
    int t;
    if (x == NULL || outputs == NULL || length < 1) {{
        return -1;
    }}
    {n}_init(&state);
    for (t = 0; t < length; ++t) {{
        if ({n}_step(&state, x + (size_t)t * {self.macros["D"]}) != 0) {{
            return -1;
        }}
    }}
    return {n}_outputs(&state, outputs);
}}
"""
        if read.task == "classifier":
            text += f"""
int {n}_logits(const float *x, int length, {out} *logits)
{{
    return {n}_sequence_outputs(x, length, logits);
}}
"""
        if read.proba:
            text += f"""
int {n}_predict_proba(const float *x, int length, float *proba)
{{
    {out} o[{C}];
    if (proba == NULL || {n}_sequence_outputs(x, length, o) != 0) {{
        return -1;
    }}
    proba_of(o, proba);
    return 0;
}}
"""
        text += {
            "label": f"""
int {n}_predict(const float *x, int length)
{{
    {out} o[{C}];
    if ({n}_sequence_outputs(x, length, o) != 0) {{
        return -1;
    }}
    return label_of(o);
}}
""",
            "labels": f"""
int {n}_predict(const float *x, int length, int32_t *labels)
{{
    {out} o[{C}];
    if (labels == NULL || {n}_sequence_outputs(x, length, o) != 0) {{
        return -1;
    }}
    labels_of(o, labels);
    return 0;
}}
""",
            "value": f"""
int {n}_predict(const float *x, int length, float *y)
{{
    {out} o[{C}];
    if (y == NULL || {n}_sequence_outputs(x, length, o) != 0) {{
        return -1;
    }}
    value_of(o, y);
    return 0;
}}
""",
        }[read.predict]
        return text

    def prediction(self, k):
        """C expression of a regressor's prediction of output ``k`` (a float)."""
        if self.activation == "exp":
            return f"expf({self.output_value(k)})"
        return self.output_value(k)


class _FloatWriter(_Writer):
    value_ctype, out_ctype, state_ctype, total_ctype = "float", "float", "float", "float"
    value_format = staticmethod(_float_literal)
    description = ("float32 weights and arithmetic (the input term in double for inputs "
                   "near the float32 maximum).")

    def __init__(self, model, name):
        super().__init__(model, name)
        self.coefs = {k: np.asarray(v, dtype=np.float32) for k, v in model.coefs_.items()}
        self.hidden_size, self.n_outputs = self.coefs["V"].shape
        self.sparse = set(sparse_keys(model))

    def read_input(self, value, channel):
        return value

    def mean(self, total, count):
        return f"({total}) / (float)({count})"

    def output_value(self, k):
        return f"o[{k}]"

    def chain(self, chain, v, out, variant="", mid="mid"):
        """Arrays and statements for ``out = v @ W`` (``W1 @ W2`` through ``mid``)."""
        keys = [k for k in (chain, chain + "1", chain + "2") if k in self.coefs]
        decls, lines = "", []
        for position, key in enumerate(keys):
            decl, call = self.matrix(key, self.coefs[key], key in self.sparse, variant)
            decls += decl
            lines.append(call.format(v=v, out=out if position == len(keys) - 1 else mid))
            v = mid
        return decls, "\n    ".join(lines)

    def source(self):
        n, c, m = self.name, self.coefs, self.macros
        H, IN, C = m["H"], m["IN"], m["C"]
        # The input term: in float32 while no partial sum can overflow (cell
        # values up to safe_input), else in double: a float32 sum of values near
        # the float32 maximum could overflow halfway (inf, or inf - inf = NaN)
        # where the whole sum does not; its float32 value then saturates the cell.
        # The cell reads the values of `in`: with change channels a change (up
        # to FLT_MAX) may be twice the largest input, and `largest` covers it
        # (a logarithm lies within +-90)
        w_decl, w_code = self.chain("W", "in", "pre")
        _, w_code_d = self.chain("W", "xd", "pre_d", variant="_d", mid="mid_d")
        w_code, w_code_d = (_indent(code, 4) for code in (w_code, w_code_d))
        # bound every partial sum of in W (and of in W1, then W2) by max|in| * gain
        gain = worst = 1.0
        for key in [k for k in ("W", "W1", "W2") if k in c]:
            gain *= float(np.abs(c[key].astype(np.float64)).sum(axis=0).max(initial=0.0))
            worst = max(worst, gain)
        safe_input = float(np.finfo(np.float32).max) / 4 / worst
        u_decl, u_code = self.chain("U", "h_in", "rec")
        v_decl, v_code = self.chain("V", "r", "outputs")
        mid = max([c[k].shape[1] for k in ("W1", "U1", "V1") if k in c], default=1)
        sz, sn = scalar_sigmoid(c["zeta"]), scalar_sigmoid(c["nu"])
        biases = "".join(_array("float", self.sym(k), c[k], _float_literal)
                         for k in ("bias_gate", "bias_update", "bias_out"))
        used = {self.model.gate_nonlinearity, self.model.update_nonlinearity}
        math = "".join([_FLOAT_TANH] * bool(used & {"sigmoid", "tanh"})
                       + [_FLOAT_SIGMOID] * ("sigmoid" in used))
        return f"""/* {n}.c: generated by sklearn_fastgrnn {__version__}; see {n}.h. */
{self.includes}
#include "{n}.h"

{w_decl}{u_decl}{v_decl}{biases}
static const float {n}_sigmoid_zeta = {_float_literal(sz)};
static const float {n}_sigmoid_nu = {_float_literal(sn)};
{self.product_helpers("float", "float", "float", "0.0f")}{
    self.product_helpers("double", "float", "double", "0.0", variant="_d")}{math}
static inline float gate(float v)
{{
    return {_FLOAT_NONLINEARITIES[self.model.gate_nonlinearity]};
}}

static inline float update(float v)
{{
    return {_FLOAT_NONLINEARITIES[self.model.update_nonlinearity]};
}}

/* One cell step: h_out (may be h_in) from h_in and the {self.window} timestep(s) in */
static void cell(const float *h_in, const float *in, float *h_out)
{{
    float pre[{H}], rec[{H}], mid[{mid}], largest = 0.0f;
    double xd[{IN}], pre_d[{H}], mid_d[{mid}];
    int j;
    (void)mid;
    (void)mid_d;
    for (j = 0; j < {IN}; ++j) {{
        float magnitude = in[j] < 0.0f ? -in[j] : in[j];
        largest = magnitude > largest ? magnitude : largest;
    }}
    if (largest <= {_float_literal(safe_input)}) {{ /* no float32 sum can overflow */
        {w_code}
    }} else {{
        for (j = 0; j < {IN}; ++j) {{
            xd[j] = in[j];
        }}
        {w_code_d}
        for (j = 0; j < {H}; ++j) {{
            pre[j] = (float)pre_d[j];
        }}
    }}
    {u_code}
    for (j = 0; j < {H}; ++j) {{
        float a = pre[j] + rec[j];
        float z = gate(a + {n}_bias_gate[j]);
        float c = update(a + {n}_bias_update[j]);
        h_out[j] = ({n}_sigmoid_zeta * (1.0f - z) + {n}_sigmoid_nu) * c + z * h_in[j];
    }}
}}

/* outputs = r @ V + bias_out */
static void output_layer(const float *r, float *outputs)
{{
    int j;
    float mid[{mid}];
    (void)mid;
    {v_code}
    for (j = 0; j < {C}; ++j) {{
        outputs[j] += {n}_bias_out[j];
    }}
}}
{self.state_code()}{self.read_out_code()}"""


class _QuantizedWriter(_Writer):
    value_ctype, out_ctype, state_ctype, total_ctype = "int8_t", "int32_t", "int32_t", "int64_t"
    value_format = str
    description = (
        "int8 weights, integer-only arithmetic (sklearn_fastgrnn.compression."
        "QuantizedFastGRNN);\n * outputs are Q12 integers (value = output / 4096)."
    )

    def __init__(self, model, name):
        super().__init__(model, name)
        self.hidden_size, self.n_outputs = model.hidden_size_, model.n_outputs_
        self.sparse = set(model.sparse_keys_)

    @property
    def pool_ctype(self):
        return "int64_t" if self.readout == "mean" else "int32_t"

    def read_input(self, value, channel):
        return f"quantize_input({value}, {channel})"

    def mean(self, total, count):
        return f"(int32_t)div_round({total}, {count})"

    def output_value(self, k):
        """A classifier's logit, or a regressor's output mapped back (double)."""
        if self.read_out.task == "classifier":
            return f"((float)o[{k}] / 4096.0f)"
        value = f"((double)o[{k}] / 4096.0)"
        if self.model.output_offset_ is not None:
            value = (f"((double){self.sym('output_offset')}[{k}] + "
                     f"(double){self.sym('output_spread')}[{k}] * {value})")
        return value

    def prediction(self, k):
        if self.activation == "exp":
            return f"(float)exp({self.output_value(k)})"
        return f"(float){self.output_value(k)}"

    def requantize(self, key, acc):
        m, s = self.model.multipliers_[key]
        return f"rshift_round((int64_t){acc} * {m}, {s})"

    def chain(self, chain, v, out):
        """Arrays and statements for ``out = v @ W`` with requantisation (Q12 out)."""
        keys = self.model.chain_keys(chain)
        weights = self.model.weights_
        decls, lines = "", []
        for position, key in enumerate(keys):
            decl, call = self.matrix(key, weights[key], key in self.sparse)
            decls += decl
            last = position == len(keys) - 1
            target = out if last else "mid"
            width = weights[key].shape[1]
            value = self.requantize(key, "acc[j]")
            if not last:
                value = f"clamp({value}, -INT16_LIMIT, INT16_LIMIT)"
            lines.append(call.format(v=v, out="acc"))
            lines.append(f"for (j = 0; j < {width}; ++j) {{\n    {target}[j] = "
                         f"(int32_t){value};\n}}")
            v = "mid"
        return decls, _indent("\n".join(lines), 4)

    def source(self):
        q, n, m = self.model, self.name, self.macros
        H, C = m["H"], m["C"]
        w_decl, w_code = self.chain("W", "in", "pre")
        u_decl, u_code = self.chain("U", "h_in", "rec")
        v_decl, v_code = self.chain("V", "r", "outputs")
        mid = max([q.weights_[k].shape[1] for k in ("W1", "U1", "V1") if k in q.weights_],
                  default=1)
        widest = max([q.weights_[k].shape[1] for k in q.weights_ if q.weights_[k].ndim == 2])
        biases = "".join(_array("int8_t", self.sym(k), q.weights_[k])
                         for k in ("bias_gate", "bias_update", "bias_out"))
        maps = (_array("float", self.sym("input_mean"), q.input_mean_, _float_literal)
                + _array("float", self.sym("input_multiplier"), q.input_multiplier_,
                         _float_literal))
        if q.output_offset_ is not None:
            maps += (_array("float", self.sym("output_offset"), q.output_offset_, _float_literal)
                     + _array("float", self.sym("output_spread"), q.output_spread_,
                              _float_literal))
        uses_table = {q.gate_nonlinearity, q.update_nonlinearity} & {"sigmoid", "tanh"}
        table = ""
        if uses_table:
            table = _array("int16_t", self.sym("tanh_table"), compression.TANH_TABLE) + f"""
/* tanh(a / 2^(shift + 5)) in Q12 for a >= 0: the table, linearly interpolated */
static int64_t tanh_magnitude(int64_t a, int shift)
{{
    int64_t i = a >> shift, f = a & ((1 << shift) - 1);
    if (i >= {compression.TANH_TABLE_SIZE - 1}) {{
        return {n}_tanh_table[{compression.TANH_TABLE_SIZE - 1}];
    }}
    return {n}_tanh_table[i] + rshift_round(({n}_tanh_table[i + 1] - {n}_tanh_table[i]) * f, shift);
}}
"""
        div_round = """
/* floor((2a + b) / (2b)) for b > 0: a / b rounded half up, also for negative a */
static int64_t div_round(int64_t a, int64_t b)
{
    int64_t num = 2 * a + b, den = 2 * b, quotient = num / den;
    if (num % den != 0 && num < 0) {
        --quotient; /* C division truncates towards 0 */
    }
    return quotient;
}
""" if self.readout == "mean" or self.phases > 1 else ""
        return f"""/* {n}.c: generated by sklearn_fastgrnn {__version__}; see {n}.h.
 *
 * The integer arithmetic of sklearn_fastgrnn.compression.QuantizedFastGRNN:
 * Q12 state, int8 weights, int32 accumulators, 64-bit requantisation products.
 */
{self.includes}
#include "{n}.h"

#define ONE {compression.ONE}
#define INT16_LIMIT {compression.INT16_MAX}

{w_decl}{u_decl}{v_decl}{biases}{maps}
/* floor((v + 2^(s - 1)) / 2^s), also for negative v */
static int64_t rshift_round(int64_t v, int s)
{{
    int64_t u = v + ((int64_t)1 << (s - 1));
    if (u >= 0) {{
        return u >> s;
    }}
    return -((-u + ((int64_t)1 << s) - 1) >> s);
}}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{{
    return v < lo ? lo : (v > hi ? hi : v);
}}
{div_round}
/* x_q = sat16(rint((x - mean_c) * multiplier_c)) in double, as the Python path:
   a subtraction and a product each rounded once, then rint (half to even);
   saturated before the conversion to an integer, which would overflow for
   large |x|; NaN gives 0 */
static int32_t quantize_input(float x, int c)
{{
    double v = rint(((double)x - (double){n}_input_mean[c]) * (double){n}_input_multiplier[c]);
    if (!(v >= -INT16_LIMIT)) {{
        v = v != v ? 0.0 : -INT16_LIMIT;
    }} else if (v > INT16_LIMIT) {{
        v = INT16_LIMIT;
    }}
    return (int32_t)v;
}}
{table}{self.product_helpers("int32_t", "int8_t", "int32_t", "0")}
static int64_t gate(int64_t v)
{{
    {_INTEGER_NONLINEARITIES[q.gate_nonlinearity]}
}}

static int64_t update(int64_t v)
{{
    {_INTEGER_NONLINEARITIES[q.update_nonlinearity]}
}}

/* One cell step: h_out (may be h_in) from h_in and the {self.window} timestep(s) in (x_q) */
static void cell(const int32_t *h_in, const int32_t *in, int32_t *h_out)
{{
    int32_t pre[{H}], rec[{H}], mid[{mid}], acc[{widest}];
    int j;
    (void)mid;
    {w_code}
    {u_code}
    for (j = 0; j < {H}; ++j) {{
        int64_t a = (int64_t)pre[j] + rec[j];
        int64_t z = gate(a + {self.requantize("bias_gate", f"{n}_bias_gate[j]")});
        int64_t c = clamp(update(a + {self.requantize("bias_update", f"{n}_bias_update[j]")}),
                          -INT16_LIMIT, INT16_LIMIT);
        int64_t coef = rshift_round({q.sigmoid_zeta_q15_} * (ONE - z), 12)
                       + {q.sigmoid_nu_q15_};
        h_out[j] = (int32_t)clamp(rshift_round(coef * c, 15) + rshift_round(z * h_in[j], 12),
                                  -INT16_LIMIT, INT16_LIMIT);
    }}
}}

/* outputs = (r @ V) + b_out, Q12 */
static void output_layer(const int32_t *r, int32_t *outputs)
{{
    int32_t mid[{mid}], acc[{widest}];
    int j;
    (void)mid;
    {v_code}
    for (j = 0; j < {C}; ++j) {{
        outputs[j] += (int32_t){self.requantize("bias_out", f"{n}_bias_out[j]")};
    }}
}}
{self.state_code()}{self.read_out_code()}"""
