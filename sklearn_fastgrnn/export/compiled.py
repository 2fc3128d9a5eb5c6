"""Compiled predictor: the C export built with the system compiler, called via ctypes.

:func:`compile_predictor` writes the code of :func:`~sklearn_fastgrnn.export.export_c`
plus a small batch entry point (``<name>_batch.c``: loops over sequences, finds
the NaN padding and rejects NaN or infinity elsewhere), builds both into a shared
library with ``$CC``, ``cc``, ``gcc`` or ``clang``, and loads it with
:mod:`ctypes`. Both are built with ``-O3 -march=native`` and nothing that assumes finite math
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
from sklearn.utils.validation import check_is_fitted

from .._build import find_compiler
from .._losses import log_softmax
from .._sequences import sequence_lengths, validate_sequences
from ..classifier import FastGRNNClassifier
from ..compression import ONE, QuantizedFastGRNN
from .c import export_c

__all__ = ["CompiledPredictor", "compile_predictor"]

# batches from this size are split over the CPU's cores
_PARALLEL_MIN_SEQUENCES = 2048

_NAME = "fastgrnn"

_BATCH_SOURCE = """/* {n}_batch.c: {n}.h applied to n sequences of T steps, NaN-padded. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "{n}.h"

/* Steps before the trailing all-NaN padding, or -1 when NaN or inf is
   anywhere else or the sequence has no real step. */
