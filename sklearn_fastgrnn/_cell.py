"""Forward pass and exact backpropagation through time of the FastGRNN cell.

Row-vector convention (``docs/design.md``, "The cell")::

    pre_t = x_t @ W + h_{t-1} @ U
    z_t   = gate(pre_t + bias_gate)
    c_t   = update(pre_t + bias_update)
    h_t   = (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t + z_t * h_{t-1}
    logits = h_T @ V + bias_out

Nothing in this module knows about scikit-learn or about the loss: the engine
turns parameters and a time-major batch into logits, and the gradient of any loss
with respect to those logits into the gradient of every parameter.

How it is made fast (see ``docs/performance.md``):

- inputs are time-major, ``(T, B, d + 1)``, with a trailing column of ones, so one
  matmul call gives ``x_t @ W`` plus the gate and update biases for every
  timestep, and one matmul gives ``[dW; sum(dpre)]`` after the backward loop;
- pre-activations live in a ``(T, 2, B, H)`` buffer: the gate and update halves
  of a step are contiguous ``(B, H)`` blocks (a ufunc on a strided view costs
  about 0.7 us more per call); one ``h @ U`` a step serves both halves, and when
  both non-linearities are tanh-based one ``np.tanh`` call evaluates both;
- only the recurrence loops in Python, with ``np.dot`` (about 1 us cheaper than
  ``np.matmul`` on small matrices), positional ``out=`` and per-step views made
  once per workspace; the elementwise factors of the backward pass are computed
  for blocks of timesteps that fit in the L2 cache;
- every buffer is preallocated per batch shape and written in place; scalars are
  0-d arrays of the working dtype.
"""

import math
import threading
import weakref

import numpy as np

from ._nonlinearities import NONLINEARITIES, scalar_sigmoid
from ._threads import one_blas_thread

# Bytes of one (timesteps, batch, hidden) block of backward factors: keeps the
# elementwise work of the backward pass inside the L2 cache.
_BLOCK_BYTES = 128 * 1024
# Sequences per chunk at prediction time: bounds the memory of predict on big X.
_PREDICT_CHUNK = 1024


