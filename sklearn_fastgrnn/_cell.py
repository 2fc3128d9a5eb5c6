"""Forward pass and exact backpropagation through time of the FastGRNN cell.

Row-vector convention (``../shared/DESIGN.md`` section 2)::

    pre_t = x_t @ W + h_{t-1} @ U
    z_t   = gate(pre_t + bias_gate)
    c_t   = update(pre_t + bias_update)
    h_t   = (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t + z_t * h_{t-1}
    logits = h_T @ V + bias_out

Nothing in this module knows about scikit-learn or about the loss: the engine
turns parameters and a time-major batch into logits, and the gradient of any loss
with respect to those logits into the gradient of every parameter.

How it is made fast (see ``../shared/PERFORMANCE.md``):

- inputs are time-major, ``(T, B, d + 1)``, with a trailing column of ones, so one
  matmul gives ``x_t @ W`` plus both biases for every timestep at once, and one
  matmul gives ``[dW; sum(dpre)]`` after the backward loop;
- gate and candidate share ``pre_t``: the stacked weights ``[W | W]`` and
  ``[U | U]`` give both halves from one matmul per step, and when both
  non-linearities are tanh-based one ``np.tanh`` call evaluates both;
- only the recurrence loops in Python; the elementwise factors of the backward
  pass are computed for blocks of timesteps that fit in the L2 cache;
- every buffer is preallocated per batch shape and written with ``out=``.
"""

import math

import numpy as np

from ._nonlinearities import NONLINEARITIES

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


def init_parameters(layout, random_state, zeta_init, nu_init, dtype):
    """Initial flat parameter vector with EdgeML's defaults.

    Weight matrices are ``0.1 * N(0, 1)``, ``bias_gate`` and ``bias_update`` are
    ones, ``zeta`` and ``nu`` are ``zeta_init`` and ``nu_init``, and ``bias_out``
    is zero.
    """
    flat = np.zeros(layout.size, dtype=dtype)
    views = layout.views(flat)
    for key in layout.weight_keys:
        views[key][...] = 0.1 * random_state.standard_normal(layout.shapes[key])
    views["bias_gate"][...] = 1.0
    views["bias_update"][...] = 1.0
    views["zeta"][...] = zeta_init
    views["nu"][...] = nu_init
    return flat


