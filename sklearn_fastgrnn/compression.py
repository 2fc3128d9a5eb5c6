"""Post-training int8 quantisation (docs/compression.md, section "int8 quantisation").

:func:`quantize` turns a fitted :class:`~sklearn_fastgrnn.FastGRNNClassifier`
into a :class:`QuantizedFastGRNN` that predicts with integer-only arithmetic,
exactly as a microcontroller (and the code of ``export_c``) runs it.

The other two tools of the paper's compression live below the classifier, which
uses them in every ``fit``: sparse training in ``_sparsity`` and size accounting
in ``_size``. The public size functions (:func:`model_size_bytes`,
:func:`size_report`, :func:`summary`) are importable from here.
"""

import math

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from ._losses import log_softmax
from ._nonlinearities import scalar_sigmoid
from ._sequences import validate_sequences
from ._size import SCALAR_BYTES, model_size_bytes, size_report, size_row, summary, tensor_bytes
from ._sparsity import sparse_keys
from .classifier import FastGRNNClassifier

__all__ = ["QuantizedFastGRNN", "model_size_bytes", "quantize", "size_report", "summary"]

STATE_FRAC_BITS = 12  # h, z, c, pre-activations and logits: value = integer / 4096
ONE = 1 << STATE_FRAC_BITS
COEF_FRAC_BITS = 15  # sigmoid(zeta), sigmoid(nu) and the update coefficient
INT16_MAX = 32767
INT32_MAX = 2**31 - 1
TANH_STEP_BITS = 5  # the tanh table has a step of 1/32 ...
TANH_TABLE_SIZE = 257  # ... over [0, 8]
DEFAULT_INPUT_FRAC_BITS = 10  # |x| < 32 when no calibration data is given


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


def _quantize_tensor(values):
    """Symmetric per-tensor int8: ``q = clip(rint(v / s), -127, 127)``, ``s = max|v| / 127``."""
    values = np.asarray(values, dtype=np.float64)
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
    return q, scale


def _column_abs_sum(q):
    return int(np.abs(q.astype(np.int64)).sum(axis=0).max())


def quantize(model, X=None):
    """Post-training int8 quantisation of a fitted :class:`FastGRNNClassifier`.

    Every weight matrix (``W`` or ``W1``, ``W2``; ``U`` or ``U1``, ``U2``; ``V``)
    and bias becomes int8 with one scale per tensor; ``zeta`` and ``nu`` are
    kept exact. Matrices trained sparse stay sparse. The returned model predicts
    with the integer arithmetic of :class:`QuantizedFastGRNN`.

    Parameters
    ----------
    model : FastGRNNClassifier
        Fitted.
    X : array-like, default=None
        Representative input sequences (for example the training data), used only
        to choose the fixed-point format of the input: the largest number of
        fractional bits (at most 20) that keeps ``max |X|`` within int16. Without
        ``X``, 10 fractional bits (inputs up to 32 in magnitude).

    Returns
    -------
    QuantizedFastGRNN
    """
    if not isinstance(model, FastGRNNClassifier):
        raise TypeError(
            f"quantize needs a fitted FastGRNNClassifier, got {type(model).__name__}. "
            "For a Pipeline, quantize its last step."
        )
    check_is_fitted(model, "coefs_")
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
        peak = float(np.float32(peak))  # the model rounds its input to float32
        input_bits = 20 if peak == 0 else min(20, math.floor(math.log2(INT16_MAX / peak)))
    return QuantizedFastGRNN(model, input_bits)


