"""The stopping rule: the best value of a monitored quantity, and a patience counter.

Training watches one smooth quantity after each epoch: the training loss, the
validation loss, or a validation score. :class:`PlateauMonitor` remembers the
best value, the epoch it was reached at and (when asked to) a copy of the
weights then, and counts the epochs since the last improvement of more than
``tol``. It knows nothing of scikit-learn.
"""

import math


def patience_epochs(n_iter_no_change, steps_per_epoch, min_steps):
    """Patience in epochs: ``n_iter_no_change``, but at least ``min_steps`` steps.

    On small data an epoch is only a few optimiser steps, and leaving the
    initial plateau of the loss takes hundreds of steps: counting patience in
    epochs alone stops those runs before they learn anything.
    """
    return max(n_iter_no_change, math.ceil(min_steps / max(steps_per_epoch, 1)))


class PlateauMonitor:
    """Best value, best epoch, best weights and epochs without improvement.

    The watched value is minimised (a loss, or a score with its sign flipped).

    Parameters
    ----------
    tol : float
        An epoch improves when its value beats the best by more than ``tol``
        (``MLPClassifier``'s meaning).
    keep_best : bool
        Keep a copy of the weights of the best epoch (to restore at the end).
    """

    def __init__(self, tol, keep_best=False):
        self.tol = tol
        self.keep_best = keep_best
        self.reset()

    def reset(self):
        """Forget the best value, its weights and the counter."""
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.bad_epochs = 0

    def update(self, value, epoch, weights=None):
        """Record the ``value`` of (1-based) ``epoch``; True if it improved enough.

        The best value and weights follow every strict improvement; the counter
        is reset only by an improvement of more than ``tol``.
        """
        if self.best is None:
            improved = better = True
        else:
            gain = self.best - value
            better = gain > 0
            improved = gain > self.tol
        if better:
            self.best, self.best_epoch = value, epoch
            if self.keep_best and weights is not None:
                self.best_weights = weights.copy()
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return improved

    def plateaued(self, patience):
        """True once ``patience`` epochs in a row did not improve enough."""
        return self.bad_epochs >= patience
