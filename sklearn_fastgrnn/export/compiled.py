"""Compiled predictor: the C export built with the system compiler, called via ctypes.

:func:`compile_predictor` writes the code of :func:`~sklearn_fastgrnn.export.export_c`
plus a small batch file (``<name>_batch.c``, which includes the model's source:
loops over sequences, finds the NaN padding and rejects NaN or infinity
elsewhere; steps many streams at once), builds it into a shared library with
``$CC``, ``cc``, ``gcc`` or ``clang``, and loads it with :mod:`ctypes`. It is
built with ``-std=c99 -O3 -march=native`` and nothing that assumes finite math
or reorders sums (no ``-ffast-math``): the float32 code's own branch-free
``exp``/``tanh``/``sigmoid`` vectorise as they are, and saturate as the NumPy
engine does on large inputs instead of returning NaN; the int8 code's integers
are those of the Python path exactly.
"""

import ctypes
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils.metaestimators import available_if

from .._build import address, find_compiler
from .._sequences import reshape_2d, sequence_lengths, validate_sequences
from ..compression import QuantizedFastGRNN
from ..streaming import check_n_streams, check_state, check_timestep
from .c import export_c, writer_for

__all__ = ["CompiledPredictor", "CompiledStreamer", "compile_predictor"]

# batches from this size are split over the CPU's cores
_PARALLEL_MIN_SEQUENCES = 2048

