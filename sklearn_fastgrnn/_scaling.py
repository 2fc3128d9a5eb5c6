"""Affine maps of the input and the outputs, folded into the cell's weights.

Training sees standardised numbers: each input channel ``x = (raw - mean) /
scale`` and each regression target ``y = (raw - offset) / spread``. When
training ends the two maps are folded into the weights, so that the fitted
``coefs_`` read raw input and give raw outputs, and every prediction path,
export and quantisation stays as it is::

    x @ W + b   = raw @ (W / scale) + (b - (mean / scale) @ W)
    h @ V + c   -> offset + spread * (h @ V + c) = h @ (V * spread) + (offset + spread * c)

(rows of ``W`` divided by the scale of their channel; with ``W = W1 @ W2`` the
rows of ``W1``). :func:`fold` applies both maps and :func:`unfold` inverts them
(to rounding), for training that resumes from folded weights.
"""

from typing import NamedTuple

import numpy as np

# A spread below this (relative to the magnitude of the values) is a constant:
# dividing by it would only amplify rounding (as StandardScaler decides).
_CONSTANT = 10 * np.finfo(np.float64).eps


class Maps(NamedTuple):
    """The input and output maps of a model; a None pair is the identity."""

    input_mean: object = None  # (n_inputs,) per column of W's rows, or None
    input_scale: object = None
    output_offset: object = None  # (n_outputs,), or None
    output_spread: object = None

    @property
    def identity(self):
        return self.input_mean is None and self.output_offset is None


