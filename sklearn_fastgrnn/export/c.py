"""C export: a header and a source that run a fitted FastGRNN on one sequence.

The generated code is C99, uses only the C standard library and libm, and
allocates nothing (every buffer is a fixed-size local array). For a model
exported under ``name`` the header declares::

    int name_logits(const float *x, int length, float *logits);    float32 model
    int name_logits(const float *x, int length, int32_t *logits);  int8 model (Q12)
    int name_predict_proba(const float *x, int length, float *proba);
    int name_predict(const float *x, int length);

``x`` holds ``length`` timesteps of ``NAME_N_CHANNELS`` values, time-major
(``x[t * NAME_N_CHANNELS + c]``); a shorter sequence is passed with its own
length (no NaN padding). ``proba`` receives ``NAME_N_CLASSES`` probabilities in
the order of ``classes_`` and ``name_predict`` returns the index of the most
probable class. The functions return -1 when ``length < 1`` or a pointer is
NULL, and otherwise 0 (``name_predict``: the class index).

A :class:`~sklearn_fastgrnn.FastGRNNClassifier` is written with float32 weights
and float32 arithmetic. A :class:`~sklearn_fastgrnn.compression.QuantizedFastGRNN`
is written with its int8 tensors and runs its integer arithmetic exactly:
``name_logits`` returns the integers of ``QuantizedFastGRNN.quantized_logits``.
Matrices trained sparse are stored sparse, column by column: the number of
non-zeros of each column, then the row index (uint8 below 256 rows, else
uint16) and the value of each non-zero.
"""

import os
import re

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .. import compression
from .._files import write_all_atomically
from .._nonlinearities import scalar_sigmoid
from .._size import index_bytes
from .._sparsity import sparse_keys
from .._version import __version__
from ..classifier import FastGRNNClassifier
from ..compression import QuantizedFastGRNN
from .weights import check_classifier

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


def export_c(model, directory, *, name="fastgrnn"):
    """Write ``<name>.h`` and ``<name>.c`` for a fitted model into ``directory``.

    Parameters
    ----------
    model : FastGRNNClassifier or QuantizedFastGRNN
        Fitted; a QuantizedFastGRNN (from
        :func:`~sklearn_fastgrnn.compression.quantize`) gives integer-only code.
    directory : str or path-like
        Created if missing.
    name : str, default="fastgrnn"
        Prefix of the file names, functions and macros: a C identifier.

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
    if isinstance(model, QuantizedFastGRNN):
        _check_quantized(model)
        writer = _QuantizedWriter(model, name)
    elif isinstance(model, FastGRNNClassifier):
        check_is_fitted(model, "coefs_")
        check_classifier(model, "export_c refuses it")
        writer = _FloatWriter(model, name)
    else:
        raise TypeError(
            f"export_c needs a fitted FastGRNNClassifier or a QuantizedFastGRNN, got "
            f"{type(model).__name__}. For a Pipeline, export its last step and apply "
            "the preprocessing before calling the C function."
        )
    source = writer.source()  # before the header: it decides the helpers used
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(os.fspath(directory), f"{name}.{ext}") for ext in ("h", "c")]
    write_all_atomically(
        {path: text.encode("ascii") for path, text in zip(paths, (writer.header(), source))}
    )
    return paths


def _check_quantized(q):
    """Refuse an int8 model whose tensors are not int8 or whose outputs do not
    match ``classes_`` (a damaged or edited model)."""
    for key, value in q.weights_.items():
        if np.asarray(value).dtype != np.int8:
            raise ValueError(f"weights_[{key!r}] of the QuantizedFastGRNN is "
                             f"{np.asarray(value).dtype}, not int8: the model is damaged; "
                             "quantize the classifier again.")
    V = q.weights_[q.chain_keys("V")[-1]]
    if np.shape(V)[-1] != len(q.classes_):
        raise ValueError(
            f"classes_ holds {len(q.classes_)} labels, but the int8 output matrix has "
            f"{np.shape(V)[-1]} columns, one per class: export_c refuses it. classes_ "
            "was changed after quantize or the model is damaged."
        )


def _float_literal(value):
    return f"{float(np.float32(value)):.9e}f"


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


class _Writer:
    """The parts of the source that the float32 and int8 variants share."""

    value_ctype = value_format = logit_ctype = logit_to_float = description = None

    def __init__(self, model, name):
        self.model = model
        self.name, self.NAME = name, name.upper()
        self.n_classes = len(model.classes_)
        self.used = set()  # product helpers the chains need

    def sym(self, key):
        return f"{self.name}_{key}"

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

    def header(self):
        N = self.NAME
        labels = ", ".join(str(c) for c in self.model.classes_)
        return f"""/* {self.name}.h: a FastGRNN classifier (sklearn_fastgrnn {__version__}).
 *
 * {self.description}
 * Input: x[t * {N}_N_CHANNELS + c] for t < length (time-major, no padding).
 * Outputs follow classes_: {labels}
 * The functions return -1 if length < 1 or a pointer is NULL, else 0
 * ({self.name}_predict: the index of the most probable class).
 * C99, the standard library and libm only; no dynamic memory.
 */
