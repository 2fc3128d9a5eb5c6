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
with its model, so a pickled streamer resumes exactly where it stopped. The
row is ``[block_0 | ... | block_{p-1} | previous | history | timesteps seen]``:

- one block ``[h | pool | steps | filled | window]`` per phase of the windows
  (``p = window_phases_``; phase ``j`` reads the stream after ``s_j`` copies
  of its first timestep, and the readout is the mean of the phases');
- ``pool``: the sum or the maximum of the states, 0 for ``readout="last"``;
- ``window``: ``window_`` timesteps as the cell reads them, time-major, each
  ``n_channels_`` values and, with ``change_channels``, their changes and the
  logarithms of these;
- ``previous``: with ``change_channels`` only, the values of the last
  timestep the next change is taken from: its raw values and, with envelope
  channels, its envelope (largest, then smallest values);
- ``history``: with envelope channels only, the raw values of the last
  ``envelope_width_ - 1`` timesteps, oldest first (at a stream's first
  timestep, copies of it).

The streamers of an int8 model (``QuantizedFastGRNN.streamer``, integers) and
of the compiled C code (``compile_predictor(model).streamer``) have the same
layout, so a state moves between them.

Thread safety: a streamer is a mutable object with no lock: use one per thread,
or serialise the calls. Several streamers of one model are independent.
"""

from typing import NamedTuple

import numpy as np

from ._channels import ENVELOPE_PARTS, PARTS, capped_change, envelope_width, log_change, offsets_of
from ._nonlinearities import NONLINEARITIES, scalar_sigmoid
from ._sequences import phase_shifts

__all__ = ["Streamer"]


def _effective(coefs, key):
    """``W`` or ``U`` of a ``coefs_`` dict (the product of the factors when low rank)."""
    if key in coefs:
        return np.asarray(coefs[key], dtype=np.float64)
    return np.asarray(coefs[key + "1"], np.float64) @ np.asarray(coefs[key + "2"], np.float64)


def check_n_streams(n_streams):
    """``n_streams`` as an int, or a ValueError."""
    if not (isinstance(n_streams, (int, np.integer)) and not isinstance(n_streams, bool)
            and n_streams >= 1):
        raise ValueError(f"n_streams must be a positive integer, got {n_streams!r}.")
    return int(n_streams)


def check_timestep(x, n_streams, n_channels, dtype, overflow="raise"):
    """One timestep of every stream, checked, in the arithmetic ``dtype``.

    A row of NaN means "no timestep for this stream"; otherwise every channel
    must be finite. ``overflow="raise"`` refuses values beyond the range of
    ``dtype``; ``"keep"`` lets them become infinite (an int8 model saturates them).

    Returns
    -------
    x : ndarray of shape (n_streams, n_channels), of ``dtype``
    one : bool
        Whether ``x`` was one row of one stream (shape (n_channels,)).
    active : True or ndarray of bool
        True when every stream has a timestep, else which ones do.
    """
    # plain arrays of finite numbers (the usual case) are checked with one sum:
    # it is finite only when every value is
    if type(x) is np.ndarray and (x.dtype == np.float64 or x.dtype == np.float32) and (
        x.shape == (n_streams, n_channels) or (n_streams == 1 and x.shape == (n_channels,))
    ):
        with np.errstate(over="ignore", invalid="ignore"):
            xc = x.astype(dtype, copy=False)
            total = float(np.add.reduce(xc, axis=None))
        if total - total == 0.0:
            one = xc.ndim == 1
            return (xc[None] if one else xc), one, True
    x = np.asarray(x, dtype=np.float64)
    one = x.ndim == 1 and n_streams == 1
    if one:
        x = x[None]
    if x.shape != (n_streams, n_channels):
        expected = f"({n_channels},) or " if n_streams == 1 else ""
        raise ValueError(
            f"x has shape {x.shape}; one timestep of {n_streams} stream(s) is "
            f"{expected}({n_streams}, {n_channels}): a row of {n_channels} channels per stream."
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
        xc = x.astype(dtype)
    if overflow == "raise" and np.isinf(xc).any():
        raise ValueError(
            f"x holds values beyond the range of {np.dtype(dtype)}; stream with "
            "dtype='float64'."
        )
    active = ~nan.all(axis=1)
    return xc, one, True if active.all() else active


def check_state(value, n_streams, hidden_size, window, n_channels, *, phases=1,
                n_raw=0, integer=False, max_steps=None, bound=None):
    """Rows of a streamer's ``state``, checked (float64, shape (n_streams, width)).

    ``n_channels``: the values of one timestep in the window; ``phases``: the
    phase blocks of the row (the model's ``window_phases_``); ``n_raw``: the
    values after the blocks (``previous`` and ``history``), which are the
    input's and need not be integers;
    ``integer``: every value but those must be an integer (an int8 model's state);
    ``max_steps``: the largest count of cell steps the state can hold;
    ``bound``: the largest magnitude of a state value (a float32 state).
    """
    H, k = hidden_size, window
    block = 2 * H + 2 + k * n_channels
    width = phases * block + n_raw + 1
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (n_streams, width):
        raise ValueError(
            f"state must have shape ({n_streams}, {width}), as the state attribute "
            f"returns it; got {value.shape}."
        )
    starts = np.arange(phases) * block + 2 * H
    counts = value[:, np.concatenate([starts, starts + 1])].reshape(-1, 2, phases)
    steps, filled = counts[:, 0], counts[:, 1]
    seen = value[:, -1]
    counted = np.delete(value, np.s_[width - 1 - n_raw : width - 1], axis=1)
    bad = (
        not np.isfinite(value).all()
        or (counts < 0).any() or (counts != np.round(counts)).any()
        or (filled >= k).any()
        or (seen < 0).any() or (seen != np.round(seen)).any()
        or (max_steps is not None and (steps > max_steps).any())
        or (integer and (counted != np.round(counted)).any())
        or (bound is not None and (np.abs(value) > bound).any())
    )
    if not bad and phases > 1:
        # phase j has read the timesteps of phase 0 and, once there is one,
        # its shift's copies of the first
        read = steps * k + filled
        shifts = phase_shifts(k, phases)
        bad = (read != np.where(read[:, :1] > 0, read[:, :1] + shifts, 0)).any()
    if bad:
        raise ValueError(
            "state holds non-finite or out-of-range values or invalid counts: it "
            "was not made by the state of a streamer of this model."
        )
    return value


class Block(NamedTuple):
    """Views of one phase's state in a :class:`CellStream` (every stream's)."""

    h: np.ndarray  # (n_streams, H)
    pool: np.ndarray  # (n_streams, H): sum or maximum of the states
    steps: np.ndarray  # (n_streams,): cell steps committed
    buffer: np.ndarray  # (n_streams, window, cell channels): the window being filled
    filled: np.ndarray  # (n_streams,): its timesteps so far


class CellStream:
    """The cell's state for ``n_streams`` streams: the arithmetic of :class:`Streamer`.

    Each stream has one block of state per phase of the windows (see
    ``window_phases``): phase ``j`` reads the stream after ``s_j`` copies of
    its first timestep, and the readout is the mean of the phases' readouts.

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
    change_offsets : ndarray of shape (n_channels,) or None, default=None
        The model's ``change_offsets_``: the cell reads the change of every
        channel and its logarithm after its values
        (:mod:`~sklearn_fastgrnn._channels`); None: the values only.
    phases : int, default=1
        The model's ``window_phases_``.
    envelope : int, default=0
        The model's ``envelope_width_`` (0: no envelope channels).
    """

    def __init__(self, coefs, gate_nonlinearity, update_nonlinearity, readout, window,
                 n_streams, dtype, change_offsets=None, phases=1, envelope=0):
        dt = self.dtype = np.dtype(dtype)
        W, U = _effective(coefs, "W"), _effective(coefs, "U")
        gate, update = NONLINEARITIES[gate_nonlinearity], NONLINEARITIES[update_nonlinearity]
        self.gate, self.update_ = gate, update
        gs, us = gate.prescale, update.prescale
        # [gate | update] halves side by side, each prescaled for its kernel
        # (by 1 or 0.5: exact), so that one product gives both pre-activations
        self.WW = np.concatenate([gs * W, us * W], axis=1).astype(dt)
        self.UU = np.concatenate([gs * U, us * U], axis=1).astype(dt)
        self.bb = np.concatenate([gs * np.asarray(coefs["bias_gate"], np.float64),
                                  us * np.asarray(coefs["bias_update"], np.float64)]).astype(dt)
        self.shared_tanh = gate.uses_tanh and update.uses_tanh
        sz, sn = scalar_sigmoid(coefs["zeta"]), scalar_sigmoid(coefs["nu"])
        self.sz, self.sz_plus_sn = dt.type(sz), dt.type(sz + sn)
        self.V, self.bias_out = np.asarray(coefs["V"], dt), np.asarray(coefs["bias_out"], dt)
        self.readout, self.window = readout, int(window)
        self.n_inputs, self.hidden_size = W.shape
        self._set_channels(self.n_inputs // self.window, change_offsets, phases, envelope)
        self.n_streams = int(n_streams)
        self.state_dtype = dt  # of h, the pool and the window buffer
        self.reset()

    def _set_channels(self, cell_channels, change_offsets, phases, envelope):
        """``cell_channels`` values per timestep in the window; ``n_channels`` input
        ones; the ``change_offsets`` of the change channels (None without); the
        shifts of the ``phases``; the timesteps of the ``envelope`` (0 without)."""
        self.changes = change_offsets is not None
        self.change_offsets = change_offsets
        self.cell_channels = int(cell_channels)
        self.envelope = int(envelope)
        self.n_base = self.cell_channels // (PARTS if self.changes else 1)
        self.n_channels = self.n_base // (ENVELOPE_PARTS if self.envelope else 1)
        self.shifts = phase_shifts(self.window, int(phases))

    # -- state ---------------------------------------------------------------
    def reset(self, streams=None):
        """Start ``streams`` (indices; None for all) from an empty sequence."""
        if streams is None:
            p, n, H, dt = len(self.shifts), self.n_streams, self.hidden_size, self.state_dtype
            k, d = self.window, self.cell_channels
            # one block per phase: axis 0
            self.h = np.zeros((p, n, H), dt)
            self.pool = np.zeros((p, n, H), dt)  # sum of the states, or their maximum
            self.steps = np.zeros((p, n), np.int64)  # cell steps committed
            self.buffer = np.zeros((p, n, k, d), dt)  # the window being filled
            self.filled = np.zeros((p, n), np.int64)  # its timesteps so far
            # the last timestep's base values (change channels; a width of 0 without)
            self.previous = np.zeros((n, self.n_previous), self.dtype)
            # the raw values of the last envelope - 1 timesteps, oldest first
            self.history = np.zeros((n, max(self.envelope - 1, 0), self.n_channels), self.dtype)
            # each phase's views (h, pool, steps, buffer, filled), made once
            self._blocks = [Block(self.h[j], self.pool[j], self.steps[j], self.buffer[j],
                                  self.filled[j]) for j in range(p)]
            return
        self.h[:, streams] = 0
        self.pool[:, streams] = 0
        self.steps[:, streams] = 0
        self.buffer[:, streams] = 0
        self.filled[:, streams] = 0
        self.previous[streams] = 0
        self.history[streams] = 0

    @property
    def n_previous(self):
        """Base values of the last timestep the state keeps (for the change channels)."""
        return self.n_base if self.changes else 0

    @property
    def n_raw(self):
        """Values of the row after the blocks: ``previous`` and ``history``."""
        return self.n_previous + max(self.envelope - 1, 0) * self.n_channels

    @property
    def block_size(self):
        """Values of one phase's block ``[h | pool | steps | filled | window]``."""
        return 2 * self.hidden_size + 2 + self.window * self.cell_channels

    @property
    def state_size(self):
        """Values in one stream's row of :meth:`get_state`."""
        return len(self.shifts) * self.block_size + self.n_raw

    def get_state(self):
        """Every stream's state as one row: ``[block_0 | ... | block_{p-1} |
        previous | history]``, a block ``[h | pool | steps | filled | window]``
        per phase."""
        n = self.n_streams
        blocks = []
        for j in range(len(self.shifts)):
            blocks += [
                self.h[j].astype(np.float64), self.pool[j].astype(np.float64),
                self.steps[j, :, None].astype(np.float64),
                self.filled[j, :, None].astype(np.float64),
                self.buffer[j].reshape(n, -1).astype(np.float64),
            ]
        return np.concatenate([*blocks, self.previous.astype(np.float64),
                               self.history.reshape(n, -1).astype(np.float64)], axis=1)

    def set_state(self, state):
        """Set every stream's state from rows of :meth:`get_state` (checked by
        :func:`check_state`)."""
        H, size = self.hidden_size, self.block_size
        for j in range(len(self.shifts)):
            block = state[:, j * size : (j + 1) * size]
            self.h[j] = block[:, :H]
            self.pool[j] = block[:, H : 2 * H]
            self.steps[j] = block[:, 2 * H]
            self.filled[j] = block[:, 2 * H + 1]
            self.buffer[j] = block[:, 2 * H + 2 :].reshape(self.buffer[j].shape)
        end = state.shape[1] - (self.n_raw - self.n_previous)
        self.previous[...] = state[:, end - self.n_previous : end]
        self.history[...] = state[:, end:].reshape(self.history.shape)

    # -- arithmetic ------------------------------------------------------------
    def _cell(self, h, x):
        """``h_t`` from ``h_{t-1}`` (m, H) and the step's input ``x`` (m, n_inputs)."""
        H = self.hidden_size
        a = x @ self.WW
        a += h @ self.UU
        a += self.bb
        if self.shared_tanh:
            np.tanh(a, out=a)
        else:
            self.gate.kernel(a[:, :H])
            self.update_.kernel(a[:, H:])
        z, c = a[:, :H], a[:, H:]
        for half, spec in ((z, self.gate), (c, self.update_)):
            if spec.post is not None:
                half *= half.dtype.type(spec.post[0])
                half += half.dtype.type(spec.post[1])
        out = self.sz * z
        np.subtract(self.sz_plus_sn, out, out=out)
        out *= c
        z *= h
        out += z
        return out

    def _with_changes(self, x, first, active):
        """Timestep ``x`` with its change channels (0 at a stream's ``first``
        timestep); the rows ``active`` become the streams' previous timestep."""
        change = capped_change(x, np.where(first[:, None], x, self.previous))
        if active is True:
            self.previous[...] = x
        else:
            self.previous[active] = x[active]
        return np.concatenate([x, change, log_change(change, self.change_offsets)], axis=1)

    def _with_envelope(self, x, first, active):
        """Timestep ``x`` with its envelope channels (the history read as copies
        of ``x`` at a stream's ``first`` timestep); the rows ``active`` move
        their history on by ``x``."""
        history = np.where(first[:, None, None], x[:, None, :], self.history)
        span = np.concatenate([history, x[:, None, :]], axis=1)
        if active is True:
            self.history[...] = span[:, 1:]
        else:
            self.history[active] = span[active, 1:]
        return np.concatenate([x, span.max(axis=1), span.min(axis=1)], axis=1)

    def _input(self, x):
        """A timestep as the cell reads it (the int8 streamer quantises it)."""
        return x

    def _mean(self, pool, steps):
        """The mean of ``steps`` (>= 1) states whose sum is ``pool``."""
        return pool / steps[:, None].astype(self.dtype)

    def _phase_mean(self, readouts):
        """The readout of the model: the mean of the phases' ``readouts``, summed
        in their order."""
        total = readouts[0] + readouts[1]
        for r in readouts[2:]:
            total += r
        total /= total.dtype.type(len(readouts))
        return total

    def _output_layer(self, r):
        """The outputs ``r @ V + bias_out`` of the readouts ``r``."""
        outputs = r @ self.V
        outputs += self.bias_out
        return outputs

    def _pooled(self, pool, steps, h):
        """The readout of ``steps`` committed states whose sum or maximum is ``pool``
        (0 before the first step)."""
        if self.readout == "last":
            return h
        if self.readout == "mean":
            return self._mean(pool, np.maximum(steps, 1))
        return np.where((steps > 0)[:, None], pool, 0).astype(self.state_dtype, copy=False)

    def _commit(self, block, rows, h_new):
        """Make ``h_new`` the state of the phase ``block`` of the streams ``rows``
        (one more cell step)."""
        pool, steps = block.pool, block.steps
        if self.readout == "mean":
            pool[rows] += h_new
        elif self.readout == "max":
            first = steps[rows] == 0
            pool[rows] = np.where(first[:, None], h_new, np.maximum(pool[rows], h_new))
        block.h[rows] = h_new
        steps[rows] += 1

    def push(self, x, active=None):
        """Add one timestep ``x`` (n_streams, n_channels) to every stream.

        ``active``: True when every row is a timestep, a mask of the rows that
        are, or None to take the rows that are not all NaN (a row of NaN adds
        nothing to its stream). At a stream's first timestep, phase ``j``
        reads it ``s_j`` more times first.
        """
        if active is None:
            active = ~np.isnan(x).all(axis=1)
            active = True if active.all() else active
        blocks = self._blocks
        if self.changes or self.envelope or len(blocks) > 1:
            # a stream's first timestep: phase 0 is empty
            first = (blocks[0].steps == 0) & (blocks[0].filled == 0)
        if self.envelope:
            x = self._with_envelope(x, first, active)
        if self.changes:
            x = self._with_changes(x, first, active)
        x = self._input(x)
        self._push_phase(blocks[0], x, active)
        if len(blocks) == 1:
            return
        starting = first if active is True else first & active
        copies = (True if starting.all() else starting) if starting.any() else None
        for block, shift in zip(blocks[1:], self.shifts[1:]):
            if copies is not None:
                for _ in range(shift):
                    self._push_phase(block, x, copies)
            self._push_phase(block, x, active)

    def _push_phase(self, block, x, active):
        """Add the timestep ``x`` to the phase ``block`` of the streams ``active``
        (see :meth:`push`)."""
        k = self.window
        buffer, filled = block.buffer, block.filled
        if active is True:  # every stream: slices, not index arrays
            if k == 1:
                self._commit(block, slice(None), self._cell(block.h, x))
                return
            f = int(filled[0])
            if (filled == f).all():
                buffer[:, f] = x
                filled += 1
                if f + 1 == k:
                    window = buffer.reshape(self.n_streams, -1)
                    self._commit(block, slice(None), self._cell(block.h, window))
                    filled[:] = 0
                return
            active = np.ones(self.n_streams, bool)
        rows = np.flatnonzero(active)
        if not rows.size:
            return
        buffer[rows, filled[rows]] = x[rows]
        filled[rows] += 1
        full = rows[filled[rows] == k]
        if full.size:
            window = buffer[full].reshape(len(full), -1)
            self._commit(block, full, self._cell(block.h[full], window))
            filled[full] = 0

    def outputs(self):
        """The outputs ``readout @ V + bias_out`` of every stream now, (n_streams, n_outputs).

        A stream with a partly filled window gets the outputs of its sequence
        so far: the window completed with its last timestep, not committed.
        """
        blocks = self._blocks
        if len(blocks) == 1:
            return self._output_layer(self._readout(blocks[0]))
        return self._output_layer(self._phase_mean([self._readout(b) for b in blocks]))

    def _readout(self, block):
        """The readout of the phase ``block`` of every stream now (see :meth:`outputs`)."""
        h, pool, steps, filled = block.h, block.pool, block.steps, block.filled
        partial = np.flatnonzero(filled > 0) if self.window > 1 else ()
        if len(partial):
            h, pool, steps = h.copy(), pool.copy(), steps.copy()
            buffer = block.buffer[partial]  # a copy: fill the rest with the last step
            filled = filled[partial]
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
        return self._pooled(pool, steps, h)


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

    #: what values beyond the arithmetic's range do (see check_timestep)
    _overflow = "raise"

    def __init__(self, model, n_streams=1, dtype="float64"):
        n_streams = check_n_streams(n_streams)
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
        model._check_nonlinearities()
        self.model = model
        self.n_streams = n_streams
        self._cell = CellStream(
            model.coefs_, model.gate_nonlinearity, model.update_nonlinearity,
            model.readout, getattr(model, "window_", 1), n_streams, dtype,
            offsets_of(model), getattr(model, "window_phases_", 1), envelope_width(model),
        )
        self.n_timesteps_seen_ = np.zeros(self.n_streams, np.int64)

    def _predictions_of(self, outputs):
        """What the model predicts from the cell's outputs (one row per stream)."""
        return self.model._stream_predictions(outputs)

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
        cell = self._cell
        xc, one, active = check_timestep(x, self.n_streams, cell.n_channels, cell.dtype,
                                         self._overflow)
        with np.errstate(over="ignore", invalid="ignore"):
            cell.push(xc, active)
            outputs = cell.outputs()
        self.n_timesteps_seen_ += active
        predictions = self._predictions_of(outputs)
        return predictions[0] if one else predictions

    def predictions(self):
        """The predictions of every stream now, without feeding anything."""
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = self._cell.outputs()
        return self._predictions_of(outputs)

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
        cell = self._cell
        value = check_state(value, self.n_streams, cell.hidden_size, cell.window,
                            cell.cell_channels, phases=len(cell.shifts),
                            n_raw=cell.n_raw,
                            **self._state_limits())
        cell.set_state(value[:, :-1])
        self.n_timesteps_seen_[...] = value[:, -1].astype(np.int64)

    def _state_limits(self):
        """What :func:`check_state` checks beyond the shape and the counts."""
        return {}
