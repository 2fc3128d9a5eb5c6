"""Losses on the cell's outputs, as small objects, and the L2 penalty.

A loss object knows four things about one task:

- its value on a mini-batch and the gradient with respect to the outputs
  (``loss(outputs, targets, weights, doutputs)``), which the engine then
  propagates back through time;
- its ``baseline``: the loss of the best constant output (predicting the class
  frequencies, or the mean), the level a model that learned nothing sits at;
- a ``quality`` of the outputs (accuracy, or R²) and the quality of that
  constant prediction (``baseline_quality``), for the "learned nothing"
  diagnosis;
- with ``soft`` targets from a teacher, the teacher term of the distillation
  loss (:class:`Distillation`).

``weights`` are non-negative and sum to 1 over the batch (the sample weights,
times the class weights, normalised). ``targets`` are class indices of shape
(B,) for :class:`CrossEntropy`, and (B, n_outputs) arrays for the others.
"""

import numpy as np


def log_softmax(logits):
    """Row-wise log-softmax, computed stably (a new array)."""
    out = logits - logits.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def log_sigmoid(outputs):
    """``log(sigmoid(outputs))``, computed stably (a new array)."""
    return -np.logaddexp(0.0, -outputs)


def cross_entropy(logits, y, weights, dlogits, label_smoothing=0.0):
    """Weighted mean cross-entropy ``sum_i w_i * -log softmax(logits_i)[y_i]``.

    With ``label_smoothing`` ``e``, the cross-entropy against the smoothed
    target ``(1 - e) * onehot(y_i) + e / C``.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
    y : ndarray of shape (B,)
        Class indices in ``[0, C)``.
    weights : ndarray of shape (B,)
        Non-negative weights summing to 1.
    dlogits : ndarray of shape (B, C)
        Overwritten with the gradient ``w_i * (softmax(logits_i) - target_i)``.
    label_smoothing : float in [0, 1), default=0.0

    Returns
    -------
    loss : float
    """
    C, e = logits.shape[1], label_smoothing
    picked = np.arange(0, logits.size, C) + y  # (i, y_i), flattened
    logp = log_softmax(logits)
    per_sample = logp.take(picked)
    if e != 0:
        per_sample = (1.0 - e) * per_sample + (e / C) * logp.sum(axis=1)
    loss = -float(weights @ per_sample)
    np.exp(logp, out=dlogits)
    if e != 0:
        dlogits -= e / C
    dlogits.flat[picked] -= 1.0 - e
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
    return Distillation(CrossEntropy(), alpha, temperature)(
        logits, (y, soft_targets), weights, dlogits
    )


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


def _weighted_mean(targets, weights):
    """Weighted mean of ``targets`` (B, K) over the batch, shape (K,)."""
    return weights @ targets / weights.sum()


class CrossEntropy:
    """Softmax cross-entropy of one label per sample (multi-class, C >= 2 outputs).

    Training (the call) reads each label as ``1 - label_smoothing`` on its
    class and ``label_smoothing / C`` on every class; :meth:`value`, the
    baselines and the quality are those of the labels themselves (the task).
    """

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, outputs, targets, weights, doutputs):
        return cross_entropy(outputs, targets, weights, doutputs, self.label_smoothing)

    def value(self, outputs, targets, weights):
        """The cross-entropy of the labels, without smoothing or gradient
        (``weights`` sum to 1)."""
        return -float(weights @ log_softmax(outputs)[np.arange(len(targets)), targets])

    def baseline(self, targets, weights):
        """Entropy of the weighted class frequencies."""
        p = np.bincount(targets, weights=weights) / float(weights.sum())
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def quality(self, outputs, targets, weights):
        """Weighted accuracy of the arg-max class."""
        return float(weights @ (np.argmax(outputs, axis=1) == targets)) / float(weights.sum())

    def baseline_quality(self, targets, weights):
        """Weighted share of the most frequent class."""
        return float(np.bincount(targets, weights=weights).max()) / float(weights.sum())

    def teacher_term(self, outputs, soft, weights, doutputs, temperature, factor):
        """``T**2 * KL(S || softmax(outputs / T))``; adds ``factor`` times its gradient."""
        T = temperature
        logq = log_softmax(outputs / T)
        with np.errstate(divide="ignore", invalid="ignore"):
            # 0 * log 0 = 0: a zero soft target contributes nothing
            plogp = np.where(soft > 0, soft * np.log(soft), 0.0)
        loss = T * T * float(weights @ (plogp - soft * logq).sum(axis=1))
        # d/doutputs of T^2 * KL(S || softmax(outputs / T)) = T * (softmax(outputs / T) - S)
        dsoft = np.exp(logq)
        dsoft -= soft
        dsoft *= (factor * T) * weights[:, None]
        doutputs += dsoft
        return loss


