"""FastGRNNClassifier: the scikit-learn estimator around the NumPy BPTT engine."""

import copy
import math
import sys
import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
    check_is_fitted,
)

from . import _callbacks, _losses, _size
from ._cell import (
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    predict_logits,
    predictor_for,
    to_time_major,
)
from ._nonlinearities import NONLINEARITIES
from ._optimizers import SGD, Adam, LearningRateSchedule, clip_by_global_norm
from ._sequences import light_sequences, validate_sequences
from ._sparsity import SparseTraining
from ._stopping import PlateauMonitor, patience_epochs
from ._threads import one_blas_thread
from ._version import __version__
from .exceptions import InconsistentVersionWarning

# The "auto" defaults, each chosen on the accuracy suite of benchmarks/bench_accuracy.py
# (docs/training.md gives the measurements).
AUTO_BATCH_FRACTION = 0.1  # batch_size="auto": a tenth of the data ...
AUTO_BATCH_RANGE = (8, 64)  # ... clipped to this range
AUTO_MIN_PATIENCE_STEPS = 500  # n_iter_no_change="auto": at least this many steps,
AUTO_PLATEAU_PATIENCE_STEPS = 3000  # ... this many while the loss is still at chance,
AUTO_PLATEAU_LEVEL = 0.9  # that is above this fraction of the chance-level loss
AUTO_MIN_STEPS = 6000  # max_iter="auto": at least this many optimiser steps ...
AUTO_MIN_EPOCHS = 200  # ... and at least this many epochs
AUTO_EARLY_STOPPING_SAMPLES = 10_000  # early_stopping="auto" is on from this size
_INTEGER_PARAMS = (
    "hidden_size", "n_timesteps", "w_rank", "u_rank", "lr_decay_step", "batch_size",
    "max_iter", "n_iter_no_change", "iht_interval",
)


def _resolve_batch_size(batch_size, n_samples):
    """``batch_size`` for ``n_samples`` training sequences ("auto": see AUTO_BATCH_*)."""
    if batch_size == "auto":
        low, high = AUTO_BATCH_RANGE
        batch_size = min(high, max(low, round(AUTO_BATCH_FRACTION * n_samples)))
    return max(1, min(int(batch_size), n_samples))