class ParameterLayout:
    """Names, shapes and offsets of the cell's parameters inside one flat vector.

    Weight matrices (the entries the L2 penalty acts on) come first, so that the
    penalty is one slice of the flat vector: ``flat[:n_weights]``.

    Parameters
    ----------
    n_channels : int
        Input size ``d``.
    hidden_size : int
        Hidden size ``H``.
    n_classes : int
        Output size ``C`` (at least 2).
    w_rank, u_rank : int or None
        Rank of ``W = W1 @ W2`` and ``U = U1 @ U2``; None means full rank.
    """

    def __init__(self, n_channels, hidden_size, n_classes, w_rank=None, u_rank=None):
        d, H, C = n_channels, hidden_size, n_classes
        self.n_channels, self.hidden_size, self.n_classes = d, H, C
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

    ``scheme="chrono"`` is the same but for the gate bias, which spreads the
    memory of the units over ``n_timesteps`` (chrono initialisation, Tallec &
    Ollivier 2018): ``bias_gate = log(u)`` with ``u ~ U(1, max(n_timesteps - 1,
    2))``, so that ``z = sigmoid(bias_gate) = u / (1 + u)`` keeps unit ``j``'s
    state for about ``1 + u_j`` steps (EdgeML's gate bias of 1 keeps every unit
    for about 3.7 steps).
    """
    flat = np.zeros(layout.size, dtype=dtype)
    views = layout.views(flat)
    for key in layout.weight_keys:
        views[key][...] = 0.1 * random_state.standard_normal(layout.shapes[key])
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
    Xa = np.empty((T, n, d + 1), dtype=dtype)
    np.copyto(Xa[:, :, :d], X.transpose(1, 0, 2))
    # isnan on the contiguous X, then a masked copy only when there is padding:
    # 4-8x faster than nan_to_num, which also scans for infinities
    if np.isnan(X).any():
        np.copyto(Xa[:, :, :d], 0.0, where=np.isnan(Xa[:, :, :d]))
    Xa[:, :, d] = 1.0
    return Xa


def _as_scalars(values, dtype):
    """``values`` (a tuple of floats or None) as 0-d arrays of ``dtype``."""
    if values is None:
        return None
    return tuple(np.array(v, dtype=dtype) for v in values)


def _as_scalar_or_none(value, dtype):
    """``value`` as a 0-d array of ``dtype``, or None when it is 1 (nothing to do)."""
    return None if value == 1 else np.array(value, dtype=dtype)


class FastGRNNEngine:
    """Forward pass and BPTT of FastGRNN for one parameter layout and dtype.

    The engine owns its workspaces (one set per batch shape) and is therefore not
    thread-safe; :func:`predict_logits` allocates its own buffers and is.

    Parameters
    ----------
    layout : ParameterLayout
    gate_nonlinearity, update_nonlinearity : str
        Keys of :data:`~sklearn_fastgrnn._nonlinearities.NONLINEARITIES`.
    dtype : numpy dtype
        float32 or float64; every buffer and every scalar uses it.
    """

    def __init__(self, layout, gate_nonlinearity, update_nonlinearity, dtype):
        self.layout = layout
        self.gate = NONLINEARITIES[gate_nonlinearity]
        self.update = NONLINEARITIES[update_nonlinearity]
        self.dtype = dt = np.dtype(dtype)
        self._shared_tanh = self.gate.uses_tanh and self.update.uses_tanh
        # Scalars as 0-d arrays of the working dtype: a Python float costs a
        # conversion in every call, a np.float64 would pick the float64 loop.
        self._gate_post = _as_scalars(self.gate.post, dt)
        self._update_post = _as_scalars(self.update.post, dt)
        self._gate_scale = _as_scalar_or_none(self.gate.prescale, dt)
        self._update_scale = _as_scalar_or_none(self.update.prescale, dt)
        d, H = layout.n_channels, layout.hidden_size
        self._P = np.empty((2, d + 1, H), dtype=dt)
        self._UT = np.empty((H, H), dtype=dt)
        self._workspaces = {}
        self._params_cache = self._grad_cache = (None, None)
        self._last = None

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
        d = lay.n_channels
        W = params["W"] if lay.w_rank is None else params["W1"] @ params["W2"]
        U = params["U"] if lay.u_rank is None else params["U1"] @ params["U2"]
        P = self._P
        P[:, :d] = W
        P[0, d] = params["bias_gate"]
        P[1, d] = params["bias_update"]
        return W, U, P

    # -- workspaces -------------------------------------------------------
    def _workspace(self, T, B):
        """Buffers for a batch of ``B`` sequences of ``T`` steps.

        One set of buffers per batch size, grown to the longest ``T`` seen and
        sliced to ``T`` (slices along the leading time axis stay contiguous).
        """
        H, dt = self.layout.hidden_size, self.dtype
        full = self._workspaces.get(B)
        if full is None or full["T"] < T:
            block = max(1, _BLOCK_BYTES // (B * H * dt.itemsize))
            full = {
                "T": T,
                "A": np.empty((T, 2, B, H), dtype=dt),
                "Hs": np.zeros((T + 1, B, H), dtype=dt),
                "E": np.empty((T, B, H), dtype=dt),
                "DH": np.empty((T, B, H), dtype=dt),
                "Dpre": np.empty((T, B, H), dtype=dt),
                "block": block,
                "Fz": np.empty((block, B, H), dtype=dt),
                "F": np.empty((block, B, H), dtype=dt),
                "G": np.empty((block, B, H), dtype=dt),
                "ones": np.ones(block * B, dtype=dt),
                "hu": np.empty((B, H), dtype=dt),
                "tmp": np.empty((B, H), dtype=dt),
                "gWa": np.empty((self.layout.n_channels + 1, H), dtype=dt),
            }
            # per-step views made once: creating a view costs ~0.1 us, taking
            # one from a list ~0.03 us, and the loops use ~10 a step
            full["steps"] = _step_views(full["A"], list(full["E"]), list(full["Hs"]))
            for key in ("DH", "Dpre", "F"):
                full[key + "_t"] = list(full[key])
            self._workspaces[B] = full
        if T == full["T"]:
            return full
        ws = dict(full)  # a shorter batch: slices of the buffers and of the lists
        for key in ("A", "E", "DH", "Dpre", "DH_t", "Dpre_t"):
            ws[key] = full[key][:T]
        ws["Hs"] = full["Hs"][: T + 1]
        As, Zs, Cs, Es, Hs = full["steps"]
        ws["steps"] = As[:T], Zs[:T], Cs[:T], Es[:T], Hs[: T + 1]
        return ws

    # -- forward ----------------------------------------------------------
    def _recurrence(self, Xa, P, U, sz, K, A, steps, hu, tmp, pad):
        """Run the recurrence; on return ``A[t, 0]`` holds ``z_t``, ``A[t, 1]`` ``c_t``.

        ``A`` has shape (T, 2, B, H): each half of each step is one contiguous
        (B, H) block, because a ufunc on a strided view costs about 0.7 us more
        per call than on a contiguous array. ``steps`` are the per-step views of
        :func:`_step_views`; ``E`` receives ``e_t = h_{t-1} - sigmoid(zeta) *
        c_t``, which BPTT reuses. Without BPTT, ``E`` may repeat one buffer and
        ``Hs`` two (rolling). Returns the last state.
        """
        dt = self.dtype
        sz, K = np.array(sz, dtype=dt), np.array(K, dtype=dt)  # 0-d: see __init__
        gate, update = self.gate, self.update
        gate_post, update_post = self._gate_post, self._update_post
        gate_scale, update_scale = self._gate_scale, self._update_scale
        shared_tanh = self._shared_tanh
        # local names and positional out=: the loop makes ~11 calls a step, an
        # in-place operator (a += b) costs ~0.15 us more than add(a, b, a), and
        # np.dot ~1.2 us less than np.matmul on small matrices
        dot, add, multiply, subtract = np.dot, np.add, np.multiply, np.subtract
        tanh = np.tanh
        # x_t @ W plus bias for every step and half: numpy issues one small BLAS
        # call per (step, half) and writes the (T, 2, B, H) layout directly
        np.matmul(Xa[:, None], P, out=A)
        As, Zs, Cs, Es, Hs = steps
        for t, (a, z, c, e, h, hn) in enumerate(zip(As, Zs, Cs, Es, Hs, Hs[1:])):
            if t:  # h_0 = 0
                dot(h, U, hu)  # one h @ U, shared by both halves
                add(z, hu, z)
                add(c, hu, c)
            if gate_scale is not None:  # sigmoid as 0.5 * tanh(0.5 x) + 0.5
                multiply(z, gate_scale, z)
            if update_scale is not None:
                multiply(c, update_scale, c)
            if shared_tanh:
                tanh(a, a)
            else:
                gate.kernel(z)
                update.kernel(c)
            if gate_post is not None:
                multiply(z, gate_post[0], z)
                add(z, gate_post[1], z)
            if update_post is not None:
                multiply(c, update_post[0], c)
                add(c, update_post[1], c)
            # h_t = K * c + z * e,  e = h - sz * c,  K = sigmoid(zeta) + sigmoid(nu)
            multiply(c, sz, e)
            subtract(h, e, e)
            multiply(e, z, tmp)
            multiply(c, K, hn)
            add(hn, tmp, hn)
            if pad is not None:
                np.copyto(hn, h, where=pad[t])
        return Hs[len(As)]

    def forward(self, flat, Xa, lengths=None):
        """Logits of a time-major batch, keeping what :meth:`backward` needs.

        Parameters
        ----------
        flat : ndarray of shape (n_params,)
        Xa : ndarray of shape (T, B, d + 1)
            Time-major inputs with a trailing column of ones (see
            :func:`to_time_major`).
        lengths : ndarray of shape (B,) or None
            Real length of each sequence; None when no sequence is padded.

        Returns
        -------
        logits : ndarray of shape (B, C)
        """
        T, B, _ = Xa.shape
        params = self._views_of(flat, "_params_cache")
        _, U, P = self.stacked_weights(params)
        sz, sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
        ws = self._workspace(T, B)
        pad = None
        if lengths is not None and lengths.min() < T:
            pad = (np.arange(T)[:, None] >= lengths[None, :])[:, :, None]
        A = ws["A"]
        hT = self._recurrence(
            Xa, P, U, sz, sz + sn, A, ws["steps"], ws["hu"], ws["tmp"], pad
        )
        if pad is not None:
            # A padded step is h_t = h_{t-1}: exactly z = 1, c = 0 in the cell.
            A[:, 0][pad[:, :, 0]] = 1.0
            A[:, 1][pad[:, :, 0]] = 0.0
        self._last = (params, Xa, pad, U, sz, sn, ws)
        logits = hT @ params["V"]
        logits += params["bias_out"]
        return logits

    # -- backward ---------------------------------------------------------
    def backward(self, dlogits, grad):
        """Write into ``grad`` the gradient of the loss whose logit gradient is given.

        Parameters
        ----------
        dlogits : ndarray of shape (B, C)
            Gradient of the loss with respect to the logits of the last
            :meth:`forward` call.
        grad : ndarray of shape (n_params,)
            Overwritten with the gradient of every parameter (flat layout).

        Returns
        -------
        grad : ndarray of shape (n_params,)
        """
        params, Xa, pad, U, sz, sn, ws = self._last
        lay = self.layout
        T, B, d1 = Xa.shape
        d, H = d1 - 1, lay.hidden_size
        K = sz + sn
        g = self._views_of(grad, "_grad_cache")
        A, E, Hs, DH, Dpre = ws["A"], ws["E"], ws["Hs"], ws["DH"], ws["Dpre"]
        tmp = ws["tmp"]
        Z, C = A[:, 0], A[:, 1]
        Zs = ws["steps"][1]
        DHs, Dpres, Fs = ws["DH_t"], ws["Dpre_t"], ws["F_t"]
        gate_d, update_d = self.gate.derivative, self.update.derivative
        dot, add, multiply = np.dot, np.add, np.multiply  # see _recurrence
        ones = ws["ones"]
        neg_sz, K_ = np.array(-sz, dtype=self.dtype), np.array(K, dtype=self.dtype)

        dot(Hs[T].T, dlogits, g["V"])
        dot(ones[:B], dlogits, g["bias_out"])  # sums by BLAS: see gbg below
        dot(dlogits, params["V"].T, DH[T - 1])
        UT = self._UT
        np.copyto(UT, U.T)  # a contiguous U.T makes the per-step product faster

        gbg = g["bias_gate"]
        gbg[...] = 0.0
        s_c = 0.0  # sum(dh * c)
        s_zc = 0.0  # sum(dh * z * c)
        block = ws["block"]
        for t1 in range(T, 0, -block):
            t0 = max(0, t1 - block)
            n = t1 - t0
            Zb, Cb = Z[t0:t1], C[t0:t1]
            Fz, F, G = ws["Fz"][:n], ws["F"][:n], ws["G"][:n]
            # Fz = (h_{t-1} - sz * c) * gate'(z): d h_t / d(gate input)
            multiply(E[t0:t1], gate_d(Zb, G), Fz)
            # Fc = (K - sz * z) * update'(c): d h_t / d(update input)
            multiply(Zb, neg_sz, F)
            add(F, K_, F)
            multiply(F, update_d(Cb, G), F)
            if pad is not None:
                keep = ~pad[t0:t1]
                multiply(Fz, keep, Fz)
                multiply(F, keep, F)
            add(F, Fz, F)
            for t in range(t1 - 1, t0 - 1, -1):
                dh, dpre = DHs[t], Dpres[t]
                multiply(dh, Fs[t - t0], dpre)
                if t:
                    dh_prev = DHs[t - 1]
                    dot(dpre, UT, dh_prev)
                    multiply(dh, Zs[t], tmp)
                    add(dh_prev, tmp, dh_prev)
            DHb = DH[t0:t1]
            multiply(Fz, DHb, Fz)
            # sum over steps and batch as a BLAS product: 8-15x faster than
            # Fz.sum(axis=(0, 1)), which loops over short rows
            add(gbg, dot(ones[: n * B], Fz.reshape(n * B, H)), gbg)
            multiply(DHb, Cb, G)
            s_c += float(add.reduce(G, None))  # G.sum() costs ~1.5 us more
            multiply(G, Zb, G)
            s_zc += float(add.reduce(G, None))

        Dflat = Dpre.reshape(T * B, H)
        Hflat = Hs[:T].reshape(T * B, H)
        if lay.u_rank is None:
            np.dot(Hflat.T, Dflat, out=g["U"])
        else:
            gU = Hflat.T @ Dflat
            np.matmul(gU, params["U2"].T, out=g["U1"])
            np.matmul(params["U1"].T, gU, out=g["U2"])
        # the ones column of Xa makes the last row sum(dpre) over steps and batch
        gWa = np.dot(Xa.reshape(T * B, d1).T, Dflat, out=ws["gWa"])
        gW = gWa[:d]
        if lay.w_rank is None:
            g["W"][...] = gW
        else:
            np.matmul(gW, params["W2"].T, out=g["W1"])
            np.matmul(params["W1"].T, gW, out=g["W2"])
        np.subtract(gWa[d], gbg, out=g["bias_update"])
        g["zeta"][...] = (s_c - s_zc) * sz * (1.0 - sz)
        g["nu"][...] = s_c * sn * (1.0 - sn)
        return grad


def _step_views(A, Es, Hs):
    """Lists of the per-step views of ``A`` (T, 2, B, H): ``A[t]``, ``z_t``, ``c_t``."""
    As = list(A)
    return As, [a[0] for a in As], [a[1] for a in As], Es, Hs  # then E and H steps


def predict_logits(coefs, gate_nonlinearity, update_nonlinearity, X, lengths, dtype):
    """Logits for sequences ``X`` (n, T, d) from a ``coefs_`` dict.

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

    Returns
    -------
    logits : ndarray of shape (n, C)
    """
    return Predictor(coefs, gate_nonlinearity, update_nonlinearity, dtype).logits(X, lengths)


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

    A batch of sequences runs the engine's recurrence in chunks of
    ``_PREDICT_CHUNK`` (buffers per call). One sequence runs a loop of four
    NumPy calls per timestep on a row ``[k | c | L1 | L2 | 1 | x_t]`` per step,
    in per-thread buffers kept between calls:

    - ``[k | c] = kernels([L1 | L2 | 1 | x_t] @ M1)``: the two pre-activations,
      prescaled, from ``h_{t-1} = L1 + L2`` (``L2`` already multiplied by ``k``);
    - ``[L1 | L2'] = [c | L1 | L2 | 1] @ M2`` and ``L2 = k * L2'``: with
      ``z = post_scale * k + post_shift``, ``h_t = c * (K - sz * z) + z * h_{t-1}``
      is ``L1 + k * L2'``, both linear in ``(c, h_{t-1}, 1)`` (the update's own
      post-scaling folded in too);
    - ``logits = [L1 | L2 | 1] @ [V; V; bias_out]`` after the last real step.

    The results equal the batch path's to rounding (a few float32 ulps), not
    bit for bit.

    Parameters
    ----------
    coefs : dict of ndarray
    gate_nonlinearity, update_nonlinearity : str
    dtype : numpy dtype
        Arithmetic dtype.
    """

    def __init__(self, coefs, gate_nonlinearity, update_nonlinearity, dtype):
        self.coefs, self.items = coefs, tuple(coefs.items())
        self.nonlinearities = (gate_nonlinearity, update_nonlinearity)
        H, C = np.shape(coefs["V"])
        d = np.shape(coefs["W"] if "W" in coefs else coefs["W1"])[0]
        w_rank = None if "W" in coefs else np.shape(coefs["W1"])[1]
        u_rank = None if "U" in coefs else np.shape(coefs["U1"])[1]
        layout = ParameterLayout(d, H, C, w_rank, u_rank)
        self.engine = engine = FastGRNNEngine(
            layout, gate_nonlinearity, update_nonlinearity, dtype
        )
        self.dtype = dt = engine.dtype
        params = layout.views(layout.pack(coefs, dt))
        W, U, P = engine.stacked_weights(params)
        self.P, self.U = P.copy(), U  # P is the engine's buffer
        self.sz, self.sn = scalar_sigmoid(params["zeta"]), scalar_sigmoid(params["nu"])
        self.V, self.bias_out = params["V"], params["bias_out"]
        self.n_channels, self.hidden_size, self.n_classes = d, H, C
        self._W, self._params = W, params
        self._single = None  # (M1, M2, MV), made by the first one-sequence call
        self._local = threading.local()

    def matches(self, coefs, gate_nonlinearity, update_nonlinearity, dtype):
        """Whether this predictor was made from these very arrays and settings."""
        items = self.items
        return (
            coefs is self.coefs
            and len(coefs) == len(items)
            and all(coefs.get(key) is value for key, value in items)
            and self.nonlinearities == (gate_nonlinearity, update_nonlinearity)
            and self.dtype == dtype
        )

    def _single_weights(self):
        """``M1``, ``M2`` and ``MV`` of the single-sequence loop (see the class)."""
        W, U, params = self._W, self.U, self._params
        gate, update = self.engine.gate, self.engine.update
        d, H, C, dt = self.n_channels, self.hidden_size, self.n_classes, self.dtype
        gs, us = gate.prescale, update.prescale
        # rows: L1, L2 (both h_{t-1}), 1, x_t; columns: gate, update
        M1 = np.zeros((2 * H + 1 + d, 2 * H))
        M1[:H, :H] = M1[H : 2 * H, :H] = gs * U
        M1[:H, H:] = M1[H : 2 * H, H:] = us * U
        M1[2 * H, :H] = gs * params["bias_gate"]
        M1[2 * H, H:] = us * params["bias_update"]
        M1[2 * H + 1 :, :H], M1[2 * H + 1 :, H:] = gs * W, us * W
        # h_t = c (K - sz z) + z h, z = ps k + sh, c = pu kc + su
        ps, sh = gate.post or (1.0, 0.0)
        pu, su = update.post or (1.0, 0.0)
        sz, K = self.sz, self.sz + self.sn
        a, b = K - sz * sh, -sz * ps  # h_t = (a + b k) c + (sh + ps k) h
        M2 = np.zeros((3 * H + 1, 2 * H))  # rows: kc, L1, L2, 1; columns: L1, L2'
        eye = np.arange(H)
        M2[eye, eye], M2[eye, H + eye] = a * pu, b * pu
        for rows in (H + eye, 2 * H + eye):
            M2[rows, eye], M2[rows, H + eye] = sh, ps
        M2[3 * H, :H], M2[3 * H, H:] = a * su, b * su
        MV = np.concatenate([params["V"], params["V"], params["bias_out"][None]])
        return M1.astype(dt), M2.astype(dt), MV.astype(dt)

    def logits(self, X, lengths):
        """Logits of sequences ``X`` (n, T, d) with real ``lengths``, shape (n, C)."""
        if len(X) == 1:
            logits = np.empty((1, self.n_classes), dtype=self.dtype)
            if self._single is None:  # two threads may both make it: same values
                self._single = self._single_weights()
            if self._single[1].size < _BLAS_THREADED_GEMV:
                self._one(X[0], int(lengths[0]), logits[0])
            else:
                with one_blas_thread():
                    self._one(X[0], int(lengths[0]), logits[0])
            return logits
        with one_blas_thread():
            return self._batch(X, lengths)

    def _workspace(self, T):
        """Rows ``[k | c | L1 | L2 | 1 | x]`` for ``T`` steps and their views."""
        H, dt = self.hidden_size, self.dtype
        width = 4 * H + 1 + self.n_channels
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
        """Logits of one sequence ``x`` (T, d) of real ``length`` into ``out`` (C,)."""
        R, m1_in, pre, ks, cs, m2_in, hs, l2s = self._workspace(length)
        H = self.hidden_size
        np.copyto(R[:length, 4 * H + 1 :], x[:length])
        M1, M2, MV = self._single
        gate, update = self.engine.gate, self.engine.update
        dot, multiply, tanh = _dot, np.multiply, np.tanh
        if self.engine._shared_tanh:
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
        dot(R[length, 2 * H : 4 * H + 1], MV, out)

    def _batch(self, X, lengths):
        """Logits of many sequences: the engine's recurrence, chunk by chunk."""
        n = len(X)
        H, C, dt = self.hidden_size, self.n_classes, self.dtype
        P, U, sz, K = self.P, self.U, self.sz, self.sz + self.sn
        logits = np.empty((n, C), dtype=dt)
        for start in range(0, n, _PREDICT_CHUNK):
            stop = min(n, start + _PREDICT_CHUNK)
            B = stop - start
            chunk_lengths = lengths[start:stop]
            Tc = int(chunk_lengths.max())
            Xa = to_time_major(X[start:stop, :Tc], dt)
            pad = None
            if chunk_lengths.min() < Tc:
                pad = (np.arange(Tc)[:, None] >= chunk_lengths[None, :])[:, :, None]
            A = np.empty((Tc, 2, B, H), dt)
            rolling = list(np.zeros((2, B, H), dt))  # only the running state is kept
            steps = _step_views(
                A, [np.empty((B, H), dt)] * Tc, [rolling[t & 1] for t in range(Tc + 1)]
            )
            hT = self.engine._recurrence(
                Xa, P, U, sz, K, A, steps, np.empty((B, H), dt), np.empty((B, H), dt), pad,
            )
            np.matmul(hT, self.V, out=logits[start:stop])
        logits += self.bias_out
        return logits


def predictor_for(owner, coefs, gate_nonlinearity, update_nonlinearity, dtype):
    """The :class:`Predictor` of ``owner``'s current weights, made once and kept.

    Kept (weakly keyed by ``owner``, one per dtype) while ``coefs`` is the same
    dict holding the same arrays; assigning a new ``coefs_`` or a new array to
    one of its keys makes a new one. Changing the arrays in place does not.
    """
    dtype = np.dtype(dtype)
    cached = _PREDICTORS.get(owner)
    if cached is None:
        cached = _PREDICTORS.setdefault(owner, {})
    predictor = cached.get(dtype.char)
    if predictor is None or not predictor.matches(
        coefs, gate_nonlinearity, update_nonlinearity, dtype
    ):
        predictor = Predictor(coefs, gate_nonlinearity, update_nonlinearity, dtype)
        cached[dtype.char] = predictor
    return predictor