_NAME = "fastgrnn"
_INT32_MAX = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_BATCH_SOURCE = """/* {n}_batch.c: {n}.c applied to n NaN-padded sequences of T steps, and to
   n streams at once. It includes the model's source, whose static helpers it uses. */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "{n}.c"

#define WIDTH ({width}) /* a row of the state, as streaming.py lays it */
{limit_helper}
/* Steps before the trailing all-NaN padding, or -1 when NaN or inf is
   anywhere else or the sequence has no real step. */
static int real_length(const float *x, int T)
{{
    const size_t D = {D};
    size_t i;
    int t = T;
    while (t > 0) {{
        for (i = 0; i < D && isnan(x[(size_t)(t - 1) * D + i]); ++i) {{
        }}
        if (i < D) {{
            break;
        }}
        --t;
    }}
    for (i = 0; i < (size_t)t * D; ++i) {{
        if (!isfinite(x[i])) {{
            return -1;
        }}
    }}
    return t > 0 ? t : -1;
}}

/* 1 when the n values are all finite (the float32 arithmetic did not overflow) */
static int all_finite(const {out} *v, int n)
{{
    int k;
    for (k = 0; k < n; ++k) {{
        if (!isfinite((double)v[k])) {{
            return 0;
        }}
    }}
    return 1;
}}

/* Each returns 0; or 1 + the index of the first sequence it rejected; or
   -(1 + the index) of the first whose outputs are not finite (overflow).
   kind: 0 the outputs, 1 the probabilities, 2 the predictions. */
static int batch(const float *x, int n, int T, void *out, int kind)
{{
    {out} o[{C}];
    int i, length;
    for (i = 0; i < n; ++i) {{
        const float *xi = x + (size_t)i * T * {D};
        length = real_length(xi, T);
        if (length < 0 || {n}_sequence_outputs(xi, length, o)) {{
            return i + 1;
        }}
        if (!all_finite(o, {C})) {{
            return -(i + 1);
        }}
        if (kind == 0) {{
            int k;
            for (k = 0; k < {C}; ++k) {{
                (({out} *)out)[(size_t)i * {C} + k] = o[k];
            }}
        }}{proba_kind}{predict_kind}
    }}
    return 0;
}}

int {n}_batch_outputs(const float *x, int n, int T, void *outputs)
{{
    return batch(x, n, T, outputs, 0);
}}

int {n}_batch_proba(const float *x, int n, int T, void *proba)
{{
    return batch(x, n, T, proba, 1);
}}

int {n}_batch_predict(const float *x, int n, int T, void *predictions)
{{
    return batch(x, n, T, predictions, 2);
}}

/* -- streams ------------------------------------------------------------- */
size_t {n}_state_bytes(void)
{{
    return sizeof({n}_state);
}}

void {n}_batch_init({n}_state *states, int n)
{{
    int i;
    for (i = 0; i < n; ++i) {{
        {n}_init(states + i);
    }}
}}

void {n}_batch_reset({n}_state *states, const int64_t *which, int m)
{{
    int i;
    for (i = 0; i < m; ++i) {{
        {n}_init(states + which[i]);
    }}
}}

/* What a streamer returns for each stream: its read-out (kind 1 or 2 as in
   batch) or its outputs. 0, or -(1 + the index) of the first stream whose
   outputs are not finite. */
int {n}_batch_read(const {n}_state *states, int n, void *out)
{{
    {out} o[{C}];
    int i, bad = 0;
    for (i = 0; i < n; ++i) {{
        {n}_outputs(states + i, o);
        if (!all_finite(o, {C}) && bad == 0) {{
            bad = -(i + 1);
        }}
{stream_read}
    }}
    return bad;
}}

/* 0 when row (D values) is a timestep, 1 when it is all NaN (no timestep), -1
   when it holds NaN in some channels only, inf, or a value beyond float32 */
static int check_row_f(const float *row)
{{
    int k, nan = 0;
    for (k = 0; k < {D}; ++k) {{
        nan += isnan(row[k]) != 0;
        if (isinf(row[k])) {{
            return -1;
        }}
    }}
    return nan == 0 ? 0 : (nan == {D} ? 1 : -1);
}}

static int check_row_d(const double *row)
{{
    int k, nan = 0;
    for (k = 0; k < {D}; ++k) {{
        nan += isnan(row[k]) != 0;
        if (row[k] > FLT_MAX || row[k] < -FLT_MAX) {{ /* inf too */
            return -1;
        }}
    }}
    return nan == 0 ? 0 : (nan == {D} ? 1 : -1);
}}

/* One timestep x (n rows of {D} floats, or doubles for update_d) for n
   streams; a row of NaN is no timestep. Returns 1 + the index of the first row
   with NaN in some channels only, inf or a value beyond float32, or of a stream
   at INT32_MAX cell steps, before changing anything; else the code of
   {n}_batch_read. */
int {n}_batch_update({n}_state *states, int n, const float *x, int64_t *seen, void *out)
{{
    int i, kind;
    for (i = 0; i < n; ++i) {{
        kind = check_row_f(x + (size_t)i * {D});
        if (kind < 0 || (kind == 0 && {at_limit})) {{
            return i + 1;
        }}
    }}
    for (i = 0; i < n; ++i) {{
        if (!isnan(x[(size_t)i * {D}])) {{
            {n}_step(states + i, x + (size_t)i * {D});
            seen[i] += 1;
        }}
    }}
    return {n}_batch_read(states, n, out);
}}

int {n}_batch_update_d({n}_state *states, int n, const double *x, int64_t *seen, void *out)
{{
    float row[{D}];
    int i, k, kind;
    for (i = 0; i < n; ++i) {{
        kind = check_row_d(x + (size_t)i * {D});
        if (kind < 0 || (kind == 0 && {at_limit})) {{
            return i + 1;
        }}
    }}
    for (i = 0; i < n; ++i) {{
        if (!isnan(x[(size_t)i * {D}])) {{
            for (k = 0; k < {D}; ++k) {{
                row[k] = (float)x[(size_t)i * {D} + k];
            }}
            {n}_step(states + i, row);
            seen[i] += 1;
        }}
    }}
    return {n}_batch_read(states, n, out);
}}
"""

# the state rows of a model with one window phase
_STATE_ROWS = """
void {n}_batch_get_state(const {n}_state *states, int n, double *rows)
{{
    int i, j;
    for (i = 0; i < n; ++i) {{
        const {n}_state *state = states + i;
        double *row = rows + (size_t)i * WIDTH;
        for (j = 0; j < {H}; ++j) {{
            row[j] = (double)state->h[j];
            row[{H} + j] = {get_pool};
        }}
        row[2 * {H}] = (double)state->steps;
        row[2 * {H} + 1] = {get_filled};
        for (j = 0; j < {K} * {CD}; ++j) {{
            row[2 * {H} + 2 + j] = {get_window};
        }}{get_raw}
    }}
}}

/* rows checked by the caller (streaming.check_state) */
void {n}_batch_set_state({n}_state *states, int n, const double *rows)
{{
    int i, j;
    for (i = 0; i < n; ++i) {{
        {n}_state *state = states + i;
        const double *row = rows + (size_t)i * WIDTH;
        for (j = 0; j < {H}; ++j) {{
            state->h[j] = ({state_type})row[j];{set_pool}
        }}
        state->steps = (int32_t)row[2 * {H}];{set_window}{set_raw}
    }}
}}
"""


