"""Forward pass and exact backpropagation through time of the FastGRNN cell.

Row-vector convention (``docs/design.md``, "The cell"); ``x_t`` is ``(B, d)``,
``h_t`` is ``(B, H)``, ``h_0 = 0``, and ``t = 1..T``. The engine speaks of
*outputs* (``n_outputs`` columns of ``r @ V + bias_out``): a classifier reads
them as logits, other heads as they need.

Forward::

    pre_t   = x_t @ W + h_{t-1} @ U                (one h @ U serves both halves)
    z_t     = gate(pre_t + bias_gate)
    c_t     = update(pre_t + bias_update)
    h_t     = (sz * (1 - z_t) + sn) * c_t + z_t * h_{t-1}
            = sz_plus_sn * c_t + z_t * e_t,   e_t = h_{t-1} - sz * c_t
    r       = readout(h_1, ..., h_L)               (L = the real length)
    outputs = r @ V + bias_out

with ``sz = sigmoid(zeta)``, ``sn = sigmoid(nu)`` and ``sz_plus_sn = sz + sn``.
The readouts (:data:`READOUTS`), per sequence and hidden unit ``j``::

    last:  r   = h_L
    mean:  r   = (1 / L) * sum_{t=1..L} h_t
    max:   r_j = max_{t=1..L} h_{t,j} = h_{t*_j, j},   t*_j the first t attaining it

Backward, given ``doutputs`` (the gradient of the loss with respect to the
outputs); ``g_t`` is the gradient that reaches ``h_t`` directly from the
readout, ``gate'`` and ``update'`` are written through their outputs::

    dV        = r.T @ doutputs
    dbias_out = sum_b doutputs
    dr        = doutputs @ V.T
    last:  g_L = dr,                       g_t = 0 for t != L
    mean:  g_t = dr / L                    for t <= L
    max:   g_{t,j} = dr_j if t == t*_j,    else 0
    dh_T = g_T
    for t = T..1:
        Fz_t       = e_t * gate'(z_t)                     (d h_t / d gate input)
        Fc_t       = (sz_plus_sn - sz * z_t) * update'(c_t)   (d h_t / d update input)
        F_t        = Fz_t + Fc_t                          (d h_t / d pre_t)
        dpre_t     = dh_t * F_t
        dh_{t-1}   = g_{t-1} + dpre_t @ U.T + dh_t * z_t
    dW            = sum_t x_t.T @ dpre_t
    dU            = sum_t h_{t-1}.T @ dpre_t
    dbias_gate    = sum_{t, b} dh_t * Fz_t
    dbias_update  = sum_{t, b} dh_t * Fc_t = sum_{t, b} dpre_t - dbias_gate
    dzeta         = (sum dh_t * c_t - sum dh_t * z_t * c_t) * sz * (1 - sz)
    dnu           = (sum dh_t * c_t) * sn * (1 - sn)

A padded step (after the end of a shorter sequence) is ``h_t = h_{t-1}``: the
engine stores it as ``z_t = 1``, ``c_t = 0`` and zeroes ``Fz_t`` and ``Fc_t``, so
``dh_{t-1} = dh_t`` there; so ``h_T = h_L``, ``g_t = 0`` on padded steps, and
the last readout puts ``dr`` on ``dh_T``, which flows unchanged down to ``dh_L``.
The max over ``h_1..h_T`` is the max over the real steps (a padded step repeats
``h_L``, later than it), and a NaN state is the max (NumPy's ``max`` and
``argmax``). With low-rank factors ``W = W1 @ W2``, ``dW1 = dW @ W2.T`` and
``dW2 = W1.T @ dW`` (the same for ``U``).

Names in the code:

- ``X_aug``: the time-major input ``(T, B, d + 1)`` with a trailing column of
  ones (:func:`to_time_major`);
- ``P``: ``(2, d + 1, H)``, ``P[0] = [W; bias_gate]``, ``P[1] = [W; bias_update]``,
  so that ``x_aug_t @ P`` is both pre-activations without the recurrent term;
- ``zc``: ``(T, 2, B, H)``, the pre-activations of each step, overwritten by
  ``z_t`` (``zc[t - 1, 0]``) and ``c_t`` (``zc[t - 1, 1]``);
- ``Z``, ``C``, ``E``, ``H_all``, ``DH``, ``DPRE``: a quantity stacked over
  steps; ``H_all[t]`` is ``h_t`` (``H_all[0] = h_0 = 0``), the others are
  0-based (``DH[t - 1]`` is ``dh_t``);
- ``*_steps``: lists of the per-step views of those arrays, made once per
  workspace.

How it is made fast (see ``docs/performance.md``):

- the ones column of ``X_aug`` makes one matmul give ``x_t @ W`` plus the gate
  and update biases for every timestep, and one matmul give ``[dW; sum(dpre)]``
  after the backward loop;
- the gate and update halves of a step are contiguous ``(B, H)`` blocks of
  ``zc`` (a ufunc on a strided view costs about 0.7 us more per call); when both
  non-linearities are tanh-based one ``np.tanh`` call evaluates both;
- only the recurrences loop in Python, with ``np.dot`` (about 1 us cheaper than
  ``np.matmul`` on small matrices), positional ``out=``, per-step views made
  once per workspace, and attributes read into local names before the loops;
  the factors ``Fz``, ``Fc`` are computed for blocks of timesteps that fit in
  the L2 cache;
- every buffer is preallocated per batch shape and written in place; scalars are
  0-d arrays of the working dtype.
"""

import math
import threading
import weakref
from typing import NamedTuple

import numpy as np

from ._nonlinearities import NONLINEARITIES, scalar_sigmoid
from ._threads import one_blas_thread

# Bytes of one (timesteps, batch, hidden) block of backward factors: keeps the
# elementwise work of the backward pass inside the L2 cache.
_BLOCK_BYTES = 128 * 1024
# Sequences per chunk at prediction time: bounds the memory of predict on big X.
_PREDICT_CHUNK = 1024
# init="chrono": standard deviation of the input term of each pre-activation for
# standardised input, whatever the number of channels (EdgeML's is 0.1 * sqrt(d))
CHRONO_INPUT_STD = 0.5
#: The readouts: what the output layer reads of the states ``h_1 .. h_L`` (the
#: module docstring has their forward and backward passes). The one list.
READOUTS = ("last", "mean", "max")


