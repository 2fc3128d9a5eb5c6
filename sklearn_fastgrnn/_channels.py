"""The channels the cell reads: the input's, and the change of each.

With change channels (``change_channels_``, resolved by ``fit`` from the
``change_channels`` parameter) a timestep ``x_t`` of ``d`` channels reaches the
cell as ``3 d`` values: ``x_t``; the absolute change ``c_t = |x_t - x_{t-1}|``
of every channel (0 at the first timestep); and its logarithm
``log(c_t + offset)``, ``offset`` being three tenths of the median of the
channel's non-zero absolute changes in the training data
(``change_offsets_``). The cell reads its input through the linear ``W``, and
neither the size of a change nor its order of magnitude is linear in the
values: these channels let a small model see how much a series moves,
whichever way, and the small movements of a quiet series beside the large
ones of a loud series.

Everything after this step (the input map, the windows, ``W``'s rows, the
int8 input format, the streaming state) counts ``3 d`` channels; only the
input a user passes has ``d``. Every prediction path computes the channels as
:func:`with_changes` does: the change in the arithmetic's dtype, its magnitude
capped at the dtype's largest value (two finite inputs of opposite sign near
the float32 maximum give a finite change), and the logarithm in float64, then
rounded to that dtype. The change is translation-free and scales with the
input, the offsets too, and the logarithm turns that scale into a shift, so
the folded standardisation (:mod:`~sklearn_fastgrnn._scaling`) stays exact:
a model trained on ``a * X + b`` reads the channels of ``a * X + b`` as the
other reads those of ``X``.

With envelope channels (``envelope_width_ = w >= 2``, resolved by ``fit``
from ``envelope_width``) each input channel first becomes three: its value,
and its largest and smallest value over the last ``w`` timesteps (the
timesteps there are, at the start of a sequence). A window of the cell reads
``W`` times its values at fixed places, and a peak or a trough moves between
those places from one sequence to the next; the envelope holds it for ``w``
timesteps wherever it fell, and its changes say when it came and went. The
change channels are then taken of all three, so the cell reads ``9 d``
values a timestep. A maximum commutes with any increasing affine map, so the
folded standardisation stays exact (for ``a > 0``).
"""

import numpy as np

from ._statistics import lower_median

#: the values the cell reads of each input channel with change channels: the
#: value, its change and the change's logarithm
PARTS = 3

#: the offset of a channel's logarithm, as a fraction of the median of its
#: non-zero absolute changes (chosen on the accuracy suite of bench_accuracy.py)
OFFSET_FRACTION = 0.3


#: the values of each input channel with envelope channels: the value, and its
#: largest and smallest value over the last ``envelope_width_`` timesteps
ENVELOPE_PARTS = 3


def envelope_width(model):
    """The ``envelope_width_`` of a fitted ``model``: 0 without envelope channels."""
    return int(getattr(model, "envelope_width_", 0))


def n_base_channels(model):
    """Values per timestep of a fitted ``model`` before its change channels."""
    return (ENVELOPE_PARTS if envelope_width(model) else 1) * int(model.n_channels_)


def uses_changes(model):
    """Whether a fitted ``model`` reads change channels (models of release 0.1.0 do not)."""
    return bool(getattr(model, "change_channels_", False))


def offsets_of(model):
    """The ``change_offsets_`` of a fitted ``model`` with change channels, else None."""
    return model.change_offsets_ if uses_changes(model) else None


def n_cell_channels(model):
    """Values the cell reads per timestep of a fitted ``model``."""
    return (PARTS if uses_changes(model) else 1) * n_base_channels(model)


def base_values(model, X3):
    """Sequences ``X3`` with a fitted ``model``'s envelope channels
    (:func:`with_envelope`) when it has them, else ``X3`` itself."""
    return with_envelope(X3, envelope_width(model))


def cell_values(model, X3, base=None):
    """Sequences ``X3`` as a fitted ``model``'s cell reads them: with its
    envelope channels, then the change channels (:func:`with_changes`) of
    those when it has them. ``base``: ``X3``'s :func:`base_values`, when the
    caller has them already."""
    base = base_values(model, X3) if base is None else base
    return with_changes(base, model.change_offsets_) if uses_changes(model) else base