# the state rows of a model with window phases: a block per phase (BLOCK values),
# then the raw values (the previous timestep, the envelope's history)
_PHASE_STATE_ROWS = """
void {n}_batch_get_state(const {n}_state *states, int n, double *rows)
{{
    int i, b, j;
    for (i = 0; i < n; ++i) {{
        const {n}_state *state = states + i;
        double *row = rows + (size_t)i * WIDTH;
        for (b = 0; b < {P}; ++b, row += BLOCK) {{
            const {n}_phase *phase = state->phase + b;
            for (j = 0; j < {H}; ++j) {{
                row[j] = (double)phase->h[j];
                row[{H} + j] = {get_pool};
            }}
            row[2 * {H}] = (double)phase->steps;
            row[2 * {H} + 1] = (double)phase->filled;
            for (j = 0; j < {K} * {CD}; ++j) {{
                row[2 * {H} + 2 + j] = (double)phase->window[j];
            }}
        }}{get_raw}
    }}
}}

/* rows checked by the caller (streaming.check_state) */
void {n}_batch_set_state({n}_state *states, int n, const double *rows)
{{
    int i, b, j;
    for (i = 0; i < n; ++i) {{
        {n}_state *state = states + i;
        const double *row = rows + (size_t)i * WIDTH;
        for (b = 0; b < {P}; ++b, row += BLOCK) {{
            {n}_phase *phase = state->phase + b;
            for (j = 0; j < {H}; ++j) {{
                phase->h[j] = ({state_type})row[j];{set_pool}
            }}
            phase->steps = (int32_t)row[2 * {H}];
            phase->filled = (int32_t)row[2 * {H} + 1];
            for (j = 0; j < {K} * {CD}; ++j) {{
                phase->window[j] = ({state_type})row[2 * {H} + 2 + j];
            }}
        }}{set_raw}
    }}
}}
"""


def _raw_copies(writer, start, to_row):
    """C loops copying a state's raw values (its ``raw_fields``: the previous
    timestep, the envelope's history) to a state row from index ``start`` (a C
    expression; "" for 0), or with ``to_row`` False from the row to the state."""
    code, offset = "", start
    for _, field, length, _ in writer.raw_fields():
        index = f"{offset} + j" if offset else "j"
        copy = (f"row[{index}] = (double)state->{field}[j];" if to_row
                else f"state->{field}[j] = (float)row[{index}];")
        code += f"""
        for (j = 0; j < {length}; ++j) {{
            {copy}
        }}"""
        offset = f"{offset} + {length}" if offset else length
    return code


