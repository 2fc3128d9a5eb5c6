"""The weighted median the fitted input statistics share."""

import numpy as np


def lower_median(values, weights):
    """The lower weighted median of ``values``: the smallest value with at
    least half the total weight at or below it.

    ``values`` and ``weights`` are 1-D of one length, the weights positive, so
    that a weight of 2 is a value given twice. Equal weights take a partition
    (the ``(m - 1) // 2``-th smallest of ``m``), not a sort.
    """
    if (weights == weights[0]).all():
        middle = (values.size - 1) // 2
        return np.partition(values, middle)[middle]
    order = np.argsort(values, kind="stable")
    total = np.cumsum(weights[order])
    return values[order[np.searchsorted(total, 0.5 * total[-1])]]
