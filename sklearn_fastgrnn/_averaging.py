"""The weights a fit keeps: an exponential moving average over its epochs.

After each epoch ``n`` of ``fit``, :class:`WeightAverage` adds the weights the
optimiser reached to a moving sum, ``sum = decay * sum + (1 - decay) *
weights`` (from zero), and the average is ``sum / (1 - decay ** n)``: the
epochs' weights with weights ``decay ** age`` that add up to one, so the few
epochs of a short fit are averaged as they are (Adam's bias correction). The
average of the last ten or so epochs (decay 0.9) sits nearer the middle of
the region the optimiser wanders in at the end of training than any one
epoch's weights, and classifies unseen data better (docs/training.md). It
knows nothing of scikit-learn.
"""

import numpy as np


class WeightAverage:
    """Exponential moving average of a run's weights, one update per epoch.

    Parameters
    ----------
    decay : float
        Weight of the previous epochs, in (0, 1).
    """

    def __init__(self, decay):
        self.decay = decay
        self.reset()

    def reset(self):
        """Forget the epochs so far: the next update starts the average again."""
        self._sum = self.weights = None
        self._count = 0

    def as_dtype(self, dtype):
        """A copy of this average, its arrays in ``dtype``."""
        copy = WeightAverage(self.decay)
        if self._sum is not None:
            copy._sum, copy.weights = (np.array(a, dtype=dtype) for a in (self._sum, self.weights))
        copy._count = self._count
        return copy

    def update(self, flat):
        """Average in the weights ``flat`` of one more epoch; returns the average
        (an array of its own, updated in place by later calls)."""
        if self._sum is None:
            self._sum = np.zeros_like(flat)
            self.weights = np.empty_like(flat)
        self._sum *= self.decay
        self._sum += (1 - self.decay) * flat
        self._count += 1
        if self._count == 1:  # one epoch: its weights, to the bit
            np.copyto(self.weights, flat)
        else:
            np.divide(self._sum, 1 - self.decay**self._count, out=self.weights)
        return self.weights