def _batch_source(writer):
    """The batch file of a model's C code (``writer``: its :mod:`.c` writer)."""
    n, m = writer.name, writer.macros
    out, read = writer.out_ctype, writer.read_out
    floats = out == "float"
    proba_kind = predict_kind = ""
    if floats and read.proba:
        proba_kind = f""" else if (kind == 1) {{
            proba_of(o, (float *)out + (size_t)i * {m["C"]});
        }}"""
    if floats:
        predict_kind = {
            "label": """ else if (kind == 2) {
            ((int32_t *)out)[i] = label_of(o);
        }""",
            "labels": f""" else if (kind == 2) {{
            labels_of(o, (int32_t *)out + (size_t)i * {m["C"]});
        }}""",
            "value": f""" else if (kind == 2) {{
            value_of(o, (float *)out + (size_t)i * {m["C"]});
        }}""",
        }[read.predict]
    if not floats:  # int8: the outputs, read out in Python exactly as QuantizedFastGRNN
        stream_read = f"""        for (k = 0; k < {m["C"]}; ++k) {{
            ((int32_t *)out)[(size_t)i * {m["C"]} + k] = o[k];
        }}"""
    elif read.proba:
        stream_read = f"""        proba_of(o, (float *)out + (size_t)i * {m["C"]});"""
    else:
        stream_read = f"""        value_of(o, (float *)out + (size_t)i * {m["C"]});"""
    pooled, windowed = writer.readout != "last", writer.window > 1
    H, D, CD, K, P = m["H"], m["D"], m["CD"], m["K"], m["P"]
    raw_width = "".join(f" + {length}" for _, _, length, _ in writer.raw_fields())
    width = f"2 * {H} + 2 + {K} * {CD}{raw_width}"
    limit_helper, at_limit = "", "states[i].steps == INT32_MAX"
    if writer.phases > 1:  # a block per phase in a row
        width, at_limit = f"{P} * BLOCK{raw_width}", "at_limit(states + i)"
        limit_helper = f"""#define BLOCK (2 * {H} + 2 + {K} * {CD}) /* a phase's block of a row */

/* 1 when a phase of the state has taken INT32_MAX cell steps (it takes no more) */
static int at_limit(const {n}_state *state)
{{
    int b;
    for (b = 0; b < {P}; ++b) {{
        if (state->phase[b].steps == INT32_MAX) {{
            return 1;
        }}
    }}
    return 0;
}}
"""
    text = _BATCH_SOURCE.format(
        n=n, H=H, D=D, C=m["C"], out=out, width=width, limit_helper=limit_helper,
        at_limit=at_limit, proba_kind=proba_kind, predict_kind=predict_kind,
        stream_read=stream_read,
    )
    if writer.phases > 1:
        # after the blocks, row points at the raw values (previous, history)
        text += _PHASE_STATE_ROWS.format(
            n=n, H=H, K=K, CD=CD, P=P, state_type=writer.state_ctype,
            get_pool="(double)phase->pool[j]" if pooled else "0.0",
            set_pool=(f"\n                phase->pool[j] = ({writer.pool_ctype})row[{H} + j];"
                      if pooled else ""),
            get_raw=_raw_copies(writer, "", to_row=True),
            set_raw=_raw_copies(writer, "", to_row=False),
        )
    else:
        # the raw values (previous, history) after the window
        raw = f"2 * {H} + 2 + {K} * {CD}"
        text += _STATE_ROWS.format(
            n=n, H=H, D=D, CD=CD, K=K, state_type=writer.state_ctype,
            get_pool="(double)state->pool[j]" if pooled else "0.0",
            get_filled="(double)state->filled" if windowed else "0.0",
            get_window="(double)state->window[j]" if windowed else "0.0",
            set_pool=(f"\n            state->pool[j] = ({writer.pool_ctype})row[{H} + j];"
                      if pooled else ""),
            set_window=(f"""
        state->filled = (int32_t)row[2 * {H} + 1];
        for (j = 0; j < {K} * {CD}; ++j) {{
            state->window[j] = ({writer.state_ctype})row[2 * {H} + 2 + j];
        }}""" if windowed else ""),
            get_raw=_raw_copies(writer, raw, to_row=True),
            set_raw=_raw_copies(writer, raw, to_row=False),
        )
    if not floats:  # the copy loop of batch_read needs its index
        text = text.replace("    int i, bad = 0;\n", "    int i, k, bad = 0;\n")
    return text


def compile_predictor(model, directory=None):
    """Build a fitted model's C export into a shared library and load it.

    Parameters
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN
        Fitted; a QuantizedFastGRNN gives its exact integer arithmetic.
    directory : str or path-like, default=None
        Where the sources and the library are written (created if missing);
        None uses a temporary directory removed with the predictor.

    Returns
    -------
    CompiledPredictor

    Raises
    ------
    RuntimeError
        When no C compiler is found or the build fails (with its output).
    """
    return CompiledPredictor(model, directory)


def _is_classifier(self):
    return self._read.task == "classifier"


