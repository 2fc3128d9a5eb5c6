"""Post-training int8 quantisation (docs/compression.md, section "int8 quantisation").

:func:`quantize` turns a fitted :class:`~sklearn_fastgrnn.FastGRNNClassifier` or
:class:`~sklearn_fastgrnn.FastGRNNRegressor` into a :class:`QuantizedFastGRNN`
that predicts with integer-only arithmetic, exactly as a microcontroller (and
the code of ``export_c``) runs it, on whole sequences or streamed one timestep
at a time (:meth:`QuantizedFastGRNN.streamer`).

The other two tools of the paper's compression live below the estimators, which
use them in every ``fit``: sparse training in ``_sparsity`` and size accounting
in ``_size``. The public size functions (:func:`model_size_bytes`,
:func:`size_report`, :func:`summary`) are importable from here.
"""

import math
from typing import Callable, NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import _scaling
from ._channels import cell_values, envelope_width, n_cell_channels, offsets_of, uses_changes
from ._losses import log_sigmoid, log_softmax
from ._nonlinearities import scalar_sigmoid
from ._sequences import phase_shifts, validate_sequences, windowed
from ._size import (
    SCALAR_BYTES,
    model_size_bytes,
    offset_rows,
    size_report,
    size_row,
    summary,
    tensor_bytes,
)
from ._sparsity import sparse_keys
from .classifier import FastGRNNClassifier
from .regressor import FastGRNNRegressor
from .streaming import CellStream, Streamer, check_n_streams

__all__ = ["QuantizedFastGRNN", "QuantizedStreamer", "model_size_bytes", "quantize", "size_report",
           "summary"]

STATE_FRAC_BITS = 12  # h, z, c, pre-activations and logits: value = integer / 4096
ONE = 1 << STATE_FRAC_BITS
COEF_FRAC_BITS = 15  # sigmoid(zeta), sigmoid(nu) and the update coefficient
INT16_MAX = 32767
INT32_MAX = 2**31 - 1
TANH_STEP_BITS = 5  # the tanh table has a step of 1/32 ...
TANH_TABLE_SIZE = 257  # ... over [0, 8]
DEFAULT_INPUT_FRAC_BITS = 10  # |x| < 32 when no calibration data is given
INPUT_HEADROOM = 2.0  # the input format holds this many times the calibration peak


def round_half_up(value):
    """``floor(value + 1/2)`` as a Python int (ties round up, as in the C code)."""
    return math.floor(value + 0.5)


def tanh_table():
    """``round_half_up(tanh(i / 32) * 4096)`` for i = 0..256: tanh on [0, 8] in Q12."""
    return np.array(
        [round_half_up(math.tanh(i / (1 << TANH_STEP_BITS)) * ONE) for i in range(TANH_TABLE_SIZE)],
        dtype=np.int64,
    )


TANH_TABLE = tanh_table()


def rshift_round(value, shift):
    """``floor((value + 2**(shift - 1)) / 2**shift)``: a rounding right shift (int64)."""
    return (value + (1 << (shift - 1))) >> shift


def requantize(acc, multiplier):
    """``rshift_round(acc * m, s)`` for ``multiplier = (m, s)``, products in 64 bits."""
    m, s = multiplier
    return rshift_round(acc * m, s)


def fixed_point_multiplier(real):
    """``(m, s)`` with ``m * 2**-s`` the closest to ``real`` at 15 bits, ``s >= 1``.

    ``2**14 <= m <= 2**15`` unless ``real`` is 0 (then ``(0, 1)``) or at least
    ``2**15`` (then ``s = 1`` and ``m`` grows, below ``2**31``).
    """
    if real == 0:
        return 0, 1
    fraction, exponent = math.frexp(real)
    m, s = round_half_up(fraction * (1 << 15)), 15 - exponent
    if s < 1:
        m, s = m << (1 - s), 1
    if m > INT32_MAX or s > 62:
        raise ValueError(
            f"A scale factor of {real:.3g} can not be represented as a 32-bit "
            "fixed-point multiplier. The model's weights or inputs are out of the "
            "range int8 quantisation supports; rescale the inputs and retrain."
        )
    return m, s


def _tanh_magnitude(a, shift):
    """tanh(a / 2**(shift + 5)) in Q12 for ``a >= 0``, by linear interpolation."""
    i = a >> shift
    f = a & ((1 << shift) - 1)
    over = i >= TANH_TABLE_SIZE - 1
    i = np.minimum(i, TANH_TABLE_SIZE - 2)
    lo = TANH_TABLE[i]
    y = lo + rshift_round((TANH_TABLE[i + 1] - lo) * f, shift)
    return np.where(over, TANH_TABLE[-1], y)