static int real_length(const float *x, int T)
{{
    const size_t D = {N}_N_CHANNELS;
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
static int all_finite(const {logit} *v, int n)
{{
    int k;
    for (k = 0; k < n; ++k) {{
        if (!isfinite((float)v[k])) {{
            return 0;
        }}
    }}
    return 1;
}}

/* Each returns 0; or 1 + the index of the first sequence it rejected; or
   -(1 + the index) of the first whose outputs are not finite (overflow). */
int {n}_batch_proba(const float *x, int n, int T, float *proba)
{{
    int i, length;
    for (i = 0; i < n; ++i) {{
        const float *xi = x + (size_t)i * T * {N}_N_CHANNELS;
        float *out = proba + (size_t)i * {N}_N_CLASSES;
        length = real_length(xi, T);
        if (length < 0 || {n}_predict_proba(xi, length, out)) {{
            return i + 1;
        }}
        if (!all_finite(out, {N}_N_CLASSES)) {{
            return -(i + 1);
        }}
    }}
    return 0;
}}

int {n}_batch_logits(const float *x, int n, int T, {logit} *logits)
{{
    int i, length;
    for (i = 0; i < n; ++i) {{
        const float *xi = x + (size_t)i * T * {N}_N_CHANNELS;
        {logit} *out = logits + (size_t)i * {N}_N_CLASSES;
        length = real_length(xi, T);
        if (length < 0 || {n}_logits(xi, length, out)) {{
            return i + 1;
        }}
        if (!all_finite(out, {N}_N_CLASSES)) {{
            return -(i + 1);
        }}
    }}
    return 0;
}}

/* the label of {n}_predict (the first largest logit), from checked logits */
int {n}_batch_predict(const float *x, int n, int T, int32_t *labels)
{{
    {logit} logits[{N}_N_CLASSES];
    int i, k, length;
    for (i = 0; i < n; ++i) {{
        const float *xi = x + (size_t)i * T * {N}_N_CHANNELS;
        length = real_length(xi, T);
        if (length < 0 || {n}_logits(xi, length, logits)) {{
            return i + 1;
        }}
        if (!all_finite(logits, {N}_N_CLASSES)) {{
            return -(i + 1);
        }}
        labels[i] = 0;
        for (k = 1; k < {N}_N_CLASSES; ++k) {{
            if (logits[k] > logits[labels[i]]) {{
                labels[i] = k;
            }}
        }}
    }}
    return 0;
}}
"""


def compile_predictor(model, directory=None):
    """Build a fitted model's C export into a shared library and load it.

    Parameters
    ----------
    model : FastGRNNClassifier or QuantizedFastGRNN
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


class CompiledPredictor:
    """A model's C code in a shared library, for NumPy arrays of sequences.

    ``X`` is what the model's own ``predict_proba`` takes: 3D (n_samples,
    n_timesteps, n_channels) or 2D, NaN-padded at the end; it is read as
    float32 (the C code's type). A C-contiguous float32 3D array is passed
    without a copy. Pickling stores the model and rebuilds the library when
    loaded (in a temporary directory).

    Input the model rejects (NaN inside a sequence, infinity) raises the
    model's ``ValueError``; so does a sequence on which the float32 arithmetic
    overflows (a relu non-linearity on large inputs), naming the sample,
    instead of returning NaN.

    Attributes
    ----------
    model : FastGRNNClassifier or QuantizedFastGRNN
    classes_ : ndarray
    library_path : str
    """

    def __init__(self, model, directory=None):
        if isinstance(model, FastGRNNClassifier):
            check_is_fitted(model, "coefs_")
        elif not isinstance(model, QuantizedFastGRNN):
            raise TypeError(
                f"compile_predictor needs a fitted FastGRNNClassifier or a "
                f"QuantizedFastGRNN, got {type(model).__name__}. For a Pipeline, "
                "compile its last step and apply the preprocessing first."
            )
        self.model = model
        self.classes_ = np.asarray(model.classes_)
        self._quantized = isinstance(model, QuantizedFastGRNN)
        self._channels = int(model.n_channels_)
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
        _, source = export_c(self.model, directory, name=_NAME)
        batch = os.path.join(directory, f"{_NAME}_batch.c")
        logit = "int32_t" if self._quantized else "float"
        with open(batch, "w", encoding="ascii") as f:
            f.write(_BATCH_SOURCE.format(n=_NAME, N=_NAME.upper(), logit=logit))
        objects = []
        for path in (source, batch):
            obj = path[:-2] + ".o"
            _run_compiler(compiler, ["-std=c99", "-O3", "-fPIC", "-c", path, "-o", obj],
                          native=True)
            objects.append(obj)
        self.library_path = os.path.join(directory, f"lib{_NAME}.so")
        _run_compiler(compiler, ["-shared", "-o", self.library_path, *objects, "-lm"])
        library = ctypes.CDLL(self.library_path)
        args = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        for kind in ("proba", "logits", "predict"):
            function = getattr(library, f"{_NAME}_batch_{kind}")
            function.argtypes, function.restype = args, ctypes.c_int
            setattr(self, f"_{kind}", function)
        self._library = library

    # -- input ---------------------------------------------------------------
    def _sequences(self, X):
        """``X`` as a C-contiguous float32 array (n, T, n_channels)."""
        if (type(X) is np.ndarray and X.ndim == 3 and X.dtype == np.float32
                and X.flags.c_contiguous and X.shape[2] == self._channels and X.size):
            return X
        _, X3, _ = validate_sequences(self.model, X, reset=False)
        return np.ascontiguousarray(X3, dtype=np.float32)

    def _call(self, function, X, out):
        X3 = self._sequences(X)
        n, T, _ = X3.shape
        workers = min(os.cpu_count() or 1, 8) if n >= _PARALLEL_MIN_SEQUENCES else 1
        if workers == 1:
            bad = function(X3.ctypes.data, n, T, out.ctypes.data)
        else:
            # the C code keeps no state (only constant tables) and ctypes
            # releases the GIL: large batches run in slices on every core
            bounds = np.linspace(0, n, workers + 1).astype(int)

            def run(start, stop):
                code = function(X3[start:stop].ctypes.data, int(stop - start), T,
                                out[start:stop].ctypes.data)
                return code + start if code > 0 else (code - start if code < 0 else 0)

            with ThreadPoolExecutor(workers) as pool:
                bad = next((b for b in pool.map(run, bounds[:-1], bounds[1:]) if b), 0)
        if bad > 0:
            sequence_lengths(X3)  # raises the estimator's message for that sample
            raise ValueError(f"The C code rejected sample {bad - 1} of X.")
        if bad < 0:
            raise ValueError(
                f"The float32 arithmetic of the compiled predictor overflows on sample "
                f"{-bad - 1} of X: its hidden state or outputs leave float32's range "
                f"(a relu non-linearity on large inputs, or a diverged model), so its "
                "probabilities would be NaN. Scale the input (SequenceScaler), or "
                "predict with the model itself, which computes in float64 for "
                "float64 input."
            )
        return out

    # -- prediction ----------------------------------------------------------
    def logits(self, X):
        """Logits of the C code: float32, or the Q12 int32 of an int8 model."""
        X3 = self._sequences(X)
        dtype = np.int32 if self._quantized else np.float32
        return self._call(self._logits, X3, np.empty((len(X3), len(self.classes_)), dtype))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes).

        float32 from the C code's softmax for a float model (within 1e-5 of
        ``predict_proba``); for an int8 model exactly
        ``QuantizedFastGRNN.predict_proba``, from the C code's integer logits.
        """
        if self._quantized:
            return np.exp(log_softmax(self.logits(X) / ONE))  # as QuantizedFastGRNN
        X3 = self._sequences(X)
        return self._call(
            self._proba, X3, np.empty((len(X3), len(self.classes_)), np.float32)
        )

    def predict(self, X):
        """Most probable class of each sequence (the first on ties)."""
        X3 = self._sequences(X)
        labels = self._call(self._predict, X3, np.empty(len(X3), np.int32))
        return self.classes_[labels]

    # -- pickling ------------------------------------------------------------
    def __getstate__(self):
        return {"model": self.model}

    def __setstate__(self, state):
        self.__init__(state["model"])


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