class CompiledPredictor:
    """A model's C code in a shared library, for NumPy arrays of sequences.

    ``X`` is what the model's own ``predict`` takes: 3D (n_samples,
    n_timesteps, n_channels) or 2D, NaN-padded at the end; it is read as
    float32 (the C code's type). A C-contiguous float32 array is passed
    without a copy, a float64 one converted in one step (no validation on
    that path: the C code finds NaN and infinity, and then the model's own
    validation explains them). Pickling stores the model and rebuilds the
    library when loaded (in a temporary directory).

    Input the model rejects (NaN inside a sequence, infinity) raises the
    model's ``ValueError``, and so do values beyond the float32 range; so does a
    sequence on which the float32 arithmetic overflows (a relu non-linearity on
    large inputs), naming the sample, instead of returning NaN.

    Thread safety: the C code keeps no state, and ctypes releases the GIL
    during a call: the methods may run in several threads at once (large
    batches are split over the cores that way).

    Attributes
    ----------
    model : FastGRNNClassifier, FastGRNNRegressor or QuantizedFastGRNN
    classes_ : ndarray
        Of a classifier.
    n_outputs_ : int
    library_path : str
    """

    def __init__(self, model, directory=None):
        self._writer = writer_for(model, _NAME)  # checks the model (fitted, undamaged)
        self.model = model
        self._read = self._writer.read_out
        if self._read.task == "classifier":
            self.classes_ = np.asarray(model.classes_)
        self.n_outputs_ = int(self._writer.n_outputs)
        self._quantized = isinstance(model, QuantizedFastGRNN)
        self._channels = int(model.n_channels_)
        self._fast_input = not hasattr(model, "feature_names_in_")
        self._temporary = None
        if directory is None:
            self._temporary = tempfile.TemporaryDirectory(
                prefix="fastgrnn-", ignore_cleanup_errors=True
            )
            directory = self._temporary.name
        self._build(os.fspath(directory))

    def _build(self, directory):
        compiler = find_compiler()
        if compiler is None:
            raise RuntimeError(
                "compile_predictor needs a C compiler, but none was found: set CC "
                "or put cc, gcc or clang on the PATH (for example apt-get install "
                "gcc, or xcode-select --install on macOS)."
            )
        export_c(self.model, directory, name=_NAME)
        batch = os.path.join(directory, f"{_NAME}_batch.c")
        with open(batch, "w", encoding="ascii") as f:
            f.write(_batch_source(self._writer))
        obj = batch[:-2] + ".o"
        _run_compiler(compiler, ["-std=c99", "-O3", "-fPIC", "-c", batch, "-o", obj],
                      native=True)
        self.library_path = os.path.join(directory, f"lib{_NAME}.so")
        _run_compiler(compiler, ["-shared", "-o", self.library_path, obj, "-lm"])
        library = ctypes.CDLL(self.library_path)
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        signatures = {
            "batch_outputs": ([pointer, integer, integer, pointer], integer),
            "batch_proba": ([pointer, integer, integer, pointer], integer),
            "batch_predict": ([pointer, integer, integer, pointer], integer),
            "state_bytes": ([], ctypes.c_size_t),
            "batch_init": ([pointer, integer], None),
            "batch_reset": ([pointer, pointer, integer], None),
            "batch_read": ([pointer, integer, pointer], integer),
            "batch_update": ([pointer, integer, pointer, pointer, pointer], integer),
            "batch_update_d": ([pointer, integer, pointer, pointer, pointer], integer),
            "batch_get_state": ([pointer, integer, pointer], None),
            "batch_set_state": ([pointer, integer, pointer], None),
        }
        self._c = {}
        for kind, (args, result) in signatures.items():
            function = getattr(library, f"{_NAME}_{kind}")
            function.argtypes, function.restype = args, result
            self._c[kind] = function
        self._library = library

    # -- input ---------------------------------------------------------------
    def _sequences(self, X):
        """``X`` as a C-contiguous float32 array (n, T, n_channels), cheaply for a
        plain float32 or float64 array; the full validation for anything else."""
        if type(X) is np.ndarray and X.flags.c_contiguous and X.size and self._fast_input:
            X3 = None
            if X.ndim == 3 and X.shape[2] == self._channels:
                X3 = X
            elif X.ndim == 2 and X.shape[1] == self.model.n_features_in_:
                X3 = reshape_2d(X, self.model.n_timesteps_)
            if X3 is not None and X3.dtype == np.float32:
                return X3
            if X3 is not None and X3.dtype == np.float64:
                with np.errstate(over="ignore"):  # beyond float32: inf, refused by C
                    return X3.astype(np.float32)
        _, X3, _ = validate_sequences(self.model, X, reset=False)
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(X3, dtype=np.float32)

    def _call(self, function, X, shape, dtype):
        X3 = self._sequences(X)
        n, T, _ = X3.shape
        out = np.empty((n, *shape), dtype)
        workers = min(os.cpu_count() or 1, 8) if n >= _PARALLEL_MIN_SEQUENCES else 1
        if workers == 1:
            bad = function(address(X3), n, T, address(out))
        else:
            # the C code keeps no state (only constant tables) and ctypes
            # releases the GIL: large batches run in slices on every core
            bounds = np.linspace(0, n, workers + 1).astype(int)

            def run(start, stop):
                code = function(address(X3[start:stop]), int(stop - start), T,
                                address(out[start:stop]))
                return code + start if code > 0 else (code - start if code < 0 else 0)

            with ThreadPoolExecutor(workers) as pool:
                bad = next((b for b in pool.map(run, bounds[:-1], bounds[1:]) if b), 0)
        if bad > 0:
            # the model's own validation explains it (for float64 input in
            # float64 terms), else the float32 array's (values beyond its range)
            validate_sequences(self.model, X, reset=False)
            sequence_lengths(X3)
            raise ValueError(f"The C code rejected sample {bad - 1} of X.")
        if bad < 0:
            raise ValueError(
                f"The float32 arithmetic of the compiled predictor overflows on sample "
                f"{-bad - 1} of X: its hidden state or outputs leave float32's range "
                f"(a relu non-linearity on large inputs, or a diverged model), so its "
                "predictions would be NaN. Scale the input (SequenceScaler), or "
                "predict with the model itself, which computes in float64 for "
                "float64 input."
            )
        return out

    # -- prediction ----------------------------------------------------------
    def outputs(self, X):
        """Outputs of the C code, (n_samples, n_outputs): float32, or the Q12 int32 of
        an int8 model (``QuantizedFastGRNN.quantized_outputs`` exactly)."""
        dtype = np.int32 if self._quantized else np.float32
        return self._call(self._c["batch_outputs"], X, (self.n_outputs_,), dtype)

    @available_if(_is_classifier)
    def logits(self, X):
        """:meth:`outputs` of a classifier: its logits."""
        return self.outputs(X)

    @available_if(_is_classifier)
    def predict_proba(self, X):
        """Class (or label) probabilities, shape (n_samples, n_outputs).

        float32 from the C code for a float model (within 1e-5 of the model's
        ``predict_proba``); for an int8 model exactly
        ``QuantizedFastGRNN.predict_proba``, from the C code's integer outputs.
        """
        if self._quantized:
            q = self.outputs(X).astype(np.int64)
            return self.model._stream_predictions(q)
        return self._call(self._c["batch_proba"], X, (self.n_outputs_,), np.float32)

    def predict(self, X):
        """What the model's ``predict`` gives: the most probable class (the first on
        ties), a multilabel indicator, or a regressor's values (1D for one
        output), from the C code's arithmetic."""
        if self._quantized:
            return self.model._predictions(self.outputs(X).astype(np.int64))
        kind = self._read.predict
        if kind == "label":
            labels = self._call(self._c["batch_predict"], X, (), np.int32)
            return self.classes_[labels]
        if kind == "labels":
            return self._call(self._c["batch_predict"], X, (self.n_outputs_,),
                              np.int32).astype(int)
        values = self._call(self._c["batch_predict"], X, (self.n_outputs_,), np.float32)
        return values[:, 0] if self.n_outputs_ == 1 else values

    def streamer(self, n_streams=1):
        """A :class:`CompiledStreamer`: the C code's step function for ``n_streams``
        streams, with the API of the model's streamer.

        Parameters
        ----------
        n_streams : int, default=1

        Returns
        -------
        CompiledStreamer
        """
        return CompiledStreamer(self, n_streams)

    # -- pickling ------------------------------------------------------------
    def __getstate__(self):
        return {"model": self.model}

    def __setstate__(self, state):
        self.__init__(state["model"])