def check_readout(readout):
    """Return ``readout`` if it is one of :data:`READOUTS`, else raise ValueError."""
    if not isinstance(readout, str) or readout not in READOUTS:
        raise ValueError(
            f"readout must be one of {list(READOUTS)}, got {readout!r}."
        )
    return readout


class ParameterLayout:
    """Names, shapes and offsets of the cell's parameters inside one flat vector.

    Weight matrices (the entries the L2 penalty acts on) come first, so that the
    penalty is one slice of the flat vector: ``flat[:n_weights]``.

    Parameters
    ----------
    n_inputs : int
        Input width ``d`` of the cell (the channels of one step).
    hidden_size : int
        Hidden size ``H``.
    n_outputs : int
        Output size ``C``: the columns of ``V`` and ``bias_out``.
    w_rank, u_rank : int or None
        Rank of ``W = W1 @ W2`` and ``U = U1 @ U2``; None means full rank.
    """

    def __init__(self, n_inputs, hidden_size, n_outputs, w_rank=None, u_rank=None):
        d, H, C = n_inputs, hidden_size, n_outputs
        self.n_inputs, self.hidden_size, self.n_outputs = d, H, C
        self.w_rank, self.u_rank = w_rank, u_rank
        shapes = {}
        if w_rank is None:
            shapes["W"] = (d, H)
        else:
            shapes["W1"], shapes["W2"] = (d, w_rank), (w_rank, H)
        if u_rank is None:
            shapes["U"] = (H, H)
        else:
            shapes["U1"], shapes["U2"] = (H, u_rank), (u_rank, H)
        shapes["V"] = (H, C)
        self.weight_keys = tuple(shapes)
        shapes["bias_gate"] = (H,)
        shapes["bias_update"] = (H,)
        shapes["zeta"] = ()
        shapes["nu"] = ()
        shapes["bias_out"] = (C,)
        self.shapes = shapes
        self.offsets = {}
        offset = 0
        for key, shape in shapes.items():
            self.offsets[key] = offset
            offset += math.prod(shape)
            if key == "V":
                self.n_weights = offset
        self.size = offset

    def views(self, flat):
        """Return a dict of views of ``flat``, one per parameter key."""
        return {
            key: flat[self.offsets[key] : self.offsets[key] + math.prod(shape)].reshape(
                shape
            )
            for key, shape in self.shapes.items()
        }

    def pack(self, coefs, dtype):
        """Copy a ``coefs_``-style dict into a new flat vector of ``dtype``."""
        flat = np.empty(self.size, dtype=dtype)
        views = self.views(flat)
        for key, shape in self.shapes.items():
            value = np.asarray(coefs[key])
            if value.shape != shape:
                raise ValueError(
                    f"coefs_[{key!r}] has shape {value.shape}, expected {shape}."
                )
            views[key][...] = value
        return flat

    def unpack(self, flat):
        """Return a ``coefs_``-style dict of independent copies."""
        return {key: view.copy() for key, view in self.views(flat).items()}


def init_parameters(layout, random_state, zeta_init, nu_init, dtype, *,
                    scheme="edgeml", n_timesteps=None):
    """Initial flat parameter vector.

    ``scheme="edgeml"`` (EdgeML's defaults): every weight matrix is
    ``0.1 * N(0, 1)``; ``bias_gate`` and ``bias_update`` are ones; ``zeta`` and
    ``nu`` are ``zeta_init`` and ``nu_init``; ``bias_out`` is zero.

    ``scheme="chrono"`` differs in two places. The gate bias spreads the memory
    of the units over ``n_timesteps`` (chrono initialisation, Tallec & Ollivier
    2018): ``bias_gate = log(u)`` with ``u ~ U(1, max(n_timesteps - 1, 2))``,
    so that ``z = sigmoid(bias_gate) = u / (1 + u)`` keeps unit ``j``'s state
    for about ``1 + u_j`` steps (EdgeML's gate bias of 1 keeps every unit for
    about 3.7 steps). And the input weights are scaled to the number of
    channels ``d``: ``W`` is ``N(0, 0.25 / d)``, so that standardised input
    gives every pre-activation an input term of standard deviation 0.5 however
    many channels there are (EdgeML's 0.1 gives 0.1 for one channel); a low
    rank ``W1 @ W2`` has ``W1`` from ``N(0, 1 / d)`` and ``W2`` from
    ``N(0, 0.25 / w_rank)``, the same variance for the product.
    """
    flat = np.zeros(layout.size, dtype=dtype)
    views = layout.views(flat)
    std = dict.fromkeys(layout.weight_keys, 0.1)
    if scheme == "chrono":
        d, r = layout.n_inputs, layout.w_rank
        if r is None:
            std["W"] = CHRONO_INPUT_STD / np.sqrt(d)
        else:
            std["W1"], std["W2"] = 1.0 / np.sqrt(d), CHRONO_INPUT_STD / np.sqrt(r)
    for key in layout.weight_keys:
        views[key][...] = std[key] * random_state.standard_normal(layout.shapes[key])
    if scheme == "chrono":
        high = max((n_timesteps or 2) - 1, 2)
        views["bias_gate"][...] = np.log(random_state.uniform(1.0, high, layout.hidden_size))
    else:
        views["bias_gate"][...] = 1.0
    views["bias_update"][...] = 1.0
    views["zeta"][...] = zeta_init
    views["nu"][...] = nu_init
    return flat


def to_time_major(X, dtype):
    """Time-major copy of ``X`` (n, T, d) with a trailing column of ones.

    NaN entries (the padding of variable-length sequences) become 0, so that they
    can never reach the arithmetic; the mask in the engine ignores them.
    """
    n, T, d = X.shape
    X_aug = np.empty((T, n, d + 1), dtype=dtype)
    np.copyto(X_aug[:, :, :d], X.transpose(1, 0, 2))
    # isnan on the contiguous X, then a masked copy only when there is padding:
    # 4-8x faster than nan_to_num, which also scans for infinities
    if np.isnan(X).any():
        np.copyto(X_aug[:, :, :d], 0.0, where=np.isnan(X_aug[:, :, :d]))
    X_aug[:, :, d] = 1.0
    return X_aug