class BinaryCrossEntropy:
    """Per-label sigmoid cross-entropy, summed over the labels (multilabel).

    ``sum_i w_i * sum_j [log(1 + exp(o_ij)) - y_ij * o_ij]``, as
    ``MLPClassifier`` sums its binary log-loss over the labels. Training (the
    call) reads each label as ``y (1 - label_smoothing) + label_smoothing / 2``;
    :meth:`value`, the baselines and the quality are those of the labels.
    """

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, outputs, targets, weights, doutputs):
        e = self.label_smoothing
        if e != 0:
            targets = targets * (1.0 - e) + e / 2
        loss = self.value(outputs, targets, weights)
        np.exp(log_sigmoid(outputs), out=doutputs)
        doutputs -= targets
        doutputs *= weights[:, None]
        return loss

    def value(self, outputs, targets, weights):
        per_label = -(targets * log_sigmoid(outputs) + (1 - targets) * log_sigmoid(-outputs))
        return float(weights @ per_label.sum(axis=1))

    def baseline(self, targets, weights):
        """Sum over the labels of the entropy of each label's weighted frequency."""
        p = np.clip(_weighted_mean(targets, weights), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -(np.where(p > 0, p * np.log(p), 0.0)
                        + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
        return float(entropy.sum())

    def quality(self, outputs, targets, weights):
        """Weighted share of the samples with every label right (subset accuracy)."""
        right = ((outputs > 0) == (targets > 0.5)).all(axis=1)
        return float(weights @ right) / float(weights.sum())

    def baseline_quality(self, targets, weights):
        """Subset accuracy of predicting each label's more frequent value."""
        constant = _weighted_mean(targets, weights) > 0.5
        right = ((targets > 0.5) == constant).all(axis=1)
        return float(weights @ right) / float(weights.sum())

    def teacher_term(self, outputs, soft, weights, doutputs, temperature, factor):
        """``T**2 * sum_j KL(Bernoulli(s_j) || Bernoulli(sigmoid(o_j / T)))``."""
        T = temperature
        scaled = outputs / T
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = (np.where(soft > 0, soft * np.log(soft), 0.0)
                       + np.where(soft < 1, (1 - soft) * np.log1p(-soft), 0.0))
        cross = soft * log_sigmoid(scaled) + (1 - soft) * log_sigmoid(-scaled)
        loss = T * T * float(weights @ (entropy - cross).sum(axis=1))
        dsoft = np.exp(log_sigmoid(scaled))
        dsoft -= soft
        dsoft *= (factor * T) * weights[:, None]
        doutputs += dsoft
        return loss


def _r2(predictions, targets, weights):
    """Weighted R², averaged over the outputs (1 for a perfect fit of a constant)."""
    mean = _weighted_mean(targets, weights)
    residual = weights @ (targets - predictions) ** 2
    total = weights @ (targets - mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())


class SquaredError:
    """Half the squared error, averaged over the outputs: ``MLPRegressor``'s loss.

    ``sum_i w_i * mean_j (o_ij - y_ij)**2 / 2``; predictions are the outputs.
    """

    def __call__(self, outputs, targets, weights, doutputs):
        np.subtract(outputs, targets, out=doutputs)
        loss = 0.5 * float(weights @ (doutputs * doutputs).mean(axis=1))
        doutputs *= weights[:, None] / outputs.shape[1]
        return loss

    def value(self, outputs, targets, weights):
        return 0.5 * float(weights @ ((outputs - targets) ** 2).mean(axis=1))

    def baseline(self, targets, weights):
        """The loss of predicting the weighted mean of each output."""
        mean = _weighted_mean(targets, weights)
        return self.value(np.broadcast_to(mean, targets.shape), targets, weights / weights.sum())

    def predictions(self, outputs):
        return outputs

    def quality(self, outputs, targets, weights):
        """Weighted R² of the predictions."""
        return _r2(self.predictions(outputs), targets, weights)

    def baseline_quality(self, targets, weights):
        """R² of predicting the mean: 0."""
        return 0.0

    def teacher_term(self, outputs, soft, weights, doutputs, temperature, factor):
        """The loss against the teacher's predictions ``soft`` (no temperature)."""
        grad = np.empty_like(doutputs)
        loss = self(outputs, soft, weights, grad)
        grad *= factor
        doutputs += grad
        return loss


class PoissonDeviance(SquaredError):
    """Half the Poisson deviance with a log link: predictions are ``exp(outputs)``.

    ``sum_i w_i * mean_j [exp(o_ij) - y_ij * o_ij]`` plus a constant that makes a
    perfect prediction 0 (``y log y - y``); ``MLPRegressor(loss="poisson")``'s.
    """

    def __call__(self, outputs, targets, weights, doutputs):
        np.exp(outputs, out=doutputs)
        loss = self.value(outputs, targets, weights)
        doutputs -= targets
        doutputs *= weights[:, None] / outputs.shape[1]
        return loss

    def value(self, outputs, targets, weights):
        # an output that overflows exp is an infinite loss, which training reports
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ylogy = np.where(targets > 0, targets * np.log(targets), 0.0)
            deviance = np.exp(outputs) - targets * outputs + ylogy - targets
        return float(weights @ deviance.mean(axis=1))

    def baseline(self, targets, weights):
        mean = _weighted_mean(targets, weights)
        with np.errstate(divide="ignore"):
            outputs = np.log(np.broadcast_to(mean, targets.shape))
        return self.value(outputs, targets, weights / weights.sum())

    def predictions(self, outputs):
        return np.exp(outputs)


class Distillation:
    """Hinton et al.'s distillation on top of a task loss ``hard``.

    ``alpha * teacher_term + (1 - alpha) * hard``, ``targets`` being the pair
    ``(hard targets, soft targets)``. For a classifier the teacher term is
    ``T**2 * KL(S || softmax(outputs / T))`` with ``S`` the teacher's
    probabilities softened at ``T``; for a regressor it is the loss against the
    teacher's predictions.
    """

    def __init__(self, hard, alpha, temperature):
        self.hard, self.alpha, self.temperature = hard, alpha, temperature

    def __call__(self, outputs, targets, weights, doutputs):
        y, soft = targets
        alpha = self.alpha
        loss = (1.0 - alpha) * self.hard(outputs, y, weights, doutputs)
        doutputs *= 1.0 - alpha
        if alpha == 0:
            return loss
        return loss + alpha * self.hard.teacher_term(
            outputs, soft, weights, doutputs, self.temperature, alpha
        )