class Moments(NamedTuple):
    """Weighted count, mean and sum of squared deviations of each column.

    What the maps are made of; :meth:`merge` combines the moments of two
    batches exactly (Chan et al.), so ``partial_fit`` keeps running statistics.
    """

    weight: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values, weights, axis):
        """Moments over ``axis`` (in float64); NaN values are left out.

        ``weights`` holds one weight per sample (axis 0 of ``values``, which
        ``axis`` must include). The weighted sums are products with the
        weights, on one float64 copy of the values worked in place (a fresh
        array per pass costs as much as the pass, in page faults).
        """
        # our C-ordered copy, worked in place (through 2D views of it)
        values = np.array(values, dtype=np.float64, order="C")
        weights = np.asarray(weights, dtype=np.float64).reshape(len(values))
        axes = tuple(np.atleast_1d(axis))
        if 0 not in axes:
            raise ValueError(f"the moments are over the samples: axis {axis} lacks 0.")
        within = tuple(a - 1 for a in axes if a != 0)  # axes inside one sample

        def weighted_sum(a):
            flat = weights @ a.reshape(len(a), -1)
            return flat.reshape(a.shape[1:]).sum(axis=within)

        padding = np.isnan(values)
        padded = padding.any()
        if padded:
            np.copyto(values, 0.0, where=padding)
            total = weighted_sum(~padding)
        else:  # every value counts: the weights' sum times the values a sample has
            per_sample = int(np.prod([values.shape[a] for a in axes if a != 0]))
            shape = tuple(n for a, n in enumerate(values.shape) if a not in axes)
            total = np.full(shape, weights.sum() * per_sample)
        safe = np.where(total > 0, total, 1.0)
        mean = weighted_sum(values) / safe
        # the deviations, the mean laid out as one sample (long inner loops)
        one_sample = np.broadcast_to(np.expand_dims(mean, axes), (1, *values.shape[1:]))
        deviations = values.reshape(len(values), -1)
        deviations -= one_sample.reshape(1, -1)
        if padded:
            np.copyto(values, 0.0, where=padding)
        values *= values
        return cls(total, mean, weighted_sum(values))

    def merge(self, other):
        """The moments of both batches together."""
        weight = self.weight + other.weight
        safe = np.where(weight > 0, weight, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.weight / safe
        m2 = self.m2 + other.m2 + delta * delta * self.weight * other.weight / safe
        return Moments(weight, mean, m2)

    def spread(self):
        """Mean and standard deviation, in float64, within float32's range.

        A deviation that is zero, or negligible against the mean's magnitude,
        is 1 (nothing to standardise). The maps are kept to float64 precision,
        so that float64 input under any per-channel affine map ``a * X + b``
        (``a > 0``) standardises to the same numbers to within float64
        rounding, and so to the same float32 training input but at a rounding
        tie: such input trains the same model, bit for bit. Data that differ
        only in summation order (a sample weighted by 2 or repeated) give maps
        equal to float64 rounding in the same way. Both are capped at the
        float32 maximum (:func:`within_float32`).
        """
        std = np.sqrt(self.m2 / np.where(self.weight > 0, self.weight, 1.0))
        small = std <= _CONSTANT * np.maximum(np.abs(self.mean), 1.0)
        return within_float32(self.mean), within_float32(np.where(small, 1.0, std))


_BLOCK = 32_768  # values a block of standardised: the float64 work stays in cache


def standardised(X3, mean, scale, dtype):
    """``(X3 - mean) / scale`` per channel, computed in float64, in ``dtype``.

    ``X3`` is (n, T, d) and ``mean``, ``scale`` are (d,); NaN stays NaN. The
    work goes in blocks of sequences, with the maps tiled over the timesteps
    (one long inner loop a sequence; a scalar for one channel), so that the
    float64 intermediate never leaves the cache. Overflow of ``dtype`` gives
    infinities, which the caller checks for.
    """
    n, T, d = X3.shape
    if d == 1:
        mean, scale = mean[0], scale[0]
    else:
        mean, scale = np.tile(mean, T), np.tile(scale, T)
    rows = X3.reshape(n, T * d)
    out = np.empty((n, T * d), dtype)
    block = max(1, _BLOCK // max(1, T * d))
    work = np.empty((min(block, n), T * d))
    with np.errstate(over="ignore"):
        for start in range(0, n, block):
            part = work[: min(block, n - start)]
            # float64 arithmetic, also for one channel's scalar under NumPy 1's
            # casting rules (which would compute float32 input minus it in float32)
            np.subtract(rows[start : start + block], mean, out=part, dtype=np.float64)
            part /= scale
            out[start : start + block] = part
    return out.reshape(n, T, d)


def within_float32(values):
    """``values`` (float64) capped at float32's largest magnitude.

    A map beyond it could not fold into float32 weights (``W`` divided by a
    scale of 1e100 is 0 in float32): input that large standardises, with the
    capped map, to values beyond float32's range, which training refuses with
    an error saying what to do, instead of fitting a model that reads zeros.
    """
    big = float(np.finfo(np.float32).max)
    return np.clip(values, -big, big)


def moved(new, old, tolerance=0.1):
    """Whether maps ``new`` differ from ``old`` by more than ``tolerance``.

    A mean moved by more than ``tolerance`` of the new scale, or a scale changed
    by more than ``1 + tolerance`` times: ``partial_fit`` then re-expresses the
    weights in the new maps (a smaller change is not worth the re-expression).
    """
    pairs = ((new.input_mean, new.input_scale, old.input_mean, old.input_scale),
             (new.output_offset, new.output_spread, old.output_offset, old.output_spread))
    for mean, scale, old_mean, old_scale in pairs:
        if (mean is None) != (old_mean is None):
            return True
        if mean is None:
            continue
        if (np.abs(mean - old_mean) > tolerance * scale).any() or (
            np.abs(np.log(scale / old_scale)) > np.log1p(tolerance)
        ).any():
            return True
    return False


def _input_rows(maps, n_inputs):
    """Mean and scale of each row of ``W`` (the channels repeated per window step)."""
    reps = n_inputs // len(maps.input_mean)
    return np.tile(maps.input_mean, reps), np.tile(maps.input_scale, reps)


def fold(coefs, maps):
    """``coefs`` (trained on mapped numbers) as weights for raw numbers (new dict)."""
    out = {key: np.array(value, dtype=np.float64) for key, value in coefs.items()}
    dtype = np.asarray(coefs["V"]).dtype
    if maps.input_mean is not None:
        first = "W" if "W" in out else "W1"
        mean, scale = _input_rows(maps, out[first].shape[0])
        W = out["W"] if "W" in out else out["W1"] @ out["W2"]
        shift = (mean / scale) @ W
        out[first] = out[first] / scale[:, None]
        out["bias_gate"] = out["bias_gate"] - shift
        out["bias_update"] = out["bias_update"] - shift
    if maps.output_offset is not None:
        out["V"] = out["V"] * maps.output_spread
        out["bias_out"] = maps.output_offset + maps.output_spread * out["bias_out"]
    return {key: value.astype(dtype) for key, value in out.items()}


def unfold(coefs, maps):
    """The inverse of :func:`fold`: weights for the mapped numbers (new dict)."""
    out = {key: np.array(value, dtype=np.float64) for key, value in coefs.items()}
    dtype = np.asarray(coefs["V"]).dtype
    if maps.input_mean is not None:
        first = "W" if "W" in out else "W1"
        mean, scale = _input_rows(maps, out[first].shape[0])
        W_raw = out["W"] if "W" in out else out["W1"] @ out["W2"]
        shift = mean @ W_raw
        out[first] = out[first] * scale[:, None]
        out["bias_gate"] = out["bias_gate"] + shift
        out["bias_update"] = out["bias_update"] + shift
    if maps.output_offset is not None:
        out["V"] = out["V"] / maps.output_spread
        out["bias_out"] = (out["bias_out"] - maps.output_offset) / maps.output_spread
    return {key: value.astype(dtype) for key, value in out.items()}
