"""Pictures of a fit: :class:`TrainingHistoryDisplay` draws ``history_``.

matplotlib is optional (``pip install "sklearn-fastgrnn[plot]"``) and imported
only when something is drawn, so importing this module stays light.
"""

import numpy as np
from sklearn.base import is_regressor
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils.validation import check_is_fitted

__all__ = ["TrainingHistoryDisplay"]


def _fitted_model(estimator):
    """The model holding ``history_``: the estimator, a Pipeline's last step or
    a distilled student."""
    check_is_fitted(estimator)
    model = estimator
    if hasattr(model, "steps"):  # a Pipeline
        model = model.steps[-1][1]
    model = getattr(model, "student_", model)  # a DistilledClassifier
    if not hasattr(model, "history_") and hasattr(model, "coefs_"):
        raise TypeError(
            f"This {type(model).__name__} has no training history (history_): fit and "
            "partial_fit record it, and joblib files keep it, but a weights file "
            "(load_weights) holds the weights only. Draw the model that was trained, "
            "or one saved with joblib."
        )
    if not hasattr(model, "history_"):
        raise TypeError(
            f"{type(model).__name__} has no training history (history_): pass a "
            "fitted FastGRNNClassifier or FastGRNNRegressor, or a Pipeline or "
            "DistilledClassifier that ends with one."
        )
    return model


def _score_name(model):
    """What the validation score of ``model``'s ``history_`` is: the ``scoring``
    it names, else its task's quality ("accuracy" of a classifier, subset
    accuracy for a multilabel one, "R²" of a regressor)."""
    scoring = getattr(model, "scoring", "loss")
    if isinstance(scoring, str) and scoring != "loss":
        return scoring
    if scoring != "loss":  # a callable scorer
        return "score"
    return "R²" if is_regressor(model) else "accuracy"


def _column(history, key):
    """One field of every epoch as floats, NaN where it is missing or None."""
    values = [record.get(key) for record in history]
    return np.array([np.nan if v is None else float(v) for v in values])


