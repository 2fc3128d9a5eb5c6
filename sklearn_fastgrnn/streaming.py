"""Streaming: the cell fed one timestep at a time, for many independent streams.

A :class:`Streamer` (from ``model.streamer()``) holds, for each stream, what
the cell needs to go on: the hidden state ``h``, the readout so far (the sum
of the states for ``readout="mean"``, their maximum for ``"max"``), the number
of cell steps taken, and the timesteps of the window being filled
(``window_`` timesteps make one cell step). After every :meth:`Streamer.update`
it gives what the model's ``predict_proba`` (classifier) or ``predict``
(regressor) gives for the sequence seen so far: a partly filled window is
completed as ``predict`` completes the last window of a sequence (its last
timestep repeated) for that answer, and committed to the state only when full.

The state of every stream is one row of :attr:`Streamer.state`, which can be
read and written (to move streams between processes), and a streamer pickles
with its model, so a pickled streamer resumes exactly where it stopped.

Thread safety: a streamer is a mutable object with no lock: use one per thread,
or serialise the calls. Several streamers of one model are independent.
"""

import numpy as np

from ._nonlinearities import NONLINEARITIES, scalar_sigmoid

__all__ = ["Streamer"]


def _effective(coefs, key):
    """``W`` or ``U`` of a ``coefs_`` dict (the product of the factors when low rank)."""
    if key in coefs:
        return np.asarray(coefs[key], dtype=np.float64)
    return np.asarray(coefs[key + "1"], np.float64) @ np.asarray(coefs[key + "2"], np.float64)


