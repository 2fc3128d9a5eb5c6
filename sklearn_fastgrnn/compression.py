"""Model compression: sparsity, int8 quantisation and model size (docs/compression.md).

Three tools make a FastGRNN tiny, as in the paper (Kusupati et al., 2018):

- **sparsity**: :class:`SparseTraining` runs iterative hard thresholding (IHT)
  inside ``FastGRNNClassifier.fit`` when ``sparsity_w`` or ``sparsity_u`` is
  below 1 (dense, then IHT, then training on a frozen support);
- **int8 quantisation**: :func:`quantize` turns a fitted classifier into a
  :class:`QuantizedFastGRNN` that predicts with integer-only arithmetic, exactly
  as a microcontroller would run it;
- **size accounting**: :func:`model_size_bytes`, :func:`size_report` and
  :func:`summary` count bytes the way EdgeML does, so sizes compare with the
  paper's tables.
"""

import copy
import math
from numbers import Real

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from ._sequences import validate_sequences

DENSE_BYTES = 4  # a float32 entry
SPARSE_BYTES = 8  # a float32 non-zero stored sparse: value + 4-byte index (EdgeML)
INT8_BYTES = 1
SCALAR_BYTES = 4  # zeta, nu and the scale of each int8 tensor

# ------------------------------------------------------------------ sparsity


def keep_count(size, fraction):
    """Number of entries that sparsity ``fraction`` keeps out of ``size``.

    ``ceil(fraction * size)`` (EdgeML's count), at least 1; the product is
    rounded to 9 decimals first so that, e.g., ``0.3 * 10`` keeps 3, not 4.
    """
    return max(1, math.ceil(round(fraction * size, 9)))


def support(values, k):
    """Sorted flat indices of the ``k`` entries of largest magnitude.

    Ties are broken deterministically: of two entries with the same magnitude,
    the one with the lower flat (C-order) index is kept.
    """
    order = np.argsort(-np.abs(np.ravel(values)), kind="stable")
    return np.sort(order[:k])


def hard_threshold(matrix, fraction):
    """Copy of ``matrix`` keeping exactly ``keep_count(matrix.size, fraction)`` entries.

    The kept entries are those of largest magnitude (see :func:`support`); all
    others become 0.
    """
    matrix = np.asarray(matrix)
    out = np.zeros_like(matrix)
    kept = support(matrix, keep_count(matrix.size, fraction))
    out.flat[kept] = matrix.flat[kept]
    return out


def sparsity_fractions(estimator, matrix_keys):
    """``{key: fraction kept}`` of the matrices among ``matrix_keys`` trained sparse.

    ``W`` (or each of ``W1``, ``W2``) uses ``sparsity_w`` and ``U`` (or ``U1``,
    ``U2``) ``sparsity_u``; matrices with a fraction of 1 are dense and left out.
    """
    fractions = {}
    for key in matrix_keys:
        fraction = {"W": estimator.sparsity_w, "U": estimator.sparsity_u}.get(key[0], 1.0)
        if fraction < 1.0:
            fractions[key] = float(fraction)
    return fractions


def sparse_keys(model):
    """Names of the ``coefs_`` matrices that a fitted classifier stores sparse."""
    return tuple(sparsity_fractions(model, model.coefs_))


def check_sparsity_phases(phases):
    """Validate ``sparsity_phases`` and return it as a tuple of two floats."""
    message = (
        "sparsity_phases must be a pair (dense_fraction, iht_fraction) of numbers "
        "in [0, 1] whose sum is below 1: the first part of the run trains dense, "
        "the second runs iterative hard thresholding and the rest trains on the "
        f"frozen support. Got {phases!r}."
    )
    if len(phases) != 2 or not all(
        isinstance(p, Real) and not isinstance(p, bool) for p in phases
    ):
        raise ValueError(message)
    dense, iht = float(phases[0]), float(phases[1])
    if not (0.0 <= dense <= 1.0 and 0.0 <= iht <= 1.0 and dense + iht < 1.0):
        raise ValueError(message)
    return dense, iht


