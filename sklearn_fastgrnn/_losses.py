"""Losses on the logits: weighted cross-entropy, distillation, and the L2 penalty.

Every loss returns its value and writes its gradient with respect to the logits,
which the engine then propagates back through time.
"""

import numpy as np


def log_softmax(logits):
    """Row-wise log-softmax, computed stably (a new array)."""
    out = logits - logits.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def cross_entropy(logits, y, weights, dlogits):
    """Weighted mean cross-entropy ``sum_i w_i * -log softmax(logits_i)[y_i]``.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
    y : ndarray of shape (B,)
        Class indices in ``[0, C)``.
    weights : ndarray of shape (B,)
        Non-negative weights summing to 1.
    dlogits : ndarray of shape (B, C)
        Overwritten with the gradient ``w_i * (softmax(logits_i) - onehot(y_i))``.

    Returns
    -------
    loss : float
    """
    rows = np.arange(len(y))
    logp = log_softmax(logits)
    loss = -float(weights @ logp[rows, y])
    np.exp(logp, out=dlogits)
    dlogits[rows, y] -= 1.0
    dlogits *= weights[:, None]
    return loss


def distillation(logits, y, weights, soft_targets, alpha, temperature, dlogits):
    """Hinton et al.'s distillation loss (``docs/design.md``, section "Loss").

    ``alpha * T**2 * KL(S || softmax(logits / T)) + (1 - alpha) * CE(y, logits)``,
    each term a weighted mean over the batch.

    Parameters
    ----------
    logits, y, weights, dlogits
        As in :func:`cross_entropy`.
    soft_targets : ndarray of shape (B, C)
        Teacher probabilities already softened at ``temperature``.
    alpha : float in [0, 1]
    temperature : float > 0

    Returns
    -------
    loss : float
    """
    loss = (1.0 - alpha) * cross_entropy(logits, y, weights, dlogits)
    dlogits *= 1.0 - alpha
    if alpha == 0:
        return loss
    T = temperature
    logq = log_softmax(logits / T)
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0 * log 0 = 0: a zero soft target contributes nothing
        plogp = np.where(soft_targets > 0, soft_targets * np.log(soft_targets), 0.0)
    kl = (plogp - soft_targets * logq).sum(axis=1)
    loss += alpha * T * T * float(weights @ kl)
    # d/dlogits of T^2 * KL(S || softmax(logits / T)) = T * (softmax(logits / T) - S)
    dsoft = np.exp(logq)
    dsoft -= soft_targets
    dsoft *= (alpha * T) * weights[:, None]
    dlogits += dsoft
    return loss


def l2_penalty(flat, n_weights, alpha, grad):
    """Add ``(alpha / 2) * ||w||^2`` over the weight matrices; returns its value.

    The weight matrices are the first ``n_weights`` entries of the flat vector
    (``W`` or ``W1``, ``W2``; ``U`` or ``U1``, ``U2``; ``V``); biases, ``zeta``
    and ``nu`` are not penalised. ``grad[:n_weights] += alpha * w``.
    """
    if alpha == 0:
        return 0.0
    w = flat[:n_weights]
    grad[:n_weights] += alpha * w
    return 0.5 * alpha * float(w @ w)
