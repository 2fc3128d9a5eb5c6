"""Sparse training: iterative hard thresholding (IHT) of ``W`` and ``U`` inside ``fit``.

When ``sparsity_w`` or ``sparsity_u`` is below 1, ``FastGRNNClassifier.fit``
runs :class:`SparseTraining` (the paper's and EdgeML's schedule: dense, then
IHT, then training on a frozen support); docs/compression.md, section "Sparse
training", states the rules.
"""

import copy
import math
from numbers import Real

import numpy as np


def keep_count(size, fraction):
    """Number of entries that sparsity ``fraction`` keeps out of ``size``.

    ``ceil(fraction * size)`` (EdgeML's count), at least 1; the product is
    rounded to 9 decimals first so that, e.g., ``0.3 * 10`` keeps 3, not 4.
    """
    return max(1, math.ceil(round(fraction * size, 9)))


def support(values, k):
    """Sorted flat indices of the ``k`` entries of largest magnitude.

    Ties are broken deterministically: of two entries with the same magnitude,
    the one with the lower flat (C-order) index is kept.
    """
    order = np.argsort(-np.abs(np.ravel(values)), kind="stable")
    return np.sort(order[:k])


def hard_threshold(matrix, fraction):
    """Copy of ``matrix`` keeping exactly ``keep_count(matrix.size, fraction)`` entries.

    The kept entries are those of largest magnitude (see :func:`support`); all
    others become 0.
    """
    matrix = np.asarray(matrix)
    out = np.zeros_like(matrix)
    kept = support(matrix, keep_count(matrix.size, fraction))
    out.flat[kept] = matrix.flat[kept]
    return out


def sparsity_fractions(estimator, matrix_keys):
    """``{key: fraction kept}`` of the matrices among ``matrix_keys`` trained sparse.

    ``W`` (or each of ``W1``, ``W2``) uses ``sparsity_w`` and ``U`` (or ``U1``,
    ``U2``) ``sparsity_u``; matrices with a fraction of 1 are dense and left out.
    """
    fractions = {}
    for key in matrix_keys:
        fraction = {"W": estimator.sparsity_w, "U": estimator.sparsity_u}.get(key[0], 1.0)
        if fraction < 1.0:
            fractions[key] = float(fraction)
    return fractions


def sparse_keys(model):
    """Names of the ``coefs_`` matrices that a fitted classifier stores sparse."""
    return tuple(sparsity_fractions(model, model.coefs_))


def check_sparsity_phases(phases):
    """Validate ``sparsity_phases`` and return it as a tuple of two floats."""
    message = (
        "sparsity_phases must be a pair (dense_fraction, iht_fraction) of numbers "
        "in [0, 1] whose sum is below 1: the first part of the run trains dense, "
        "the second runs iterative hard thresholding and the rest trains on the "
        f"frozen support. Got {phases!r}."
    )
    if len(phases) != 2 or not all(
        isinstance(p, Real) and not isinstance(p, bool) for p in phases
    ):
        raise ValueError(message)
    dense, iht = float(phases[0]), float(phases[1])
    if not (0.0 <= dense <= 1.0 and 0.0 <= iht <= 1.0 and dense + iht < 1.0):
        raise ValueError(message)
    return dense, iht


class SparseTraining:
    """Iterative hard thresholding of ``W`` and ``U`` during training (EdgeML's schedule).

    The run of ``n_epochs`` epochs has three phases, counted in epochs begun
    since this object was created (so the schedule continues across
    ``partial_fit`` calls and ``warm_start`` fits):

    1. epochs ``[0, floor(dense * n_epochs))``: dense training;
    2. up to ``floor((dense + iht) * n_epochs)``: after every ``interval``-th
       optimiser step (the first step of the phase included) each sparse matrix
       is hard-thresholded to its ``keep_count`` largest-magnitude entries; after
       the other steps the current support is re-applied (pruned entries set to
       0);
    3. the rest: a last thresholding fixes the support, the optimiser state of
       the pruned entries is zeroed and their gradient is masked before every
       step, so they stay exactly 0 (the optimiser can not revive them).

    Parameters
    ----------
    layout : ParameterLayout
        Where each matrix lives in the flat parameter vector.
    fractions : dict
        ``{matrix key: fraction of entries kept}`` (see :func:`sparsity_fractions`).
    phases : tuple of float
        ``(dense, iht)`` fractions of the run.
    interval : int
        Optimiser steps between two thresholdings in phase 2.
    n_epochs : int
        Length of the run in epochs (``max_iter``).
    """

    def __init__(self, layout, fractions, phases, interval, n_epochs):
        self.groups = tuple(
            (layout.offsets[key], math.prod(layout.shapes[key]),
             keep_count(math.prod(layout.shapes[key]), fraction))
            for key, fraction in fractions.items()
        )
        self.interval = interval
        self.dense_end = math.floor(round(phases[0] * n_epochs, 9))
        self.iht_end = math.floor(round((phases[0] + phases[1]) * n_epochs, 9))
        self.config = (self.groups, tuple(phases), interval, n_epochs)
        self.epoch = 0
        self.phase = 1
        self.steps = 0
        self.pruned = np.empty(0, dtype=np.intp)
        self.frozen = False

    @classmethod
    def for_run(cls, estimator, layout, resume, n_epochs):
        """The sparse-training state for one ``fit``/``partial_fit`` call, or None.

        None when every matrix is dense. When ``resume`` and the estimator holds
        the state of an identical schedule, a copy of it continues; otherwise a
        new schedule of ``n_epochs`` epochs starts.
        """
        phases = check_sparsity_phases(estimator.sparsity_phases)
        fractions = sparsity_fractions(estimator, layout.weight_keys)
        if not fractions:
            return None
        new = cls(layout, fractions, phases, int(estimator.iht_interval), n_epochs)
        previous = getattr(estimator, "_sparse_training", None) if resume else None
        if previous is not None and previous.config == new.config:
            return copy.deepcopy(previous)
        return new

    def begin_epoch(self, flat, optimizer):
        """Enter the phase of the next epoch; True if the support was frozen now."""
        epoch = self.epoch
        self.epoch += 1
        if epoch < self.dense_end:
            self.phase = 1
        elif epoch < self.iht_end:
            self.phase = 2
        else:
            self.phase = 3
            if not self.frozen:
                self.threshold(flat)
                # Adam's moments or SGD's velocity would keep moving a masked entry
                for name in ("m", "v", "velocity"):
                    state = getattr(optimizer, name, None)
                    if state is not None:
                        state[self.pruned] = 0
                self.frozen = True
                return True
        return False

    def before_step(self, grad):
        """Mask the gradient of the pruned entries once the support is frozen."""
        if self.frozen:
            grad[self.pruned] = 0

    def after_step(self, flat):
        """Threshold or re-apply the support after an optimiser step (phase 2)."""
        if self.phase == 2:
            if self.steps % self.interval == 0:
                self.threshold(flat)
            else:
                flat[self.pruned] = 0
            self.steps += 1

    def threshold(self, flat):
        """Hard-threshold every sparse matrix of ``flat`` in place; update the support."""
        pruned = []
        for offset, size, k in self.groups:
            block = flat[offset : offset + size]
            outside = np.ones(size, dtype=bool)
            outside[support(block, k)] = False
            out = np.flatnonzero(outside)
            block[out] = 0
            pruned.append(out + offset)
        self.pruned = np.concatenate(pruned)