class FastGRNNClassifier(_callbacks.CallbackSupport, ClassifierMixin, BaseEstimator):
    """FastGRNN sequence classifier trained by exact backpropagation through time.

    FastGRNN (Kusupati et al., NeurIPS 2018) is a gated RNN whose gate and
    candidate share one pair of matrices::

        pre_t = x_t @ W + h_{t-1} @ U
        z_t   = gate(pre_t + bias_gate)
        c_t   = update(pre_t + bias_update)
        h_t   = (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t + z_t * h_{t-1}
        proba = softmax(h_T @ V + bias_out)

    Input is 3D ``(n_samples, n_timesteps, n_channels)``, or 2D with each row a
    univariate series (``n_timesteps=None``) or ``n_timesteps`` time-major steps.
    Trailing all-NaN timesteps are padding: the state stops at the last real step.

    The loss is the weighted mean cross-entropy of a mini-batch (``sample_weight``
    times the ``class_weight`` of the label, normalised to sum 1 over the batch)
    plus ``(alpha / 2) * sum(M ** 2)`` over the entries of the weight matrices
    ``M`` in {``W`` (or ``W1``, ``W2``), ``U`` (or ``U1``, ``U2``), ``V``}; biases,
    ``zeta`` and ``nu`` are not penalised. With ``soft_targets`` ``S`` the loss is
    ``distillation_alpha * T**2 * KL(S || softmax(logits / T)) +
    (1 - distillation_alpha) * cross-entropy``, ``T = distillation_temperature``.

    Parameters
    ----------
    hidden_size : int, default=32
        Size ``H`` of the hidden state.
    n_timesteps : int or None, default=None
        How a 2D ``X`` is read: None, one column per timestep of a univariate
        series; ``k``, k time-major steps of ``m / k`` channels. Ignored for 3D.
    gate_nonlinearity, update_nonlinearity : str, default="sigmoid", "tanh"
        One of "sigmoid", "tanh", "relu", "quant_sigmoid", "quant_tanh".
    w_rank, u_rank : int or None, default=None
        Rank of ``W = W1 @ W2`` (at most ``min(n_channels, hidden_size)``) and
        ``U = U1 @ U2`` (at most ``hidden_size``); None for full rank.
    init : {"chrono", "edgeml"}, default="chrono"
        Initial weights. "edgeml" is EdgeML's: every matrix ``0.1 * N(0, 1)``,
        both biases 1. "chrono" (the default) differs in two places. The gate
        bias spreads the memory of the units over the longest sequence ``T``
        seen in ``fit`` (Tallec & Ollivier, 2018): ``bias_gate = log(u)``,
        ``u ~ U(1, max(T - 1, 2))``, so unit ``j`` keeps its state for about
        ``1 + u_j`` steps instead of EdgeML's 3.7 for every unit. And ``W`` is
        ``N(0, 0.25 / n_channels)``, so standardised input enters every unit
        with the same spread (0.5) whatever the number of channels.
    zeta_init, nu_init : float, default=1.0, -4.0
        Initial raw ``zeta`` and ``nu`` (before the sigmoid), as in EdgeML.
    solver : {"adam", "sgd"}, default="adam"
    learning_rate : {"constant", "step", "adaptive"}, default="constant"
        "step" multiplies the rate by ``lr_decay`` every ``lr_decay_step``
        epochs; "adaptive" divides it by 5 whenever the stopping rule sees a
        plateau (patience epochs without improvement), and stops once it has
        been divided ``max_lr_reductions`` times; "constant" stops at the first
        plateau.
    learning_rate_init : float, default=0.01
    max_lr_reductions : int, default=2
        Plateaus the "adaptive" rate answers by dividing the rate by 5 before
        training stops.
    lr_decay : float, default=0.1
    lr_decay_step : int, default=50
    momentum : float, default=0.9
        SGD only.
    nesterovs_momentum : bool, default=True
        SGD only.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam only.
    alpha : float, default=1e-3
        L2 penalty (see the loss above). 1e-3 measured best on the accuracy
        suite (0 to 3e-3 tried); 3e-3 already reduced some long-sequence sets
        with few sequences to chance.
    clip_grad_norm : float or None, default=5.0
        Mini-batch gradients are scaled down to this global L2 norm; None
        disables clipping.
    batch_size : int or "auto", default="auto"
        Mini-batch size (clipped to the number of samples). "auto" is a tenth
        of the training set clipped to [8, 64]: small data gets enough
        optimiser steps per epoch, big data the throughput of larger batches.
    max_iter : int or "auto", default="auto"
        Maximum number of epochs in ``fit``. "auto" is enough epochs for 6,000
        optimiser steps, and at least 200.
    shuffle : bool, default=True
        Shuffle the training data before each epoch.
    random_state : int, RandomState instance or None, default=None
        Initial weights, shuffling and the validation split. An int gives
        bit-identical ``coefs_``.
    dtype : {"float32", "float64"} or None, default="float32"
        Precision of training. float32 (as PyTorch and Keras train) is about
        twice as fast as float64 and accurate to about 1e-6 relative; "float64"
        trains in double precision (for exactness work); None follows the
        input: float32 for float32 ``X``, float64 otherwise. Prediction
        computes in float32 for float32 ``X`` and in float64 otherwise.
    tol : float, default=1e-4
        Minimum improvement over the best value so far of the quantity the
        stopping rule watches (the training loss, or the validation loss or
        score with early stopping), as in ``MLPClassifier``.
    n_iter_no_change : int or "auto", default="auto"
        Patience: epochs without an improvement of ``tol`` after which the
        rate is reduced or training stops (see ``learning_rate``). "auto" is
        10 epochs, but at least 500 optimiser steps, and at least 3,000 while
        the watched loss is still above 0.9 times the loss of predicting the
        class frequencies, so that the initial plateau of the loss on small
        data cannot stop training.
    early_stopping : bool or "auto", default="auto"
        Watch a held-out validation set instead of the training loss and
        restore the weights of its best epoch (unless the validation loss never
        fell below chance level: then the validation set, typically a handful
        of sequences, says nothing and the last weights are kept). The validation set is
        ``X_val``/``y_val`` when given to :meth:`fit`, else a stratified
        ``validation_fraction`` of the data (at least one sequence per class).
        "auto" turns it on from 10,000 training sequences. Ignored by
        ``partial_fit``.
    scoring : str, callable or "loss", default="loss"
        What early stopping watches: "loss" (the validation log-loss), or a
        scikit-learn scorer name or callable (greater is better).
    validation_fraction : float, default=0.1
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, multiplied into ``sample_weight``. "balanced"
        uses ``n_samples / (n_classes * np.bincount(y))`` with both counts summing
        ``sample_weight`` (so a weight of 2 equals a repeated sample); ``fit``
        only, as in ``SGDClassifier``: ``partial_fit`` sees one chunk at a time.
    warm_start : bool, default=False
        Continue ``fit`` from the current weights and optimiser state.
    verbose : int, default=0
        1: one line per epoch and a last line saying why training stopped and
        which epoch's weights were kept; 2: also a progress bar within long
        epochs.
    distillation_alpha : float in [0, 1], default=0.5
        Weight of the distillation term when ``soft_targets`` are given.
    distillation_temperature : float, default=3.0
        Temperature ``T`` of the soft targets.
    sparsity_w, sparsity_u : float in (0, 1], default=1.0
        Fraction of the entries of ``W`` and ``U`` kept (each factor when low
        rank): ``ceil(fraction * size)`` entries, trained by iterative hard
        thresholding (see Notes). 1.0 trains dense.
    sparsity_phases : (float, float), default=(0.25, 0.5)
        Fractions of the run trained dense, then with hard thresholding; the rest
        (at least one epoch: the sum must be below 1) trains on the frozen support.
    iht_interval : int, default=15
        Optimiser steps between two hard thresholdings (EdgeML's ``trimlevel``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : dict of ndarray
        ``W`` (or ``W1``, ``W2``), ``U`` (or ``U1``, ``U2``), ``V``,
        ``bias_gate``, ``bias_update``, ``zeta``, ``nu``, ``bias_out``, in the
        training ``dtype``.
    n_features_in_ : int
        Columns of what ``fit`` saw (``n_timesteps * n_channels`` for 3D).
    feature_names_in_ : ndarray of str
        Defined when ``fit`` saw a DataFrame.
    n_timesteps_, n_channels_ : int
        Sequence shape seen in ``fit``.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    loss_ : float
        Training loss of the last epoch.
    loss_curve_ : list of float
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation accuracy (or ``scoring``'s value) per epoch with early
        stopping.
    best_validation_score_ : float or None
        ``validation_scores_`` of the kept epoch.
    best_epoch_ : int
        The (1-based) epoch whose weights the model holds: the best validation
        epoch with early stopping; without it the last epoch, or the epoch of
        the lowest training loss when its weights classify the training data
        more accurately than the last ones (after a late loss spike).
    stop_reason_ : str
        Why the last ``fit`` ended (also the last line of ``verbose=1``).
    history_ : list of dict
        One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
        ``val_score`` (None without early stopping), ``learning_rate``,
        ``seconds``, and ``event`` (None, or what the stopping rule did after
        that epoch: the learning rate reduced, or training stopped).
    n_params_ : int
    model_size_bytes_ : int
        As EdgeML counts it: 4 bytes per entry, 8 per non-zero of a matrix
        trained sparse (see the compression guide). :meth:`summary` shows it
        per tensor.

    Notes
    -----
    Stopping: after each epoch the stopping rule compares the watched
    quantity with its best value. After ``n_iter_no_change`` epochs without
    an improvement of more than ``tol``, an "adaptive" learning rate is
    divided by 5 and training goes on, up to ``max_lr_reductions`` times;
    the next plateau (the first with "constant" or "step") ends training.
    Reaching ``max_iter`` instead warns (``ConvergenceWarning``), and so does a
    fitted model that predicts its own training data no better than the
    majority class does.

    Sparse training (``sparsity_w`` or ``sparsity_u`` below 1) follows the
    paper and EdgeML over a run of ``max_iter`` epochs: dense for the first
    ``floor(sparsity_phases[0] * max_iter)`` epochs, then hard thresholding
    every ``iht_interval`` optimiser steps (the support re-applied after the
    steps in between) until ``floor(sum(sparsity_phases) * max_iter)``, then
    training on the frozen support, whose pruned entries stay exactly 0. The
    stopping rule (and ``early_stopping``'s best-weights restore) only starts
    once the support is frozen, so a sparse fit always returns a sparse model.
    ``partial_fit`` follows the same schedule with one call per epoch (later
    calls keep training on the frozen support); ``warm_start`` continues it.
    With ``max_iter="auto"`` the schedule is laid over 200 epochs.
    See the compression guide (``docs/compression.md``).

    Thread safety: ``predict`` and the other prediction methods may run in
    threads while ``fit`` or ``partial_fit`` trains the same estimator: a
    call builds its new state aside and publishes it in one assignment at
    the end (and nothing at all when it fails), so a prediction sees the old
    model or the new one, never a mix. Two training calls on one estimator at
    the same time are not safe: the one that finishes last wins.
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "n_timesteps": [Interval(Integral, 1, None, closed="left"), None],
        "gate_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "update_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "w_rank": [Interval(Integral, 1, None, closed="left"), None],
        "u_rank": [Interval(Integral, 1, None, closed="left"), None],
        "init": [StrOptions({"chrono", "edgeml"})],
        "zeta_init": [Interval(Real, None, None, closed="neither")],
        "nu_init": [Interval(Real, None, None, closed="neither")],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate": [StrOptions({"constant", "step", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_lr_reductions": [Interval(Integral, 0, None, closed="left")],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "lr_decay_step": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "clip_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}),
        ],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "scoring": [StrOptions({"loss"}), str, callable, HasMethods("__call__")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "distillation_alpha": [Interval(Real, 0, 1, closed="both")],
        "distillation_temperature": [Interval(Real, 0, None, closed="neither")],
        "sparsity_w": [Interval(Real, 0, 1, closed="right")],
        "sparsity_u": [Interval(Real, 0, 1, closed="right")],
        "sparsity_phases": [tuple, list],
        "iht_interval": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_size=32,
        *,
        n_timesteps=None,
        gate_nonlinearity="sigmoid",
        update_nonlinearity="tanh",
        w_rank=None,
        u_rank=None,
        init="chrono",
        zeta_init=1.0,
        nu_init=-4.0,
        solver="adam",
        learning_rate="constant",
        learning_rate_init=0.01,
        max_lr_reductions=2,
        lr_decay=0.1,
        lr_decay_step=50,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=1e-3,
        clip_grad_norm=5.0,
        batch_size="auto",
        max_iter="auto",
        shuffle=True,
        random_state=None,
        dtype="float32",
        tol=1e-4,
        n_iter_no_change="auto",
        early_stopping="auto",
        scoring="loss",
        validation_fraction=0.1,
        class_weight=None,
        warm_start=False,
        verbose=0,
        distillation_alpha=0.5,
        distillation_temperature=3.0,
        sparsity_w=1.0,
        sparsity_u=1.0,
        sparsity_phases=(0.25, 0.5),
        iht_interval=15,
    ):
        self.hidden_size = hidden_size
        self.n_timesteps = n_timesteps
        self.gate_nonlinearity = gate_nonlinearity
        self.update_nonlinearity = update_nonlinearity
        self.w_rank = w_rank
        self.u_rank = u_rank
        self.init = init
        self.zeta_init = zeta_init
        self.nu_init = nu_init
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_lr_reductions = max_lr_reductions
        self.lr_decay = lr_decay
        self.lr_decay_step = lr_decay_step
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.alpha = alpha
        self.clip_grad_norm = clip_grad_norm
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.verbose = verbose
        self.distillation_alpha = distillation_alpha
        self.distillation_temperature = distillation_temperature
        self.sparsity_w = sparsity_w
        self.sparsity_u = sparsity_u
        self.sparsity_phases = sparsity_phases
        self.iht_interval = iht_interval

    def _validate_params(self):
        """scikit-learn's checks, and no booleans where an integer is meant."""
        super()._validate_params()
        for name in _INTEGER_PARAMS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an "
                    f"integer, got the boolean {value!r}."
                )

    def _int(self, name):
        """A hyper-parameter as a Python int (NumPy integers included), or as is."""
        value = getattr(self, name)
        return int(value) if isinstance(value, Integral) else value

    # ------------------------------------------------------------------ input
    def _sample_weights(self, y_idx, sample_weight, X3, incremental):
        """Per-sample training weights: ``sample_weight`` times class weights."""
        weights = _check_sample_weight(
            sample_weight, X3, dtype=X3.dtype, ensure_non_negative=True,
            allow_all_zero_weights=True,
        )
        if self.class_weight is not None:
            if incremental and self.class_weight == "balanced":
                raise ValueError(
                    "class_weight='balanced' needs the whole training set and cannot "
                    "be used with partial_fit. Pass a dict of class weights, computed "
                    "for example with sklearn.utils.class_weight.compute_class_weight."
                )
            if self.class_weight == "balanced":
                # n_samples / (n_classes * count), with counts and n_samples
                # summing sample_weight: repeating a sample equals weighting it
                totals = np.bincount(y_idx, weights=weights, minlength=len(self.classes_))
                with np.errstate(divide="ignore"):
                    per_class = np.where(totals > 0, totals.sum() / (len(totals) * totals), 0.0)
            else:
                per_class = self._class_weight_dict()
            weights = weights * per_class[y_idx].astype(X3.dtype)
        if not weights.sum() > 0:
            raise ValueError(
                "The sample weights (times class_weight) sum to zero: there is nothing "
                "to learn from. Give at least one sample a positive weight."
            )
        return weights

    def _class_weight_dict(self):
        """``class_weight`` (a dict) as one finite, non-negative weight per class."""
        per_class = np.ones(len(self.classes_))
        unknown = [k for k in self.class_weight if k not in set(self.classes_.tolist())]
        if unknown:
            raise ValueError(
                f"class_weight has keys {unknown} that are not labels of y "
                f"({self.classes_.tolist()}). Use the labels as keys."
            )
        for i, label in enumerate(self.classes_.tolist()):
            if label in self.class_weight:
                value = self.class_weight[label]
                if not isinstance(value, Real) or not math.isfinite(value) or value < 0:
                    raise ValueError(
                        f"class_weight[{label!r}] is {value!r}; class weights must be "
                        "finite non-negative numbers (as sample_weight)."
                    )
                per_class[i] = value
        return per_class

    def _check_soft_targets(self, soft_targets, n_samples, dtype):
        soft = check_array(
            soft_targets, dtype=[np.float64, np.float32], ensure_all_finite=False,
            ensure_2d=False, allow_nd=True, input_name="soft_targets",
        )
        n_classes = len(self.classes_)
        if soft.ndim != 2:
            raise ValueError(
                f"soft_targets must be 2D, of shape (n_samples, n_classes) = "
                f"({n_samples}, {n_classes}), but it is {soft.ndim}D with shape "
                f"{soft.shape}. For two classes pass both columns, [1 - p, p]."
            )
        if soft.shape != (n_samples, n_classes):
            raise ValueError(
                f"soft_targets has shape {soft.shape}, expected ({n_samples}, "
                f"{n_classes}): one row per sample and one column per class of "
                f"classes_ {self.classes_.tolist()}, in that order."
            )
        if not np.isfinite(soft).all():
            row = np.flatnonzero(~np.isfinite(soft).all(axis=1))[0]
            raise ValueError(
                f"soft_targets contains NaN or inf (first in row {row}); it must "
                "hold probabilities."
            )
        if (soft < 0).any():
            row = np.flatnonzero((soft < 0).any(axis=1))[0]
            raise ValueError(
                f"soft_targets contains negative entries (first in row {row}); it "
                "must hold probabilities."
            )
        sums = soft.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
        if bad.size:
            raise ValueError(
                f"Row {bad[0]} of soft_targets sums to {sums[bad[0]]:.6g}, not 1: each "
                "row must be a probability distribution over classes_."
            )
        return soft.astype(dtype, copy=False)

    def _unseen_labels(self, y):
        """The labels of ``y`` that are not in ``classes_``, as a list."""
        return np.setdiff1d(unique_labels(y), self.classes_).tolist()

    def _encode_y(self, y, classes, incremental, resume):
        """Set ``classes_`` and return ``y`` as indices into it."""
        check_classification_targets(y)
        if incremental:
            _check_partial_fit_first_call(self, classes)
            unseen = self._unseen_labels(y)
            if unseen:
                raise ValueError(
                    f"y contains labels {unseen} that are not in classes_ "
                    f"{self.classes_.tolist()}. Pass every label to the first "
                    "partial_fit call as classes=..."
                )
        else:
            previous = getattr(self, "classes_", None)
            self.classes_ = unique_labels(y)
            if resume and not np.array_equal(previous, self.classes_):
                raise ValueError(
                    "warm_start can only continue when y has the same classes as in "
                    f"the previous fit: previous {previous.tolist()}, now "
                    f"{self.classes_.tolist()}. Set warm_start=False to start over."
                )
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the "
                f"data, but the data contains only one class: "
                f"{self.classes_.tolist()[0]!r}."
            )
        return np.searchsorted(self.classes_, y)

    def _working_dtype(self, input_dtype):
        """The training dtype for input of ``input_dtype`` (see ``dtype``)."""
        if self.dtype is None:
            return np.dtype(np.float32 if input_dtype == np.float32 else np.float64)
        return np.dtype(self.dtype)

    # --------------------------------------------------------------- training
    def _layout(self):
        d, H = self.n_channels_, self._int("hidden_size")
        w_rank, u_rank = self._int("w_rank"), self._int("u_rank")
        if w_rank is not None and w_rank > min(d, H):
            raise ValueError(
                f"w_rank={w_rank} is larger than allowed: W is ({d}, {H}), so "
                f"its rank is at most min(n_channels, hidden_size) = {min(d, H)}. "
                "Use a smaller w_rank or None for full rank."
            )
        if u_rank is not None and u_rank > H:
            raise ValueError(
                f"u_rank={u_rank} is larger than allowed: U is ({H}, {H}), so "
                f"its rank is at most hidden_size = {H}. Use a smaller u_rank or "
                "None for full rank."
            )
        return ParameterLayout(d, H, len(self.classes_), w_rank, u_rank)

    def _new_optimizer(self, n_params, dtype):
        if self.solver == "adam":
            return Adam(n_params, dtype, self.beta_1, self.beta_2, self.epsilon)
        return SGD(n_params, dtype, self.momentum, self.nesterovs_momentum)

    def _start_state(self, layout, dtype, resume, n_steps):
        """Parameters, optimiser, schedule and RNG to train from (never shared).

        Hyper-parameters always come from the current ``get_params()``; a resumed
        run takes over the training state (moments, RNG, adaptive rate, stopping
        rule) when the model has one. A model loaded from a weights file has
        none: it resumes its weights with a fresh optimiser. ``n_steps`` is the
        longest real sequence, which the chrono initialisation spreads memory over.
        """
        fitted_shapes = {k: np.shape(v) for k, v in getattr(self, "coefs_", {}).items()}
        if resume and fitted_shapes != layout.shapes:
            raise ValueError(
                f"Cannot continue training: the fitted weights have shapes "
                f"{fitted_shapes}, but the current parameters ask for "
                f"{layout.shapes}. Set warm_start=False to train from scratch."
            )
        has_state = resume and hasattr(self, "_optimizer")
        if has_state and self._optimizer_kind != self.solver:
            raise ValueError(
                f"Cannot continue training with solver={self.solver!r}: the model "
                f"was trained with {self._optimizer_kind!r}, whose state it keeps. "
                "Set warm_start=False to train from scratch."
            )
        optimizer = self._new_optimizer(layout.size, dtype)
        schedule = LearningRateSchedule(
            self.learning_rate, self.learning_rate_init, self.lr_decay,
            self._int("lr_decay_step"), self._int("max_lr_reductions"),
        )
        if has_state:
            optimizer.resume_from(self._optimizer)
            schedule.resume_from(self._schedule)
            rng, monitor = copy.deepcopy(self._rng), copy.deepcopy(self._monitor)
            return layout.pack(self.coefs_, dtype), optimizer, rng, schedule, monitor
        random_state = check_random_state(self.random_state)
        if resume:
            flat = layout.pack(self.coefs_, dtype)
        else:
            flat = init_parameters(
                layout, random_state, self.zeta_init, self.nu_init, dtype,
                scheme=self.init, n_timesteps=n_steps,
            )
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        monitor = PlateauMonitor(self.tol)
        monitor.split_seed = int(rng.integers(np.iinfo(np.int32).max))
        if not resume or not hasattr(self, "n_iter_"):
            self.n_iter_, self.t_ = 0, 0
            self.loss_curve_, self.history_ = [], []
            self.validation_scores_ = None
        return flat, optimizer, rng, schedule, monitor

    def _validation_split(self, y_idx, split_seed):
        """Stratified (train, validation) indices with a sequence of every class in each.

        Each class gives ``round(validation_fraction * count)`` of its sequences,
        at least one and at most all but one.
        """
        counts = np.bincount(y_idx, minlength=len(self.classes_))
        if counts.min() < 2:
            rare = self.classes_.tolist()[int(np.argmin(counts))]
            raise ValueError(
                f"early_stopping holds out a validation set with a sequence of every "
                f"class, but class {rare!r} has only {counts.min()} sequence(s) of "
                f"the {len(y_idx)}: no validation_fraction can split it. Pass X_val "
                "and y_val to fit, or set early_stopping=False."
            )
        rng = np.random.default_rng(split_seed)
        val = []
        for c, count in enumerate(counts):
            k = min(count - 1, max(1, round(self.validation_fraction * count)))
            val.append(rng.choice(np.flatnonzero(y_idx == c), k, replace=False))
        val = np.sort(np.concatenate(val))
        return np.setdiff1d(np.arange(len(y_idx)), val), val

    def _check_validation_set(self, X_val, y_val, sample_weight_val, dtype):
        """Validate a user's ``X_val``/``y_val`` against the fitted shape and classes."""
        if y_val is None:
            raise ValueError("X_val was given without y_val: pass both, or neither.")
        X_val, X3_val, lengths_val = validate_sequences(self, X_val, reset=False)
        y_val = np.asarray(y_val)
        check_consistent_length(X3_val, y_val)
        unseen = self._unseen_labels(y_val)
        if unseen:
            raise ValueError(
                f"y_val contains labels {unseen} that are not in y "
                f"({self.classes_.tolist()}). The validation set must use the "
                "training labels."
            )
        weights = _check_sample_weight(
            sample_weight_val, X3_val, dtype=dtype, ensure_non_negative=True
        )
        return X_val, X3_val.astype(dtype, copy=False), lengths_val, np.searchsorted(
            self.classes_, y_val
        ), weights

    @_callbacks.with_callbacks
    def _train(self, X, y, sample_weight, soft_targets, *, incremental, classes,
               validation):
        """The whole of ``fit``/``partial_fit``, on a working copy of the estimator."""
        tasks = _callbacks.FitTask(self, X, y, sample_weight,
                                   name="partial_fit" if incremental else "fit")
        resume = hasattr(self, "coefs_") and (incremental or self.warm_start)
        X, X3, lengths, y = validate_sequences(self, X, y, reset=not resume)
        y_idx = self._encode_y(y, classes, incremental, resume)
        dtype = self._working_dtype(X3.dtype)
        X3 = X3.astype(dtype, copy=False)
        weights = self._sample_weights(y_idx, sample_weight, X3, incremental)
        soft = None
        if soft_targets is not None:
            soft = self._check_soft_targets(soft_targets, len(X3), dtype)
        layout = self._layout()
        flat, optimizer, rng, schedule, monitor = self._start_state(
            layout, dtype, resume, int(lengths.max())
        )

        train, val = self._watched_data(
            X, X3, lengths, y_idx, weights, validation, incremental, monitor, dtype
        )
        early = val is not None
        run = _TrainingRun(self, layout, X3, lengths, y_idx, weights, soft, val)
        sparse_epochs = AUTO_MIN_EPOCHS if self.max_iter == "auto" else int(self.max_iter)
        run.sparsity = SparseTraining.for_run(self, layout, resume, sparse_epochs)
        if early and resume:  # resumed weights are the best so far: fit restored them
            monitor.best_weights = flat.copy()
        monitor.keep_best = not incremental
        batch_size = _resolve_batch_size(self.batch_size, len(train))
        steps_per_epoch = math.ceil(len(train) / batch_size)
        patience, plateau_patience = self._patience(steps_per_epoch)
        chance_level = self._chance_level(run, train)
        epochs = 1 if incremental else self._max_epochs(steps_per_epoch)
        tasks.begin(n_subtasks=epochs)

        start_loss = None if incremental else run.training_fit(flat, train)[0]
        stop_reason = None
        interrupted = False
        for _ in range(epochs):
            tasks.begin_epoch()
            lr = schedule.rate(self.n_iter_)
            if run.sparsity is not None and run.sparsity.begin_epoch(flat, optimizer):
                monitor.reset()  # the support is frozen: earlier weights do not count
            start = time.perf_counter()
            try:
                loss = run.epoch(flat, optimizer, lr, train, batch_size, rng)
            except KeyboardInterrupt:
                stop_reason = self._interrupted(flat, monitor, early)
                interrupted = True
                break
            self.n_iter_ += 1
            self.t_ += len(train)
            record = self._record_epoch(run, flat, loss, lr, monitor, early)
            record["seconds"] = time.perf_counter() - start
            settled = run.sparsity is None or run.sparsity.frozen
            at_chance = chance_level is not None and monitor.best >= chance_level
            wait = plateau_patience if at_chance else patience
            if not incremental and settled and monitor.plateaued(wait):
                stop_reason = self._on_plateau(record, monitor, schedule, wait,
                                               steps_per_epoch)
            if tasks.end_epoch(layout, flat) and stop_reason is None:
                stop_reason = record["event"] = "stopped: a callback asked to stop"
            if self.verbose:
                run.report(record)
            if stop_reason is not None:
                break
        else:
            if not incremental:
                stop_reason = f"stopped: max_iter={epochs} epochs reached"
                warnings.warn(
                    f"Stochastic optimizer: maximum iterations ({epochs}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        end_fit = None  # run.training_fit of the weights kept, once known
        if early:
            # the best validation epoch, unless the validation loss never left
            # chance level: then the validation set tells nothing, and the last
            # weights stay
            restore = monitor.best_weights is not None and not (
                chance_level is not None and monitor.best >= chance_level
            )
        elif incremental or interrupted:
            restore = False
        else:
            # after a late loss spike the best training-loss epoch classifies the
            # training data better than the last weights; a tie keeps the last
            end_fit = run.training_fit(flat, train)
            best_fit = self._best_epoch_fit(run, monitor, train)
            restore = best_fit is not None and best_fit[1] > end_fit[1]
            if restore:
                end_fit = best_fit
        if restore:
            flat = monitor.best_weights
        self._sparse_training = run.sparsity
        self._commit(layout, flat, optimizer, rng, schedule, monitor, early, restore)
        self.stop_reason_ = stop_reason or "one partial_fit epoch"
        if not incremental:
            self._diagnose(end_fit or run.training_fit(flat, train), start_loss)
        if self.verbose and not incremental:
            print(
                f"Training {self.stop_reason_}; kept the weights of epoch "
                f"{self.best_epoch_}.", flush=True,
            )
        tasks.end()

    def _watched_data(self, X, X3, lengths, y_idx, weights, validation, incremental,
                      monitor, dtype):
        """Indices trained on, and the validation set early stopping watches (or None)."""
        train = np.arange(len(X3))
        early = not incremental and (
            validation[0] is not None or self.early_stopping is True
            or (self.early_stopping == "auto" and len(X3) >= AUTO_EARLY_STOPPING_SAMPLES)
        )
        if not early:
            return train, None
        if self.validation_scores_ is None:
            self.validation_scores_ = []
        if validation[0] is not None:
            return train, self._check_validation_set(*validation, dtype)
        train, idx = self._validation_split(y_idx, monitor.split_seed)
        return train, (X[idx], X3[idx], lengths[idx], y_idx[idx], weights[idx])

    def _record_epoch(self, run, flat, loss, lr, monitor, early):
        """Score the epoch, show it to the stopping rule, and append its history."""
        record = {"epoch": self.n_iter_, "train_loss": loss, "val_loss": None,
                  "val_score": None, "learning_rate": lr, "event": None}
        if early:
            record["val_loss"], record["val_score"] = run.evaluate(flat)
            self.validation_scores_.append(record["val_score"])
            watched = record["val_loss"] if self.scoring == "loss" else -record["val_score"]
        else:
            watched = loss
        monitor.update(watched, self.n_iter_, flat)
        self.loss_curve_.append(loss)
        self.history_.append(record)
        return record

    def _on_plateau(self, record, monitor, schedule, patience, steps_per_epoch):
        """Reduce the rate (adaptive) or stop; returns the stop reason or None."""
        monitor.bad_epochs = 0
        if schedule.on_plateau():
            record["event"] = f"learning rate reduced to {schedule.current:.3g}"
            return None
        record["event"] = (
            f"stopped: no improvement of tol={self.tol} for {patience} epochs "
            f"({patience * steps_per_epoch} optimiser steps)"
        )
        return record["event"]

    def _patience(self, steps_per_epoch):
        """Patience in epochs, and the patience while the loss is still at chance."""
        if self.n_iter_no_change == "auto":
            return (
                patience_epochs(10, steps_per_epoch, AUTO_MIN_PATIENCE_STEPS),
                patience_epochs(10, steps_per_epoch, AUTO_PLATEAU_PATIENCE_STEPS),
            )
        return (int(self.n_iter_no_change),) * 2

    def _chance_level(self, run, train):
        """The watched loss below which training has left its initial plateau.

        ``AUTO_PLATEAU_LEVEL`` times the loss of predicting the class
        frequencies (of the validation set when early stopping watches it);
        None when the patience is explicit or a score is watched.
        """
        if self.n_iter_no_change != "auto" or (run.val is not None and self.scoring != "loss"):
            return None
        y, w = (run.val[3], run.val[4]) if run.val is not None else (run.y[train], run.weights[train])
        p = np.bincount(y, weights=w, minlength=len(self.classes_)) / float(w.sum())
        p = p[p > 0]
        return AUTO_PLATEAU_LEVEL * float(-(p * np.log(p)).sum())

    def _max_epochs(self, steps_per_epoch):
        if self.max_iter == "auto":
            return max(AUTO_MIN_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps_per_epoch))
        return int(self.max_iter)

    def _best_epoch_fit(self, run, monitor, train):
        """``run.training_fit`` of the best training-loss epoch's weights.

        None when there are none or they are the last weights. A loss spike late
        in training (the state of a recurrent net can blow up for a step) can
        leave the last weights far worse than these, with no improvement left
        to stop on.
        """
        if monitor.best_weights is None or monitor.best_epoch == self.n_iter_:
            return None
        return run.training_fit(monitor.best_weights, train)

    def _interrupted(self, flat, monitor, early):
        """Ctrl-C: keep the best (or last, finite) weights with a warning."""
        keep_best = early and monitor.best_weights is not None
        if not keep_best and not np.isfinite(flat).all():
            raise KeyboardInterrupt
        warnings.warn(
            f"Training interrupted by the user in epoch {self.n_iter_ + 1}; keeping "
            + ("the best weights so far." if keep_best
               else "the last weights, which are finite."),
            UserWarning,
        )
        return f"interrupted by the user in epoch {self.n_iter_ + 1}"

    def _diagnose(self, end_fit, start_loss):
        """Warn when the fitted model learned nothing, or ended worse than it began.

        ``end_fit`` is ``run.training_fit`` of the weights kept.
        """
        end_loss, accuracy, majority = end_fit
        if end_loss > 2.0 * start_loss + 0.1:
            warnings.warn(
                f"Training ended with a training loss of {end_loss:.4g}, far above the "
                f"{start_loss:.4g} of the weights it started from: the optimiser "
                "overshoots. Lower learning_rate_init.",
                ConvergenceWarning,
            )
        elif accuracy <= majority + 1e-9:
            warnings.warn(
                f"The fitted model predicts its own training data no better than "
                f"always answering the most frequent class (accuracy {accuracy:.3f} "
                f"against {majority:.3f}): it has not learned. Scale the input "
                "(SequenceScaler or StandardScaler), train longer (max_iter), try "
                "another learning_rate_init, or a larger hidden_size.",
                ConvergenceWarning,
            )

    def _commit(self, layout, flat, optimizer, rng, schedule, monitor, early, restored):
        """Assign the trained state (the only place ``fit`` writes ``coefs_``)."""
        self.coefs_ = layout.unpack(flat)
        self._optimizer, self._rng, self._schedule = optimizer, rng, schedule
        monitor.best_weights = None  # restored already; not kept in the model file
        self._monitor = monitor
        self._optimizer_kind = self.solver
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        self.best_epoch_ = self.n_iter_
        self.best_loss_ = self.best_validation_score_ = None
        if restored:
            self.best_epoch_ = monitor.best_epoch
        if early:
            self.best_validation_score_ = self.history_[self.best_epoch_ - 1]["val_score"]
        elif self.loss_curve_:
            self.best_loss_ = min(self.loss_curve_)
        self.n_params_, self.model_size_bytes_ = _size.fitted_size(self)

    def _fit(self, X, y, sample_weight, soft_targets, *, incremental, classes=None,
             validation=(None, None, None)):
        """Train a working copy of ``self`` and publish its state in one assignment.

        A failed call publishes nothing, so ``self`` stays exactly as it was, and
        a ``predict`` in another thread sees the old model or the new one.
        """
        work = object.__new__(type(self))
        work.__dict__ = {
            key: list(value) if isinstance(value, list) else value
            for key, value in self.__dict__.items()
        }
        with one_blas_thread():  # the engine's products are too small to share
            work._train(
                X, y, sample_weight, soft_targets, incremental=incremental,
                classes=classes, validation=validation,
            )
        self.__dict__ = work.__dict__
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, soft_targets=None, *, X_val=None,
            y_val=None, sample_weight_val=None):
        """Train on sequences ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            Sequences, NaN-padded at the end when of variable length (see the
            class docstring for the 2D layouts).
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; normalised to sum 1 within each mini-batch.
        soft_targets : array-like of shape (n_samples, n_classes), default=None
            Teacher probabilities softened at ``distillation_temperature``
            (columns in the order of ``classes_``); switches on the distillation
            loss.
        X_val, y_val : array-like, default=None
            A validation set of your own, in the layout of ``X``: switches on
            early stopping on it (whatever ``early_stopping`` says), and no
            part of ``X`` is held out.
        sample_weight_val : array-like of shape (n_val_samples,), default=None
            Weights of the validation sequences.

        Returns
        -------
        self
        """
        return self._fit(
            X, y, sample_weight, soft_targets, incremental=False,
            validation=(X_val, y_val, sample_weight_val),
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None, soft_targets=None):
        """Run one epoch over ``X``, continuing from the current state.

        The optimiser state is kept between calls (also through
        ``joblib.dump``/``joblib.load``). ``early_stopping`` does not apply.

        Parameters
        ----------
        X, y, sample_weight, soft_targets
            As in :meth:`fit`.
        classes : array-like of shape (n_classes,), default=None
            Every label that will ever be seen; required on the first call.

        Returns
        -------
        self
        """
        return self._fit(
            X, y, sample_weight, soft_targets, incremental=True, classes=classes
        )

    # ------------------------------------------------------------- prediction
    def _logits(self, X):
        # plain NumPy arrays skip scikit-learn's validation (same arrays, same
        # errors); the stacked weights are made once per coefs_ and dtype
        valid = light_sequences(self, X) if "coefs_" in self.__dict__ else None
        if valid is None:
            check_is_fitted(self)
            _, X3, lengths = validate_sequences(self, X, reset=False)
        else:
            X3, lengths = valid
        dtype = np.float32 if X3.dtype == np.float32 else np.float64
        predictor = predictor_for(
            self, self.coefs_, self.gate_nonlinearity, self.update_nonlinearity, dtype
        )
        return predictor.logits(X3, lengths)

    def decision_function(self, X):
        """Logits ``h_T @ V + bias_out``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two
        classes: the log-odds of ``classes_[1]`` (scikit-learn's convention).
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        return _losses.log_softmax(self._logits(X))

    def predict_proba(self, X):
        """Class probabilities ``softmax(logits)``, shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Most probable class of each sequence."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def summary(self):
        """Parameters, non-zeros and bytes of every tensor, and the size in KB.

        Returns
        -------
        str
            A printable table (see :func:`sklearn_fastgrnn.compression.summary`).
        """
        return _size.summary(self)

    # ------------------------------------------------------- scikit-learn glue
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never add to the live __dict__
        state["_sklearn_fastgrnn_version"] = __version__
        return state

    def __setstate__(self, state):
        version = state.pop("_sklearn_fastgrnn_version", "pre-0.1")
        if version != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=__version__,
                    original_version=version,
                )
            )
        super().__setstate__(state)