#ifndef {N}_H
#define {N}_H

#include <stdint.h>

#define {N}_N_CHANNELS {self.model.n_channels_}
#define {N}_N_CLASSES {self.n_classes}
#define {N}_HIDDEN_SIZE {self.hidden_size}

int {self.name}_logits(const float *x, int length, {self.logit_ctype} *logits);
int {self.name}_predict_proba(const float *x, int length, float *proba);
int {self.name}_predict(const float *x, int length);

#endif
"""

    def entry_points(self):
        """``predict_proba`` (softmax of the logits) and ``predict`` (their argmax)."""
        n, C, f = self.name, f"{self.NAME}_N_CLASSES", self.logit_to_float
        return f"""
int {n}_predict_proba(const float *x, int length, float *proba)
{{
    {self.logit_ctype} logits[{C}];
    float top, total = 0.0f;
    int k;
    if (proba == NULL || {n}_logits(x, length, logits) != 0) {{
        return -1;
    }}
    top = {f.format("logits[0]")};
    for (k = 1; k < {C}; ++k) {{
        if ({f.format("logits[k]")} > top) {{
            top = {f.format("logits[k]")};
        }}
    }}
    for (k = 0; k < {C}; ++k) {{
        proba[k] = expf({f.format("logits[k]")} - top);
        total += proba[k];
    }}
    for (k = 0; k < {C}; ++k) {{
        proba[k] /= total;
    }}
    return 0;
}}