def _padding(lengths, T):
    """Mask (T, B, 1) of the padded steps, or None when no sequence is padded."""
    if lengths is None or lengths.min() >= T:
        return None
    return (np.arange(T)[:, None] >= lengths[None, :])[:, :, None]


def _as_scalars(values, dtype):
    """``values`` (a tuple of floats or None) as 0-d arrays of ``dtype``."""
    if values is None:
        return None
    return tuple(np.array(v, dtype=dtype) for v in values)


def _as_scalar_or_none(value, dtype):
    """``value`` as a 0-d array of ``dtype``, or None when it is 1 (nothing to do)."""
    return None if value == 1 else np.array(value, dtype=dtype)


class _StepViews(NamedTuple):
    """Per-step views of the forward buffers, one list entry per step.

    ``zc[t]``, ``z[t]``, ``c[t]``, ``e[t]`` belong to step ``t + 1``; ``h[t]``
    is ``h_t`` (``T + 1`` entries, from ``h_0``).
    """

    zc: list
    z: list
    c: list
    e: list
    h: list

    @classmethod
    def of(cls, zc, e_steps, h_steps):
        """Views of ``zc`` (T, 2, B, H) with the given lists of ``e`` and ``h``."""
        zc_steps = list(zc)
        return cls(zc_steps, [a[0] for a in zc_steps], [a[1] for a in zc_steps],
                   e_steps, h_steps)

    def first(self, T):
        """The views of the first ``T`` steps."""
        return _StepViews(
            self.zc[:T], self.z[:T], self.c[:T], self.e[:T], self.h[: T + 1]
        )


