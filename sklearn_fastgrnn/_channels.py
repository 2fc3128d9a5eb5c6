"""The channels the cell reads: the input's, and the absolute change of each.

With change channels (``change_channels_``, resolved by ``fit`` from the
``change_channels`` parameter) a timestep ``x_t`` of ``d`` channels reaches the
cell as ``2 d`` values: ``x_t``, then ``|x_t - x_{t-1}|`` of every channel
(0 at the first timestep). The cell reads its input through the linear ``W``,
and the size of a change is not linear in the values: this channel lets a
small model see how much a series moves, whichever way.

Everything after this step (the input map, the windows, ``W``'s rows, the
int8 input format, the streaming state) counts ``2 d`` channels; only the
input a user passes has ``d``. Every prediction path computes the change as
:func:`with_changes` does: in float64, its magnitude capped at the largest
value of the arithmetic dtype (so that two finite inputs of opposite sign
near the float32 maximum give a finite change), then rounded to that dtype.
The change is translation-free and scales with the input, so the folded
standardisation (:mod:`~sklearn_fastgrnn._scaling`) stays exact: a model
trained on ``a * X + b`` reads the changes of ``a * X + b`` as the other reads
those of ``X``.
"""

import numpy as np


def uses_changes(model):
    """Whether a fitted ``model`` reads change channels (models of release 0.1.0 do not)."""
    return bool(getattr(model, "change_channels_", False))


def n_cell_channels(model):
    """Values the cell reads per timestep of a fitted ``model``."""
    return (2 if uses_changes(model) else 1) * int(model.n_channels_)


def capped_change(x, previous, dtype):
    """``|x - previous|`` computed in float64, capped at ``dtype``'s maximum, in ``dtype``."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf, then capped; NaN stays
        change = np.abs(np.subtract(x, previous, dtype=np.float64))
    np.minimum(change, float(np.finfo(dtype).max), out=change)
    return change.astype(dtype, copy=False)


def with_changes(X3, dtype=None):
    """Sequences ``X3`` (n, T, d) with their change channels: (n, T, 2 d).

    Each timestep holds its ``d`` values, then ``|x_t - x_{t-1}|`` of each
    channel (0 at ``t = 0``); NaN padding stays NaN. ``dtype`` (default: that
    of ``X3``) is the dtype of the result, whose maximum caps the changes.
    """
    dtype = np.dtype(X3.dtype if dtype is None else dtype)
    n, T, d = X3.shape
    out = np.empty((n, T, 2 * d), dtype)
    out[:, :, :d] = X3
    out[:, 0, d:] = 0
    if T > 1:
        out[:, 1:, d:] = capped_change(X3[:, 1:], X3[:, :-1], dtype)
    return out
