"""scikit-learn's callbacks (``sklearn.callback``, experimental in 1.9), in one place.

Every use of ``sklearn.callback`` in the package goes through this module, so
that a change of that API touches one file. With a scikit-learn that has it,
:class:`CallbackSupport` is its ``CallbackSupportMixin`` (estimators get
``set_callbacks``) and :class:`FitTask` calls the hooks; without it,
:class:`CallbackSupport` adds nothing, :func:`with_callbacks` returns the
method unchanged and :class:`FitTask` does nothing.

The task tree of an estimator is a root task per ``fit``/``partial_fit`` call
and one subtask per epoch (``"epoch"``) or per fitted sub-estimator.
"""

import copy
from contextlib import contextmanager, nullcontext

try:
    from sklearn.callback import CallbackSupportMixin as CallbackSupport
    from sklearn.callback import with_callbacks
except ImportError:  # scikit-learn without sklearn.callback (before 1.9)

    class CallbackSupport:
        """Without ``sklearn.callback``: no ``set_callbacks``, no hooks."""

    def with_callbacks(method):
        """Without ``sklearn.callback`` there is nothing to tear down."""
        return method


EPOCH = "epoch"


class FitTask:
    """The root callback task of one ``fit``/``partial_fit`` call, and its subtasks.

    :meth:`begin` sets up the estimator's callbacks and begins the root task;
    :meth:`end` ends it. The teardown of the callbacks is ``with_callbacks``'
    (or ``_fit_context``'s) job, also when the call fails.

    Parameters
    ----------
    estimator : estimator
        The estimator whose state the callbacks see (for the classifier, the
        working copy that trains).
    X, y : array-like
        The training data as given to ``fit``, passed to the hooks
        (``ScoringMonitor`` scores on it).
    sample_weight : array-like or None
        Passed to the hooks as ``metadata={"sample_weight": ...}``.
    name : str
        Name of the root task: ``"fit"`` or ``"partial_fit"``.
    """

    def __init__(self, estimator, X, y, sample_weight=None, *, name="fit"):
        self._estimator, self._name = estimator, name
        self._ctx = self._epoch = None
        self._data = {
            "X": X, "y": y,
            "metadata": {} if sample_weight is None else {"sample_weight": sample_weight},
        }

    def begin(self, n_subtasks=0):
        """Set up the callbacks and begin the root task of at most ``n_subtasks``."""
        if hasattr(self._estimator, "_init_callback_context"):
            self._ctx = self._estimator._init_callback_context(
                task_name=self._name, max_subtasks=n_subtasks
            )
            self._ctx.call_on_fit_task_begin(estimator=self._estimator, **self._data)
        return self

    def begin_epoch(self):
        """Begin the subtask of the next epoch."""
        if self._ctx is not None:
            self._epoch = self._ctx.subcontext(task_name=EPOCH)
            self._epoch.call_on_fit_task_begin(estimator=self._estimator, **self._data)

    def end_epoch(self, coefs, n_params):
        """End an epoch; True if a callback asks to stop.

        ``coefs`` returns (when called) a ``coefs_`` dict of new arrays holding
        the weights of this epoch: a callback that asks for
        ``fitted_estimator`` gets a copy of the estimator that predicts with
        them. ``n_params`` is the number of parameters.
        """
        if self._ctx is None:
            return False
        epoch, self._epoch = self._epoch, None
        return epoch.call_on_fit_task_end(
            estimator=self._estimator, **self._data,
            reconstruction_attributes=lambda: _epoch_attributes(
                self._estimator, coefs(), n_params
            ),
        )

    @contextmanager
    def step(self, name, sub_estimator):
        """Subtask ``name`` of a meta-estimator: the fit of ``sub_estimator`` in the block.

        Auto-propagated callbacks (``ProgressBar``) go on to ``sub_estimator``
        when it supports callbacks; one that does not (a teacher from another
        library) is fitted without them, and without a warning.
        """
        if self._ctx is None:
            yield
            return
        sub = self._ctx.subcontext(task_name=name)
        supported = hasattr(sub_estimator, "set_callbacks")
        with sub.propagate_callback_context(sub_estimator) if supported else nullcontext():
            sub.call_on_fit_task_begin(estimator=self._estimator, **self._data)
            yield
            sub.call_on_fit_task_end(estimator=self._estimator, **self._data)

    def end(self):
        """End the root task with the fitted estimator (and an epoch cut short, empty)."""
        if self._ctx is None:
            return
        if self._epoch is not None:  # Ctrl-C inside an epoch: it has no weights to show
            self._epoch.call_on_fit_task_end(estimator=self._estimator)
        self._ctx.call_on_fit_task_end(
            estimator=self._estimator, **self._data, reconstruction_attributes={}
        )


# Fitted attributes that a copy of an epoch needs, besides those set below
# (each that the estimator has: a classifier has classes_, a regressor not)
_TASK_ATTRIBUTES = ("classes_", "out_activation_", "n_outputs_")


def _epoch_attributes(estimator, coefs, n_params):
    """What a copy of the training ``estimator`` needs to predict with ``coefs``.

    Copies, so that the copy does not change as training goes on.
    """
    attributes = {
        name: copy.deepcopy(getattr(estimator, name))
        for name in _TASK_ATTRIBUTES if hasattr(estimator, name)
    }
    attributes |= {
        "coefs_": coefs,
        "n_features_in_": estimator.n_features_in_,
        "n_timesteps_": estimator.n_timesteps_,
        "n_channels_": estimator.n_channels_,
        "n_params_": n_params,
        "n_iter_": estimator.n_iter_,
        "best_epoch_": estimator.n_iter_,
        "t_": estimator.t_,
        "loss_": estimator.loss_curve_[-1],
        "loss_curve_": list(estimator.loss_curve_),
        "history_": [dict(record) for record in estimator.history_],
        "validation_scores_": None if estimator.validation_scores_ is None
        else list(estimator.validation_scores_),
    }
    if hasattr(estimator, "feature_names_in_"):
        attributes["feature_names_in_"] = estimator.feature_names_in_.copy()
    return attributes