def _integer_sigmoid(v):
    sign, shift = np.where(v < 0, -1, 1), STATE_FRAC_BITS - TANH_STEP_BITS + 1
    return rshift_round(ONE + sign * _tanh_magnitude(np.abs(v), shift), 1)


def _integer_tanh(v):
    sign, shift = np.where(v < 0, -1, 1), STATE_FRAC_BITS - TANH_STEP_BITS
    return sign * _tanh_magnitude(np.abs(v), shift)


# name -> integer kernel on Q12 values; keyed by the names of _nonlinearities.NONLINEARITIES
INTEGER_NONLINEARITIES = {
    "sigmoid": _integer_sigmoid,
    "tanh": _integer_tanh,
    "relu": lambda v: np.maximum(v, 0),
    "quant_sigmoid": lambda v: np.clip(rshift_round(v + ONE, 1), 0, ONE),
    "quant_tanh": lambda v: np.clip(v, -ONE, ONE),
}


def integer_nonlinearity(name, v):
    """The integer version of a non-linearity on Q12 values (int64 arrays in, out).

    - ``quant_sigmoid``: ``clip(rshift_round(v + 4096, 1), 0, 4096)``;
    - ``quant_tanh``: ``clip(v, -4096, 4096)``;
    - ``relu``: ``max(v, 0)``;
    - ``tanh``: ``sign(v) * T(|v|, 7)`` and ``sigmoid``:
      ``rshift_round(4096 + sign(v) * T(|v|, 8), 1)`` (sigmoid(x) =
      (1 + tanh(x / 2)) / 2), where ``T(a, k)`` reads :data:`TANH_TABLE` at
      ``i = a >> k`` and interpolates linearly with the ``k`` low bits ``f``:
      ``TANH_TABLE[i] + rshift_round((TANH_TABLE[i + 1] - TANH_TABLE[i]) * f, k)``,
      and is ``TANH_TABLE[256]`` from ``i >= 256`` on (tanh saturates beyond 8).
    """
    return INTEGER_NONLINEARITIES[name](v)


def div_round(a, b):
    """``floor((2a + b) / (2b))`` for ``b > 0``: ``a / b`` rounded half up (int64)."""
    return (2 * a + b) // (2 * b)


class OutActivation(NamedTuple):
    """How an int8 model reads its integer outputs out, for one ``out_activation_``."""

    task: str  # "classifier" or "regressor"
    proba: Callable | None  # real outputs -> probabilities (classifiers only)
    predict: Callable  # (model, integer outputs, real outputs) -> predictions


def _softmax(v):
    return np.exp(log_softmax(v))


def _sigmoid(v):
    return np.exp(log_sigmoid(v))


def _label(model, q, real):
    return model.classes_[np.argmax(q, axis=-1)]  # the first largest integer output


def _indicator(model, q, real):
    return (q > 0).astype(int)


def _identity(model, q, real):
    return real


def _exp(model, q, real):
    with np.errstate(over="ignore"):
        return np.exp(real)


# out_activation_ of the estimators -> how the int8 model reads its outputs out
# (the one list of the output activations quantize supports)
OUT_ACTIVATIONS = {
    "softmax": OutActivation("classifier", _softmax, _label),
    "logistic": OutActivation("classifier", _sigmoid, _indicator),
    "identity": OutActivation("regressor", None, _identity),
    "exp": OutActivation("regressor", None, _exp),
}


def _quantize_tensor(values):
    """Symmetric per-tensor int8: ``q = clip(rint(v / s), -127, 127)``, ``s = max|v| / 127``."""
    values = np.asarray(values, dtype=np.float64)
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
    return q, scale


def _column_abs_sum(q):
    return int(np.abs(q.astype(np.int64)).sum(axis=0).max())


def _maps_of(model):
    """The input and output maps of a fitted estimator (identity when it has none:
    a model loaded from a weights file, or of release 0.1)."""
    maps = getattr(model, "_maps", None)
    return maps if isinstance(maps, _scaling.Maps) else _scaling.Maps()