class CellStream:
    """The cell's state for ``n_streams`` streams: the arithmetic of :class:`Streamer`.

    Parameters
    ----------
    coefs : dict of ndarray
        A fitted model's ``coefs_``.
    gate_nonlinearity, update_nonlinearity : str
    readout : {"last", "mean", "max"}
    window : int
        Timesteps per cell step.
    n_streams : int
    dtype : numpy dtype
        Arithmetic dtype (float32 or float64).
    """

    def __init__(self, coefs, gate_nonlinearity, update_nonlinearity, readout, window,
                 n_streams, dtype):
        dt = self.dtype = np.dtype(dtype)
        self.W = _effective(coefs, "W").astype(dt)
        self.U = _effective(coefs, "U").astype(dt)
        self.bias_gate = np.asarray(coefs["bias_gate"], dt)
        self.bias_update = np.asarray(coefs["bias_update"], dt)
        sz, sn = scalar_sigmoid(coefs["zeta"]), scalar_sigmoid(coefs["nu"])
        self.sz, self.sz_plus_sn = dt.type(sz), dt.type(sz + sn)
        self.V, self.bias_out = np.asarray(coefs["V"], dt), np.asarray(coefs["bias_out"], dt)
        self.gate = NONLINEARITIES[gate_nonlinearity]
        self.update_ = NONLINEARITIES[update_nonlinearity]
        self.readout, self.window = readout, int(window)
        self.n_inputs, self.hidden_size = self.W.shape
        self.n_channels = self.n_inputs // self.window
        self.n_streams = int(n_streams)
        self.reset()

    # -- state ---------------------------------------------------------------
    def reset(self, streams=None):
        """Start ``streams`` (indices; None for all) from an empty sequence."""
        if streams is None:
            n, H, dt = self.n_streams, self.hidden_size, self.dtype
            k, d = self.window, self.n_channels
            self.h = np.zeros((n, H), dt)
            self.pool = np.zeros((n, H), dt)  # sum of the states, or their maximum
            self.steps = np.zeros(n, np.int64)  # cell steps committed
            self.buffer = np.zeros((n, k, d), dt)  # the window being filled
            self.filled = np.zeros(n, np.int64)  # its timesteps so far
            return
        self.h[streams] = 0.0
        self.pool[streams] = 0.0
        self.steps[streams] = 0
        self.buffer[streams] = 0.0
        self.filled[streams] = 0

    @property
    def state_size(self):
        """Values in one stream's row of :meth:`get_state`."""
        return 2 * self.hidden_size + 2 + self.window * self.n_channels

    def get_state(self):
        """Every stream's state as one row: ``[h | pool | steps | filled | window]``."""
        n = self.n_streams
        return np.concatenate([
            self.h.astype(np.float64), self.pool.astype(np.float64),
            self.steps[:, None].astype(np.float64), self.filled[:, None].astype(np.float64),
            self.buffer.reshape(n, -1).astype(np.float64),
        ], axis=1)

    def set_state(self, state):
        """Set every stream's state from rows of :meth:`get_state`."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.n_streams, self.state_size):
            raise ValueError(
                f"state has shape {state.shape}; this streamer's is "
                f"({self.n_streams}, {self.state_size}): one row per stream, as "
                "get_state returns it."
            )
        H, k = self.hidden_size, self.window
        counts = state[:, 2 * H : 2 * H + 2]
        if not np.isfinite(state).all() or (counts < 0).any() or (
            counts != np.round(counts)).any() or (counts[:, 1] >= k).any():
            raise ValueError(
                "state holds non-finite values or invalid counts: it was not made "
                "by get_state of a streamer of this model."
            )
        self.h[...] = state[:, :H]
        self.pool[...] = state[:, H : 2 * H]
        self.steps[...] = counts[:, 0]
        self.filled[...] = counts[:, 1]
        self.buffer[...] = state[:, 2 * H + 2 :].reshape(self.buffer.shape)

    # -- arithmetic ------------------------------------------------------------
    def _cell(self, h, x):
        """``h_t`` from ``h_{t-1}`` (m, H) and the step's input ``x`` (m, n_inputs)."""
        pre = x @ self.W
        pre += h @ self.U
        z = self._nonlinearity(self.gate, pre + self.bias_gate)
        c = self._nonlinearity(self.update_, pre + self.bias_update)
        return (self.sz_plus_sn - self.sz * z) * c + z * h

    @staticmethod
    def _nonlinearity(spec, a):
        if spec.prescale != 1:
            a *= a.dtype.type(spec.prescale)
        spec.kernel(a)
        if spec.post is not None:
            a *= a.dtype.type(spec.post[0])
            a += a.dtype.type(spec.post[1])
        return a

    def _pooled(self, pool, steps, h):
        """The readout of ``steps`` committed states whose sum or maximum is ``pool``."""
        if self.readout == "last":
            return h
        if self.readout == "mean":
            return pool / np.maximum(steps, 1)[:, None].astype(self.dtype)
        return np.where((steps > 0)[:, None], pool, 0.0).astype(self.dtype, copy=False)

    def _commit(self, rows, h_new):
        """Make ``h_new`` the state of the streams ``rows`` (one more cell step)."""
        if self.readout == "mean":
            self.pool[rows] += h_new
        elif self.readout == "max":
            first = self.steps[rows] == 0
            self.pool[rows] = np.where(first[:, None], h_new, np.maximum(self.pool[rows], h_new))
        self.h[rows] = h_new
        self.steps[rows] += 1

    def push(self, x):
        """Add one timestep ``x`` (n_streams, n_channels) to every stream.

        A row that is all NaN adds nothing to its stream.
        """
        active = ~np.isnan(x).all(axis=1)
        rows = np.flatnonzero(active)
        if not rows.size:
            return
        self.buffer[rows, self.filled[rows]] = x[rows]
        self.filled[rows] += 1
        full = rows[self.filled[rows] == self.window]
        if full.size:
            window = self.buffer[full].reshape(len(full), -1)
            self._commit(full, self._cell(self.h[full], window))
            self.filled[full] = 0

    def outputs(self):
        """The outputs ``readout @ V + bias_out`` of every stream now, (n_streams, n_outputs).

        A stream with a partly filled window gets the outputs of its sequence
        so far: the window completed with its last timestep, not committed.
        """
        h, pool, steps = self.h, self.pool, self.steps
        partial = np.flatnonzero(self.filled > 0)
        if partial.size:
            h, pool, steps = h.copy(), pool.copy(), steps.copy()
            buffer = self.buffer[partial]  # a copy: fill the rest with the last step
            filled = self.filled[partial]
            k = np.arange(self.window)
            last = buffer[np.arange(len(partial)), filled - 1]
            buffer = np.where((k[None, :] >= filled[:, None])[:, :, None], last[:, None, :],
                              buffer)
            h_new = self._cell(h[partial], buffer.reshape(len(partial), -1))
            if self.readout == "mean":
                pool[partial] += h_new
            elif self.readout == "max":
                first = steps[partial] == 0
                pool[partial] = np.where(first[:, None], h_new,
                                         np.maximum(pool[partial], h_new))
            h[partial] = h_new
            steps[partial] += 1
        return self._pooled(pool, steps, h) @ self.V + self.bias_out


