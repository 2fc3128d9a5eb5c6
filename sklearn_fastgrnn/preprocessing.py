"""Sequence preprocessing: per-channel scaling, padding of ragged data, pipelines.

:class:`SequenceScaler` standardises each channel over every real timestep of
every sequence; :func:`pad_sequences` turns a ragged list into the NaN-padded 3D
layout of docs/sequences.md; :func:`make_fastgrnn_pipeline` chains
a scaler and a :class:`~sklearn_fastgrnn.FastGRNNClassifier`.
"""

import contextlib
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from . import _callbacks
from ._sequences import input_ndim, validate_sequences
from .classifier import FastGRNNClassifier

__all__ = ["SequenceScaler", "make_fastgrnn_pipeline", "pad_sequences"]


@contextlib.contextmanager
def _unchanged_on_error(scaler):
    """Give ``scaler`` back its attributes if the block raises (they are never mutated)."""
    saved = dict(scaler.__dict__)
    try:
        yield
    except BaseException:
        scaler.__dict__.clear()
        scaler.__dict__.update(saved)
        raise


class SequenceScaler(
    _callbacks.CallbackSupport, OneToOneFeatureMixin, TransformerMixin, BaseEstimator
):
    """Standardise each channel over all real timesteps of all sequences.

    ``mean_`` and ``scale_`` hold one value per channel, computed over every
    timestep that is not padding, so that every timestep of a channel is scaled
    the same way. (A ``StandardScaler`` on the flattened 2D layout instead scales
    each (timestep, channel) column on its own.) Trailing all-NaN timesteps are
    padding and stay NaN; the output has the layout of the input (2D in, 2D out),
    so the scaler chains before a ``FastGRNNClassifier`` in a ``Pipeline``.

    Parameters
    ----------
    n_timesteps : int or None, default=None
        How a 2D ``X`` of shape (n_samples, m) is read, as in
        ``FastGRNNClassifier``: None, one column per timestep of a univariate
        series; ``k``, k time-major steps of ``m / k`` channels. Ignored for 3D
        ``X`` of shape (n_samples, n_timesteps, n_channels).

    Attributes
    ----------
    mean_ : ndarray of shape (n_channels,)
        Mean of each channel over the real timesteps (float64).
    var_ : ndarray of shape (n_channels,)
        Variance of each channel over the real timesteps (float64).
    scale_ : ndarray of shape (n_channels,)
        ``sqrt(var_)``, with 1 for constant channels (float64).
    n_steps_seen_ : int
        Real (non-padding) timesteps seen, over all sequences.
    n_features_in_ : int
        Columns of what the first ``fit``/``partial_fit`` saw (``T * d`` for 3D).
    feature_names_in_ : ndarray of str
        Defined when ``fit`` saw a DataFrame.
    n_timesteps_, n_channels_ : int
        Sequence shape seen in the first ``fit``/``partial_fit``.

    Notes
    -----
    NaN is padding, not a missing value: NaN inside a sequence (and infinity)
    is a ValueError naming the sample and timestep, as in the classifier, so
    the ``allow_nan`` estimator tag is False.

    ``partial_fit`` merges chunk statistics exactly (Chan, Golub and LeVeque's
    pairwise update), so streaming a dataset chunk by chunk gives the ``mean_``
    and ``var_`` of one ``fit`` on all of it, up to rounding.
    """

    _parameter_constraints = {
        "n_timesteps": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, n_timesteps=None):
        self.n_timesteps = n_timesteps

    def _validate(self, X, *, reset):
        """Validated ``(X, X3)``: ``X`` as an array and its 3D sequence view."""
        X, X3, _ = validate_sequences(self, X, reset=reset)
        return X, X3

    def fit(self, X, y=None):
        """Compute the per-channel mean and scale of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            Sequences, NaN-padded at the end when of variable length.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            for name in ("mean_", "var_", "scale_", "n_steps_seen_"):
                self.__dict__.pop(name, None)
            return self.partial_fit(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Update the per-channel statistics with the sequences of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            A chunk of sequences, NaN-padded at the end when of variable length.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            return self._partial_fit(X)

    @_callbacks.with_callbacks
    def _partial_fit(self, X):
        first = not hasattr(self, "n_steps_seen_")
        task = _callbacks.FitTask(self, X, None).begin()
        _, X3 = self._validate(X, reset=first)
        steps = X3.reshape(-1, X3.shape[2])
        steps = steps[~np.isnan(steps[:, 0])]  # padding is NaN in every channel
        count = len(steps)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below
            mean = steps.mean(axis=0, dtype=np.float64)
            m2 = np.square(steps - mean).sum(axis=0)
        if not first:
            total = self.n_steps_seen_ + count
            delta = mean - self.mean_
            mean = self.mean_ + delta * (count / total)
            seen = self.n_steps_seen_
            with np.errstate(over="ignore", invalid="ignore"):
                m2 = self.var_ * seen + m2 + delta**2 * (seen * count / total)
            count = total
        var = m2 / count
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            channel = int(np.flatnonzero(~np.isfinite(mean) | ~np.isfinite(var))[0])
            raise ValueError(
                f"The mean or variance of channel {channel} of X overflows float64: "
                "its values are too large for per-channel statistics (the variance "
                "of values beyond about 1e150 in magnitude overflows). Divide X by a "
                "constant (for example its largest magnitude) before scaling."
            )
        self.n_steps_seen_ = count
        self.mean_ = mean
        self.var_ = var
        scale = np.sqrt(self.var_)
        # a constant channel leaves only rounding noise in var_: do not amplify it
        constant = scale <= 1e3 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
        self.scale_ = np.where(constant, 1.0, scale)
        task.end()
        return self

    def transform(self, X):
        """Standardise ``X`` channel by channel; padding stays NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)
            A 2D ``X`` must have the width seen in ``fit``; a 3D ``X`` may have
            any number of timesteps but the fitted number of channels.

        Returns
        -------
        X_scaled : ndarray of the shape of ``X``
            float32 for float32 input, float64 otherwise.
        """
        check_is_fitted(self)
        X, X3 = self._validate(X, reset=False)
        with np.errstate(over="ignore"):
            out = (X3 - self.mean_.astype(X3.dtype)) / self.scale_.astype(X3.dtype)
        _check_finite_output(out, X3, "scaled")
        return out.reshape(X.shape)

    def inverse_transform(self, X):
        """Undo :meth:`transform`: ``X * scale_ + mean_`` per channel.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps, n_channels) or (n_samples, m)

        Returns
        -------
        X_original : ndarray of the shape of ``X``
        """
        check_is_fitted(self)
        X, X3 = self._validate(X, reset=False)
        with np.errstate(over="ignore"):
            out = X3 * self.scale_.astype(X3.dtype) + self.mean_.astype(X3.dtype)
        _check_finite_output(out, X3, "unscaled")
        return out.reshape(X.shape)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _check_finite_output(out, X3, what):
    """Raise when finite input steps gave infinity (float overflow), else return."""
    overflow = np.isinf(out) & np.isfinite(X3)
    if overflow.any():
        i, t, c = np.argwhere(overflow)[0]
        raise ValueError(
            f"X {what} overflows {out.dtype} in sample {i} at timestep {t}, channel "
            f"{c} (value {X3[i, t, c]!r}). Divide X by a constant first, or pass "
            "float64 for float32 data near the float32 maximum."
        )


def pad_sequences(sequences, maxlen=None, dtype=np.float64, truncating="pre"):
    """Stack sequences of different lengths into a NaN-padded 3D array.

    Parameters
    ----------
    sequences : iterable of array-like
        Each of shape (T_i, n_channels), or (T_i,) for a univariate sequence;
        every sequence needs the same number of channels and at least one
        timestep, and only finite values, except for trailing all-NaN timesteps:
        padding, which is dropped first. So an already padded 3D array (or a
        list of padded sequences) is read too, and padding it again changes
        nothing but ``maxlen``.
    maxlen : int or None, default=None
        Length of the output; None for the longest sequence. Longer sequences
        are truncated.
    dtype : floating dtype, default=np.float64
        Output dtype (it must hold NaN).
    truncating : {"pre", "post"}, default="pre"
        Remove timesteps beyond ``maxlen`` from the front ("pre", keep the most
        recent steps) or from the back ("post", keep the first steps).

    Returns
    -------
    X : ndarray of shape (n_sequences, maxlen, n_channels)
        Each sequence from timestep 0, followed by all-NaN timesteps: the
        variable-length layout that ``FastGRNNClassifier`` and
        ``SequenceScaler`` read.
    """
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}.")
    if maxlen is not None and not (isinstance(maxlen, Integral) and maxlen >= 1):
        raise ValueError(f"maxlen must be a positive integer or None, got {maxlen!r}.")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(
            f"dtype must be a floating dtype, which can hold the NaN padding; got {dtype}."
        )
    arrays = []
    for i, seq in enumerate(sequences):
        try:
            a = np.asarray(seq, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Sequence {i} cannot be read as {dtype} numbers: {exc}") from exc
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(
                f"Sequence {i} has shape {a.shape}; each sequence must be 1-D (T_i,) "
                "for a univariate series or 2-D (T_i, n_channels)."
            )
        if a.shape[0] == 0:
            raise ValueError(
                f"Sequence {i} is empty (0 timesteps); every sequence needs at least "
                "one timestep. Drop it."
            )
        if a.shape[1] == 0:
            raise ValueError(f"Sequence {i} has 0 channels; it needs at least one.")
        padded = np.isnan(a).all(axis=1)  # trailing all-NaN timesteps: padding
        if padded.all():
            raise ValueError(
                f"Sequence {i} has no real timestep: all its values are NaN, which "
                "is padding. Drop it."
            )
        if padded[-1]:
            a = a[: len(a) - int(np.argmin(padded[::-1]))]
        if arrays and a.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"Sequence {i} has {a.shape[1]} channels, but sequence 0 has "
                f"{arrays[0].shape[1]}: every sequence needs the same number of "
                "channels (shape (T_i, n_channels))."
            )
        bad = ~np.isfinite(a)
        if bad.any():
            t, c = np.argwhere(bad)[0]
            raise ValueError(
                f"Sequence {i} contains {a[t, c]} at timestep {t}, channel {c}. NaN "
                "marks padding in the padded layout and infinity cannot be learned "
                "from: impute or drop such values before padding."
            )
        arrays.append(a)
    if not arrays:
        raise ValueError("pad_sequences needs at least one sequence; got none.")
    length = maxlen if maxlen is not None else max(len(a) for a in arrays)
    X = np.full((len(arrays), length, arrays[0].shape[1]), np.nan, dtype=dtype)
    for i, a in enumerate(arrays):
        a = a[-length:] if truncating == "pre" else a[:length]
        X[i, : len(a)] = a
    return X


def _require_2d(X):
    """Pass a 2D ``X`` through; refuse 3D, which ``StandardScaler`` cannot scale."""
    if input_ndim(X) == 3:
        n, T, d = np.shape(X)
        raise ValueError(
            f"This pipeline scales with StandardScaler, which reads 2D input, but X "
            f"is 3D with shape {(n, T, d)}. Use make_fastgrnn_pipeline("
            f"scaler='sequence') (SequenceScaler reads 3D sequences), or pass X as "
            f"2D, X.reshape(n_samples, -1) of shape {(n, T * d)}, with "
            f"n_timesteps={T}."
        )
    return X


def make_fastgrnn_pipeline(scaler="sequence", **classifier_params):
    """A ``Pipeline`` of a scaler and a ``FastGRNNClassifier``.

    Parameters
    ----------
    scaler : {"sequence", "standard"} or None, default="sequence"
        "sequence": a :class:`SequenceScaler` (2D or 3D input, per-channel
        statistics), given the classifier's ``n_timesteps``. "standard": a
        ``StandardScaler`` on the 2D layout (one mean and scale per column; NaN
        padding passes through), after a ``require_2d`` step that rejects 3D
        input with an explanation. None: the classifier alone.
    **classifier_params
        Parameters of the ``FastGRNNClassifier``.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps named "sequencescaler", or "require_2d" and "standardscaler",
        then "fastgrnnclassifier" (so grids use ``fastgrnnclassifier__<param>``).
        To tune ``n_timesteps`` with ``scaler="sequence"``, set it on both steps.
    """
    classifier = FastGRNNClassifier(**classifier_params)
    if scaler == "sequence":
        steps = [("sequencescaler", SequenceScaler(n_timesteps=classifier.n_timesteps))]
    elif scaler == "standard":
        steps = [
            ("require_2d", FunctionTransformer(_require_2d, feature_names_out="one-to-one")),
            ("standardscaler", StandardScaler()),
        ]
    elif scaler is None:
        steps = []
    else:
        raise ValueError(f"scaler must be 'sequence', 'standard' or None, got {scaler!r}.")
    return Pipeline([*steps, ("fastgrnnclassifier", classifier)])