class SparseTraining:
    """Iterative hard thresholding of ``W`` and ``U`` during training (EdgeML's schedule).

    The run of ``n_epochs`` epochs has three phases, counted in epochs begun
    since this object was created (so the schedule continues across
    ``partial_fit`` calls and ``warm_start`` fits):

    1. epochs ``[0, floor(dense * n_epochs))``: dense training;
    2. up to ``floor((dense + iht) * n_epochs)``: after every ``interval``-th
       optimiser step (the first step of the phase included) each sparse matrix
       is hard-thresholded to its ``keep_count`` largest-magnitude entries; after
       the other steps the current support is re-applied (pruned entries set to
       0);
    3. the rest: a last thresholding fixes the support, the optimiser state of
       the pruned entries is zeroed and their gradient is masked before every
       step, so they stay exactly 0 (the optimiser can not revive them).

    Parameters
    ----------
    layout : ParameterLayout
        Where each matrix lives in the flat parameter vector.
    fractions : dict
        ``{matrix key: fraction of entries kept}`` (see :func:`sparsity_fractions`).
    phases : tuple of float
        ``(dense, iht)`` fractions of the run.
    interval : int
        Optimiser steps between two thresholdings in phase 2.
    n_epochs : int
        Length of the run in epochs (``max_iter``).
    """

    def __init__(self, layout, fractions, phases, interval, n_epochs):
        self.groups = tuple(
            (layout.offsets[key], math.prod(layout.shapes[key]),
             keep_count(math.prod(layout.shapes[key]), fraction))
            for key, fraction in fractions.items()
        )
        self.interval = interval
        self.dense_end = math.floor(round(phases[0] * n_epochs, 9))
        self.iht_end = math.floor(round((phases[0] + phases[1]) * n_epochs, 9))
        self.config = (self.groups, tuple(phases), interval, n_epochs)
        self.epoch = 0
        self.phase = 1
        self.steps = 0
        self.pruned = np.empty(0, dtype=np.intp)
        self.frozen = False

    @classmethod
    def for_run(cls, estimator, layout, resume):
        """The sparse-training state for one ``fit``/``partial_fit`` call, or None.

        None when every matrix is dense. When ``resume`` and the estimator holds
        the state of an identical schedule, a copy of it continues; otherwise a
        new schedule starts.
        """
        phases = check_sparsity_phases(estimator.sparsity_phases)
        fractions = sparsity_fractions(estimator, layout.weight_keys)
        if not fractions:
            return None
        new = cls(layout, fractions, phases, estimator.iht_interval, estimator.max_iter)
        previous = getattr(estimator, "_sparse_training", None) if resume else None
        if previous is not None and previous.config == new.config:
            return copy.deepcopy(previous)
        return new

    def begin_epoch(self, flat, optimizer):
        """Enter the phase of the next epoch; True if the support was frozen now."""
        epoch = self.epoch
        self.epoch += 1
        if epoch < self.dense_end:
            self.phase = 1
        elif epoch < self.iht_end:
            self.phase = 2
        else:
            self.phase = 3
            if not self.frozen:
                self.threshold(flat)
                # Adam's moments or SGD's velocity would keep moving a masked entry
                for name in ("m", "v", "velocity"):
                    state = getattr(optimizer, name, None)
                    if state is not None:
                        state[self.pruned] = 0
                self.frozen = True
                return True
        return False

    def before_step(self, grad):
        """Mask the gradient of the pruned entries once the support is frozen."""
        if self.frozen:
            grad[self.pruned] = 0

    def after_step(self, flat):
        """Threshold or re-apply the support after an optimiser step (phase 2)."""
        if self.phase == 2:
            if self.steps % self.interval == 0:
                self.threshold(flat)
            else:
                flat[self.pruned] = 0
            self.steps += 1

    def threshold(self, flat):
        """Hard-threshold every sparse matrix of ``flat`` in place; update the support."""
        pruned = []
        for offset, size, k in self.groups:
            block = flat[offset : offset + size]
            outside = np.ones(size, dtype=bool)
            outside[support(block, k)] = False
            out = np.flatnonzero(outside)
            block[out] = 0
            pruned.append(out + offset)
        self.pruned = np.concatenate(pruned)


# ------------------------------------------------------------ size accounting


def index_bytes(n_rows):
    """Bytes of the row index of a sparse int8 entry: uint8 up to 256 rows, else uint16."""
    return 1 if n_rows <= 256 else 2


def tensor_bytes(value, *, sparse=False, int8=False):
    """Bytes of one tensor as EdgeML counts them (docs/compression.md).

    Dense float32: 4 per entry; sparse float32: 8 per non-zero (value and a
    4-byte index); dense int8: 1 per entry; sparse int8: 1 per non-zero plus its
    row index (:func:`index_bytes`).
    """
    value = np.asarray(value)
    if not sparse:
        return (INT8_BYTES if int8 else DENSE_BYTES) * value.size
    nonzeros = int(np.count_nonzero(value))
    if int8:
        return (INT8_BYTES + index_bytes(value.shape[0])) * nonzeros
    return SPARSE_BYTES * nonzeros


def model_size_bytes(coefs, sparse=()):
    """Size in bytes of a float32 model, as EdgeML counts it.

    Parameters
    ----------
    coefs : dict of ndarray
        A fitted model's ``coefs_``.
    sparse : iterable of str, default=()
        Keys of the matrices stored sparse (8 bytes per non-zero); every other
        tensor (biases, ``zeta``, ``nu``, ``V``, ``bias_out`` included) costs 4
        bytes per entry.

    Returns
    -------
    int
        KB in the paper's tables are ``bytes / 1024``.
    """
    sparse = set(sparse)
    return int(sum(tensor_bytes(v, sparse=k in sparse) for k, v in coefs.items()))