class _Workspace(NamedTuple):
    """Buffers of the forward and backward passes for one batch size ``B``.

    Time axes hold ``n_steps`` steps; names as in the module docstring. Buffers
    of the backward factors hold ``block`` steps at a time.
    """

    n_steps: int
    zc: np.ndarray  # (T, 2, B, H): pre-activations, then z_t and c_t
    H_all: np.ndarray  # (T + 1, B, H): h_0 = 0, h_1, ..., h_T
    E: np.ndarray  # (T, B, H): e_t = h_{t-1} - sz * c_t
    DH: np.ndarray  # (T, B, H): dh_t
    DPRE: np.ndarray  # (T, B, H): dpre_t
    steps: _StepViews
    dh_steps: list
    dpre_steps: list
    block: int
    f_gate: np.ndarray  # (block, B, H): Fz, then dh * Fz
    f_sum: np.ndarray  # (block, B, H): Fc, then F = Fz + Fc
    f_sum_steps: list
    scratch: np.ndarray  # (block, B, H): derivatives, then dh * c and dh * z * c
    ones: np.ndarray  # (block * B,): sums over steps and batch as BLAS products
    hU: np.ndarray  # (B, H): h_{t-1} @ U
    tmp: np.ndarray  # (B, H)
    grad_w_aug: np.ndarray  # (d + 1, H): [dW; sum(dpre)]

    @classmethod
    def allocate(cls, T, B, d, H, dtype):
        """Buffers for ``T`` steps of ``B`` sequences of ``d`` channels."""
        block = max(1, _BLOCK_BYTES // (B * H * dtype.itemsize))
        zc = np.empty((T, 2, B, H), dtype=dtype)
        H_all = np.zeros((T + 1, B, H), dtype=dtype)
        E, DH, DPRE = (np.empty((T, B, H), dtype=dtype) for _ in range(3))
        f_sum = np.empty((block, B, H), dtype=dtype)
        # per-step views made once: creating a view costs ~0.1 us, taking one
        # from a list ~0.03 us, and the loops use ~10 a step
        return cls(
            n_steps=T, zc=zc, H_all=H_all, E=E, DH=DH, DPRE=DPRE,
            steps=_StepViews.of(zc, list(E), list(H_all)),
            dh_steps=list(DH), dpre_steps=list(DPRE),
            block=block,
            f_gate=np.empty((block, B, H), dtype=dtype),
            f_sum=f_sum, f_sum_steps=list(f_sum),
            scratch=np.empty((block, B, H), dtype=dtype),
            ones=np.ones(block * B, dtype=dtype),
            hU=np.empty((B, H), dtype=dtype),
            tmp=np.empty((B, H), dtype=dtype),
            grad_w_aug=np.empty((d + 1, H), dtype=dtype),
        )

    def first(self, T):
        """The same buffers cut to the first ``T`` steps (still contiguous)."""
        return self._replace(
            n_steps=T, zc=self.zc[:T], H_all=self.H_all[: T + 1], E=self.E[:T],
            DH=self.DH[:T], DPRE=self.DPRE[:T], steps=self.steps.first(T),
            dh_steps=self.dh_steps[:T], dpre_steps=self.dpre_steps[:T],
        )


class _ForwardState(NamedTuple):
    """What :meth:`FastGRNNEngine.forward` keeps for the backward pass."""

    params: dict  # views of the flat parameter vector
    X_aug: np.ndarray
    pad: np.ndarray  # or None
    U: np.ndarray  # effective U (U1 @ U2 when low rank)
    sz: float
    sn: float
    ws: _Workspace
    r: np.ndarray  # (B, H): what the output layer read
    pooling: object  # mean: (T, B, 1) weights keep / L; max: (B, H) argmax; else None


class FastGRNNEngine:
    """Forward pass and BPTT of FastGRNN for one parameter layout and dtype.

    :meth:`forward` and :meth:`backward` use the engine's workspaces (one set per
    batch size) and are therefore not thread-safe; :meth:`readout_state` allocates
    its own buffers and is.

    Parameters
    ----------
    layout : ParameterLayout
    gate_nonlinearity, update_nonlinearity : str
        Keys of :data:`~sklearn_fastgrnn._nonlinearities.NONLINEARITIES`.
    dtype : numpy dtype
        float32 or float64; every buffer and every scalar uses it.
    readout : {"last", "mean", "max"}, default="last"
        What the output layer reads (:data:`READOUTS`, module docstring).
    """

    name = "numpy"

    def __init__(self, layout, gate_nonlinearity, update_nonlinearity, dtype,
                 readout="last"):
        self.layout = layout
        self.readout = check_readout(readout)
        self.gate = NONLINEARITIES[gate_nonlinearity]
        self.update = NONLINEARITIES[update_nonlinearity]
        self.dtype = dt = np.dtype(dtype)
        #: Whether one ``np.tanh`` call evaluates both non-linearities.
        self.shared_tanh = self.gate.uses_tanh and self.update.uses_tanh
        # Scalars as 0-d arrays of the working dtype: a Python float costs a
        # conversion in every call, a np.float64 would pick the float64 loop.
        self._gate_post = _as_scalars(self.gate.post, dt)
        self._update_post = _as_scalars(self.update.post, dt)
        self._gate_scale = _as_scalar_or_none(self.gate.prescale, dt)
        self._update_scale = _as_scalar_or_none(self.update.prescale, dt)
        d, H = layout.n_inputs, layout.hidden_size
        self._P = np.empty((2, d + 1, H), dtype=dt)
        self._U_T = np.empty((H, H), dtype=dt)
        self._workspaces = {}  # batch size -> _Workspace
        self._params_cache = self._grad_cache = (None, None)
        self._saved = None  # _ForwardState of the last forward call

    # -- parameters -------------------------------------------------------
    def _views_of(self, flat, cache):
        # layout.views builds a dict of 8 views: reuse it while training passes
        # the same (updated in place) vector batch after batch
        cached_flat, views = getattr(self, cache)
        if flat is not cached_flat:
            views = self.layout.views(flat)
            setattr(self, cache, (flat, views))
        return views

    def stacked_weights(self, params):
        """Effective ``W`` and ``U``, and ``P`` of shape (2, d + 1, H).

        ``P[0] = [W; bias_gate]`` and ``P[1] = [W; bias_update]``: with the ones
        column of the input, ``x_t @ P`` gives both pre-activations without
        the recurrent term. ``P`` is the engine's buffer, overwritten each call.
        """
        lay = self.layout
        d = lay.n_inputs
        W = params["W"] if lay.w_rank is None else params["W1"] @ params["W2"]
        U = params["U"] if lay.u_rank is None else params["U1"] @ params["U2"]
        P = self._P
        P[:, :d] = W
        P[0, d] = params["bias_gate"]
        P[1, d] = params["bias_update"]
        return W, U, P

    def _workspace(self, T, B):
        """The :class:`_Workspace` of batch size ``B``, cut to ``T`` steps.

        One per batch size, grown to the longest ``T`` seen (slices along the
        leading time axis stay contiguous).
        """
        full = self._workspaces.get(B)
        if full is None or full.n_steps < T:
            lay = self.layout
            full = _Workspace.allocate(
                T, B, lay.n_inputs, lay.hidden_size, self.dtype
            )
            self._workspaces[B] = full
        return full if T == full.n_steps else full.first(T)

    # -- forward ----------------------------------------------------------
    def _recurrence(self, X_aug, P, U, sz, sz_plus_sn, zc, steps, hU, tmp, pad,
                    pool=None):
        """Run the forward recurrence; returns ``h_T``.

        On return ``zc[t - 1, 0]`` holds ``z_t`` and ``zc[t - 1, 1]`` ``c_t``
        (padded steps as computed: :meth:`forward` overwrites them), and the
        :class:`_StepViews` ``steps`` the ``e_t`` and ``h_t``. Without BPTT the
        list ``steps.e`` may repeat one buffer and ``steps.h`` alternate two.
        ``pool``, when given, is a ``(B, H)`` buffer that each step's ``h_t``
        is added to (mean readout; real steps only) or maxed into (max).
        """
        dt = self.dtype
        sz = np.array(sz, dtype=dt)  # 0-d: see __init__
        sz_plus_sn = np.array(sz_plus_sn, dtype=dt)
        gate, update = self.gate, self.update
        gate_post, update_post = self._gate_post, self._update_post
        gate_scale, update_scale = self._gate_scale, self._update_scale
        shared_tanh = self.shared_tanh
        # local names and positional out=: the loop makes ~11 calls a step, an
        # in-place operator (a += b) costs ~0.15 us more than add(a, b, a), and
        # np.dot ~1.2 us less than np.matmul on small matrices
        dot, add, multiply, subtract = np.dot, np.add, np.multiply, np.subtract
        tanh = np.tanh
        # x_t @ W plus bias for every step and half: numpy issues one small BLAS
        # call per (step, half) and writes the (T, 2, B, H) layout directly
        np.matmul(X_aug[:, None], P, out=zc)
        zc_steps, z_steps, c_steps, e_steps, h_steps = steps
        pool_mean = pool is not None and self.readout == "mean"
        pool_max = pool is not None and self.readout == "max"
        for t, (zc_t, z, c, e, h, h_next) in enumerate(
            zip(zc_steps, z_steps, c_steps, e_steps, h_steps, h_steps[1:])
        ):
            if t:  # h_0 = 0
                dot(h, U, hU)  # one h @ U, shared by both halves
                add(z, hU, z)
                add(c, hU, c)
            if gate_scale is not None:  # sigmoid as 0.5 * tanh(0.5 x) + 0.5
                multiply(z, gate_scale, z)
            if update_scale is not None:
                multiply(c, update_scale, c)
            if shared_tanh:
                tanh(zc_t, zc_t)
            else:
                gate.kernel(z)
                update.kernel(c)
            if gate_post is not None:
                multiply(z, gate_post[0], z)
                add(z, gate_post[1], z)
            if update_post is not None:
                multiply(c, update_post[0], c)
                add(c, update_post[1], c)
            # h_t = sz_plus_sn * c + z * e,  e = h - sz * c
            multiply(c, sz, e)
            subtract(h, e, e)
            multiply(e, z, tmp)
            multiply(c, sz_plus_sn, h_next)
            add(h_next, tmp, h_next)
            if pad is not None:
                np.copyto(h_next, h, where=pad[t])
            if pool_mean:  # a padded step repeats h_{t-1}: not added
                add(pool, h_next, pool, where=True if pad is None else ~pad[t])
            elif pool_max:  # a padded step repeats h_{t-1}: changes no max
                np.maximum(pool, h_next, pool)
        return h_steps[len(zc_steps)]

    def forward(self, flat, X_aug, lengths=None):
        """Outputs of a time-major batch, keeping what :meth:`backward` needs.

        Parameters
        ----------
        flat : ndarray of shape (n_params,)
        X_aug : ndarray of shape (T, B, d + 1)
            Time-major inputs with a trailing column of ones (see
            :func:`to_time_major`).
        lengths : ndarray of shape (B,) or None
            Real length of each sequence; None when no sequence is padded.

        Returns
        -------
        outputs : ndarray of shape (B, n_outputs)
        """
        T, B, _ = X_aug.shape
        params = self._views_of(flat, "_params_cache")
        _, U, P = self.stacked_weights(params)
        sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
        ws = self._workspace(T, B)
        pad = _padding(lengths, T)
        zc = ws.zc
        h_T = self._recurrence(
            X_aug, P, U, sz, sz + sn, zc, ws.steps, ws.hU, ws.tmp, pad
        )
        if pad is not None:
            # A padded step is h_t = h_{t-1}: exactly z = 1, c = 0 in the cell.
            zc[:, 0][pad[:, :, 0]] = 1.0
            zc[:, 1][pad[:, :, 0]] = 0.0
        r, pooling = self._read(ws.H_all[1:], h_T, pad, lengths)
        self._saved = _ForwardState(params, X_aug, pad, U, sz, sn, ws, r, pooling)
        outputs = r @ params["V"]
        outputs += params["bias_out"]
        return outputs

    def _read(self, H_steps, h_T, pad, lengths):
        """The readout ``r`` of the states ``H_steps`` (T, B, H) = ``h_1 .. h_T``,
        and what its backward pass needs (see :class:`_ForwardState`)."""
        if self.readout == "last":
            return h_T, None
        T, B, _ = H_steps.shape
        if self.readout == "max":
            # padded steps repeat h_L, later: the first maximum is a real step's
            # (a NaN state is the maximum, as in np.max)
            first = np.argmax(H_steps, axis=0)
            return np.take_along_axis(H_steps, first[None], axis=0)[0], first
        keep = np.ones((T, B, 1), bool) if pad is None else ~pad
        r = np.add.reduce(H_steps, axis=0, where=keep)
        L = np.full(B, T) if lengths is None else lengths
        r /= L[:, None].astype(self.dtype)
        weights = keep / L[:, None].astype(self.dtype)  # g_t = dr / L, real steps
        return r, weights.astype(self.dtype, copy=False)

    def readout_state(self, X_aug, P, U, sz, sn, lengths=None):
        """The readout ``r`` of a time-major batch (``h_L`` for ``"last"``), in
        buffers of this call: thread-safe.

        Keeps nothing for :meth:`backward`: ``e_t`` lives in one buffer and
        ``h_t`` in two alternating ones; a pooled readout is a running sum or
        maximum.

        Parameters
        ----------
        X_aug : ndarray of shape (T, B, d + 1)
            See :func:`to_time_major`.
        P, U : ndarray
            As returned by :meth:`stacked_weights` (``P`` copied if the engine
            may be used meanwhile).
        sz, sn : float
            ``sigmoid(zeta)`` and ``sigmoid(nu)``.
        lengths : ndarray of shape (B,) or None
            Real length of each sequence; None when no sequence is padded.

        Returns
        -------
        r : ndarray of shape (B, H)
        """
        T, B, _ = X_aug.shape
        H, dt = self.layout.hidden_size, self.dtype
        zc = np.empty((T, 2, B, H), dt)
        rolling = list(np.zeros((2, B, H), dt))  # only the running state is kept
        steps = _StepViews.of(
            zc, [np.empty((B, H), dt)] * T, [rolling[t & 1] for t in range(T + 1)]
        )
        pool = None
        if self.readout == "mean":
            pool = np.zeros((B, H), dt)
        elif self.readout == "max":
            pool = np.full((B, H), -np.inf, dt)
        h_T = self._recurrence(
            X_aug, P, U, sz, sz + sn, zc, steps, np.empty((B, H), dt),
            np.empty((B, H), dt), _padding(lengths, T), pool,
        )
        if self.readout == "mean":
            pool /= (np.full(B, T) if lengths is None else lengths)[:, None].astype(dt)
        return h_T if pool is None else pool

    # -- backward ---------------------------------------------------------
    def backward(self, doutputs, grad):
        """Write into ``grad`` the gradient of the loss whose output gradient is given.

        The recurrence of the module docstring, from ``dh_T`` down to ``dh_1``.

        Parameters
        ----------
        doutputs : ndarray of shape (B, n_outputs)
            Gradient of the loss with respect to the outputs of the last
            :meth:`forward` call.
        grad : ndarray of shape (n_params,)
            Overwritten with the gradient of every parameter (flat layout).

        Returns
        -------
        grad : ndarray of shape (n_params,)
        """
        params, X_aug, pad, U, sz, sn, ws, r, pooling = self._saved
        lay = self.layout
        T, B, d1 = X_aug.shape
        d, H = d1 - 1, lay.hidden_size
        grads = self._views_of(grad, "_grad_cache")
        zc, E, H_all, DH, DPRE = ws.zc, ws.E, ws.H_all, ws.DH, ws.DPRE
        Z, C = zc[:, 0], zc[:, 1]
        z_steps, dh_steps, dpre_steps = ws.steps.z, ws.dh_steps, ws.dpre_steps
        f_sum_steps, block, ones, tmp = ws.f_sum_steps, ws.block, ws.ones, ws.tmp
        gate_derivative = self.gate.derivative
        update_derivative = self.update.derivative
        dot, add, multiply = np.dot, np.add, np.multiply  # see _recurrence
        neg_sz = np.array(-sz, dtype=self.dtype)  # 0-d: see __init__
        sz_plus_sn = np.array(sz + sn, dtype=self.dtype)

        dot(r.T, doutputs, grads["V"])
        dot(ones[:B], doutputs, grads["bias_out"])  # sums by BLAS: see grad_bias_gate
        pooled = self.readout != "last"
        if not pooled:
            dot(doutputs, params["V"].T, DH[T - 1])  # dh_T = g_T = dr
        else:  # DH[t - 1] = g_t, which the loop adds dpre_t @ U.T + dh_t * z_t to
            dr = doutputs @ params["V"].T
            if self.readout == "mean":
                multiply(pooling, dr, DH)
            else:
                DH[...] = 0.0
                np.put_along_axis(DH, pooling[None], dr[None], axis=0)
            tmp_u = ws.hU  # a forward buffer, free here
        U_T = self._U_T
        np.copyto(U_T, U.T)  # a contiguous U.T makes the per-step product faster

        grad_bias_gate = grads["bias_gate"]
        grad_bias_gate[...] = 0.0
        sum_dh_c = 0.0  # sum(dh * c), for zeta and nu
        sum_dh_z_c = 0.0  # sum(dh * z * c), for zeta
        for t1 in range(T, 0, -block):  # steps t0 + 1 .. t1, latest block first
            t0 = max(0, t1 - block)
            n = t1 - t0
            Zb, Cb = Z[t0:t1], C[t0:t1]
            f_gate, f_sum, scratch = ws.f_gate[:n], ws.f_sum[:n], ws.scratch[:n]
            # Fz = e * gate'(z)
            multiply(E[t0:t1], gate_derivative(Zb, scratch), f_gate)
            # Fc = (sz_plus_sn - sz * z) * update'(c)
            multiply(Zb, neg_sz, f_sum)
            add(f_sum, sz_plus_sn, f_sum)
            multiply(f_sum, update_derivative(Cb, scratch), f_sum)
            if pad is not None:
                keep = ~pad[t0:t1]
                multiply(f_gate, keep, f_gate)
                multiply(f_sum, keep, f_sum)
            add(f_sum, f_gate, f_sum)  # F = Fz + Fc
            for t in range(t1 - 1, t0 - 1, -1):  # 0-based: step t + 1
                dh, dpre = dh_steps[t], dpre_steps[t]
                multiply(dh, f_sum_steps[t - t0], dpre)  # dpre = dh * F
                if t:
                    dh_prev = dh_steps[t - 1]  # dh_prev = g + dpre @ U.T + dh * z
                    if pooled:
                        dot(dpre, U_T, tmp_u)
                        add(dh_prev, tmp_u, dh_prev)
                    else:  # g_{t-1} = 0
                        dot(dpre, U_T, dh_prev)
                    multiply(dh, z_steps[t], tmp)
                    add(dh_prev, tmp, dh_prev)
            DHb = DH[t0:t1]
            multiply(f_gate, DHb, f_gate)
            # sum over steps and batch as a BLAS product: 8-15x faster than
            # f_gate.sum(axis=(0, 1)), which loops over short rows
            sum_f_gate = dot(ones[: n * B], f_gate.reshape(n * B, H))
            add(grad_bias_gate, sum_f_gate, grad_bias_gate)
            multiply(DHb, Cb, scratch)
            sum_dh_c += float(add.reduce(scratch, None))  # .sum() costs ~1.5 us more
            multiply(scratch, Zb, scratch)
            sum_dh_z_c += float(add.reduce(scratch, None))

        dpre_flat = DPRE.reshape(T * B, H)
        h_prev_flat = H_all[:T].reshape(T * B, H)  # h_0 .. h_{T-1}
        if lay.u_rank is None:
            np.dot(h_prev_flat.T, dpre_flat, out=grads["U"])
        else:
            grad_U = h_prev_flat.T @ dpre_flat
            np.matmul(grad_U, params["U2"].T, out=grads["U1"])
            np.matmul(params["U1"].T, grad_U, out=grads["U2"])
        # the ones column of X_aug makes the last row sum(dpre) over steps and batch
        grad_w_aug = np.dot(X_aug.reshape(T * B, d1).T, dpre_flat, out=ws.grad_w_aug)
        grad_W = grad_w_aug[:d]
        if lay.w_rank is None:
            grads["W"][...] = grad_W
        else:
            np.matmul(grad_W, params["W2"].T, out=grads["W1"])
            np.matmul(params["W1"].T, grad_W, out=grads["W2"])
        np.subtract(grad_w_aug[d], grad_bias_gate, out=grads["bias_update"])
        grads["zeta"][...] = (sum_dh_c - sum_dh_z_c) * sz * (1.0 - sz)
        grads["nu"][...] = sum_dh_c * sn * (1.0 - sn)
        return grad


def predict_outputs(coefs, gate_nonlinearity, update_nonlinearity, X, lengths, dtype,
                    readout="last", engine="numpy", make_engine=None):
    """Outputs for sequences ``X`` (n, T, d) from a ``coefs_`` dict.

    Thread-safe; see :class:`Predictor` (this builds one for the call).

    Parameters
    ----------
    coefs : dict of ndarray
    gate_nonlinearity, update_nonlinearity : str
    X : ndarray of shape (n, T, d)
        NaN at trailing padded timesteps is allowed.
    lengths : ndarray of shape (n,)
        Real length of each sequence (at least 1).
    dtype : numpy dtype
        Arithmetic dtype.
    readout : {"last", "mean", "max"}, default="last"
    engine : str, default="numpy"
    make_engine : callable, default=None
        The engine of the batch path: see :class:`Predictor`.

    Returns
    -------
    outputs : ndarray of shape (n, n_outputs)
    """
    return Predictor(
        coefs, gate_nonlinearity, update_nonlinearity, dtype, readout, engine, make_engine
    ).outputs(X, lengths)




# Largest single-sequence workspace (bytes) kept between calls; longer
# sequences get a buffer per call.
_KEEP_BYTES = 256 * 1024
# np.dot without the __array_function__ dispatch (0.3 us a call; the inputs
# are the predictor's own arrays)
_dot = getattr(np.dot, "_implementation", np.dot)
# OpenBLAS runs a matrix-vector product on several threads from this many
# matrix entries on (2304 * GEMM_MULTITHREAD_THRESHOLD): below, no limit needed
_BLAS_THREADED_GEMV = 9216
# Predictors of fitted estimators, weakly keyed by the estimator: see predictor_for.
_PREDICTORS = weakref.WeakKeyDictionary()


class Predictor:
    """Prediction from a ``coefs_`` dict: stacked weights made once, thread-safe.

    A batch of sequences runs the ``readout_state`` of the batch engine (the
    NumPy engine, or the one ``make_engine`` makes) in chunks of
    ``_PREDICT_CHUNK`` (buffers per call). One sequence runs a loop of four
    NumPy calls per timestep on a row ``[k | c | L1 | L2 | 1 | x_t]`` per step,
    in per-thread buffers kept between calls:

    - ``[k | c] = kernels([L1 | L2 | 1 | x_t] @ M1)``: the two pre-activations,
      prescaled, from ``h_{t-1} = L1 + L2`` (``L2`` already multiplied by ``k``);
    - ``[L1 | L2'] = [c | L1 | L2 | 1] @ M2`` and ``L2 = k * L2'``: with
      ``z = post_scale * k + post_shift``,
      ``h_t = c * (sz_plus_sn - sz * z) + z * h_{t-1}``
      is ``L1 + k * L2'``, both linear in ``(c, h_{t-1}, 1)`` (the update's own
      post-scaling folded in too);
    - ``outputs = [r1 | r2 | 1] @ [V; V; bias_out]`` after the last real step,
      where ``r = r1 + r2`` is the readout: ``[L1 | L2]`` of the last step,
      or the mean (``"mean"``) of the rows ``[L1 | L2]`` of the real steps, or
      (``"max"``) the maximum of their sums ``L1 + L2`` (with ``r2 = 0``), each
      computed once after the loop.

    The results equal the batch path's to rounding (a few float32 ulps), not
    bit for bit.

    Parameters
    ----------
    coefs : dict of ndarray
    gate_nonlinearity, update_nonlinearity : str
    dtype : numpy dtype
        Arithmetic dtype.
    readout : {"last", "mean", "max"}, default="last"
    engine : str, default="numpy"
        The engine of the batch path, made by ``make_engine`` (required unless
        "numpy"): ``make_engine(engine, layout, gate_nonlinearity,
        update_nonlinearity, dtype, readout)``, as
        ``sklearn_fastgrnn._compiled_cell.make_engine`` (passed in by the
        caller: this module does not import it).
    make_engine : callable, default=None
    """

    def __init__(self, coefs, gate_nonlinearity, update_nonlinearity, dtype,
                 readout="last", engine="numpy", make_engine=None):
        self.coefs, self.items = coefs, tuple(coefs.items())
        self.nonlinearities = (gate_nonlinearity, update_nonlinearity)
        self.readout = check_readout(readout)
        self.engine_name = engine
        H, C = np.shape(coefs["V"])
        d = np.shape(coefs["W"] if "W" in coefs else coefs["W1"])[0]
        w_rank = None if "W" in coefs else np.shape(coefs["W1"])[1]
        u_rank = None if "U" in coefs else np.shape(coefs["U1"])[1]
        layout = ParameterLayout(d, H, C, w_rank, u_rank)
        self.engine = engine = FastGRNNEngine(
            layout, gate_nonlinearity, update_nonlinearity, dtype, readout
        )
        if self.engine_name == "numpy":
            self.batch_engine = engine
        elif make_engine is None:
            raise ValueError(f"Predictor(engine={self.engine_name!r}) needs make_engine.")
        else:
            self.batch_engine = make_engine(
                self.engine_name, layout, gate_nonlinearity, update_nonlinearity,
                dtype, readout,
            )
        self.dtype = dt = engine.dtype
        params = layout.views(layout.pack(coefs, dt))
        W, U, P = engine.stacked_weights(params)
        self.P, self.U = P.copy(), U  # P is the engine's buffer
        self.sz, self.sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
        self.V, self.bias_out = params["V"], params["bias_out"]
        self.n_inputs, self.hidden_size, self.n_outputs = d, H, C
        self._W, self._params = W, params
        self._single = None  # (M1, M2, MV), made by the first one-sequence call
        self._local = threading.local()

    def matches(self, coefs, gate_nonlinearity, update_nonlinearity, dtype,
                readout="last", engine="numpy"):
        """Whether this predictor was made from these very arrays and settings."""
        items = self.items
        return (
            coefs is self.coefs
            and len(coefs) == len(items)
            and all(coefs.get(key) is value for key, value in items)
            and self.nonlinearities == (gate_nonlinearity, update_nonlinearity)
            and self.dtype == dtype
            and self.readout == readout
            and self.engine_name == engine
        )

    def _single_weights(self):
        """``M1``, ``M2`` and ``MV`` of the single-sequence loop (see the class)."""
        W, U, params = self._W, self.U, self._params
        gate, update = self.engine.gate, self.engine.update
        d, H, dt = self.n_inputs, self.hidden_size, self.dtype
        gs, us = gate.prescale, update.prescale
        # rows: L1, L2 (both h_{t-1}), 1, x_t; columns: gate, update
        M1 = np.zeros((2 * H + 1 + d, 2 * H))
        M1[:H, :H] = M1[H : 2 * H, :H] = gs * U
        M1[:H, H:] = M1[H : 2 * H, H:] = us * U
        M1[2 * H, :H] = gs * params["bias_gate"]
        M1[2 * H, H:] = us * params["bias_update"]
        M1[2 * H + 1 :, :H], M1[2 * H + 1 :, H:] = gs * W, us * W
        # h_t = c (sz_plus_sn - sz z) + z h, z = ps k + sh, c = pu kc + su
        ps, sh = gate.post or (1.0, 0.0)
        pu, su = update.post or (1.0, 0.0)
        sz, sz_plus_sn = self.sz, self.sz + self.sn
        a, b = sz_plus_sn - sz * sh, -sz * ps  # h_t = (a + b k) c + (sh + ps k) h
        M2 = np.zeros((3 * H + 1, 2 * H))  # rows: kc, L1, L2, 1; columns: L1, L2'
        eye = np.arange(H)
        M2[eye, eye], M2[eye, H + eye] = a * pu, b * pu
        for rows in (H + eye, 2 * H + eye):
            M2[rows, eye], M2[rows, H + eye] = sh, ps
        M2[3 * H, :H], M2[3 * H, H:] = a * su, b * su
        MV = np.concatenate([params["V"], params["V"], params["bias_out"][None]])
        return M1.astype(dt), M2.astype(dt), MV.astype(dt)

    def outputs(self, X, lengths):
        """Outputs of sequences ``X`` (n, T, d) with real ``lengths``, shape
        (n, n_outputs)."""
        if len(X) == 1:
            outputs = np.empty((1, self.n_outputs), dtype=self.dtype)
            if self._single is None:  # two threads may both make it: same values
                self._single = self._single_weights()
            if self._single[1].size < _BLAS_THREADED_GEMV:
                self._one(X[0], int(lengths[0]), outputs[0])
            else:
                with one_blas_thread():
                    self._one(X[0], int(lengths[0]), outputs[0])
            return outputs
        with one_blas_thread():
            return self._batch(X, lengths)


    def _workspace(self, T):
        """Rows ``[k | c | L1 | L2 | 1 | x]`` for ``T`` steps and their views."""
        H, dt = self.hidden_size, self.dtype
        width = 4 * H + 1 + self.n_inputs
        ws = getattr(self._local, "ws", None)
        if ws is not None and len(ws[0]) > T:
            return ws
        R = np.zeros((T + 1, width), dtype=dt)
        R[:, 4 * H] = 1.0
        rows = list(R)
        ws = (
            R,
            [r[2 * H :] for r in rows],  # input of M1
            [r[: 2 * H] for r in rows],  # pre-activations, then [k | c]
            [r[:H] for r in rows],  # k
            [r[H:2 * H] for r in rows],  # c
            [r[H : 4 * H + 1] for r in rows],  # input of M2
            [r[2 * H : 4 * H] for r in rows],  # [L1 | L2]
            [r[3 * H : 4 * H] for r in rows],  # L2
        )
        if R.nbytes <= _KEEP_BYTES:
            self._local.ws = ws
        return ws

    def _one(self, x, length, out):
        """Outputs of one sequence ``x`` (T, d) of real ``length`` into ``out`` (C,)."""
        R, m1_in, pre, ks, cs, m2_in, hs, l2s = self._workspace(length)
        H = self.hidden_size
        np.copyto(R[:length, 4 * H + 1 :], x[:length])
        M1, M2, MV = self._single
        gate, update = self.engine.gate, self.engine.update
        dot, multiply, tanh = _dot, np.multiply, np.tanh
        if self.engine.shared_tanh:
            for t in range(length):
                a = pre[t]
                dot(m1_in[t], M1, a)
                tanh(a, a)
                dot(m2_in[t], M2, hs[t + 1])
                multiply(l2s[t + 1], ks[t], l2s[t + 1])
        else:
            for t in range(length):
                dot(m1_in[t], M1, pre[t])
                gate.kernel(ks[t])
                update.kernel(cs[t])
                dot(m2_in[t], M2, hs[t + 1])
                multiply(l2s[t + 1], ks[t], l2s[t + 1])
        if self.readout == "last":
            dot(R[length, 2 * H : 4 * H + 1], MV, out)
            return
        states = R[1 : length + 1, 2 * H : 4 * H]  # [L1 | L2] of the real steps
        read = np.empty(2 * H + 1, self.dtype)
        read[2 * H] = 1.0
        if self.readout == "mean":
            np.add.reduce(states, axis=0, out=read[: 2 * H])
            read[: 2 * H] /= self.dtype.type(length)
        else:  # max of h_t = L1 + L2, as r1 (r2 = 0)
            np.maximum.reduce(states[:, :H] + states[:, H:], axis=0, out=read[:H])
            read[H : 2 * H] = 0.0
        dot(read, MV, out)

    def _batch(self, X, lengths):
        """Outputs of many sequences: :meth:`FastGRNNEngine.readout_state`, chunk by
        chunk."""
        n = len(X)
        P, U, sz, sn, engine = self.P, self.U, self.sz, self.sn, self.batch_engine
        outputs = np.empty((n, self.n_outputs), dtype=self.dtype)
        for start in range(0, n, _PREDICT_CHUNK):
            stop = min(n, start + _PREDICT_CHUNK)
            chunk_lengths = lengths[start:stop]
            T_chunk = int(chunk_lengths.max())
            X_aug = to_time_major(X[start:stop, :T_chunk], self.dtype)
            r = engine.readout_state(X_aug, P, U, sz, sn, chunk_lengths)
            np.matmul(r, self.V, out=outputs[start:stop])
        outputs += self.bias_out
        return outputs


def predictor_for(owner, coefs, gate_nonlinearity, update_nonlinearity, dtype,
                  readout="last", engine="numpy", make_engine=None):
    """The :class:`Predictor` of ``owner``'s current weights, made once and kept.

    Kept (weakly keyed by ``owner``, one per dtype) while ``coefs`` is the same
    dict holding the same arrays and the settings (``engine`` included) are the
    same; assigning a new ``coefs_`` or a new array to one of its keys makes a
    new one. Changing the arrays in place does not. ``engine`` and
    ``make_engine``: see :class:`Predictor`.
    """
    dtype = np.dtype(dtype)
    cached = _PREDICTORS.get(owner)
    if cached is None:
        cached = _PREDICTORS.setdefault(owner, {})
    predictor = cached.get(dtype.char)
    if predictor is None or not predictor.matches(
        coefs, gate_nonlinearity, update_nonlinearity, dtype, readout, engine
    ):
        predictor = Predictor(
            coefs, gate_nonlinearity, update_nonlinearity, dtype, readout, engine,
            make_engine,
        )
        cached[dtype.char] = predictor
    return predictor