class CompiledStreamer:
    """A model's predictions updated one timestep at a time, by the C code.

    Made by ``compile_predictor(model).streamer(n_streams)``. The API of
    :class:`~sklearn_fastgrnn.streaming.Streamer`: :meth:`update` feeds one
    timestep to every stream (a row of NaN: none for that stream) and returns
    what the model's ``predict_proba`` (classifier) or ``predict`` (regressor)
    gives for each stream's sequence so far; :meth:`predictions`,
    :meth:`reset`, :attr:`state` and ``n_timesteps_seen_`` as there. The state
    of each stream is a C struct (``name_state`` of the exported header),
    advanced by ``name_step``: float32 for a float model (within 1e-5 of the
    Python streamer), the int8 model's integers for a QuantizedFastGRNN (its
    predictions exactly those of ``QuantizedFastGRNN.streamer``). Input is read
    as float32; values beyond its range are an error. :attr:`state` has the
    row layout of the Python streamers, so a state moves between them (a
    float64 state is rounded to float32 here): ``[block_0 | ... | block_{p-1} |
    previous | history | timesteps seen]``, a block ``[h | pool | steps |
    filled | window]`` of each window phase (one without phases) read from and
    written to its ``name_phase``; ``previous`` (change channels) and
    ``history`` (envelope channels) the state's members of those names.

    Pickling stores the model and the state, rebuilds the library when loaded
    and resumes exactly where the stream stopped.

    Thread safety: a streamer is a mutable object with no lock: use one per
    thread, or serialise the calls. The C code keeps no global state and
    ctypes releases the GIL, so streamers in different threads run in parallel.

    Attributes
    ----------
    n_streams : int
    n_timesteps_seen_ : ndarray of shape (n_streams,)
    """

    def __init__(self, predictor, n_streams=1):
        self._predictor = predictor
        self.n_streams = check_n_streams(n_streams)
        writer = predictor._writer
        self._hidden_size, self._window = int(writer.hidden_size), writer.window
        self._phases = writer.phases  # a block of state per window phase
        self._channels, self._cell_channels = writer.n_channels, writer.cell_channels
        # the float input values after the blocks: previous, history
        self._n_raw = writer.n_raw
        self._quantized = predictor._quantized
        self._c = predictor._c
        state_bytes = int(self._c["state_bytes"]())
        # 8-byte aligned storage for the n C structs (an int64 pool needs it)
        self._states = np.zeros(-(-self.n_streams * state_bytes // 8), np.float64)
        self._c["batch_init"](self._states.ctypes.data, self.n_streams)
        self._seen = np.zeros(self.n_streams, np.int64)  # the C code counts in it
        read = predictor._read
        self._flat = read.task == "regressor" and predictor.n_outputs_ == 1
        # what the C code writes: a read-out (float) or the outputs (int8) of each stream
        self._out = np.zeros((self.n_streams, predictor.n_outputs_),
                             np.int32 if self._quantized else np.float32)
        self._x_shape = (self.n_streams, self._channels)
        self._row_shape = (self._channels,) if self.n_streams == 1 else None
        self._update = {"f": self._c["batch_update"], "d": self._c["batch_update_d"]}
        self._states_pointer = self._states.ctypes.data
        self._seen_pointer = self._seen.ctypes.data
        self._out_pointer = self._out.ctypes.data

    @property
    def model(self):
        """The model whose C code this is."""
        return self._predictor.model

    @property
    def n_timesteps_seen_(self):
        """Timesteps each stream has received since its last reset, (n_streams,)."""
        return self._seen

    def _rejected(self, code, x):
        """The error of the C code's refusal of the row ``code - 1``."""
        xc, _, _ = check_timestep(x, self.n_streams, self._channels, np.float64)
        stream = code - 1
        if np.abs(np.nan_to_num(xc[stream])).max() > _FLOAT32_MAX:
            raise ValueError(
                f"The timestep of stream {stream} holds values beyond the range of "
                "float32, in which the C code reads its input. Scale the input."
            )
        raise ValueError(
            f"Stream {stream} has taken {_INT32_MAX} cell steps, as many as the C "
            f"state counts: reset({stream}) starts it again."
        )

    def _read(self, code):
        """The predictions in the output buffer (a new array), after the C code's
        ``code``."""
        if code < 0:
            raise ValueError(
                f"The float32 arithmetic of the compiled streamer overflows on stream "
                f"{-code - 1}: its hidden state or outputs leave float32's range (a relu "
                "non-linearity on large inputs, or a diverged model). Its state is no "
                f"longer finite: reset({-code - 1}) starts it again. Scale the input, or "
                "stream with the model itself (model.streamer(dtype='float64'))."
            )
        if self._quantized:
            return self.model._stream_predictions(self._out.astype(np.int64))
        return self._out[:, 0].copy() if self._flat else self._out.copy()

    def update(self, x):
        """Feed one timestep to every stream; the predictions for the sequences so far.

        Parameters
        ----------
        x : array-like of shape (n_streams, n_channels), or (n_channels,) for one stream
            A row of NaN leaves that stream as it was.

        Returns
        -------
        ndarray
            As :meth:`Streamer.update <sklearn_fastgrnn.streaming.Streamer.update>`
            (float32 for a float model).
        """
        # a plain contiguous float32 or float64 array goes to the C code as it
        # is (which checks its values); anything else is checked and converted
        function = None
        if type(x) is np.ndarray and x.flags.c_contiguous and (
                x.shape == self._x_shape or x.shape == self._row_shape):
            function = self._update.get(x.dtype.char)
        if function is None:
            xc, _, _ = check_timestep(x, self.n_streams, self._channels, np.float64)
            xc, function = np.ascontiguousarray(xc), self._update["d"]
            one = np.ndim(x) == 1
        else:
            xc, one = x, x.shape == self._row_shape
        code = function(self._states_pointer, self.n_streams,
                        xc.__array_interface__["data"][0], self._seen_pointer,
                        self._out_pointer)
        if code > 0:
            self._rejected(code, x)
        predictions = self._read(code)
        return predictions[0] if one else predictions

    def predictions(self):
        """The predictions of every stream now, without feeding anything."""
        code = self._c["batch_read"](self._states_pointer, self.n_streams, self._out_pointer)
        return self._read(code)

    def reset(self, streams=None):
        """Start ``streams`` (an index, indices, or None for all) from an empty sequence."""
        if streams is None:
            self._c["batch_init"](self._states.ctypes.data, self.n_streams)
            self.n_timesteps_seen_[:] = 0
            return
        which = np.arange(self.n_streams)[np.atleast_1d(streams)].astype(np.int64)
        self._c["batch_reset"](self._states.ctypes.data, which.ctypes.data, len(which))
        self.n_timesteps_seen_[which] = 0

    @property
    def state(self):
        """Every stream's state, one row each (a copy; assign to restore), laid out as
        the Python streamer's ``state``."""
        # without a window (window_ = 1) the C code writes zeros in its place
        rows = np.empty((self.n_streams, self._state_width - 1), np.float64)
        self._c["batch_get_state"](self._states.ctypes.data, self.n_streams,
                                   rows.ctypes.data)
        return np.column_stack([rows, self.n_timesteps_seen_])

    @state.setter
    def state(self, value):
        # every value within float32 (previous and history are float32 in C too)
        value = check_state(value, self.n_streams, self._hidden_size, self._window,
                            self._cell_channels, phases=self._phases,
                            n_raw=self._n_raw, integer=self._quantized,
                            max_steps=_INT32_MAX, bound=_FLOAT32_MAX)
        if self._quantized:
            # the int8 model's own bounds of h, the pool and the window
            self.model.streamer(self.n_streams)._cell.set_state(value[:, :-1])
        rows = np.ascontiguousarray(value[:, :-1])
        self._c["batch_set_state"](self._states.ctypes.data, self.n_streams, rows.ctypes.data)
        self.n_timesteps_seen_[...] = value[:, -1].astype(np.int64)

    @property
    def _state_width(self):
        block = 2 * self._hidden_size + 2 + self._window * self._cell_channels
        return self._phases * block + self._n_raw + 1

    # -- pickling ------------------------------------------------------------
    def __getstate__(self):
        return {"model": self.model, "n_streams": self.n_streams, "state": self.state}

    def __setstate__(self, state):
        self.__init__(CompiledPredictor(state["model"]), state["n_streams"])
        self.state = state["state"]


def _run_compiler(compiler, args, native=False):
    """Run the compiler; with ``native`` first try ``-march=native``."""
    attempts = [["-march=native", *args], args] if native else [args]
    for attempt in attempts:
        result = subprocess.run([*compiler, *attempt], capture_output=True, text=True)
        if result.returncode == 0:
            return
    raise RuntimeError(
        f"Building the compiled predictor failed: {' '.join([*compiler, *args])}\n"
        f"{result.stderr.strip()}"
    )