class TrainingHistoryDisplay:
    """Training curves of a FastGRNN: loss, validation score, learning rate.

    Build it with :meth:`from_estimator`; the constructor takes the curves
    themselves. All parameters are stored as attributes.

    Parameters
    ----------
    epoch : array-like of shape (n_epochs,)
        Epoch numbers, from 1.
    train_loss : array-like of shape (n_epochs,)
    val_loss, val_score : array-like of shape (n_epochs,) or None, default=None
        Validation loss and score (NaN where an epoch has none); None when
        the fit held out no validation data.
    learning_rate : array-like of shape (n_epochs,) or None, default=None
    kept_epoch : int or None, default=None
        Epoch to mark with a vertical line.
    kept_label : str, default="kept epoch"
        What the mark means, shown in the legend.
    name : str or None, default=None
        Title of the figure.
    score_name : str, default="accuracy"
        What ``val_score`` measures, for its label: "accuracy" (a classifier),
        "R²" (a regressor) or the name of the ``scoring`` watched.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes
        One panel per curve group, top to bottom: loss, then validation score
        (if any), then learning rate (if drawn); they share the epoch axis.
    ax_ : matplotlib Axes
        The loss panel, ``axes_[0]``.
    lines_ : dict of matplotlib Line2D
        The curves drawn, keyed ``"train_loss"``, ``"val_loss"``,
        ``"val_score"``, ``"learning_rate"``.
    kept_epoch_lines_ : list of matplotlib Line2D
        The vertical mark on each panel (empty without ``kept_epoch``).
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from sklearn_fastgrnn import FastGRNNClassifier
    >>> from sklearn_fastgrnn.plotting import TrainingHistoryDisplay
    >>> clf = FastGRNNClassifier(early_stopping=True).fit(X, y)  # doctest: +SKIP
    >>> TrainingHistoryDisplay.from_estimator(clf)               # doctest: +SKIP
    """

    def __init__(self, *, epoch, train_loss, val_loss=None, val_score=None,
                 learning_rate=None, kept_epoch=None, kept_label="kept epoch",
                 name=None, score_name="accuracy"):
        self.epoch = epoch
        self.train_loss = train_loss
        self.val_loss = val_loss
        self.val_score = val_score
        self.learning_rate = learning_rate
        self.kept_epoch = kept_epoch
        self.kept_label = kept_label
        self.name = name
        self.score_name = score_name

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None, learning_rate=True):
        """Draw the ``history_`` of a fitted model.

        Parameters
        ----------
        estimator : estimator
            A fitted :class:`~sklearn_fastgrnn.FastGRNNClassifier` or
            :class:`~sklearn_fastgrnn.FastGRNNRegressor`, or a fitted Pipeline
            whose last step is one (or a fitted
            :class:`~sklearn_fastgrnn.distillation.DistilledClassifier`).
        ax : matplotlib Axes, array of Axes or None, default=None
            See :meth:`plot`.
        name : str or None, default=None
            Title; the estimator's class name when None.
        learning_rate : bool, default=True
            Draw the learning-rate panel.

        Returns
        -------
        display : TrainingHistoryDisplay

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.

        Notes
        -----
        The validation score is named after what it measures (see
        ``score_name``): the accuracy of a classifier (subset accuracy when
        multilabel), the R² of a regressor, or the ``scoring`` watched.
        The marked epoch is ``best_epoch_``, the epoch whose weights the model
        kept. A model without that attribute gets the epoch of lowest
        validation loss, else of lowest training loss, labelled as such.
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        model = _fitted_model(estimator)
        history = model.history_
        epoch = np.array([record["epoch"] for record in history], dtype=int)
        train_loss = _column(history, "train_loss")
        val_loss = _column(history, "val_loss")
        val_score = _column(history, "val_score")
        has_val = bool(np.isfinite(val_loss).any())
        kept_epoch, kept_label = getattr(model, "best_epoch_", None), "kept epoch"
        if kept_epoch is None and len(history):
            curve, what = (val_loss, "validation") if has_val else (train_loss, "training")
            if np.isfinite(curve).any():
                kept_epoch = int(epoch[np.nanargmin(curve)])
                kept_label = f"lowest {what} loss"
        display = cls(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss if has_val else None,
            val_score=val_score if np.isfinite(val_score).any() else None,
            learning_rate=_column(history, "learning_rate") if learning_rate else None,
            kept_epoch=kept_epoch,
            kept_label=kept_label,
            name=type(estimator).__name__ if name is None else name,
            score_name=_score_name(model),
        )
        return display.plot(ax=ax)

    def _panels(self):
        panels = ["loss"]
        if self.val_score is not None:
            panels.append("score")
        if self.learning_rate is not None:
            panels.append("learning_rate")
        return panels

    def _make_axes(self, ax, n):
        import matplotlib.pyplot as plt

        if ax is None:
            fig, axes = plt.subplots(n, 1, sharex=True, squeeze=False,
                                     figsize=(6.4, 1.2 + 1.8 * n), layout="constrained")
            return fig, axes[:, 0]
        if hasattr(ax, "get_figure") and not isinstance(ax, np.ndarray):
            if n == 1:
                return ax.get_figure(), np.array([ax])
            spec = ax.get_subplotspec()
            if spec is None:
                raise ValueError(
                    f"ax has no subplot position to split into {n} panels: pass "
                    f"{n} Axes (for example plt.subplots({n}, 1)[1]) or ax=None."
                )
            fig = ax.get_figure()
            ax.set_axis_off()  # its area holds the panels
            inner = spec.subgridspec(n, 1, hspace=0.1)
            axes = [fig.add_subplot(inner[0])]
            axes += [fig.add_subplot(inner[i], sharex=axes[0]) for i in range(1, n)]
            for upper in axes[:-1]:
                upper.tick_params(labelbottom=False)
            return fig, np.array(axes)
        axes = np.asarray(ax, dtype=object).ravel()
        if len(axes) != n:
            raise ValueError(
                f"Expected {n} Axes (panels: {', '.join(self._panels())}), got "
                f"{len(axes)}."
            )
        return axes[0].get_figure(), axes

    def plot(self, ax=None, *, name=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, array of Axes or None, default=None
            None makes a new figure with one panel per curve group. One Axes is
            split into the panels (it must come from ``subplots`` or a grid
            spec); an array gives one Axes per panel, in the order of
            ``axes_``.
        name : str or None, default=None
            Title; ``self.name`` when None.

        Returns
        -------
        display : TrainingHistoryDisplay
            With ``figure_``, ``axes_``, ``ax_``, ``lines_`` and
            ``kept_epoch_lines_`` set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        panels = self._panels()
        self.figure_, self.axes_ = self._make_axes(ax, len(panels))
        self.ax_ = self.axes_[0]
        from matplotlib.ticker import MaxNLocator

        self.lines_ = {}
        epoch = np.asarray(self.epoch)
        by_panel = dict(zip(panels, self.axes_))
        # one epoch is one point: a line alone would draw nothing
        points = {"marker": "o", "markersize": 4} if len(epoch) < 2 else {}

        loss_ax = by_panel["loss"]
        (self.lines_["train_loss"],) = loss_ax.plot(epoch, self.train_loss,
                                                    label="training loss", **points)
        if self.val_loss is not None:
            (self.lines_["val_loss"],) = loss_ax.plot(epoch, self.val_loss,
                                                      label="validation loss", **points)
        loss_ax.set_ylabel("loss")
        if "score" in by_panel:
            (self.lines_["val_score"],) = by_panel["score"].plot(
                epoch, self.val_score, color="C2", label=f"validation {self.score_name}",
                **points
            )
            by_panel["score"].set_ylabel(f"validation\n{self.score_name}")
        if "learning_rate" in by_panel:
            lr_ax = by_panel["learning_rate"]
            (self.lines_["learning_rate"],) = lr_ax.plot(
                epoch, self.learning_rate, color="C3", drawstyle="steps-post",
                label="learning rate", **points,
            )
            lr_ax.set_yscale("log")
            lr_ax.set_ylabel("learning\nrate")

        self.kept_epoch_lines_ = []
        if self.kept_epoch is not None:
            for i, panel_ax in enumerate(self.axes_):
                self.kept_epoch_lines_.append(panel_ax.axvline(
                    self.kept_epoch, color="0.4", linestyle="--", linewidth=1,
                    label=f"{self.kept_label} ({self.kept_epoch})" if i == 0 else None,
                ))
        for panel_ax in self.axes_:
            panel_ax.grid(alpha=0.3)
            # epochs are whole numbers, also a single one
            panel_ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(epoch) == 1:
            self.axes_[-1].set_xlim(epoch[0] - 0.5, epoch[0] + 0.5)
        loss_ax.legend(loc="upper right", fontsize="small")
        self.axes_[-1].set_xlabel("epoch")
        self.figure_.align_ylabels(self.axes_)
        title = self.name if name is None else name
        if title:
            loss_ax.set_title(title)
        return self
