"""FastGRNNClassifier: classes, class weights and probabilities on the shared base."""

import math
from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from . import _losses
from ._base import (
    AUTO_LABEL_SMOOTHING,
    AUTO_MANY_OUTPUTS,
    LEGACY_PARAMS,
    BaseFastGRNN,
    check_finite_targets,
    docstring,
)
from ._sequences import integer_labels

# out_activation_ of a classifier: one label of several, or several labels
SOFTMAX, LOGISTIC = "softmax", "logistic"


def _sorted_labels(y):
    """``unique_labels(y)``: the sorted distinct labels."""
    return np.unique(y) if integer_labels(y) else unique_labels(y)


def _check_soft_probabilities(soft_targets, n_samples, classes, dtype):
    """Soft targets as probability rows, one column per class of ``classes``."""
    soft = check_array(
        soft_targets, dtype=[np.float64, np.float32], ensure_all_finite=False,
        ensure_2d=False, allow_nd=True, input_name="soft_targets",
    )
    n_classes = len(classes)
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
            f"classes_ {classes.tolist()}, in that order."
        )
    check_finite_targets(soft, "soft_targets", "hold probabilities")
    if (soft < 0).any():
        row = np.flatnonzero((soft < 0).any(axis=1))[0]
        raise ValueError(
            f"soft_targets contains negative entries (first in row {row}); it "
            "must hold probabilities."
        )
    return soft.astype(dtype, copy=False)