def running_extreme(X3, width, ufunc):
    """``ufunc`` (``np.maximum`` or ``np.minimum``) of each channel of ``X3``
    (n, T, d) over the last ``width`` timesteps, the current one included (the
    timesteps there are, at the start). NaN padding at the end stays NaN.

    By doubling spans: the extreme over ``2 s`` timesteps is that of two spans of
    ``s``, and over ``width`` that of two overlapping spans of the largest power
    of two ``s <= width``, so it costs ``log2(width)`` passes. The result is
    exact: an extreme rounds nothing.
    """
    out, span = X3, 1
    while 2 * span <= width:
        out = _extreme_of_spans(out, span, ufunc)
        span *= 2
    if width > span:
        out = _extreme_of_spans(out, width - span, ufunc)
    return out if out is not X3 else X3.copy()


def _extreme_of_spans(spans, lag, ufunc):
    """``ufunc`` of ``spans[:, t]`` and ``spans[:, t - lag]`` (``spans[:, t]`` for ``t < lag``)."""
    out = spans.copy()
    ufunc(spans[:, lag:], spans[:, :-lag], out=out[:, lag:])
    return out


def with_envelope(X3, width):
    """Sequences ``X3`` (n, T, d) with their envelope channels: (n, T, 3 d), in
    ``X3``'s dtype: the ``d`` values of each timestep, then the largest of
    each channel over the last ``width`` timesteps, then the smallest
    (:func:`running_extreme`). ``width`` below 2 returns ``X3`` itself."""
    if width < 2:
        return X3
    return np.concatenate(
        (X3, running_extreme(X3, width, np.maximum), running_extreme(X3, width, np.minimum)),
        axis=2,
    )


def change_offsets(X3, weights=None):
    """The offset of each channel's logarithm from training sequences ``X3`` (n, T, d).

    :data:`OFFSET_FRACTION` of the median of the channel's non-zero absolute
    changes between real timesteps, each weighted by its sequence's weight
    (``weights``, shape (n,); None: 1 each), at least float32's smallest
    normal number; 1 for a channel that never changes. The offsets keep
    float64 precision (as every export holds them), so that they scale with
    an affine map of float64 input to within float64 rounding: such input
    reads the same log channels once standardised (see
    :meth:`~._scaling.Moments.spread`). The median is the lower weighted median
    (:func:`~sklearn_fastgrnn._statistics.lower_median`), so that a weight of 2
    is a sequence given twice. Returns a float64 array of shape (d,).
    """
    n, T, d = X3.shape
    # the differences in float64, without a float64 copy of X3 first
    changes = np.subtract(X3[:, 1:], X3[:, :-1], dtype=np.float64).reshape(-1, d)
    np.abs(changes, out=changes)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    weights = np.repeat(weights, T - 1)
    offsets = np.ones(d)
    for channel in range(d):
        moves = changes[:, channel]
        kept = (moves > 0) & (weights > 0)  # NaN (padding) compares False
        if kept.any():
            offsets[channel] = OFFSET_FRACTION * lower_median(moves[kept], weights[kept])
    return np.maximum(offsets, float(np.finfo(np.float32).tiny))


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


def log_change(change, offsets, out=None):
    """``log(change + offsets)`` computed in float64, in ``change``'s dtype (into ``out``).

    ``change`` holds capped changes (:func:`capped_change`), ``offsets`` one
    positive value per channel (its last axis). A float64 sum is capped at the
    float64 maximum, so every finite change has a finite logarithm (a float32
    change plus a finite offset does not overflow float64).
    """
    with np.errstate(over="ignore"):  # inf, then capped
        total = np.add(change, offsets, dtype=np.float64)
    if change.dtype == np.float64:
        np.minimum(total, np.finfo(np.float64).max, out=total)
    if out is None:
        out = np.empty_like(change)
    # the logarithm in float64, rounded to out's dtype as it is written
    np.log(total, out=out, casting="same_kind")
    return out


def with_changes(X3, offsets):
    """Sequences ``X3`` (n, T, d) with their change channels: (n, T, 3 d), in
    ``X3``'s float dtype.

    Each timestep holds its ``d`` values, then ``c_t = |x_t - x_{t-1}|`` of each
    channel (0 at ``t = 0``), capped at the dtype's maximum, then
    ``log(c_t + offsets)``; NaN padding stays NaN.
    """
    changes = np.empty_like(X3)
    changes[:, 0] = 0
    capped_change(X3[:, 1:], X3[:, :-1], out=changes[:, 1:])
    # one concatenation: writing the parts of a new array in place, through
    # strided views of a few values each, takes twice as long
    return np.concatenate((X3, changes, log_change(changes, offsets)), axis=2)