int {n}_predict(const float *x, int length)
{{
    {self.logit_ctype} logits[{C}];
    int k, best = 0;
    if ({n}_logits(x, length, logits) != 0) {{
        return -1;
    }}
    for (k = 1; k < {C}; ++k) {{
        if (logits[k] > logits[best]) {{
            best = k;
        }}
    }}
    return best;
}}
"""


class _FloatWriter(_Writer):
    value_ctype, logit_ctype, logit_to_float = "float", "float", "{}"
    value_format = staticmethod(_float_literal)
    description = "float32 weights and arithmetic; logits = h_T @ V + bias_out."

    def __init__(self, model, name):
        super().__init__(model, name)
        self.coefs = {k: np.asarray(v, dtype=np.float32) for k, v in model.coefs_.items()}
        self.hidden_size = self.coefs["V"].shape[0]
        self.sparse = set(sparse_keys(model))

    def chain(self, chain, v, out, variant="", mid="mid"):
        """Arrays and statements for ``out = v @ W`` (``W1 @ W2`` through ``mid``)."""
        keys = [k for k in (chain, chain + "1", chain + "2") if k in self.coefs]
        decls, lines = "", []
        for position, key in enumerate(keys):
            decl, call = self.matrix(key, self.coefs[key], key in self.sparse, variant)
            decls += decl
            lines.append(call.format(v=v, out=out if position == len(keys) - 1 else mid))
            v = mid
        return decls, "\n        ".join(lines)

    def source(self):
        n, N, c = self.name, self.NAME, self.coefs
        H, D, C = f"{N}_HIDDEN_SIZE", f"{N}_N_CHANNELS", f"{N}_N_CLASSES"
        # The input term: in float32 while no partial sum can overflow (inputs
        # up to safe_input), else in double: a float32 sum of inputs near the
        # float32 maximum could overflow halfway (inf, or inf - inf = NaN)
        # where the whole sum does not; its float32 value then saturates the cell
        w_decl, w_code = self.chain("W", "xt", "pre")
        _, w_code_d = self.chain("W", "xd", "pre_d", variant="_d", mid="mid_d")
        w_code, w_code_d = (code.replace("\n        ", "\n            ")
                            for code in (w_code, w_code_d))
        # bound every partial sum of x W (and of x W1, then W2) by max|x| * gain
        gain = worst = 1.0
        for key in [k for k in ("W", "W1", "W2") if k in c]:
            gain *= float(np.abs(c[key].astype(np.float64)).sum(axis=0).max(initial=0.0))
            worst = max(worst, gain)
        safe_input = float(np.finfo(np.float32).max) / 4 / worst
        u_decl, u_code = self.chain("U", "h", "rec")
        v_decl, v_code = self.chain("V", "h", "logits")
        mid = max([c[k].shape[1] for k in ("W1", "U1") if k in c], default=1)
        sz, sn = scalar_sigmoid(c["zeta"]), scalar_sigmoid(c["nu"])
        biases = "".join(_array("float", self.sym(k), c[k], _float_literal)
                         for k in ("bias_gate", "bias_update", "bias_out"))
        used = {self.model.gate_nonlinearity, self.model.update_nonlinearity}
        math = "".join([_FLOAT_TANH] * bool(used & {"sigmoid", "tanh"})
                       + [_FLOAT_SIGMOID] * ("sigmoid" in used))
        return f"""/* {n}.c: generated by sklearn_fastgrnn {__version__}; see {n}.h. */
#include <math.h>
#include <stddef.h>

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

