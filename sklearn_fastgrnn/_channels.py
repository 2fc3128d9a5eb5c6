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


def capped_change(x, previous, out=None):
    """``|x - previous|`` of two float arrays of one dtype, capped at its maximum
    (into ``out``).

    The difference of two floats rounded once to their format is the float64
    difference rounded to it (float64 has more than twice float32's precision,
    so the double rounding of the C code and the ONNX graph gives the same
    numbers), and an overflow gives infinity, which the cap brings back.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf, then capped; NaN stays
        out = np.subtract(x, previous, out=out)
    np.abs(out, out=out)
    np.minimum(out, np.finfo(out.dtype).max, out=out)
    return out


def with_changes(X3):
    """Sequences ``X3`` (n, T, d) with their change channels: (n, T, 2 d), in
    ``X3``'s float dtype.

    Each timestep holds its ``d`` values, then ``|x_t - x_{t-1}|`` of each
    channel (0 at ``t = 0``), capped at the dtype's maximum; NaN padding stays
    NaN.
    """
    changes = np.empty_like(X3)
    changes[:, 0] = 0
    capped_change(X3[:, 1:], X3[:, :-1], out=changes[:, 1:])
    # one concatenation: writing the two halves of a new array in place, through
    # strided views of a few values each, takes twice as long
    return np.concatenate((X3, changes), axis=2)
