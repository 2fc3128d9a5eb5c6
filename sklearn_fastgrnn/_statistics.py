"""The weighted median the fitted input statistics share."""

import numpy as np


def lower_median(values, weights):
    """The lower weighted median of ``values``: the smallest value with at
    least half the total weight at or below it.

    ``values`` and ``weights`` are 1-D of one length, not empty, the weights
    positive, in any unit and float dtype: weights in proportion to whole
    numbers pick what the values repeated that many times pick (the weights
    are taken as known to float32's precision). Equal weights take a partition
    (the ``(m - 1) // 2``-th smallest of ``m``), not a sort.
    """
    if (weights == weights[0]).all():
        middle = (values.size - 1) // 2
        return np.partition(values, middle)[middle]
    order = np.argsort(values, kind="stable")
    total = np.cumsum(weights[order], dtype=np.float64)  # float32 weights too
    # the weights are known to float32's precision (the fit's are in its dtype,
    # float32 by default) and their running sum is off by up to about m
    # roundings: within that of half the total counts as half (weights of 0.1
    # add up to 0.6000000000000001), so weights in any unit pick what their
    # repetitions pick
    slack = (np.finfo(np.float32).eps + values.size * np.finfo(np.float64).eps) * total[-1]
    return values[order[np.searchsorted(total, 0.5 * total[-1] - slack)]]