class QuantizedFastGRNN:
    """An int8 FastGRNN that predicts with integer-only arithmetic.

    Made by :func:`quantize`; the exported C code (``export_c``) runs exactly the
    same arithmetic. Notation: ``rshift_round(v, s) = floor((v + 2**(s-1)) / 2**s)``,
    ``requantize(acc, (m, s)) = rshift_round(acc * m, s)`` (64-bit product),
    ``sat16(v) = clip(v, -32767, 32767)``; "Qk" means ``integer / 2**k``.

    Storage
        Each weight matrix and bias ``T`` is int8 ``q = clip(rint(T / s), -127,
        127)`` with ``s = max|T| / 127``. ``zeta`` and ``nu`` are kept exact; the
        arithmetic uses ``sigmoid(zeta)`` and ``sigmoid(nu)`` in Q15
        (``round_half_up(sigmoid * 2**15)``).

    Input
        ``x_q = sat16(floor(x * 2**Fx + 1/2))`` in float64 from the float32 value
        of ``x``; ``Fx = frac_bits_["input"]``.

    Matrix products
        ``y = v @ M`` for an int8 ``M`` is ``acc_j = sum_i v_i * M[i, j]`` in
        int32, then ``requantize(acc, multipliers_[M])`` where the multiplier
        approximates ``s_M * 2**(F_out - F_in)``, the change from the input's
        format to the output's. Full-rank ``W`` goes from Q``Fx`` to Q12. Low-rank
        ``W1`` goes to the intermediate format Q``frac_bits_["W1"]`` (chosen so
        that no value can leave int16: ``F_in - ceil(log2(max column sum of
        |W1|))``), is saturated with ``sat16``, and ``W2`` takes it to Q12. ``U``
        (or ``U1``, ``U2``) and ``V`` do the same from the Q12 state.

    One timestep (all values integers; biases ``b = requantize(q_b, m_b)`` in Q12)::

        pre  = (x_q @ W) + (h @ U)                       Q12, int32
        z    = gate(pre + b_gate)                        Q12
        c    = sat16(update(pre + b_update))             Q12
        coef = rshift_round(sz * (4096 - z), 12) + sn    Q15, sz/sn = sigmoid(zeta/nu)
        h    = sat16(rshift_round(coef * c, 15) + rshift_round(z * h, 12))

    with the integer non-linearities of :func:`integer_nonlinearity`
    (``quant_sigmoid``/``quant_tanh`` exactly, ``sigmoid``/``tanh`` from a
    257-entry table with linear interpolation), ``h_0 = 0``, and padded steps
    leaving ``h`` unchanged. Logits are ``(h_T @ V) + b_out`` in Q12;
    :meth:`predict` takes their argmax (the first on ties) and
    :meth:`predict_proba` their softmax, ``softmax(logits / 4096)`` in float64.

    Attributes
    ----------
    classes_, n_features_in_, n_timesteps_, n_channels_, feature_names_in_
        As in the source classifier (``feature_names_in_`` only when it has it).
        Input is validated exactly as the classifier validates it.
    weights_ : dict of ndarray of int8
        The quantised tensors, keyed as ``coefs_`` (without ``zeta``, ``nu``).
    scales_ : dict of float
        Scale ``s`` of each int8 tensor.
    multipliers_ : dict of (int, int)
        ``(m, s)`` of each tensor's requantisation.
    frac_bits_ : dict of int
        ``"input"``, ``"state"`` (12) and, when low rank, ``"W1"``/``"U1"``.
    zeta, nu : float
        Raw values, exact.
    sigmoid_zeta_q15_, sigmoid_nu_q15_ : int
    sparse_keys_ : tuple of str
        Matrices stored sparse (only their non-zeros and row indices).
    n_params_ : int
    model_size_bytes_ : int
        int8 entries 1 byte each (plus the row index when sparse), ``zeta``,
        ``nu`` and each tensor's scale 4 bytes.
    """

    def __init__(self, model, input_frac_bits):
        coefs = model.coefs_
        self.gate_nonlinearity = model.gate_nonlinearity
        self.update_nonlinearity = model.update_nonlinearity
        self.classes_ = np.array(model.classes_)
        self.n_features_in_ = model.n_features_in_
        self.n_timesteps_, self.n_channels_ = model.n_timesteps_, model.n_channels_
        self.n_timesteps = model.n_timesteps
        if hasattr(model, "feature_names_in_"):
            self.feature_names_in_ = np.array(model.feature_names_in_)
        self.hidden_size = np.shape(coefs["V"])[0]
        self.sparse_keys_ = sparse_keys(model)
        self.zeta, self.nu = float(coefs["zeta"]), float(coefs["nu"])
        self.sigmoid_zeta_q15_ = round_half_up(scalar_sigmoid(self.zeta) * (1 << COEF_FRAC_BITS))
        self.sigmoid_nu_q15_ = round_half_up(scalar_sigmoid(self.nu) * (1 << COEF_FRAC_BITS))
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
        self._check_int32(self._plan_chain("V", STATE_FRAC_BITS) + bias_bound, "the logits")
        self.n_params_ = model.n_params_
        self.model_size_bytes_ = sum(r["bytes"] for r in self._size_rows())

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
        """Not available: fit a ``FastGRNNClassifier`` and :func:`quantize` it.

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
            "A QuantizedFastGRNN is not trained: fit a FastGRNNClassifier, then "
            "quantize(clf, X_train) (for a Pipeline, quantize its last step on the "
            "scaled training data)."
        )

    # -- arithmetic --------------------------------------------------------
    def _product(self, chain, v):
        keys = self.chain_keys(chain)
        for position, key in enumerate(keys):
            v = requantize(v @ self.weights_[key].astype(np.int64), self.multipliers_[key])
            if position + 1 < len(keys):
                v = np.clip(v, -INT16_MAX, INT16_MAX)
        return v

    def quantize_input(self, X3):
        """``x_q`` (int64) of sequences ``X3`` (n, T, d); NaN padding becomes 0."""
        with np.errstate(over="ignore"):  # beyond float32: inf, saturated below
            x = np.nan_to_num(np.asarray(X3, dtype=np.float32).astype(np.float64), nan=0.0)
        scaled = np.floor(x * 2.0 ** self.frac_bits_["input"] + 0.5)
        return np.clip(scaled, -INT16_MAX, INT16_MAX).astype(np.int64)

    def __sklearn_tags__(self):
        return FastGRNNClassifier().__sklearn_tags__()

    def quantized_logits(self, X):
        """Integer logits in Q12 (int64, shape (n_samples, n_classes)).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
        """
        _, X3, lengths = validate_sequences(self, X, reset=False)
        xq = self.quantize_input(X3)
        sz, sn = self.sigmoid_zeta_q15_, self.sigmoid_nu_q15_
        b_gate, b_update = self._bias("bias_gate"), self._bias("bias_update")
        h = np.zeros((len(xq), self.hidden_size), dtype=np.int64)
        for t in range(int(lengths.max())):
            pre = self._product("W", xq[:, t]) + self._product("U", h)
            z = integer_nonlinearity(self.gate_nonlinearity, pre + b_gate)
            c = np.clip(integer_nonlinearity(self.update_nonlinearity, pre + b_update),
                        -INT16_MAX, INT16_MAX)
            coef = rshift_round(sz * (ONE - z), STATE_FRAC_BITS) + sn
            h_new = rshift_round(coef * c, COEF_FRAC_BITS) + rshift_round(z * h, STATE_FRAC_BITS)
            h_new = np.clip(h_new, -INT16_MAX, INT16_MAX)
            h = np.where((t < lengths)[:, None], h_new, h)
        return self._product("V", h) + self._bias("bias_out")

    def predict_proba(self, X):
        """``softmax(quantized_logits(X) / 4096)``, shape (n_samples, n_classes)."""
        return np.exp(log_softmax(self.quantized_logits(X) / ONE))

    def predict(self, X):
        """Class with the largest integer logit (the first on ties)."""
        return self.classes_[np.argmax(self.quantized_logits(X), axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy of :meth:`predict` on ``(X, y)``, as ``FastGRNNClassifier.score``."""
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

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
        n_scales = len(self.scales_)
        rows.append({"tensor": "scales", "shape": (n_scales,), "params": n_scales,
                     "nonzeros": n_scales, "storage": "float32", "bytes": SCALAR_BYTES * n_scales})
        return rows

    def summary(self):
        """Parameters, non-zeros and bytes per tensor, and KB (see :func:`summary`)."""
        return summary(self)
