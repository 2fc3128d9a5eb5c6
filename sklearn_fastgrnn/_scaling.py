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


def spread_of(values, weights, axis):
    """Weighted mean and standard deviation over ``axis`` (in float64), NaN ignored.

    ``weights`` broadcast against ``values`` (one per sample). A standard
    deviation that is zero, or negligible against the mean's magnitude, is
    returned as 1 (nothing to standardise).
    """
    values = np.asarray(values, dtype=np.float64)
    real = ~np.isnan(values)
    w = np.broadcast_to(weights, values.shape) * real
    total = w.sum(axis=axis)
    safe = np.where(total > 0, total, 1.0)
    filled = np.where(real, values, 0.0)
    mean = (filled * w).sum(axis=axis) / safe
    centred = np.where(real, values - np.expand_dims(mean, axis), 0.0)
    std = np.sqrt((centred * centred * w).sum(axis=axis) / safe)
    small = std <= _CONSTANT * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(small, 1.0, std)


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