def quantize(model, X=None):
    """Post-training int8 quantisation of a fitted FastGRNN estimator.

    Every weight matrix (``W`` or ``W1``, ``W2``; ``U`` or ``U1``, ``U2``; ``V``)
    and bias becomes int8 with one scale per tensor; ``zeta`` and ``nu`` are
    kept exact. The weights quantised are those the model trained (in the
    standardised space of its input and outputs, when it standardised them:
    ``scale_input=True``, a regressor's targets): the input is standardised
    per channel as it is quantised, and a regressor's outputs are mapped back
    in floating point after the integer arithmetic (see
    :class:`QuantizedFastGRNN`). Matrices trained sparse stay sparse. Any
    readout and input window, single-label and multilabel classifiers and
    regressors (squared error, Poisson) are supported.

    Parameters
    ----------
    model : FastGRNNClassifier or FastGRNNRegressor
        Fitted.
    X : array-like, default=None
        Representative input sequences (for example the training data), used only
        to choose the fixed-point format of the (standardised) input: the
        largest number of fractional bits (at most 20) that keeps twice the
        largest standardised value of ``X`` within int16 (one bit of headroom
        for new data beyond the calibration range, which saturates). Without
        ``X``, 10 fractional bits (standardised values up to 32 in magnitude).

    Returns
    -------
    QuantizedFastGRNN
    """
    if not isinstance(model, (FastGRNNClassifier, FastGRNNRegressor)):
        raise TypeError(
            f"quantize needs a fitted FastGRNNClassifier or FastGRNNRegressor, got "
            f"{type(model).__name__}. For a Pipeline, quantize its last step."
        )
    check_is_fitted(model, "coefs_")
    activation = getattr(model, "out_activation_", "softmax")
    if activation not in OUT_ACTIVATIONS:
        raise ValueError(
            f"quantize supports the output activations {sorted(OUT_ACTIVATIONS)}; the "
            f"model's out_activation_ is {activation!r}."
        )
    if X is None:
        input_bits = DEFAULT_INPUT_FRAC_BITS
    else:
        _, X3, _ = validate_sequences(model, X, reset=False)
        peak = float(np.nanmax(np.abs(X3)))
        if peak > float(np.finfo(np.float32).max):
            raise ValueError(
                f"X holds values up to {peak:.3g} in magnitude, beyond the float32 "
                "range (3.4e38) in which the int8 model reads its input. Scale the "
                "data first (for example with SequenceScaler) and retrain."
            )
        mean, scale = _input_map(_maps_of(model), n_cell_channels(model))
        x = _cell_input(model, X3).astype(np.float64)  # the model reads float32
        peak = float(np.nanmax(np.abs((x - mean) / scale)))
        # one bit of headroom: new data may reach twice the calibration peak
        headroom = INPUT_HEADROOM * peak
        input_bits = 20 if peak == 0 else min(20, math.floor(math.log2(INT16_MAX / headroom)))
    return QuantizedFastGRNN(model, input_bits)


def _as_float32(values):
    """``values`` rounded to float32, as a float64 array."""
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def _cell_input(model, X3):
    """Sequences ``X3`` as float32, with the change channels of a ``model`` that has them."""
    with np.errstate(over="ignore"):  # beyond float32: inf, saturated
        x = np.asarray(X3, dtype=np.float32)
    return cell_values(model, x)


def _input_map(maps, n_channels):
    """Mean and scale of each input channel (0 and 1 without an input map)."""
    if maps.input_mean is None:
        return np.zeros(n_channels), np.ones(n_channels)
    mean = np.asarray(maps.input_mean, dtype=np.float64).ravel()
    scale = np.asarray(maps.input_scale, dtype=np.float64).ravel()
    if mean.shape != (n_channels,) or scale.shape != (n_channels,):
        raise ValueError(
            f"The model's input map has {mean.size} means and {scale.size} scales for "
            f"{n_channels} channels: the model is damaged; refit it."
        )
    return mean, scale


