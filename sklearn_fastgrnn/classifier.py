"""FastGRNNClassifier: the scikit-learn estimator around the NumPy BPTT engine."""

import copy
import sys
import time
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_is_fitted,
)

from . import _losses
from ._cell import (
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    predict_logits,
    to_time_major,
)
from . import _size
from ._nonlinearities import NONLINEARITIES
from ._optimizers import SGD, Adam, LearningRateSchedule, clip_by_global_norm
from ._sequences import validate_sequences
from ._size import model_size_bytes
from ._sparsity import SparseTraining, sparse_keys
from ._version import __version__
from .exceptions import InconsistentVersionWarning


@contextmanager
def _unchanged_on_error(estimator):
    """Give ``estimator`` back its attributes as they were if the block raises.

    Training builds its new state aside and assigns it at the end; the lists it
    appends to (``loss_curve_``, ``history_``, ...) are copied here, so restoring
    the attribute dict undoes everything a failed call did.
    """
    saved = {
        key: list(value) if isinstance(value, list) else value
        for key, value in estimator.__dict__.items()
    }
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


class FastGRNNClassifier(ClassifierMixin, BaseEstimator):
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
    zeta_init, nu_init : float, default=1.0, -4.0
        Initial raw ``zeta`` and ``nu`` (before the sigmoid), as in EdgeML.
    solver : {"adam", "sgd"}, default="adam"
    learning_rate : {"constant", "step", "adaptive"}, default="constant"
        "step" multiplies the rate by ``lr_decay`` every ``lr_decay_step``
        epochs; "adaptive" divides it by 5 whenever ``n_iter_no_change`` epochs
        pass without improvement, and stops below 1e-6 (as ``MLPClassifier``).
    learning_rate_init : float, default=0.01
    lr_decay : float, default=0.1
    lr_decay_step : int, default=50
    momentum : float, default=0.9
        SGD only.
    nesterovs_momentum : bool, default=True
        SGD only.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam only.
    alpha : float, default=0.0
        L2 penalty (see the loss above).
    clip_grad_norm : float or None, default=5.0
        Mini-batch gradients are scaled down to this global L2 norm; None
        disables clipping.
    batch_size : int, default=32
        Mini-batch size (clipped to the number of samples).
    max_iter : int, default=200
        Maximum number of epochs in ``fit``.
    shuffle : bool, default=True
        Shuffle the training data before each epoch.
    random_state : int, RandomState instance or None, default=None
        Initial weights, shuffling and the validation split. An int gives
        bit-identical ``coefs_``.
    tol : float, default=1e-4
    n_iter_no_change : int, default=10
        Training stops after this many epochs without an improvement of at least
        ``tol`` of the validation score (``early_stopping``) or the training loss.
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the data, score it after
        each epoch and restore the best weights at the end. Ignored by
        ``partial_fit``.
    validation_fraction : float, default=0.1
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, multiplied into ``sample_weight``. "balanced"
        uses ``n_samples / (n_classes * np.bincount(y))`` with both counts summing
        ``sample_weight`` (so a weight of 2 equals a repeated sample); ``fit``
        only, as in ``SGDClassifier``: ``partial_fit`` sees one chunk at a time.
    warm_start : bool, default=False
        Continue ``fit`` from the current weights and optimiser state.
    verbose : int, default=0
        1: one line per epoch; 2: also a progress bar within long epochs.
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
        ``bias_gate``, ``bias_update``, ``zeta``, ``nu``, ``bias_out``.
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
        Lowest training loss (None with ``early_stopping``).
    validation_scores_ : list of float or None
        Validation accuracy per epoch with ``early_stopping``.
    best_validation_score_ : float or None
    history_ : list of dict
        One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
        ``val_score`` (None without early stopping), ``learning_rate``,
        ``seconds``.
    n_params_ : int
    model_size_bytes_ : int
        As EdgeML counts it (``../shared/DESIGN.md`` section 5): 4 bytes per
        entry, 8 per non-zero of a matrix trained sparse. :meth:`summary` shows
        it per tensor.

    Notes
    -----
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
    See :mod:`sklearn_fastgrnn.compression`.

    The defaults train the bundled digits-as-sequences data (first half of the
    writers to train, second half to test) to 0.913 +- 0.011 test accuracy over
    5 seeds in about a second, as well as a PyTorch GRU of the same size (0.921
    +- 0.008): ``learning_rate_init=0.01`` with Adam is EdgeML's choice for
    FastGRNN; ``clip_grad_norm=5`` guards the recurrence against the occasional
    exploding step without touching normal training; ``hidden_size=32`` (6.5 KB)
    and ``batch_size=32`` keep models tiny and small problems (and
    ``check_estimator``) fast. ``hidden_size=128`` reaches 0.939 on digits.
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "n_timesteps": [Interval(Integral, 1, None, closed="left"), None],
        "gate_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "update_nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "w_rank": [Interval(Integral, 1, None, closed="left"), None],
        "u_rank": [Interval(Integral, 1, None, closed="left"), None],
        "zeta_init": [Interval(Real, None, None, closed="neither")],
        "nu_init": [Interval(Real, None, None, closed="neither")],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate": [StrOptions({"constant", "step", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "lr_decay_step": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "clip_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
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
        zeta_init=1.0,
        nu_init=-4.0,
        solver="adam",
        learning_rate="constant",
        learning_rate_init=0.01,
        lr_decay=0.1,
        lr_decay_step=50,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=0.0,
        clip_grad_norm=5.0,
        batch_size=32,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
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
        self.zeta_init = zeta_init
        self.nu_init = nu_init
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
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
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
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
                per_class = compute_class_weight(
                    self.class_weight, classes=self.classes_, y=self.classes_[y_idx]
                )
            weights = weights * per_class[y_idx].astype(X3.dtype)
        if not weights.sum() > 0:
            raise ValueError(
                "The sample weights (times class_weight) sum to zero: there is nothing "
                "to learn from. Give at least one sample a positive weight."
            )
        return weights

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

    def _encode_y(self, y, classes, incremental, resume):
        """Set ``classes_`` and return ``y`` as indices into it."""
        check_classification_targets(y)
        if incremental:
            _check_partial_fit_first_call(self, classes)
            unseen = np.setdiff1d(unique_labels(y), self.classes_)
            if unseen.size:
                raise ValueError(
                    f"y contains labels {unseen.tolist()} that are not in classes_ "
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
                f"data, but the data contains only one class: {self.classes_[0]!r}."
            )
        return np.searchsorted(self.classes_, y)

    # --------------------------------------------------------------- training
    def _layout(self):
        d, H = self.n_channels_, self.hidden_size
        if self.w_rank is not None and self.w_rank > min(d, H):
            raise ValueError(
                f"w_rank={self.w_rank} is larger than allowed: W is ({d}, {H}), so "
                f"its rank is at most min(n_channels, hidden_size) = {min(d, H)}. "
                "Use a smaller w_rank or None for full rank."
            )
        if self.u_rank is not None and self.u_rank > H:
            raise ValueError(
                f"u_rank={self.u_rank} is larger than allowed: U is ({H}, {H}), so "
                f"its rank is at most hidden_size = {H}. Use a smaller u_rank or "
                "None for full rank."
            )
        return ParameterLayout(d, H, len(self.classes_), self.w_rank, self.u_rank)

    def _new_optimizer(self, n_params, dtype):
        if self.solver == "adam":
            return Adam(n_params, dtype, self.beta_1, self.beta_2, self.epsilon)
        return SGD(n_params, dtype, self.momentum, self.nesterovs_momentum)

    def _start_state(self, layout, dtype, incremental, resume):
        """Parameters, optimiser, schedule and RNG to train from (never shared).

        Hyper-parameters always come from the current ``get_params()``; a resumed
        run takes over the training state (moments, RNG, adaptive rate, stopping
        counters) when the model has one. A model loaded from a weights file has
        none: it resumes its weights with a fresh optimiser.
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
            self.learning_rate, self.learning_rate_init, self.lr_decay, self.lr_decay_step
        )
        if has_state:
            optimizer.resume_from(self._optimizer)
            schedule.resume_from(self._schedule)
            rng, stopping = copy.deepcopy(self._rng), dict(self._stopping)
            return layout.pack(self.coefs_, dtype), optimizer, rng, schedule, stopping
        random_state = check_random_state(self.random_state)
        if resume:
            flat = layout.pack(self.coefs_, dtype)
        else:
            flat = init_parameters(
                layout, random_state, self.zeta_init, self.nu_init, dtype
            )
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        stopping = {
            "best": None,
            "no_improvement": 0,
            "split_seed": int(rng.integers(np.iinfo(np.int32).max)),
        }
        if not resume or not hasattr(self, "n_iter_"):
            self.n_iter_, self.t_ = 0, 0
            self.loss_curve_, self.history_ = [], []
            self.validation_scores_ = None
        return flat, optimizer, rng, schedule, stopping

    def _fit(self, X, y, sample_weight, soft_targets, *, incremental, classes=None):
        resume = hasattr(self, "coefs_") and (incremental or self.warm_start)
        _, X3, lengths, y = validate_sequences(self, X, y, reset=not resume)
        y_idx = self._encode_y(y, classes, incremental, resume)
        weights = self._sample_weights(y_idx, sample_weight, X3, incremental)
        dtype = X3.dtype
        soft = None
        if soft_targets is not None:
            soft = self._check_soft_targets(soft_targets, len(X3), dtype)
        layout = self._layout()
        flat, optimizer, rng, schedule, stopping = self._start_state(
            layout, dtype, incremental, resume
        )
        early = self.early_stopping and not incremental
        train, val = np.arange(len(X3)), None
        if early:
            if self.validation_scores_ is None:
                self.validation_scores_ = []
            train, val = train_test_split(
                train, test_size=self.validation_fraction, stratify=y_idx,
                random_state=stopping["split_seed"],
            )
        run = _TrainingRun(self, layout, X3, lengths, y_idx, weights, soft)
        run.sparsity = SparseTraining.for_run(self, layout, resume)
        # resumed weights are the best so far: fit restored them at its end
        best_flat = flat.copy() if early and resume else None
        epochs = 1 if incremental else self.max_iter
        for _ in range(epochs):
            epoch = self.n_iter_
            lr = schedule.rate(epoch)
            if run.sparsity is not None and run.sparsity.begin_epoch(flat, optimizer):
                # the support is frozen from now on: earlier weights do not count
                stopping.update(best=None, no_improvement=0)
                best_flat = None
            start = time.perf_counter()
            try:
                loss = run.epoch(flat, optimizer, lr, train, rng)
            except KeyboardInterrupt:
                warnings.warn(
                    f"Training interrupted by the user in epoch {epoch + 1}; keeping "
                    + ("the best weights so far." if early and best_flat is not None
                       else "the last weights, which are finite."),
                    UserWarning,
                )
                if not np.isfinite(flat).all() and best_flat is None:
                    raise
                break
            self.n_iter_ += 1
            self.t_ += len(train)
            self.loss_curve_.append(loss)
            record = {"epoch": self.n_iter_, "train_loss": loss, "val_loss": None,
                      "val_score": None, "learning_rate": lr}
            if early:
                val_loss, val_score = run.evaluate(flat, val)
                record.update(val_loss=val_loss, val_score=val_score)
                self.validation_scores_.append(val_score)
                improved = stopping["best"] is None or val_score >= stopping["best"] + self.tol
                if stopping["best"] is None or val_score > stopping["best"]:
                    stopping["best"] = val_score
                    best_flat = flat.copy()
            else:
                improved = stopping["best"] is None or loss <= stopping["best"] - self.tol
                if stopping["best"] is None or loss < stopping["best"]:
                    stopping["best"] = loss
            stopping["no_improvement"] = 0 if improved else stopping["no_improvement"] + 1
            record["seconds"] = time.perf_counter() - start
            self.history_.append(record)
            if self.verbose:
                run.report(record)
            settled = run.sparsity is None or run.sparsity.frozen
            if not incremental and settled and stopping["no_improvement"] >= self.n_iter_no_change:
                stopping["no_improvement"] = 0
                if not schedule.on_plateau():
                    break
        else:
            if not incremental:
                warnings.warn(
                    f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        if early and best_flat is not None:
            flat = best_flat
        self._sparse_training = run.sparsity
        self._commit(layout, flat, optimizer, rng, schedule, stopping, early)
        return self

    def _commit(self, layout, flat, optimizer, rng, schedule, stopping, early):
        """Assign the trained state (the only place ``fit`` writes ``coefs_``)."""
        self.coefs_ = layout.unpack(flat)
        self._optimizer, self._rng, self._schedule = optimizer, rng, schedule
        self._stopping = stopping
        self._optimizer_kind = self.solver
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        if early:
            self.best_loss_ = None
            self.best_validation_score_ = stopping["best"]
        else:
            self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else None
            self.best_validation_score_ = None
        self.n_params_ = layout.size
        self.model_size_bytes_ = model_size_bytes(self.coefs_, sparse_keys(self))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, soft_targets=None):
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

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            return self._fit(X, y, sample_weight, soft_targets, incremental=False)

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
        with _unchanged_on_error(self):
            return self._fit(
                X, y, sample_weight, soft_targets, incremental=True, classes=classes
            )

    # ------------------------------------------------------------- prediction
    def _logits(self, X):
        check_is_fitted(self)
        _, X3, lengths = validate_sequences(self, X, reset=False)
        dtype = np.float32 if X3.dtype == np.float32 else np.float64
        return predict_logits(
            self.coefs_, self.gate_nonlinearity, self.update_nonlinearity,
            X3, lengths, dtype,
        )

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
        state = super().__getstate__()
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
    """The data and engine of one ``fit``/``partial_fit`` call: epochs and scores."""

    def __init__(self, estimator, layout, X3, lengths, y_idx, weights, soft):
        dtype = X3.dtype
        self.estimator = estimator
        self.layout = layout
        self.X3, self.Xa = X3, to_time_major(X3, dtype)
        self.lengths, self.y, self.weights, self.soft = lengths, y_idx, weights, soft
        self.engine = FastGRNNEngine(
            layout, estimator.gate_nonlinearity, estimator.update_nonlinearity, dtype
        )
        self.grad = np.empty(layout.size, dtype=dtype)
        self._batch_buffers = {}
        self.sparsity = None  # a compression.SparseTraining when W or U is sparse

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

    def epoch(self, flat, optimizer, lr, train, rng):
        """One pass over ``train`` in mini-batches; returns the mean loss."""
        # overflow shows up as a non-finite loss, reported with a clear error
        with np.errstate(over="ignore", invalid="ignore"):
            return self._epoch(flat, optimizer, lr, train, rng)

    def _epoch(self, flat, optimizer, lr, train, rng):
        est = self.estimator
        order = rng.permutation(train) if est.shuffle else train
        batch_size = min(est.batch_size, len(order))
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

    def evaluate(self, flat, idx):
        """Weighted validation loss (cross-entropy) and accuracy on ``idx``."""
        est = self.estimator
        logits = predict_logits(
            self.layout.views(flat), est.gate_nonlinearity, est.update_nonlinearity,
            self.X3[idx], self.lengths[idx], flat.dtype,
        )
        w = self.weights[idx] / self.weights[idx].sum()
        loss = _losses.cross_entropy(logits, self.y[idx], w, np.empty_like(logits))
        score = float(w @ (np.argmax(logits, axis=1) == self.y[idx]))
        return loss, score

    def report(self, record):
        """Print one line for an epoch (``verbose >= 1``)."""
        parts = [f"Epoch {record['epoch']}", f"loss {record['train_loss']:.5f}"]
        if record["val_score"] is not None:
            parts.append(f"val_loss {record['val_loss']:.5f}")
            parts.append(f"val_score {record['val_score']:.4f}")
        parts.append(f"lr {record['learning_rate']:.3g}")
        parts.append(f"{record['seconds']:.2f}s")
        print(", ".join(parts), flush=True)
