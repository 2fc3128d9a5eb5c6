"""Knowledge distillation: a teacher's softened probabilities train a small student.

Hinton et al. (2015) train a small model on the probabilities of a larger one,
softened at a temperature ``T``; ``docs/design.md`` (section "Loss") gives the loss
that :class:`~sklearn_fastgrnn.FastGRNNClassifier` minimises when ``fit`` receives
``soft_targets``. This module makes those soft targets from any scikit-learn
classifier (:func:`generate_soft_targets`, :class:`SoftTargetTransformer`) and
wraps teacher and student into one classifier (:class:`DistilledClassifier`).
"""

import copy
from numbers import Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    MetaEstimatorMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from . import _callbacks
from ._compat import raise_for_params
from ._losses import log_softmax
from .classifier import FastGRNNClassifier

__all__ = ["DistilledClassifier", "SoftTargetTransformer", "generate_soft_targets"]

_TEACHER_METHODS = ("predict_log_proba", "predict_proba", "decision_function")


def _check_teacher_methods(teacher):
    """Raise a TypeError unless ``teacher`` can give class scores."""
    if not any(hasattr(teacher, method) for method in _TEACHER_METHODS):
        raise TypeError(
            f"The teacher {type(teacher).__name__} has neither predict_proba nor "
            "decision_function, so it gives no class scores to soften. Use a "
            "classifier that has one of them, or wrap the model in "
            "sklearn.calibration.CalibratedClassifierCV(model, ensemble=False)."
        )