class QuantizedFastGRNN:
    """An int8 FastGRNN that predicts with integer-only arithmetic.

    Made by :func:`quantize` from a fitted classifier (single label or
    multilabel) or regressor; the exported C code (``export_c``) runs exactly
    the same arithmetic. Notation: ``rshift_round(v, s) = floor((v + 2**(s-1))
    / 2**s)``, ``requantize(acc, (m, s)) = rshift_round(acc * m, s)`` (64-bit
    product), ``sat16(v) = clip(v, -32767, 32767)``, ``div_round(a, b) =
    floor((2a + b) / (2b))`` (``a / b`` rounded half up); "Qk" means
    ``integer / 2**k``.

    Weights
        The weights the model trained on standardised numbers: its
        ``coefs_`` with the input map (``scale_input=True``) and a regressor's
        output map unfolded (``_scaling.unfold``), so that each channel's input
        weights are on the same scale however differently the raw channels
        spread (folded weights divide a row by its channel's standard
        deviation, and one scale per tensor then loses the rows of the
        wide-spread channels to a nearly constant one). A model without maps
        (loaded from a weights file) is quantised as it is.

    Storage
        Each weight matrix and bias ``T`` is int8 ``q = clip(rint(T / s), -127,
        127)`` with ``s = max|T| / 127``. ``zeta`` and ``nu`` are kept exact; the
        arithmetic uses ``sigmoid(zeta)`` and ``sigmoid(nu)`` in Q15
        (``round_half_up(sigmoid * 2**15)``).

    Input, per channel ``c``
        ``x_q = sat16(rint((x - input_mean_[c]) * input_multiplier_[c]))``:
        the standardised input ``(x - mean_c) / scale_c`` in Q``Fx`` (``Fx =
        frac_bits_["input"]``, ``input_multiplier_[c] = 2**Fx / scale_c``),
        computed in float64 from the float32 value of ``x`` (a subtraction and a
        product, each rounded once, then ``rint``: round half to even); NaN gives
        0. Without an input map the mean is 0 and the multiplier ``2**Fx``.

    Matrix products
        ``y = v @ M`` for an int8 ``M`` is ``acc_j = sum_i v_i * M[i, j]`` in
        int32, then ``requantize(acc, multipliers_[M])`` where the multiplier
        approximates ``s_M * 2**(F_out - F_in)``, the change from the input's
        format to the output's. Full-rank ``W`` goes from Q``Fx`` to Q12. Low-rank
        ``W1`` goes to the intermediate format Q``frac_bits_["W1"]`` (chosen so
        that no value can leave int16: ``F_in - ceil(log2(max column sum of
        |W1|))``), is saturated with ``sat16``, and ``W2`` takes it to Q12. ``U``
        (or ``U1``, ``U2``) and ``V`` do the same from the Q12 state.

    One cell step (all values integers; biases ``b = requantize(q_b, m_b)`` in Q12)::

        pre  = (x_q @ W) + (h @ U)                       Q12, int32
        z    = gate(pre + b_gate)                        Q12
        c    = sat16(update(pre + b_update))             Q12
        coef = rshift_round(sz * (4096 - z), 12) + sn    Q15, sz/sn = sigmoid(zeta/nu)
        h    = sat16(rshift_round(coef * c, 15) + rshift_round(z * h, 12))

    with the integer non-linearities of :func:`integer_nonlinearity`
    (``quant_sigmoid``/``quant_tanh`` exactly, ``sigmoid``/``tanh`` from a
    257-entry table with linear interpolation) and ``h_0 = 0``. With
    ``window_ = k`` a cell step reads ``k`` timesteps (``x_q`` of ``k *
    n_channels`` values, time-major); the last, partial window of a sequence
    repeats its last timestep. Padded steps leave ``h`` unchanged.

    Readout and outputs
        ``r`` is ``h_L`` (``readout="last"``), ``div_round(sum_t h_t, L)``
        (``"mean"``, the sum in int64) or ``max_t h_t`` per unit (``"max"``),
        over the ``L`` real cell steps. The integer outputs are ``(r @ V) +
        b_out`` in Q12 (:meth:`quantized_outputs`). A classifier's logits are
        ``outputs / 4096``: :meth:`predict` takes the first largest integer
        output (softmax) or ``outputs > 0`` per label (multilabel), and
        :meth:`predict_proba` is ``softmax(outputs / 4096)`` or
        ``sigmoid(outputs / 4096)`` in float64. A regressor's outputs are
        mapped back in float64, ``offset + spread * outputs / 4096`` (its
        output map, kept out of the int8 bias), and :meth:`predict` is that
        (``exp`` of it for ``loss="poisson"``).

    Attributes
    ----------
    classes_, n_features_in_, n_timesteps_, n_channels_, feature_names_in_
        As in the source estimator (``classes_`` for a classifier,
        ``feature_names_in_`` only when it has it). Input is validated exactly
        as the estimator validates it.
    out_activation_ : {"softmax", "logistic", "identity", "exp"}
    n_outputs_ : int
    readout : {"last", "mean", "max"}
    hidden_size_ : int
        Size of the hidden state.
    window_ : int
    window_phases_ : int
        Places of the window boundaries the readout averages over, as in the
        source estimator: the int8 readouts of the phases are summed and
        divided by their number, rounded half up (as the mean readout).
    envelope_width_ : int
        Timesteps of the envelope channels, as in the source estimator (0
        without).
    change_channels_ : bool
        Whether the cell reads each channel's change and its logarithm after
        its value.
    change_offsets_ : ndarray or None
        As in the source estimator: what each logarithm adds to the change.
    weights_ : dict of ndarray of int8
        The quantised tensors, keyed as ``coefs_`` (without ``zeta``, ``nu``).
    scales_ : dict of float
        Scale ``s`` of each int8 tensor.
    multipliers_ : dict of (int, int)
        ``(m, s)`` of each tensor's requantisation.
    frac_bits_ : dict of int
        ``"input"``, ``"state"`` (12) and, when low rank, ``"W1"``/``"U1"``.
    input_mean_, input_multiplier_ : ndarray of shape (n_channels,)
        The input quantisation: float32 values, used in float64.
    output_offset_, output_spread_ : ndarray of shape (n_outputs,) or None
        A regressor's output map (float32 values, used in float64; None for a
        classifier).
    zeta, nu : float
        Raw values, exact.
    sigmoid_zeta_q15_, sigmoid_nu_q15_ : int
    sparse_keys_ : tuple of str
        Matrices stored sparse (only their non-zeros and row indices).
    n_params_ : int
    model_size_bytes_ : int
        int8 entries 1 byte each (plus the row index when sparse), ``zeta``,
        ``nu`` and each tensor's scale 4 bytes, and 4 bytes for each value of
        the input quantisation (mean and multiplier of each channel) and of a
        regressor's output map, when they are not the identity, and for each
        change offset.

    Notes
    -----
    Thread safety: prediction methods keep no state and may run in threads;
    a :meth:`streamer` is a mutable object (see
    :class:`~sklearn_fastgrnn.streaming.Streamer`).
    """

    def __init__(self, model, input_frac_bits):
        maps = _maps_of(model)
        coefs = model.coefs_ if maps.identity else _scaling.unfold(model.coefs_, maps)
        self.gate_nonlinearity = model.gate_nonlinearity
        self.update_nonlinearity = model.update_nonlinearity
        self.out_activation_ = getattr(model, "out_activation_", "softmax")
        self.readout = getattr(model, "readout", "last")
        self.window_ = int(getattr(model, "window_", 1))
        self.window_phases_ = int(getattr(model, "window_phases_", 1))
        self.envelope_width_ = envelope_width(model)
        self.change_channels_ = uses_changes(model)
        self.change_offsets_ = offsets_of(model)
        if self._task == "classifier":
            self.classes_ = np.array(model.classes_)
        self.n_outputs_ = int(np.shape(coefs["V"])[1])
        self.n_features_in_ = model.n_features_in_
        self.n_timesteps_, self.n_channels_ = model.n_timesteps_, model.n_channels_
        self.n_timesteps = model.n_timesteps
        if hasattr(model, "feature_names_in_"):
            self.feature_names_in_ = np.array(model.feature_names_in_)
        self.hidden_size_ = int(np.shape(coefs["V"])[0])
        self.sparse_keys_ = sparse_keys(model)
        self.zeta, self.nu = float(coefs["zeta"]), float(coefs["nu"])
        self.sigmoid_zeta_q15_ = round_half_up(scalar_sigmoid(self.zeta) * (1 << COEF_FRAC_BITS))
        self.sigmoid_nu_q15_ = round_half_up(scalar_sigmoid(self.nu) * (1 << COEF_FRAC_BITS))
        mean, scale = _input_map(maps, n_cell_channels(self))
        # float32 values (4 bytes each in the C code), used in float64
        self.input_mean_ = _as_float32(mean)
        self.input_multiplier_ = _as_float32(2.0 ** int(input_frac_bits) / scale)
        self.output_offset_ = self.output_spread_ = None
        if self._task == "regressor" and maps.output_offset is not None:
            self.output_offset_ = _as_float32(np.ravel(maps.output_offset))
            self.output_spread_ = _as_float32(np.ravel(maps.output_spread))
        self.weights_, self.scales_ = {}, {}
        for key, value in coefs.items():
            if key not in ("zeta", "nu"):
                self.weights_[key], self.scales_[key] = _quantize_tensor(value)
        self.frac_bits_ = {"input": int(input_frac_bits), "state": STATE_FRAC_BITS}
        self.multipliers_ = {}
        bound = 0  # largest possible |pre-activation| in Q12, checked against int32
        for chain, bits_in in (("W", input_frac_bits), ("U", STATE_FRAC_BITS)):
            bound += self._plan_chain(chain, bits_in)
        for key in ("bias_gate", "bias_update", "bias_out"):
            self.multipliers_[key] = fixed_point_multiplier(self.scales_[key] * ONE)
        bias_bound = max(int(np.abs(self._bias(k)).max()) for k in ("bias_gate", "bias_update"))
        self._check_int32(bound + bias_bound, "the pre-activation")
        bias_bound = int(np.abs(self._bias("bias_out")).max())
        self._check_int32(self._plan_chain("V", STATE_FRAC_BITS) + bias_bound, "the outputs")
        self.n_params_ = model.n_params_
        self.model_size_bytes_ = sum(r["bytes"] for r in self._size_rows())

    def __setstate__(self, state):
        # an int8 model of release 0.1: a softmax classifier reading the last
        # state one timestep at a time, its input in Q(Fx) without a map
        state.setdefault("out_activation_", "softmax")
        state.setdefault("readout", "last")
        state.setdefault("window_", 1)
        state.setdefault("window_phases_", 1)
        state.setdefault("envelope_width_", 0)
        if "hidden_size" in state:  # release 0.1 named it without the underscore
            state["hidden_size_"] = int(state.pop("hidden_size"))
        state.setdefault("change_channels_", False)
        state.setdefault("change_offsets_", None)
        state.setdefault("n_outputs_", len(state.get("classes_", ())))
        state.setdefault("input_mean_", np.zeros(state["n_channels_"]))
        state.setdefault("input_multiplier_",
                         np.full(state["n_channels_"], 2.0 ** state["frac_bits_"]["input"]))
        state.setdefault("output_offset_", None)
        state.setdefault("output_spread_", None)
        self.__dict__.update(state)

    @property
    def _task(self):
        return OUT_ACTIVATIONS[self.out_activation_].task

    # -- construction ------------------------------------------------------
    def _plan_chain(self, chain, bits_in):
        """Multipliers (and intermediate format) of a product chain; its output bound."""
        keys = self.chain_keys(chain)
        bound = INT16_MAX
        for position, key in enumerate(keys):
            q, scale = self.weights_[key], self.scales_[key]
            acc_bound = bound * _column_abs_sum(q)
            self._check_int32(acc_bound, f"the accumulator of {key}")
            if position + 1 < len(keys):
                column_sum = scale * _column_abs_sum(q)
                bits_out = bits_in - (math.ceil(math.log2(column_sum)) if column_sum > 0 else 0)
                self.frac_bits_[key] = bits_out
            else:
                bits_out = STATE_FRAC_BITS
            m, s = self.multipliers_[key] = fixed_point_multiplier(
                scale * 2.0 ** (bits_out - bits_in)
            )
            bound = (acc_bound * m >> s) + 1
            if position + 1 < len(keys):
                bound = min(bound, INT16_MAX)
            bits_in = bits_out
        return bound

    @staticmethod
    def _check_int32(bound, what):
        if bound > INT32_MAX:
            raise ValueError(
                f"int8 quantisation would overflow the int32 arithmetic of {what} "
                f"(worst case {bound}). The weights are too large for this model "
                "size; train with a smaller learning rate or an L2 penalty (alpha)."
            )

    def chain_keys(self, chain):
        """The int8 matrices of ``"W"``, ``"U"`` or ``"V"``, in product order."""
        if chain in self.weights_:
            return (chain,)
        return (chain + "1", chain + "2")

    def _bias(self, key):
        """A bias in Q12: ``requantize(q_b, multipliers_[key])`` (int64)."""
        return requantize(self.weights_[key].astype(np.int64), self.multipliers_[key])

    def fit(self, X, y=None):
        """Not available: fit a FastGRNN estimator and :func:`quantize` it.

        Present because scikit-learn requires ``fit`` of the last step of a
        ``Pipeline``: a quantised model can end one, behind the fitted scaler
        whose output it was calibrated on (``Pipeline([*pipe.steps[:-1],
        ("quantizedfastgrnn", quantize(pipe[-1], pipe[:-1].transform(X)))])``).

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            "A QuantizedFastGRNN is not trained: fit a FastGRNNClassifier (or "
            "FastGRNNRegressor), then quantize(model, X_train) (for a Pipeline, "
            "quantize its last step on the scaled training data)."
        )

    # -- arithmetic --------------------------------------------------------
    def _product(self, chain, v):
        keys = self.chain_keys(chain)
        for position, key in enumerate(keys):
            v = requantize(v @ self.weights_[key].astype(np.int64), self.multipliers_[key])
            if position + 1 < len(keys):
                v = np.clip(v, -INT16_MAX, INT16_MAX)
        return v

    def cell_step(self, h, xq):
        """One integer cell step: ``h_t`` (int64, (m, H)) from ``h_{t-1}`` and ``x_q``
        (m, window_ * n_channels)."""
        b_gate, b_update = self._bias("bias_gate"), self._bias("bias_update")
        pre = self._product("W", xq) + self._product("U", h)
        z = integer_nonlinearity(self.gate_nonlinearity, pre + b_gate)
        c = np.clip(integer_nonlinearity(self.update_nonlinearity, pre + b_update),
                    -INT16_MAX, INT16_MAX)
        coef = rshift_round(self.sigmoid_zeta_q15_ * (ONE - z), STATE_FRAC_BITS)
        coef += self.sigmoid_nu_q15_
        h_new = rshift_round(coef * c, COEF_FRAC_BITS) + rshift_round(z * h, STATE_FRAC_BITS)
        return np.clip(h_new, -INT16_MAX, INT16_MAX)

    def output_layer(self, r):
        """The integer outputs ``(r @ V) + b_out`` (Q12) of readouts ``r`` (Q12)."""
        return self._product("V", r) + self._bias("bias_out")

    def quantize_input(self, X3):
        """``x_q`` (int64) of the values the cell reads ``X3`` (..., cell channels:
        with change channels, each timestep's changes after its values), or of
        windows (..., k * cell channels); NaN becomes 0."""
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, saturated
            x = np.asarray(X3, dtype=np.float32).astype(np.float64)
            reps = x.shape[-1] // len(self.input_mean_)
            scaled = np.rint((x - np.tile(self.input_mean_, reps))
                             * np.tile(self.input_multiplier_, reps))
        scaled[np.isnan(scaled)] = 0.0
        return np.clip(scaled, -INT16_MAX, INT16_MAX).astype(np.int64)

    def __sklearn_tags__(self):
        source = FastGRNNClassifier if self._task == "classifier" else FastGRNNRegressor
        return source().__sklearn_tags__()

    def quantized_outputs(self, X):
        """Integer outputs in Q12 (int64, shape (n_samples, n_outputs)).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
        """
        _, X3, lengths = validate_sequences(self, X, reset=False)
        cells = _cell_input(self, X3)
        shifts = phase_shifts(self.window_, self.window_phases_)
        readouts = [self._readout(*windowed(cells, lengths, self.window_, shift))
                    for shift in shifts]
        if len(readouts) == 1:
            return self.output_layer(readouts[0])
        return self.output_layer(div_round(sum(readouts), len(readouts)))

    def _readout(self, X3, lengths):
        """The integer readouts (Q12, int64, (n, H)) of windows ``X3`` of real
        ``lengths`` cell steps."""
        xq = self.quantize_input(X3)
        h = np.zeros((len(xq), self.hidden_size_), dtype=np.int64)
        # the pool of a max readout starts below every state (|h| <= 32767)
        pool = np.full_like(h, -INT16_MAX - 1 if self.readout == "max" else 0)
        for t in range(int(lengths.max())):
            h_new = self.cell_step(h, xq[:, t])
            live = (t < lengths)[:, None]
            h = np.where(live, h_new, h)
            if self.readout == "mean":
                pool += np.where(live, h_new, 0)
            elif self.readout == "max":
                pool = np.where(live, np.maximum(pool, h_new), pool)
        if self.readout == "mean":
            return div_round(pool, lengths[:, None])
        if self.readout == "max":
            return pool
        return h

    def quantized_logits(self, X):
        """:meth:`quantized_outputs` of a classifier: its integer logits (Q12)."""
        return self.quantized_outputs(X)

    def real_outputs(self, q):
        """Integer outputs ``q`` as real numbers: ``q / 4096``, mapped back for a
        regressor (``offset + spread * q / 4096``), float64."""
        real = q / ONE
        if self.output_offset_ is not None:
            real = self.output_offset_ + self.output_spread_ * real
        return real

    def _predictions(self, q):
        """What :meth:`predict` gives for the integer outputs ``q`` (rows)."""
        activation = OUT_ACTIVATIONS[self.out_activation_]
        predictions = activation.predict(self, q, self.real_outputs(q))
        if self._task == "regressor" and self.n_outputs_ == 1:
            return predictions[..., 0]
        return predictions

    def _stream_predictions(self, q):
        """What a streamer gives: probabilities (classifier) or predictions."""
        if self._task == "classifier":
            return OUT_ACTIVATIONS[self.out_activation_].proba(self.real_outputs(q))
        return self._predictions(q)

    def _is_classifier(self):
        return self._task == "classifier"

    @available_if(_is_classifier)
    def predict_proba(self, X):
        """Probabilities, shape (n_samples, n_classes): ``softmax(outputs / 4096)``, or
        ``sigmoid(outputs / 4096)`` per label of a multilabel model."""
        q = self.quantized_outputs(X)
        return OUT_ACTIVATIONS[self.out_activation_].proba(self.real_outputs(q))

    def predict(self, X):
        """Predictions from the integer outputs.

        The class with the largest integer output (the first on ties); the
        indicator ``outputs > 0`` of a multilabel model; a regressor's values
        (1D for one output).
        """
        return self._predictions(self.quantized_outputs(X))

    def score(self, X, y, sample_weight=None):
        """Accuracy (classifier; subset accuracy when multilabel) or R² (regressor)
        of :meth:`predict`, as the source estimator's ``score``."""
        if self._task == "classifier":
            return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))
        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))

    def streamer(self, n_streams=1):
        """A :class:`QuantizedStreamer` of this model: the integer arithmetic fed one
        timestep at a time, exactly as the exported C code's step function runs it.

        Parameters
        ----------
        n_streams : int, default=1

        Returns
        -------
        QuantizedStreamer
        """
        return QuantizedStreamer(self, n_streams)

    # -- size --------------------------------------------------------------
    def _size_rows(self):
        sparse = set(self.sparse_keys_)
        rows = [
            size_row(key, q, "int8 sparse" if key in sparse else "int8",
                     tensor_bytes(q, sparse=key in sparse, int8=True))
            for key, q in self.weights_.items()
        ]
        rows += [size_row(key, np.float32(getattr(self, key)), "float32", SCALAR_BYTES)
                 for key in ("zeta", "nu")]
        rows += offset_rows(self)
        n_scales = len(self.scales_)
        rows.append({"tensor": "scales", "shape": (n_scales,), "params": n_scales,
                     "nonzeros": n_scales, "storage": "float32", "bytes": SCALAR_BYTES * n_scales})
        maps = [self.input_mean_, self.input_multiplier_]
        if self.output_offset_ is not None:
            maps += [self.output_offset_, self.output_spread_]
        if self._has_input_map() or self.output_offset_ is not None:
            n_maps = sum(len(m) for m in maps)
            rows.append({"tensor": "maps", "shape": (n_maps,), "params": n_maps,
                         "nonzeros": n_maps, "storage": "float32",
                         "bytes": SCALAR_BYTES * n_maps})
        return rows

    def _has_input_map(self):
        """Whether the input quantisation is more than ``x * 2**Fx``."""
        plain = 2.0 ** self.frac_bits_["input"]
        return bool(self.input_mean_.any() or (self.input_multiplier_ != plain).any())

    def summary(self):
        """Parameters, non-zeros and bytes per tensor, and KB (see :func:`summary`)."""
        return summary(self)