def size_report(model):
    """One row per stored tensor of a fitted model: what it costs.

    Parameters
    ----------
    model : FastGRNNClassifier or QuantizedFastGRNN

    Returns
    -------
    list of dict
        Keys ``tensor``, ``shape``, ``params``, ``nonzeros``, ``storage``
        (e.g. "float32", "float32 sparse", "int8", "int8 sparse") and ``bytes``;
        the bytes sum to ``model.model_size_bytes_``.
    """
    if isinstance(model, QuantizedFastGRNN):
        return model._size_rows()
    check_is_fitted(model, "coefs_")
    sparse = set(sparse_keys(model))
    return [
        _row(key, value, "float32 sparse" if key in sparse else "float32",
             tensor_bytes(value, sparse=key in sparse))
        for key, value in model.coefs_.items()
    ]


def _row(tensor, value, storage, n_bytes):
    value = np.asarray(value)
    return {
        "tensor": tensor, "shape": value.shape, "params": int(value.size),
        "nonzeros": int(np.count_nonzero(value)), "storage": storage, "bytes": int(n_bytes),
    }


def summary(model):
    """A printable table of parameters, non-zeros and bytes per tensor, and KB.

    Parameters
    ----------
    model : FastGRNNClassifier or QuantizedFastGRNN
        Fitted.

    Returns
    -------
    str
    """
    rows = size_report(model)
    lines = [
        f"{type(model).__name__}: {model.gate_nonlinearity} gate, "
        f"{model.update_nonlinearity} update, {len(model.classes_)} classes",
        f"{'tensor':<12} {'shape':<10} {'params':>7} {'non-zeros':>9}  "
        f"{'storage':<15} {'bytes':>7}",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        lines.append(
            f"{r['tensor']:<12} {shape:<10} {r['params']:>7} {r['nonzeros']:>9}  "
            f"{r['storage']:<15} {r['bytes']:>7}"
        )
    params = sum(r["params"] for r in rows if r["tensor"] != "scales")
    nonzeros = sum(r["nonzeros"] for r in rows if r["tensor"] != "scales")
    total = sum(r["bytes"] for r in rows)
    lines.append(f"{'total':<12} {'':<10} {params:>7} {nonzeros:>9}  {'':<15} {total:>7}")
    lines.append(f"model size: {total} bytes = {total / 1024:.2f} KB")
    return "\n".join(lines)


# --------------------------------------------------------------- quantisation

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
    if name == "quant_sigmoid":
        return np.clip(rshift_round(v + ONE, 1), 0, ONE)
    if name == "quant_tanh":
        return np.clip(v, -ONE, ONE)
    if name == "relu":
        return np.maximum(v, 0)
    sign, shift = np.where(v < 0, -1, 1), STATE_FRAC_BITS - TANH_STEP_BITS
    if name == "tanh":
        return sign * _tanh_magnitude(np.abs(v), shift)
    return rshift_round(ONE + sign * _tanh_magnitude(np.abs(v), shift + 1), 1)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


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
    from .classifier import FastGRNNClassifier  # here: classifier imports this module

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
        self.sigmoid_zeta_q15_ = round_half_up(_sigmoid(self.zeta) * (1 << COEF_FRAC_BITS))
        self.sigmoid_nu_q15_ = round_half_up(_sigmoid(self.nu) * (1 << COEF_FRAC_BITS))
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
        self.n_params_ = int(sum(np.size(v) for v in coefs.values()))
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

    def _validate(self, X):
        """``(X3, lengths)``, validated exactly as the source classifier validates."""
        _, X3, lengths = validate_sequences(self, X, reset=False)
        return X3, lengths

    def __sklearn_tags__(self):
        from .classifier import FastGRNNClassifier  # here: classifier imports this module

        return FastGRNNClassifier().__sklearn_tags__()

    def quantized_logits(self, X):
        """Integer logits in Q12 (int64, shape (n_samples, n_classes)).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
        """
        X3, lengths = self._validate(X)
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
        logits = self.quantized_logits(X) / ONE
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

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
            _row(key, q, "int8 sparse" if key in sparse else "int8",
                 tensor_bytes(q, sparse=key in sparse, int8=True))
            for key, q in self.weights_.items()
        ]
        rows += [_row(key, np.float32(getattr(self, key)), "float32", SCALAR_BYTES)
                 for key in ("zeta", "nu")]
        n_scales = len(self.scales_)
        rows.append({"tensor": "scales", "shape": (n_scales,), "params": n_scales,
                     "nonzeros": n_scales, "storage": "float32", "bytes": SCALAR_BYTES * n_scales})
        return rows

    def summary(self):
        """Parameters, non-zeros and bytes per tensor, and KB (see :func:`summary`)."""
        return summary(self)