int {n}_logits(const float *x, int length, float *logits)
{{
    float h[{H}], pre[{H}], rec[{H}], mid[{mid}];
    double xd[{D}], pre_d[{H}], mid_d[{mid}];
    int t, j;
    (void)mid;
    (void)mid_d;
    if (x == NULL || logits == NULL || length < 1) {{
        return -1;
    }}
    for (j = 0; j < {H}; ++j) {{
        h[j] = 0.0f;
    }}
    for (t = 0; t < length; ++t) {{
        const float *xt = x + (size_t)t * {D};
        float largest = 0.0f;
        for (j = 0; j < {D}; ++j) {{
            float magnitude = xt[j] < 0.0f ? -xt[j] : xt[j];
            largest = magnitude > largest ? magnitude : largest;
        }}
        if (largest <= {_float_literal(safe_input)}) {{ /* no float32 sum can overflow */
            {w_code}
        }} else {{
            for (j = 0; j < {D}; ++j) {{
                xd[j] = xt[j];
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
            h[j] = ({n}_sigmoid_zeta * (1.0f - z) + {n}_sigmoid_nu) * c + z * h[j];
        }}
    }}
    {v_code}
    for (j = 0; j < {C}; ++j) {{
        logits[j] += {n}_bias_out[j];
    }}
    return 0;
}}
{self.entry_points()}"""


class _QuantizedWriter(_Writer):
    value_ctype, logit_ctype = "int8_t", "int32_t"
    value_format = str
    logit_to_float = "((float){} / 4096.0f)"
    description = (
        "int8 weights, integer-only arithmetic (sklearn_fastgrnn.compression."
        "QuantizedFastGRNN);\n * logits are Q12 integers (value = logit / 4096)."
    )

    def __init__(self, model, name):
        super().__init__(model, name)
        self.hidden_size = model.hidden_size
        self.sparse = set(model.sparse_keys_)

    def requantize(self, key, acc):
        m, s = self.model.multipliers_[key]
        return f"rshift_round((int64_t){acc} * {m}, {s})"

    def chain(self, chain, v, out, indent=8):
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
            pad = " " * indent
            lines.append(f"for (j = 0; j < {width}; ++j) {{\n{pad}    {target}[j] = "
                         f"(int32_t){value};\n{pad}}}")
            v = "mid"
        return decls, f"\n{pad}".join(lines)

    def source(self):
        q, n, N = self.model, self.name, self.NAME
        H, D, C = f"{N}_HIDDEN_SIZE", f"{N}_N_CHANNELS", f"{N}_N_CLASSES"
        w_decl, w_code = self.chain("W", "xq", "pre")
        u_decl, u_code = self.chain("U", "h", "rec")
        v_decl, v_code = self.chain("V", "h", "logits", indent=4)
        mid = max([q.weights_[k].shape[1] for k in ("W1", "U1") if k in q.weights_], default=1)
        widest = max([q.weights_[k].shape[1] for k in q.weights_ if q.weights_[k].ndim == 2])
        biases = "".join(_array("int8_t", self.sym(k), q.weights_[k])
                         for k in ("bias_gate", "bias_update", "bias_out"))
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
        scale = float(2 ** q.frac_bits_["input"])
        return f"""/* {n}.c: generated by sklearn_fastgrnn {__version__}; see {n}.h.
 *
 * The integer arithmetic of sklearn_fastgrnn.compression.QuantizedFastGRNN:
 * Q12 state, int8 weights, int32 accumulators, 64-bit requantisation products.
 */
#include <math.h>
#include <stddef.h>

#include "{n}.h"

#define ONE {compression.ONE}
#define INT16_LIMIT {compression.INT16_MAX}

{w_decl}{u_decl}{v_decl}{biases}
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

/* x_q = sat16(floor(x * 2^{q.frac_bits_["input"]} + 1/2)), in double like the Python path;
   saturated before the conversion to an integer, which would overflow for large
   |x| (NaN, which the Python path reads as padding, gives 0) */
static int32_t quantize_input(float x)
{{
    double v = floor((double)x * {scale!r} + 0.5);
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

int {n}_logits(const float *x, int length, int32_t *logits)
{{
    int32_t xq[{D}], h[{H}], pre[{H}], rec[{H}], mid[{mid}], acc[{widest}];
    int32_t b_gate[{H}], b_update[{H}];
    int t, j;
    (void)mid;
    if (x == NULL || logits == NULL || length < 1) {{
        return -1;
    }}
    for (j = 0; j < {H}; ++j) {{
        b_gate[j] = (int32_t){self.requantize("bias_gate", f"{n}_bias_gate[j]")};
        b_update[j] = (int32_t){self.requantize("bias_update", f"{n}_bias_update[j]")};
        h[j] = 0;
    }}
    for (t = 0; t < length; ++t) {{
        for (j = 0; j < {D}; ++j) {{
            xq[j] = quantize_input(x[(size_t)t * {D} + j]);
        }}
        {w_code}
        {u_code}
        for (j = 0; j < {H}; ++j) {{
            int64_t a = (int64_t)pre[j] + rec[j];
            int64_t z = gate(a + b_gate[j]);
            int64_t c = clamp(update(a + b_update[j]), -INT16_LIMIT, INT16_LIMIT);
            int64_t coef = rshift_round({q.sigmoid_zeta_q15_} * (ONE - z), 12)
                           + {q.sigmoid_nu_q15_};
            h[j] = (int32_t)clamp(rshift_round(coef * c, 15) + rshift_round(z * h[j], 12),
                                  -INT16_LIMIT, INT16_LIMIT);
        }}
    }}
    {v_code}
    for (j = 0; j < {C}; ++j) {{
        logits[j] += (int32_t){self.requantize("bias_out", f"{n}_bias_out[j]")};
    }}
    return 0;
}}
{self.entry_points()}"""