def _sigmoid(x):
    x = float(x)
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def to_time_major(X, dtype):
    """Time-major copy of ``X`` (n, T, d) with a trailing column of ones.

    NaN entries (the padding of variable-length sequences) become 0, so that they
    can never reach the arithmetic; the mask in the engine ignores them.
    """
    n, T, d = X.shape
    Xa = np.empty((T, n, d + 1), dtype=dtype)
    Xa[:, :, :d] = X.transpose(1, 0, 2)
    np.nan_to_num(Xa[:, :, :d], copy=False, nan=0.0)
    Xa[:, :, d] = 1.0
    return Xa


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
        self.dtype = np.dtype(dtype)
        self._shared_tanh = self.gate.uses_tanh and self.update.uses_tanh
        self._workspaces = {}
        self._last = None

    # -- parameters -------------------------------------------------------
    def stacked_weights(self, params):
        """Effective ``W``, ``U`` and the stacked ``P = [[W|W]; [bg|bu]]``, ``[U|U]``.

        The gate and update halves are multiplied by their non-linearity's
        ``prescale`` (0.5 for sigmoid, computed through tanh).
        """
        lay = self.layout
        d, H = lay.n_channels, lay.hidden_size
        W = params["W"] if lay.w_rank is None else params["W1"] @ params["W2"]
        U = params["U"] if lay.u_rank is None else params["U1"] @ params["U2"]
        gs, us = self.gate.prescale, self.update.prescale
        P = np.empty((d + 1, 2 * H), dtype=self.dtype)
        np.multiply(W, gs, out=P[:d, :H])
        np.multiply(W, us, out=P[:d, H:])
        np.multiply(params["bias_gate"], gs, out=P[d, :H])
        np.multiply(params["bias_update"], us, out=P[d, H:])
        Us = np.empty((H, 2 * H), dtype=self.dtype)
        np.multiply(U, gs, out=Us[:, :H])
        np.multiply(U, us, out=Us[:, H:])
        return W, U, P, Us

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
            A = np.empty((T, B, 2 * H), dtype=dt)
            full = {
                "T": T,
                "A": A,
                "Z": A[:, :, :H] if self.gate.post is None else np.empty((T, B, H), dt),
                "C": A[:, :, H:] if self.update.post is None else np.empty((T, B, H), dt),
                "Hs": np.zeros((T + 1, B, H), dtype=dt),
                "DH": np.empty((T, B, H), dtype=dt),
                "Dpre": np.empty((T, B, H), dtype=dt),
                "block": block,
                "Fz": np.empty((block, B, H), dtype=dt),
                "F": np.empty((block, B, H), dtype=dt),
                "G": np.empty((block, B, H), dtype=dt),
                "tmp2": np.empty((B, 2 * H), dtype=dt),
                "tmp": np.empty((B, H), dtype=dt),
            }
            self._workspaces[B] = full
        ws = dict(full)
        for key in ("A", "Z", "C", "DH", "Dpre"):
            ws[key] = full[key][:T]
        ws["Hs"] = full["Hs"][: T + 1]
        return ws

    # -- forward ----------------------------------------------------------
    def _recurrence(self, P, Us, Xa, pad, sz, K, A, Z, C, Hs, tmp2, tmp, store):
        """Run the recurrence; with ``store`` every step is kept for BPTT.

        Without ``store``, ``Z`` and ``C`` (used only for non-linearities with a
        ``post`` affine step) hold one step and ``Hs`` two (rolling).
        """
        T, B, _ = Xa.shape
        H = self.layout.hidden_size
        gate, update = self.gate, self.update
        np.matmul(Xa.reshape(T * B, -1), P, out=A.reshape(T * B, 2 * H))
        for t in range(T):
            i = t if store else 0
            h = Hs[t] if store else Hs[t & 1]
            hn = Hs[t + 1] if store else Hs[(t + 1) & 1]
            a = A[t]
            if t:
                np.matmul(h, Us, out=tmp2)
                a += tmp2
            if self._shared_tanh:
                np.tanh(a, out=a)
            else:
                gate.kernel(a[:, :H])
                update.kernel(a[:, H:])
            z = a[:, :H] if gate.post is None else Z[i]
            c = a[:, H:] if update.post is None else C[i]
            if gate.post is not None:
                np.multiply(a[:, :H], gate.post[0], out=z)
                z += gate.post[1]
            if update.post is not None:
                np.multiply(a[:, H:], update.post[0], out=c)
                c += update.post[1]
            # h_t = K * c + z * (h - sz * c),  K = sigmoid(zeta) + sigmoid(nu)
            np.multiply(c, sz, out=tmp)
            np.subtract(h, tmp, out=tmp)
            tmp *= z
            np.multiply(c, K, out=hn)
            hn += tmp
            if pad is not None:
                np.copyto(hn, h, where=pad[t])
        return Hs[T] if store else Hs[T & 1]

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
        params = self.layout.views(flat)
        W, U, P, Us = self.stacked_weights(params)
        sz, sn = _sigmoid(params["zeta"]), _sigmoid(params["nu"])
        ws = self._workspace(T, B)
        pad = None
        if lengths is not None and lengths.min() < T:
            pad = (np.arange(T)[:, None] >= lengths[None, :])[:, :, None]
        hT = self._recurrence(
            P, Us, Xa, pad, sz, sz + sn, ws["A"], ws["Z"], ws["C"], ws["Hs"],
            ws["tmp2"], ws["tmp"], store=True,
        )
        if pad is not None:
            # A padded step is h_t = h_{t-1}: exactly z = 1, c = 0 in the cell.
            ws["Z"][pad[:, :, 0]] = 1.0
            ws["C"][pad[:, :, 0]] = 0.0
        self._last = (flat, params, Xa, pad, W, U, sz, sn, ws)
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
        """
        flat, params, Xa, pad, W, U, sz, sn, ws = self._last
        lay = self.layout
        T, B, d1 = Xa.shape
        d, H = d1 - 1, lay.hidden_size
        K = sz + sn
        g = lay.views(grad)
        Z, C, Hs, DH, Dpre = ws["Z"], ws["C"], ws["Hs"], ws["DH"], ws["Dpre"]
        tmp = ws["tmp"]
        gate_d, update_d = self.gate.derivative, self.update.derivative

        np.matmul(Hs[T].T, dlogits, out=g["V"])
        np.sum(dlogits, axis=0, out=g["bias_out"])
        np.matmul(dlogits, params["V"].T, out=DH[T - 1])
        UT = np.ascontiguousarray(U.T)

        gbg = np.zeros(H, dtype=self.dtype)
        s_c = 0.0  # sum(dh * c)
        s_zc = 0.0  # sum(dh * z * c)
        block = ws["block"]
        for t1 in range(T, 0, -block):
            t0 = max(0, t1 - block)
            n = t1 - t0
            Zb, Cb, Hb = Z[t0:t1], C[t0:t1], Hs[t0:t1]
            Fz, F, G = ws["Fz"][:n], ws["F"][:n], ws["G"][:n]
            # Fz = (h_{t-1} - sz * c) * gate'(z): d h_t / d(gate input)
            np.multiply(Cb, sz, out=Fz)
            np.subtract(Hb, Fz, out=Fz)
            Fz *= gate_d(Zb, G)
            # Fc = (K - sz * z) * update'(c): d h_t / d(update input)
            np.multiply(Zb, -sz, out=F)
            F += K
            F *= update_d(Cb, G)
            if pad is not None:
                keep = ~pad[t0:t1]
                Fz *= keep
                F *= keep
            F += Fz
            for t in range(t1 - 1, t0 - 1, -1):
                np.multiply(DH[t], F[t - t0], out=Dpre[t])
                if t:
                    np.matmul(Dpre[t], UT, out=DH[t - 1])
                    np.multiply(DH[t], Z[t], out=tmp)
                    DH[t - 1] += tmp
            DHb = DH[t0:t1]
            Fz *= DHb
            gbg += Fz.sum(axis=(0, 1))
            np.multiply(DHb, Cb, out=G)
            s_c += float(G.sum())
            G *= Zb
            s_zc += float(G.sum())

        Dflat = Dpre.reshape(T * B, H)
        gU = Hs[:T].reshape(T * B, H).T @ Dflat
        gWa = Xa.reshape(T * B, d1).T @ Dflat
        gW = gWa[:d]
        if lay.w_rank is None:
            g["W"][...] = gW
        else:
            np.matmul(gW, params["W2"].T, out=g["W1"])
            np.matmul(params["W1"].T, gW, out=g["W2"])
        if lay.u_rank is None:
            g["U"][...] = gU
        else:
            np.matmul(gU, params["U2"].T, out=g["U1"])
            np.matmul(params["U1"].T, gU, out=g["U2"])
        g["bias_gate"][...] = gbg
        np.subtract(gWa[d], gbg, out=g["bias_update"])
        g["zeta"][...] = (s_c - s_zc) * sz * (1.0 - sz)
        g["nu"][...] = s_c * sn * (1.0 - sn)
        return grad


def predict_logits(coefs, gate_nonlinearity, update_nonlinearity, X, lengths, dtype):
    """Logits for sequences ``X`` (n, T, d) from a ``coefs_`` dict.

    Allocates its own buffers (thread-safe) and keeps only the running hidden
    state, in chunks of sequences so that memory stays bounded.

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
    n, T, d = X.shape
    H, C = np.shape(coefs["V"])
    w_rank = None if "W" in coefs else np.shape(coefs["W1"])[1]
    u_rank = None if "U" in coefs else np.shape(coefs["U1"])[1]
    layout = ParameterLayout(d, H, C, w_rank, u_rank)
    engine = FastGRNNEngine(layout, gate_nonlinearity, update_nonlinearity, dtype)
    params = layout.views(layout.pack(coefs, engine.dtype))
    _, _, P, Us = engine.stacked_weights(params)
    sz, sn = _sigmoid(params["zeta"]), _sigmoid(params["nu"])
    logits = np.empty((n, C), dtype=engine.dtype)
    for start in range(0, n, _PREDICT_CHUNK):
        stop = min(n, start + _PREDICT_CHUNK)
        B = stop - start
        chunk_lengths = lengths[start:stop]
        Tc = int(chunk_lengths.max())
        Xa = to_time_major(X[start:stop, :Tc], engine.dtype)
        pad = None
        if chunk_lengths.min() < Tc:
            pad = (np.arange(Tc)[:, None] >= chunk_lengths[None, :])[:, :, None]
        A = np.empty((Tc, B, 2 * H), dtype=engine.dtype)
        Z = np.empty((1, B, H), engine.dtype) if engine.gate.post else None
        Cb = np.empty((1, B, H), engine.dtype) if engine.update.post else None
        Hs = np.zeros((2, B, H), dtype=engine.dtype)
        hT = engine._recurrence(
            P, Us, Xa, pad, sz, sz + sn, A, Z, Cb, Hs,
            np.empty((B, 2 * H), engine.dtype), np.empty((B, H), engine.dtype),
            store=False,
        )
        np.matmul(hT, params["V"], out=logits[start:stop])
    logits += params["bias_out"]
    return logits
