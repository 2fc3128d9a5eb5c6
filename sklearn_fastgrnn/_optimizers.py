"""Optimisers on flat parameter vectors, learning-rate schedules, clipping.

Optimisers are objects apart from the model, as in scikit-learn's
``sklearn/neural_network/_stochastic_optimizers.py``: they hold their own state
(moments, velocity, step count), update the flat parameter vector in place and are
pickled with the estimator, so ``partial_fit`` continues exactly after a
``joblib.dump``/``joblib.load``.
"""

import math

import numpy as np


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction folded into the step size.

    Parameters
    ----------
    n_params : int
    dtype : numpy dtype
    beta_1, beta_2, epsilon : float
    """

    def __init__(self, n_params, dtype, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)
        self._tmp = np.empty(n_params, dtype=dtype)

    def next_step_size(self, learning_rate):
        """Count a step; its size: ``learning_rate`` with both bias corrections."""
        self.t += 1
        return learning_rate * math.sqrt(1.0 - self.beta_2**self.t) / (1.0 - self.beta_1**self.t)

    def step(self, params, grad, learning_rate):
        """Update ``params`` in place with the gradient ``grad``."""
        b1, b2, m, v, tmp = self.beta_1, self.beta_2, self.m, self.v, self._tmp
        step = self.next_step_size(learning_rate)
        m *= b1
        np.multiply(grad, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(m, tmp, out=tmp)
        tmp *= step
        params -= tmp

    def resume_from(self, other):
        """Take the step count and moments of ``other`` (an Adam of the same size)."""
        self.t, self.m[...], self.v[...] = other.t, other.m, other.v


class SGD:
    """Stochastic gradient descent with (Nesterov) momentum.

    ``velocity = momentum * velocity - lr * grad``; the parameters move by
    ``velocity`` or, with Nesterov, by ``momentum * velocity - lr * grad``.

    Parameters
    ----------
    n_params : int
    dtype : numpy dtype
    momentum : float
    nesterov : bool
    """

    def __init__(self, n_params, dtype, momentum=0.9, nesterov=True):
        self.momentum, self.nesterov = momentum, nesterov
        self.t = 0
        self.velocity = np.zeros(n_params, dtype=dtype)
        self._tmp = np.empty(n_params, dtype=dtype)

    def step(self, params, grad, learning_rate):
        """Update ``params`` in place with the gradient ``grad``."""
        vel, tmp = self.velocity, self._tmp
        self.t += 1
        vel *= self.momentum
        np.multiply(grad, learning_rate, out=tmp)
        vel -= tmp
        if self.nesterov:
            np.multiply(vel, self.momentum, out=tmp)
            params += tmp
            np.multiply(grad, learning_rate, out=tmp)
            params -= tmp
        else:
            params += vel

    def resume_from(self, other):
        """Take the step count and velocity of ``other`` (an SGD of the same size)."""
        self.t, self.velocity[...] = other.t, other.velocity


def clip_by_global_norm(grad, max_norm):
    """Scale ``grad`` in place so that its L2 norm is at most ``max_norm``.

    Returns the norm before clipping.
    """
    norm = math.sqrt(float(grad @ grad))
    if max_norm is not None and norm > max_norm:
        grad *= max_norm / norm
    return norm


class LearningRateSchedule:
    """Learning rate per epoch: ``"constant"``, ``"step"`` or ``"adaptive"``.

    - ``"constant"``: ``learning_rate_init`` throughout.
    - ``"step"``: ``learning_rate_init * lr_decay ** (epoch // lr_decay_step)``.
    - ``"adaptive"``: divided by 5 each time the stopping rule sees a plateau,
      at most ``max_reductions`` times; the next plateau ends training, or,
      with ``tail``, the epochs at the last rate (:meth:`tail_over`).

    Parameters
    ----------
    kind : {"constant", "step", "adaptive"}
    learning_rate_init : float
    lr_decay : float
    lr_decay_step : int
    max_reductions : int
    tail : bool, default=False
        Count the epochs at the last adaptive rate, so that training can stop
        after a fixed number of them, whatever the loss does.
    """

    def __init__(self, kind, learning_rate_init, lr_decay, lr_decay_step, max_reductions,
                 tail=False):
        self.kind = kind
        self.learning_rate_init = learning_rate_init
        self.lr_decay, self.lr_decay_step = lr_decay, lr_decay_step
        self.max_reductions = max_reductions
        self.tail = tail
        self.tail_epochs = 0
        self.reductions = 0
        self.current = learning_rate_init

    def resume_from(self, other):
        """Keep the reduced rate of an adaptive run that used the same settings."""
        if self.kind == other.kind == "adaptive" and (
            self.learning_rate_init == other.learning_rate_init
        ):
            self.current = other.current
            self.reductions = other.reductions

    def rate(self, epoch):
        """Learning rate for the (0-based) ``epoch``, which is about to run."""
        if self.tail and self._at_last_rate():
            self.tail_epochs += 1
        if self.kind == "step":
            self.current = self.learning_rate_init * self.lr_decay ** (
                epoch // self.lr_decay_step
            )
        return self.current

    def _at_last_rate(self):
        return self.kind == "adaptive" and self.reductions >= self.max_reductions

    def tail_over(self, epochs):
        """True once a ``tail`` schedule has run ``epochs`` epochs at its last
        rate (after its last reduction; none when it has no reduction to make)."""
        return self.tail and self.max_reductions > 0 and self.tail_epochs >= epochs

    def on_plateau(self):
        """Called when the stopping rule sees a plateau; True if training goes on."""
        if self.kind != "adaptive" or self.reductions >= self.max_reductions:
            return False
        self.current /= 5.0
        self.reductions += 1
        return True