def _teacher_logits(teacher, X):
    """Log-probabilities (or decision scores) of a fitted teacher, shape (n, C)."""
    _check_teacher_methods(teacher)
    if hasattr(teacher, "predict_log_proba"):
        with np.errstate(divide="ignore"):
            # trees and forests take the log of probabilities that may be 0
            logits = np.asarray(teacher.predict_log_proba(X), dtype=np.float64)
    elif hasattr(teacher, "predict_proba"):
        proba = np.asarray(teacher.predict_proba(X), dtype=np.float64)
        with np.errstate(divide="ignore"):
            # a zero probability becomes -inf, hence exactly 0 after softening
            logits = np.log(proba)
    else:
        scores = np.asarray(teacher.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:
            # binary: the score is the log-odds of classes_[1]
            logits = np.column_stack([np.zeros_like(scores), scores])
        else:
            logits = scores
    if logits.ndim != 2:
        raise ValueError(
            f"The teacher {type(teacher).__name__} returned class scores of shape "
            f"{logits.shape}; expected (n_samples, n_classes)."
        )
    return logits


def generate_soft_targets(teacher, X, temperature=3.0, *, classes=None):
    """Class probabilities of a fitted teacher, softened at ``temperature``.

    The soft targets are ``softmax(log p / T)``: the teacher's log-probabilities
    (``predict_log_proba``, else the log of ``predict_proba``) divided by the
    temperature, or its ``decision_function`` scores read as logits when it has
    no probabilities (a binary score ``s`` as the logits ``[0, s]``). ``T = 1``
    gives the teacher's probabilities back; larger ``T`` spreads them out.

    Parameters
    ----------
    teacher : fitted classifier
        Any scikit-learn classifier (a Pipeline too) with ``predict_proba``,
        ``predict_log_proba`` or ``decision_function``.
    X : array-like
        Input the teacher accepts (3D sequences too, if the teacher does).
    temperature : float > 0, default=3.0
        Softening temperature ``T``; use the student's
        ``distillation_temperature``.
    classes : array-like of shape (n_classes,), default=None
        The student's classes, in its order. The columns are then reordered to
        it; classes that do not match the teacher's raise a ValueError. None
        keeps the teacher's ``classes_`` order.

    Returns
    -------
    soft_targets : ndarray of shape (n_samples, n_classes)
        Rows sum to 1; columns follow ``classes`` or ``teacher.classes_``.

    Raises
    ------
    TypeError
        If the teacher has neither ``predict_proba`` nor ``decision_function``.
    ValueError
        If ``temperature <= 0`` or ``classes`` does not match the teacher's.
    """
    if not isinstance(temperature, Real) or not temperature > 0:
        raise ValueError(
            f"temperature must be a number > 0, got {temperature!r}. T = 1 keeps "
            "the teacher's probabilities; larger T softens them."
        )
    check_is_fitted(teacher)
    logits = _teacher_logits(teacher, X)
    teacher_classes = getattr(teacher, "classes_", None)
    if teacher_classes is not None and len(teacher_classes) != logits.shape[1]:
        raise ValueError(
            f"The teacher {type(teacher).__name__} returned {logits.shape[1]} class "
            f"scores per sample but has {len(teacher_classes)} classes_."
        )
    with np.errstate(invalid="ignore"):
        soft = np.exp(log_softmax(logits / temperature))
    bad = np.flatnonzero(~np.isfinite(soft).all(axis=1))
    if bad.size:
        raise ValueError(
            f"The teacher {type(teacher).__name__} gave no usable class scores for "
            f"sample {bad[0]} (NaN or inf, or every probability 0): "
            f"{logits[bad[0]].tolist()}."
        )
    if classes is None:
        return soft
    if teacher_classes is None:
        raise ValueError(
            f"The teacher {type(teacher).__name__} has no classes_ attribute, so its "
            "columns cannot be matched to classes=...; pass classes=None."
        )
    classes = np.asarray(classes)
    teacher_classes = np.asarray(teacher_classes)
    missing = np.setdiff1d(classes, teacher_classes)
    extra = np.setdiff1d(teacher_classes, classes)
    if missing.size or extra.size or len(classes) != len(teacher_classes):
        raise ValueError(
            f"The teacher's classes_ {teacher_classes.tolist()} do not match the "
            f"student's classes {classes.tolist()}"
            + (f": the teacher lacks {missing.tolist()}" if missing.size else "")
            + (f"; the student lacks {extra.tolist()}" if extra.size else "")
            + ". Fit teacher and student on the same labels."
        )
    order = [np.flatnonzero(teacher_classes == c)[0] for c in classes]
    return soft[:, order]


class SoftTargetTransformer(TransformerMixin, MetaEstimatorMixin, BaseEstimator):
    """Turn a classifier into a transformer that outputs its softened probabilities.

    ``fit(X, y)`` fits a clone of ``teacher`` (or, with ``prefit=True``, uses the
    fitted teacher as it is); ``transform(X)`` returns
    :func:`generate_soft_targets` of that teacher, ready to pass to
    ``FastGRNNClassifier.fit(..., soft_targets=...)``.

    Parameters
    ----------
    teacher : classifier
        Any scikit-learn classifier with ``predict_proba``, ``predict_log_proba``
        or ``decision_function``; a Pipeline too, and a sequence model that
        reads 3D input.
    temperature : float > 0, default=3.0
        Softening temperature; use the student's ``distillation_temperature``.
    prefit : bool, default=False
        Use ``teacher`` as already fitted: ``fit`` only checks it. Inside
        cross-validation (where estimators are cloned and the fit is lost),
        wrap a fitted teacher in ``sklearn.frozen.FrozenEstimator`` instead.

    Attributes
    ----------
    teacher_ : classifier
        The fitted teacher (``teacher`` itself with ``prefit=True``).
    classes_ : ndarray of shape (n_classes,)
        The teacher's classes: the order of the output columns.
    n_features_in_ : int
        As seen by the teacher (when it defines it).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_fastgrnn.distillation import SoftTargetTransformer
    >>> X = [[0.0], [1.0], [2.0], [3.0]]
    >>> soft = SoftTargetTransformer(LogisticRegression()).fit_transform(X, [0, 0, 1, 1])
    >>> soft.shape
    (4, 2)
    """

    _parameter_constraints = {
        "teacher": [HasMethods(["fit"])],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "prefit": ["boolean"],
    }

    def __init__(self, teacher, temperature=3.0, prefit=False):
        self.teacher = teacher
        self.temperature = temperature
        self.prefit = prefit

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **fit_params):
        """Fit a clone of the teacher (or check the prefit one).

        Parameters
        ----------
        X : array-like
        y : array-like of shape (n_samples,)
            Required unless ``prefit=True``; then, if given, its labels must be
            among the teacher's ``classes_``.
        **fit_params : dict
            Passed to the teacher's ``fit`` (routed by metadata routing when it is
            enabled).

        Returns
        -------
        self
        """
        _check_teacher_methods(self.teacher)
        if self.prefit:
            check_is_fitted(self.teacher)
            known = getattr(self.teacher, "classes_", None)
            if y is not None and known is not None:
                unknown = np.setdiff1d(unique_labels(y), known)
                if unknown.size:
                    raise ValueError(
                        f"y contains labels {unknown.tolist()} that the prefit teacher "
                        f"does not know (its classes_ are {np.asarray(known).tolist()})."
                    )
            self.teacher_ = self.teacher
            return self
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None: the teacher is fitted on (X, y). Pass y, or a fitted "
                "teacher with prefit=True."
            )
        if _routing_enabled():
            fit_params = process_routing(self, "fit", **fit_params).teacher.fit
        self.teacher_ = clone(self.teacher).fit(X, y, **fit_params)
        return self

    def transform(self, X):
        """Soft targets of ``X``, shape (n_samples, n_classes), rows summing to 1."""
        check_is_fitted(self)
        return generate_soft_targets(self.teacher_, X, self.temperature)

    @property
    def classes_(self):
        check_is_fitted(self)
        return self.teacher_.classes_

    @property
    def n_features_in_(self):
        check_is_fitted(self)
        return self.teacher_.n_features_in_

    def get_feature_names_out(self, input_features=None):
        """Output names ``soft_target_<class>``, one per class in ``classes_``."""
        return np.asarray([f"soft_target_{c}" for c in self.classes_], dtype=object)

    def get_metadata_routing(self):
        """Route ``fit`` metadata to the teacher's ``fit``."""
        return MetadataRouter(owner=self).add(
            teacher=self.teacher,
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = copy.copy(get_tags(self.teacher).input_tags)
        tags.target_tags.required = not self.prefit
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _student_has(method):
    """``available_if`` check: the (fitted, else given) student has ``method``."""

    def check(self):
        student = getattr(self, "student_", None)
        if student is None:
            student = self._student()
        getattr(student, method)
        return True

    return check


def _seed_unseeded(estimator, rng):
    """Give every ``random_state`` parameter of ``estimator`` that is None an int from ``rng``."""
    params = estimator.get_params(deep=True)
    seeds = {
        name: int(rng.randint(np.iinfo(np.int32).max))
        for name in sorted(params)
        if (name == "random_state" or name.endswith("__random_state")) and params[name] is None
    }
    if seeds:
        estimator.set_params(**seeds)


class DistilledClassifier(
    _callbacks.CallbackSupport, ClassifierMixin, MetaEstimatorMixin, BaseEstimator
):
    """A small student classifier trained on a teacher's softened probabilities.

    ``fit(X, y)`` fits a clone of ``teacher`` on ``(X, y)`` (only the data given
    to ``fit``: inside cross-validation that is the training fold), computes the
    soft targets ``softmax(log p / temperature)`` of ``X`` with
    :func:`generate_soft_targets`, and fits a clone of ``student`` on
    ``(X, y, soft_targets)`` with its ``distillation_temperature`` set to
    ``temperature`` and its ``distillation_alpha`` to ``alpha``. The student
    minimises::

        alpha * T**2 * KL(soft_targets || softmax(logits / T))
            + (1 - alpha) * cross-entropy(y, softmax(logits))

    Predictions come from the student alone: the teacher is only needed in
    ``fit``.

    Parameters
    ----------
    teacher : classifier
        Any scikit-learn classifier with ``predict_proba``, ``predict_log_proba``
        or ``decision_function``. It must read the same ``X`` as the student
        (flatten 3D sequences in a Pipeline for tabular teachers).
    student : classifier, default=None
        An estimator whose ``fit`` accepts ``soft_targets`` and which has the
        parameters ``distillation_alpha`` and ``distillation_temperature``.
        None means ``FastGRNNClassifier()``.
    temperature : float > 0, default=3.0
        Softening temperature ``T`` (overrides the student's
        ``distillation_temperature``).
    alpha : float in [0, 1], default=0.5
        Weight of the distillation term (overrides the student's
        ``distillation_alpha``); 0 trains on the labels alone.
    random_state : int, RandomState instance or None, default=None
        Seeds what teacher and student leave unseeded: every ``random_state``
        parameter of their clones (nested ones included, e.g. a Pipeline's
        steps) that is None gets an int drawn from this generator, teacher
        first, in the order of the parameter names. Parameters already set are
        kept. None leaves both as they are. An int makes ``fit`` repeatable.

    Attributes
    ----------
    teacher_ : classifier
        The fitted clone of ``teacher``.
    student_ : classifier
        The fitted clone of ``student``: it makes every prediction.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``fit`` saw a DataFrame.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_fastgrnn import FastGRNNClassifier
    >>> from sklearn_fastgrnn.datasets import load_digits_sequences
    >>> from sklearn_fastgrnn.distillation import DistilledClassifier
    >>> X, y = load_digits_sequences()
    >>> teacher = LogisticRegression(max_iter=1000)  # reads 2D rows of 64 pixels
    >>> student = FastGRNNClassifier(8, n_timesteps=8, max_iter=5, random_state=0)
    >>> model = DistilledClassifier(teacher, student).fit(X.reshape(-1, 64), y)
    >>> model.student_.model_size_bytes_
    944
    """

    _parameter_constraints = {
        "teacher": [HasMethods(["fit"])],
        "student": [HasMethods(["fit", "predict"]), None],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "random_state": ["random_state"],
    }

    def __init__(self, teacher, student=None, temperature=3.0, alpha=0.5, random_state=None):
        self.teacher = teacher
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.random_state = random_state

    def _student(self):
        return FastGRNNClassifier() if self.student is None else self.student

    def _check_student(self, student):
        if not has_fit_parameter(student, "soft_targets"):
            raise TypeError(
                f"The student {type(student).__name__} does not accept soft_targets "
                "in fit, so it cannot learn from the teacher. Use FastGRNNClassifier "
                "(or another estimator whose fit takes soft_targets)."
            )
        missing = {"distillation_alpha", "distillation_temperature"} - set(
            student.get_params(deep=False)
        )
        if missing:
            raise TypeError(
                f"The student {type(student).__name__} has no parameter(s) "
                f"{sorted(missing)}, which DistilledClassifier sets from alpha and "
                "temperature. Use FastGRNNClassifier or an estimator with both."
            )

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the teacher on ``(X, y)``, then the student on its soft targets.

        Parameters
        ----------
        X : array-like
            Input of both teacher and student.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the ``fit`` of teacher and student (with metadata routing
            enabled: to those that request it).
        **fit_params : dict
            Other metadata for the ``fit`` of teacher and student; only with
            ``sklearn.set_config(enable_metadata_routing=True)``.

        Returns
        -------
        self
        """
        student = self._student()
        self._check_student(student)
        _check_teacher_methods(self.teacher)
        if sample_weight is not None:
            fit_params["sample_weight"] = sample_weight
        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params)
            teacher_params, student_params = routed.teacher.fit, routed.student.fit
            if "soft_targets" in student_params:
                raise ValueError(
                    "DistilledClassifier makes the student's soft_targets from its "
                    "teacher; do not pass soft_targets to its fit (or use "
                    "FastGRNNClassifier directly with your own soft targets)."
                )
        else:
            raise_for_params(fit_params, self, "fit", allow=["sample_weight"])
            teacher_params, student_params = {}, {}
            if sample_weight is not None:
                if not has_fit_parameter(self.teacher, "sample_weight"):
                    raise TypeError(
                        f"The teacher {type(self.teacher).__name__} does not accept "
                        "sample_weight in fit. Drop sample_weight, or enable "
                        "metadata routing to choose who receives it."
                    )
                teacher_params = student_params = {"sample_weight": sample_weight}
        task = _callbacks.FitTask(self, X, y, sample_weight).begin(n_subtasks=2)
        teacher, student = clone(self.teacher), clone(student)
        if self.random_state is not None:
            rng = check_random_state(self.random_state)
            _seed_unseeded(teacher, rng)
            _seed_unseeded(student, rng)
        with task.step("fit-teacher", teacher):
            teacher.fit(X, y, **teacher_params)
        soft_targets = generate_soft_targets(
            teacher, X, self.temperature, classes=unique_labels(y)
        )
        student.set_params(
            distillation_alpha=self.alpha, distillation_temperature=self.temperature
        )
        with task.step("fit-student", student):
            student.fit(X, y, soft_targets=soft_targets, **student_params)
        self.teacher_, self.student_ = teacher, student
        task.end()
        return self

    @available_if(_student_has("predict"))
    def predict(self, X):
        """Predict with the student."""
        check_is_fitted(self)
        return self.student_.predict(X)

    @available_if(_student_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the student (at temperature 1)."""
        check_is_fitted(self)
        return self.student_.predict_proba(X)

    @available_if(_student_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities of the student."""
        check_is_fitted(self)
        return self.student_.predict_log_proba(X)

    @available_if(_student_has("decision_function"))
    def decision_function(self, X):
        """Decision function (logits) of the student."""
        check_is_fitted(self)
        return self.student_.decision_function(X)

    @property
    def classes_(self):
        check_is_fitted(self)
        return self.student_.classes_

    @property
    def n_features_in_(self):
        check_is_fitted(self)
        return self.student_.n_features_in_

    @property
    def feature_names_in_(self):
        check_is_fitted(self)
        return self.student_.feature_names_in_

    def get_metadata_routing(self):
        """Route ``fit`` metadata to the ``fit`` of teacher and student."""
        return (
            MetadataRouter(owner=self)
            .add(
                teacher=self.teacher,
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
            .add(
                student=self._student(),
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        teacher, student = get_tags(self.teacher), get_tags(self._student())
        for name in ("sparse", "allow_nan", "three_d_array", "string", "categorical"):
            setattr(
                tags.input_tags,
                name,
                getattr(teacher.input_tags, name) and getattr(student.input_tags, name),
            )
        tags.classifier_tags.multi_class = student.classifier_tags.multi_class
        return tags