class _IntegerCellStream(CellStream):
    """The integer cell of a :class:`QuantizedFastGRNN` for ``n_streams`` streams:
    h, the pool (int64 sum or maximum) and the window of quantised inputs."""

    def __init__(self, model, n_streams):
        self.model = model
        self.dtype = np.dtype(np.float32)  # the input is read as float32
        self.state_dtype = np.dtype(np.int64)
        self.readout, self.window = model.readout, int(model.window_)
        self.hidden_size = int(model.hidden_size_)
        self._set_channels(n_cell_channels(model), offsets_of(model),
                           getattr(model, "window_phases_", 1), envelope_width(model))
        self.n_inputs = self.window * self.cell_channels
        self.n_streams = int(n_streams)
        self.reset()

    def _input(self, x):
        return self.model.quantize_input(x)

    def _cell(self, h, x):
        return self.model.cell_step(h, x)

    def _mean(self, pool, steps):
        return div_round(pool, steps[:, None])

    def _phase_mean(self, readouts):
        return div_round(sum(readouts), len(readouts))

    def _output_layer(self, r):
        return self.model.output_layer(r)

    def set_state(self, state):
        H, size = self.hidden_size, self.block_size
        for j in range(len(self.shifts)):
            block = state[:, j * size : (j + 1) * size]
            steps = block[:, 2 * H]
            pool_bound = INT16_MAX * (np.maximum(steps, 1) if self.readout == "mean"
                                      else np.ones_like(steps))
            if (np.abs(block[:, :H]) > INT16_MAX).any() or (
                    np.abs(block[:, H:2 * H]) > pool_bound[:, None]).any() or (
                    np.abs(block[:, 2 * H + 2 :]) > INT16_MAX).any():
                raise ValueError(
                    "state holds values beyond the int16 range of the int8 model's "
                    "state: it was not made by the state of a streamer of this model."
                )
        super().set_state(state)