class FastGRNNClassifier(ClassifierMixin, BaseFastGRNN):
    _legacy_params = {**LEGACY_PARAMS, "label_smoothing": 0.0}
    _parameter_constraints = {
        **BaseFastGRNN._parameter_constraints,
        "label_smoothing": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "distillation_temperature": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        hidden_size="auto",
        *,
        n_timesteps=None,
        window="auto",
        shift_windows=True,
        crop_fraction="auto",
        input_noise="auto",
        window_phases="auto",
        envelope_width="auto",
        change_channels="auto",
        readout="last",
        scale_input=True,
        engine="auto",
        gate_nonlinearity="sigmoid",
        update_nonlinearity="tanh",
        w_rank="auto",
        u_rank=None,
        init="chrono",
        zeta_init=1.0,
        nu_init=-4.0,
        solver="adam",
        learning_rate="auto",
        learning_rate_init=0.01,
        max_lr_reductions="auto",
        lr_decay=0.1,
        lr_decay_step=50,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha="auto",
        clip_grad_norm=5.0,
        weight_averaging=0.9,
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
        label_smoothing="auto",
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
        self.window = window
        self.shift_windows = shift_windows
        self.crop_fraction = crop_fraction
        self.input_noise = input_noise
        self.window_phases = window_phases
        self.envelope_width = envelope_width
        self.change_channels = change_channels
        self.readout = readout
        self.scale_input = scale_input
        self.engine = engine
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
        self.weight_averaging = weight_averaging
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
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.verbose = verbose
        self.distillation_alpha = distillation_alpha
        self.distillation_temperature = distillation_temperature
        self.sparsity_w = sparsity_w
        self.sparsity_u = sparsity_u
        self.sparsity_phases = sparsity_phases
        self.iht_interval = iht_interval

    # ------------------------------------------------------------- targets
    @property
    def _multilabel(self):
        # a model whose fitted attributes were set by hand may lack out_activation_
        return getattr(self, "out_activation_", SOFTMAX) == LOGISTIC

    def _unseen_labels(self, y):
        """The labels of ``y`` that are not in ``classes_``, as a list."""
        if self._integer_range(y):
            if y.min() >= 0 and y.max() < len(self.classes_):
                return []
        elif y.dtype.kind != "O" and np.isin(y, self.classes_).all():
            return []  # the common case, without sorting y's labels
        return np.setdiff1d(_sorted_labels(y), self.classes_).tolist()

    def _integer_range(self, y):
        """Whether ``y`` holds integers and ``classes_`` is 0, 1, ..., k - 1
        (sorted distinct integers from 0 to k - 1): a label is its index."""
        classes = self.classes_
        return (integer_labels(y) and classes.dtype.kind in "iu" and len(classes) > 0
                and classes[0] == 0 and classes[-1] == len(classes) - 1)

    def _first_partial_fit_call(self, classes):
        """Set ``classes_`` from ``classes`` on the first ``partial_fit`` call
        (True), or check ``classes`` against it (False), as scikit-learn's
        classifiers do."""
        known = getattr(self, "classes_", None)
        if known is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is None:
            return False
        labels = _sorted_labels(np.asarray(classes))
        if known is None:
            self.classes_ = labels
            return True
        if not np.array_equal(known, labels):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call to "
                f"partial_fit, was: {known!r}"
            )
        return False

    def _class_indices(self, y):
        """Position of each label of ``y`` in ``classes_`` (all are there)."""
        if self._integer_range(y):
            return y.astype(np.intp)
        return np.searchsorted(self.classes_, y)

    def _encode_targets(self, y, classes, incremental, resume):
        """Set ``classes_`` and ``out_activation_``; class indices or the indicator."""
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not integer_labels(y):
            check_classification_targets(y)
        multilabel = y.ndim == 2 and type_of_target(y) == "multilabel-indicator"
        previous = getattr(self, "classes_", None)
        if incremental:
            first = self._first_partial_fit_call(classes)
            if not first and multilabel != self._multilabel:
                raise ValueError(
                    f"y is {'a multilabel indicator' if multilabel else 'one label per sample'}, "
                    f"but the first partial_fit call had "
                    f"{'a multilabel indicator' if self._multilabel else 'one label per sample'}. "
                    "Every partial_fit call must pass the same kind of y."
                )
            if first and multilabel:
                self._check_label_count(y, len(self.classes_), "classes")
                self.classes_ = np.arange(y.shape[1])
        else:
            self.classes_ = np.arange(y.shape[1]) if multilabel else _sorted_labels(y)
            if resume and (
                not np.array_equal(previous, self.classes_) or multilabel != self._multilabel
            ):
                raise ValueError(
                    "warm_start can only continue when y has the same classes as in "
                    f"the previous fit: previous {previous.tolist()}, now "
                    f"{self.classes_.tolist()}. Set warm_start=False to start over."
                )
        self.out_activation_ = LOGISTIC if multilabel else SOFTMAX
        self.n_outputs_ = len(self.classes_)
        if multilabel:
            self._check_label_count(y, self.n_outputs_, "classes_")
            return (y > 0).astype(np.float64)
        if incremental:
            unseen = self._unseen_labels(y)
            if unseen:
                raise ValueError(
                    f"y contains labels {unseen} that are not in classes_ "
                    f"{self.classes_.tolist()}. Pass every label to the first "
                    "partial_fit call as classes=..."
                )
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the "
                f"data, but the data contains only one class: "
                f"{self.classes_.tolist()[0]!r}."
            )
        return self._class_indices(y)

    @staticmethod
    def _check_label_count(y, expected, name):
        if y.shape[1] != expected:
            raise ValueError(
                f"y is a multilabel indicator of {y.shape[1]} labels, but {name} has "
                f"{expected}. Pass one column per label, the same in every call."
            )

    def _encode_validation_targets(self, y_val):
        y_val = np.asarray(y_val)
        if self._multilabel:
            if y_val.ndim != 2 or y_val.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"y_val must be a multilabel indicator of {self.n_outputs_} labels "
                    f"like y, got shape {y_val.shape}."
                )
            return (y_val > 0).astype(np.float64)
        y_val = column_or_1d(y_val, warn=True)
        unseen = self._unseen_labels(y_val)
        if unseen:
            raise ValueError(
                f"y_val contains labels {unseen} that are not in y "
                f"({self.classes_.tolist()}). The validation set must use the "
                "training labels."
            )
        return self._class_indices(y_val)

    def _decode_targets(self, targets):
        if self._multilabel:
            return targets.astype(int)
        return self.classes_[targets]

    def _n_outputs(self):
        return self.n_outputs_

    def _training_data(self, *args, **kwargs):
        data = super()._training_data(*args, **kwargs)
        self.label_smoothing_ = self._resolve_label_smoothing()
        return data

    def _resolve_label_smoothing(self):
        """``label_smoothing`` for the fitted outputs ("auto": see AUTO_LABEL_SMOOTHING)."""
        if self.label_smoothing == "auto":
            many = not self._multilabel and self.n_outputs_ > AUTO_MANY_OUTPUTS
            return AUTO_LABEL_SMOOTHING if many else 0.0
        return float(self.label_smoothing)

    def _task_loss(self):
        loss = _losses.BinaryCrossEntropy if self._multilabel else _losses.CrossEntropy
        return loss(self.label_smoothing_)

    def _target_weights(self, targets, weights, incremental):
        """``weights`` times the ``class_weight`` of each sample's class."""
        if self.class_weight is None:
            return weights
        if self._multilabel:
            raise ValueError(
                "class_weight applies to one label per sample; with a multilabel y, "
                "weight the samples with sample_weight instead."
            )
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' needs the whole training set and cannot "
                "be used with partial_fit. Pass a dict of class weights, computed "
                "for example with sklearn.utils.class_weight.compute_class_weight."
            )
        if self.class_weight == "balanced":
            # n_samples / (n_classes * count), with counts and n_samples
            # summing sample_weight: repeating a sample equals weighting it
            totals = np.bincount(targets, weights=weights, minlength=len(self.classes_))
            with np.errstate(divide="ignore"):
                per_class = np.where(totals > 0, totals.sum() / (len(totals) * totals), 0.0)
        else:
            per_class = self._class_weight_dict()
        return weights * per_class[targets].astype(weights.dtype)

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
        soft = _check_soft_probabilities(soft_targets, n_samples, self.classes_, dtype)
        if self._multilabel:
            if (soft > 1).any():
                row = np.flatnonzero((soft > 1).any(axis=1))[0]
                raise ValueError(
                    f"soft_targets contains entries above 1 (first in row {row}); with "
                    "a multilabel y each entry is the probability of one label."
                )
            return soft
        sums = soft.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
        if bad.size:
            raise ValueError(
                f"Row {bad[0]} of soft_targets sums to {sums[bad[0]]:.6g}, not 1: each "
                "row must be a probability distribution over classes_."
            )
        return soft

    def _split_validation(self, targets, seed):
        """(train, validation) indices: stratified, a sequence of every class in each.

        Each class gives ``round(validation_fraction * count)`` of its sequences,
        at least one and at most all but one; a class of a single sequence stays
        in the training part (the validation set then lacks it). A multilabel
        ``y``, or one where no class has two sequences, is split at random
        (``MLPClassifier`` splits a multi-class ``y`` at random too).
        """
        rng = np.random.default_rng(seed)
        n = len(targets)
        counts = None if self._multilabel else np.bincount(targets)
        if counts is None or counts.max() < 2:
            k = min(n - 1, max(1, round(self.validation_fraction * n)))
            val = np.sort(rng.choice(n, k, replace=False))
        else:
            val = []
            for c, count in enumerate(counts):
                if count < 2:
                    continue
                k = min(count - 1, max(1, round(self.validation_fraction * count)))
                val.append(rng.choice(np.flatnonzero(targets == c), k, replace=False))
            val = np.sort(np.concatenate(val))
        return np.setdiff1d(np.arange(n), val), val

    def _no_better_message(self, quality):
        if self._multilabel:
            constant = "always answering each label's more frequent value"
        else:
            constant = "always answering the most frequent class"
        return (
            f"The fitted model predicts its own training data no better than "
            f"{constant} (accuracy {quality.quality:.3f} against "
            f"{quality.baseline:.3f}): it has not learned. Scale the input "
            "(SequenceScaler or StandardScaler), train longer (max_iter), try "
            "another learning_rate_init, or a larger hidden_size."
        )

    # ------------------------------------------------------------- training
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, soft_targets=None, *, X_val=None,
            y_val=None, sample_weight_val=None):
        """Train on sequences ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            Sequences, NaN-padded at the end when of variable length (see the
            class docstring for the 2D layouts).
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a binary indicator of several labels per sample
            (multilabel: one sigmoid output per label).
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
            Every label that will ever be seen (for a multilabel ``y``, one
            entry per label column); required on the first call.

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, classes, sample_weight, soft_targets)

    # ------------------------------------------------------------- prediction
    def decision_function(self, X):
        """The outputs ``h_T @ V + bias_out`` (logits).

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two
        classes: the log-odds of ``classes_[1]`` (scikit-learn's convention).
        With a multilabel ``y``, the log-odds of each label, (n_samples, n_labels).
        """
        outputs = self._raw_outputs(X)
        if outputs.shape[1] == 2 and not self._multilabel:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        outputs = self._raw_outputs(X)
        with np.errstate(invalid="ignore"):  # non-finite outputs warned already
            if self._multilabel:
                return _losses.log_sigmoid(outputs)
            return _losses.log_softmax(outputs)

    def predict_proba(self, X):
        """Class probabilities ``softmax(logits)``, shape (n_samples, n_classes).

        With a multilabel ``y``, the probability of each label,
        ``sigmoid(logits)``, shape (n_samples, n_labels).
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Most probable class of each sequence (multilabel: the indicator)."""
        outputs = self._raw_outputs(X)
        if self._multilabel:
            return (outputs > 0).astype(int)
        return self.classes_[np.argmax(outputs, axis=1)]

    def _probabilities(self, outputs):
        """Class (or label) probabilities of outputs, along the last axis."""
        with np.errstate(invalid="ignore"):
            if self._multilabel:
                return np.exp(_losses.log_sigmoid(outputs))
            shifted = outputs - outputs.max(axis=-1, keepdims=True)
            exp = np.exp(shifted)
            return exp / exp.sum(axis=-1, keepdims=True)

    def _stream_predictions(self, outputs):
        return self._probabilities(outputs)

    def staged_predict_proba(self, X):
        """Class probabilities after every timestep of each sequence.

        Entry ``[i, t]`` is what :meth:`predict_proba` gives for the first
        ``t + 1`` timesteps of sequence ``i`` (as a :meth:`streamer` gives them
        one timestep at a time); at each sequence's last real timestep it is
        its ``predict_proba``.

        Returns
        -------
        ndarray of shape (n_samples, n_timesteps, n_classes)
            NaN after the end of each sequence (at its NaN padding).
        """
        staged, _ = self._staged_outputs(X)
        return self._probabilities(staged)

    def staged_predict(self, X):
        """The predicted class after every timestep of each sequence.

        Returns
        -------
        ndarray of shape (n_samples, n_timesteps)
            After the end of a sequence (its padding) the prediction stays that
            of the whole sequence, so the last column is :meth:`predict`. With
            a multilabel ``y``, shape (n_samples, n_timesteps, n_labels).
        """
        staged, lengths = self._staged_outputs(X)
        n, T, _ = staged.shape
        ends = np.minimum(np.arange(T)[None, :], lengths[:, None] - 1)
        staged = staged[np.arange(n)[:, None], ends]
        if self._multilabel:
            return (staged > 0).astype(int)
        return self.classes_[np.argmax(staged, axis=2)]

    def predict_early(self, X, threshold=0.9):
        """Classify each sequence as soon as the model is sure enough.

        The prediction of each sequence is made at its first timestep whose
        highest class probability reaches ``threshold`` (or at its last real
        timestep when none does): early classification, as a streaming device
        decides before the sequence ends.

        Parameters
        ----------
        X : array-like
            Sequences, as for :meth:`predict`.
        threshold : float in (0, 1], default=0.9
            Probability at which to decide.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            The class decided.
        decision_steps : ndarray of shape (n_samples,)
            Timesteps read when deciding (1 to the sequence's length); divide
            by the lengths for the earliness.
        """
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
        check_is_fitted(self)
        if self._multilabel:
            raise ValueError(
                "predict_early decides one class per sequence; with a multilabel y, "
                "use staged_predict_proba and a rule per label."
            )
        proba = self.staged_predict_proba(X)
        lengths = (~np.isnan(proba[:, :, 0])).sum(axis=1)
        sure = np.nan_to_num(proba.max(axis=2), nan=0.0) >= threshold
        first = np.where(sure.any(axis=1), np.argmax(sure, axis=1), lengths - 1)
        rows = np.arange(len(proba))
        return self.classes_[np.argmax(proba[rows, first], axis=1)], first + 1

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def __setstate__(self, state):
        if "coefs_" in state and "out_activation_" not in state:
            # release 0.1.0 had no multilabel output
            state["out_activation_"] = SOFTMAX
            state["n_outputs_"] = len(state["classes_"])
        if "coefs_" in state:  # trained before label smoothing
            state.setdefault("label_smoothing_", 0.0)
        super().__setstate__(state)


FastGRNNClassifier.__doc__ = docstring(
    """FastGRNN sequence classifier trained by exact backpropagation through time.

    FastGRNN (Kusupati et al., NeurIPS 2018) is a gated RNN whose gate and
    candidate share one pair of matrices::

        pre_t = x_t @ W + h_{{t-1}} @ U
        z_t   = gate(pre_t + bias_gate)
        c_t   = update(pre_t + bias_update)
        h_t   = (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t + z_t * h_{{t-1}}
        proba = softmax(h_T @ V + bias_out)

    Input is 3D ``(n_samples, n_timesteps, n_channels)``, or 2D with each row a
    univariate series (``n_timesteps=None``) or ``n_timesteps`` time-major steps.
    Trailing all-NaN timesteps are padding: the state stops at the last real step.

    The loss is the weighted mean cross-entropy of a mini-batch (``sample_weight``
    times the ``class_weight`` of the label, normalised to sum 1 over the batch;
    the labels smoothed by ``label_smoothing_``) plus ``(alpha / 2) *
    sum(M ** 2)`` over the entries of the weight matrices ``M`` in {{``W``
    (or ``W1``, ``W2``), ``U`` (or ``U1``, ``U2``), ``V``}}; biases,
    ``zeta`` and ``nu`` are not penalised. With ``soft_targets`` ``S`` the loss is
    ``distillation_alpha * T**2 * KL(S || softmax(logits / T)) +
    (1 - distillation_alpha) * cross-entropy``, ``T = distillation_temperature``.
    A multilabel ``y`` (a binary indicator, one column per label) trains one
    sigmoid output per label with the per-label cross-entropy summed over the
    labels, as ``MLPClassifier`` does.

    Parameters
    ----------
{parameters}
    label_smoothing : float in [0, 1) or "auto", default="auto"
        Training reads each label ``y`` as the probabilities ``(1 -
        label_smoothing) * onehot(y) + label_smoothing / n_classes`` (a
        multilabel ``y``: ``y * (1 - label_smoothing) + label_smoothing / 2``
        per label): confident logits pay off only up to a point, and the
        probabilities are less extreme. The validation loss and the reported
        qualities read the labels as they are. "auto" is 0.1 for more than 10 classes (one label
        per sample), else 0: many classes of few sequences each overfit the
        most. ``label_smoothing_`` is the value used.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, multiplied into ``sample_weight``. "balanced"
        uses ``n_samples / (n_classes * np.bincount(y))`` with both counts summing
        ``sample_weight`` (so a weight of 2 equals a repeated sample); ``fit``
        only, as in ``SGDClassifier``: ``partial_fit`` sees one chunk at a time.
    distillation_temperature : float, default=3.0
        Temperature ``T`` of the soft targets.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (for a multilabel ``y``, ``arange(n_labels)``).
    out_activation_ : {{"softmax", "logistic"}}
        "logistic" (one sigmoid per label) after a multilabel ``y``.
    n_outputs_ : int
        Columns of the outputs (and of ``V``): the classes, or the labels.
    label_smoothing_ : float
        The label smoothing of the last training call (``label_smoothing``).
{attributes}

    Notes
    -----
{notes}
    """,
    constant="predicting the class frequencies",
    validation_split="a stratified ``validation_fraction``\n        of the data "
    "(a class of a single sequence stays in training; a multilabel ``y``,\n        "
    "or one where no class has two sequences, is split at random)",
    quality="accuracy",
    envelope_auto="``window_`` for windows of at least 4 timesteps, else 0\n        (no envelope)",
    crop_auto="0.3 for windows of at least 4 timesteps, else 1.0 (no\n        crops)",
    outputs_named="classes (or labels of a multilabel\n        ``y``)",
    alpha_auto_max="1e-2 (reached at 100 sequences)",
)