class _TrainingRun:
    """The data and engine of one ``fit``/``partial_fit`` call: epochs and scores.

    ``val`` is None, or the validation set watched by early stopping as
    ``(X in the user's layout, X3, lengths, class indices, weights)``.
    """

    def __init__(self, estimator, layout, X3, lengths, y_idx, weights, soft, val):
        dtype = X3.dtype
        self.estimator = estimator
        self.layout = layout
        self.X3, self.Xa = X3, to_time_major(X3, dtype)
        self.lengths, self.y, self.weights, self.soft = lengths, y_idx, weights, soft
        self.val = val
        self.scorer = None
        if val is not None and estimator.scoring != "loss":
            self.scorer = check_scoring(estimator, scoring=estimator.scoring)
        self.engine = FastGRNNEngine(
            layout, estimator.gate_nonlinearity, estimator.update_nonlinearity, dtype
        )
        self.grad = np.empty(layout.size, dtype=dtype)
        self._batch_buffers = {}
        self.sparsity = None  # a _sparsity.SparseTraining when W or U is sparse

    def _batch(self, idx):
        """Time-major batch ``Xa[:, idx]`` cut to its longest sequence."""
        buf = self._batch_buffers.get(len(idx))
        if buf is None:
            T, _, d1 = self.Xa.shape
            buf = self._batch_buffers[len(idx)] = np.empty((T, len(idx), d1), self.Xa.dtype)
        np.take(self.Xa, idx, axis=1, out=buf)
        lengths = self.lengths[idx]
        T_batch = int(lengths.max())
        return buf[:T_batch], (lengths if lengths.min() < T_batch else None)

    def epoch(self, flat, optimizer, lr, train, batch_size, rng):
        """One pass over ``train`` in mini-batches; returns the mean loss."""
        # overflow shows up as a non-finite loss, reported with a clear error
        with np.errstate(over="ignore", invalid="ignore"):
            return self._epoch(flat, optimizer, lr, train, batch_size, rng)

    def _epoch(self, flat, optimizer, lr, train, batch_size, rng):
        est = self.estimator
        order = rng.permutation(train) if est.shuffle else train
        batches = list(gen_batches(len(order), batch_size))
        total_loss = total_weight = 0.0
        progress = est.verbose >= 2 and len(batches) >= 50
        for b, sl in enumerate(batches):
            idx = order[sl]
            w = self.weights[idx]
            w_sum = float(w.sum())
            if w_sum == 0.0:
                continue
            w = w / w.dtype.type(w_sum)
            Xb, lengths = self._batch(idx)
            logits = self.engine.forward(flat, Xb, lengths)
            dlogits = np.empty_like(logits)
            if self.soft is None:
                loss = _losses.cross_entropy(logits, self.y[idx], w, dlogits)
            else:
                loss = _losses.distillation(
                    logits, self.y[idx], w, self.soft[idx], est.distillation_alpha,
                    est.distillation_temperature, dlogits,
                )
            self.engine.backward(dlogits, self.grad)
            loss += _losses.l2_penalty(flat, self.layout.n_weights, est.alpha, self.grad)
            if not np.isfinite(loss):
                raise ValueError(
                    f"Training diverged: the loss became {loss} in epoch "
                    f"{est.n_iter_ + 1}, mini-batch {b + 1}. The model was left as "
                    "it was before this call. Scale the input (StandardScaler or "
                    "SequenceScaler), lower learning_rate_init, or set clip_grad_norm."
                )
            if self.sparsity is not None:
                self.sparsity.before_step(self.grad)
            clip_by_global_norm(self.grad, est.clip_grad_norm)
            optimizer.step(flat, self.grad, lr)
            if self.sparsity is not None:
                self.sparsity.after_step(flat)
            total_loss += loss * w_sum
            total_weight += w_sum
            if progress and (b + 1) % max(1, len(batches) // 20) == 0:
                done = (b + 1) / len(batches)
                sys.stdout.write(f"\r  [{'=' * int(20 * done):<20}] {done:4.0%}")
                sys.stdout.flush()
        if progress:
            sys.stdout.write("\r" + " " * 30 + "\r")
        if not np.isfinite(flat).all():
            raise ValueError(
                f"Training diverged: non-finite weights after epoch {est.n_iter_ + 1}. "
                "The model was left as it was before this call. Scale the input, "
                "lower learning_rate_init, or set clip_grad_norm."
            )
        return total_loss / total_weight

    def _logits(self, flat, X3, lengths):
        est = self.estimator
        return predict_logits(
            self.layout.views(flat), est.gate_nonlinearity, est.update_nonlinearity,
            X3, lengths, flat.dtype,
        )

    def evaluate(self, flat):
        """Weighted validation loss (cross-entropy) and score.

        The score is the weighted accuracy, or the value of ``scoring`` when it
        names a scorer.
        """
        X, X3, lengths, y, weights = self.val
        logits = self._logits(flat, X3, lengths)
        loss = _losses.cross_entropy(
            logits, y, weights / weights.sum(), np.empty_like(logits)
        )
        if self.scorer is None:
            correct = np.argmax(logits, axis=1) == y
            return loss, float(weights @ correct) / float(weights.sum())
        est = self.estimator  # the working copy: setting coefs_ publishes nothing
        est.coefs_ = self.layout.unpack(flat)
        return loss, float(self.scorer(est, X, est.classes_[y], sample_weight=weights))

    def training_fit(self, flat, train, max_samples=10_000):
        """Loss and accuracy of ``flat`` on the training data, and the majority share.

        Weighted cross-entropy (without the L2 term), weighted accuracy and the
        weighted share of the most frequent class, on at most ``max_samples``
        training sequences (evenly spaced).
        """
        idx = train[:: max(1, math.ceil(len(train) / max_samples))]
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self._logits(flat, self.X3[idx], self.lengths[idx])
        w, y = self.weights[idx], self.y[idx]
        total = float(w.sum())
        loss = _losses.cross_entropy(logits, y, w / w.dtype.type(total), np.empty_like(logits))
        accuracy = float(w @ (np.argmax(logits, axis=1) == y)) / total
        majority = float(np.bincount(y, weights=w).max()) / total
        return loss, accuracy, majority

    def report(self, record):
        """Print one line for an epoch (``verbose >= 1``)."""
        parts = [f"Epoch {record['epoch']}", f"loss {record['train_loss']:.5f}"]
        if record["val_score"] is not None:
            parts.append(f"val_loss {record['val_loss']:.5f}")
            parts.append(f"val_score {record['val_score']:.4f}")
        parts.append(f"lr {record['learning_rate']:.3g}")
        parts.append(f"{record['seconds']:.2f}s")
        if record["event"] is not None:
            parts.append(record["event"])
        print(", ".join(parts), flush=True)