class QuantizedStreamer(Streamer):
    """Predictions of a :class:`QuantizedFastGRNN`, updated one timestep at a time.

    Made by :meth:`QuantizedFastGRNN.streamer`; the API of
    :class:`~sklearn_fastgrnn.streaming.Streamer` (``update``, ``predictions``,
    ``reset``, ``state``), with the integer arithmetic of the model: after every
    update the predictions equal those of the model's ``predict_proba``
    (classifier) or ``predict`` (regressor) on the sequence so far, and the
    integer state equals that of the exported C code's ``step`` function after
    the same timesteps. Input is read as float32, as the C code reads it
    (values beyond its range saturate, as in ``predict``). The state rows hold
    integers, but for the float32 values of the last timestep (``previous``)
    and of the envelope's ``history``: ``[h | pool | steps | filled | window of
    x_q | previous | history | timesteps seen]``.

    Thread safety: a mutable object with no lock; use one per thread, or
    serialise the calls.
    """

    _overflow = "keep"

    def __init__(self, model, n_streams=1):
        self.model = model
        self.n_streams = check_n_streams(n_streams)
        self._cell = _IntegerCellStream(model, self.n_streams)
        self.n_timesteps_seen_ = np.zeros(self.n_streams, np.int64)

    def _state_limits(self):
        return {"integer": True}