class Streamer:
    """Predictions of a fitted model, updated one timestep at a time.

    Made by ``model.streamer(n_streams)``; see the module docstring.

    Parameters
    ----------
    model : FastGRNNClassifier or FastGRNNRegressor
        Fitted.
    n_streams : int, default=1
        Independent streams, one row of the input of :meth:`update` each.
    dtype : {"float64", "float32"}, default="float64"
        Arithmetic precision.

    Attributes
    ----------
    n_streams : int
    n_timesteps_seen_ : ndarray of shape (n_streams,)
        Timesteps each stream has received since its last reset.
    """

    def __init__(self, model, n_streams=1, dtype="float64"):
        if not (isinstance(n_streams, (int, np.integer)) and not isinstance(n_streams, bool)
                and n_streams >= 1):
            raise ValueError(f"n_streams must be a positive integer, got {n_streams!r}.")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
        model._check_nonlinearities()
        self.model = model
        self.n_streams = int(n_streams)
        self._cell = CellStream(
            model.coefs_, model.gate_nonlinearity, model.update_nonlinearity,
            model.readout, getattr(model, "window_", 1), n_streams, dtype,
        )
        self.n_timesteps_seen_ = np.zeros(self.n_streams, np.int64)

    def _timestep(self, x):
        """``x`` as (n_streams, n_channels) in the arithmetic dtype, checked."""
        x = np.asarray(x, dtype=np.float64)
        d = self.model.n_channels_
        one = x.ndim == 1 and self.n_streams == 1
        if one:
            x = x[None]
        if x.shape != (self.n_streams, d):
            expected = f"({d},) or " if self.n_streams == 1 else ""
            raise ValueError(
                f"x has shape {x.shape}; one timestep of {self.n_streams} stream(s) is "
                f"{expected}({self.n_streams}, {d}): a row of {d} channels per stream."
            )
        nan = np.isnan(x)
        partly = nan.any(axis=1) & ~nan.all(axis=1)
        if partly.any() or np.isinf(x).any():
            bad = int(np.flatnonzero(partly | np.isinf(x).any(axis=1))[0])
            raise ValueError(
                f"The timestep of stream {bad} holds NaN in some channels only, or "
                "inf. A row of NaN means no new timestep for that stream; otherwise "
                "every channel must be finite."
            )
        with np.errstate(over="ignore"):
            xc = x.astype(self._cell.dtype)
        if np.isinf(xc).any():
            raise ValueError(
                f"x holds values beyond the range of {self._cell.dtype}; stream with "
                "dtype='float64'."
            )
        return xc, one, ~nan.all(axis=1)

    def update(self, x):
        """Feed one timestep to every stream; the predictions for the sequences so far.

        Parameters
        ----------
        x : array-like of shape (n_streams, n_channels), or (n_channels,) for one stream
            A row of NaN leaves that stream as it was.

        Returns
        -------
        ndarray
            What ``predict_proba`` (classifier) or ``predict`` (regressor) of
            each stream's sequence so far gives: (n_streams, n_classes) or
            (n_streams,) / (n_streams, n_outputs); without the stream axis when
            ``x`` was one row.
        """
        xc, one, active = self._timestep(x)
        with np.errstate(over="ignore", invalid="ignore"):
            self._cell.push(xc)
        self.n_timesteps_seen_ += active
        predictions = self.predictions()
        return predictions[0] if one else predictions

    def predictions(self):
        """The predictions of every stream now, without feeding anything."""
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = self._cell.outputs()
        return self.model._stream_predictions(outputs)

    def reset(self, streams=None):
        """Start ``streams`` (an index, indices, or None for all) from an empty sequence."""
        if streams is not None:
            streams = np.atleast_1d(streams)
        self._cell.reset(streams)
        self.n_timesteps_seen_[slice(None) if streams is None else streams] = 0

    @property
    def state(self):
        """Every stream's state, one row each (a copy; assign to restore)."""
        return np.column_stack([self._cell.get_state(), self.n_timesteps_seen_])

    @state.setter
    def state(self, value):
        value = np.asarray(value, dtype=np.float64)
        if value.ndim != 2 or value.shape[1] != self._cell.state_size + 1:
            raise ValueError(
                f"state must have shape ({self.n_streams}, {self._cell.state_size + 1}), "
                f"as the state attribute returns it; got {value.shape}."
            )
        seen = value[:, -1]
        if not (np.isfinite(seen).all() and (seen >= 0).all()):
            raise ValueError("state holds an invalid count of timesteps seen.")
        self._cell.set_state(value[:, :-1])
        self.n_timesteps_seen_[...] = seen.astype(np.int64)
