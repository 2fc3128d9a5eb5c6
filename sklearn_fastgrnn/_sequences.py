"""Input layouts (docs/sequences.md): 2D and 3D arrays read as sequences.

A sequence batch is a 3D array ``(n_samples, n_timesteps, n_channels)``. Trailing
timesteps whose every channel is NaN are padding; :func:`sequence_lengths` finds
the real length of every sequence and rejects NaN or infinity anywhere else.
"""

import warnings

import numpy as np
from sklearn.utils.validation import (
    _check_feature_names,
    _check_y,
    check_array,
    check_consistent_length,
    validate_data,
)

from .exceptions import LayoutWarning

FLOAT_DTYPES = [np.float64, np.float32]


def input_ndim(X):
    """Number of dimensions of an array-like (2 for what only check_array can tell)."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return ndim
    try:
        return np.asarray(X).ndim
    except (TypeError, ValueError):  # ragged nested lists: let check_array explain
        return 2


#: fit warns (LayoutWarning) about a 3D X of at least this many times more
#: channels than timesteps: the layout of aeon and sktime read the wrong way round
CHANNELS_FIRST_RATIO = 8


def _check_layout(name, shape):
    """Warn when a 3D ``X`` of ``shape`` looks like (n_samples, n_channels, n_timesteps)."""
    _, T, d = shape
    if d >= CHANNELS_FIRST_RATIO * T:
        warnings.warn(
            f"X has {T} timestep{'s' if T > 1 else ''} of {d} channels (shape {shape}): "
            f"{name} reads a 3D X as (n_samples, n_timesteps, n_channels). aeon and "
            "sktime hold series as (n_samples, n_channels, n_timesteps); if X is laid "
            "out so, pass X.transpose(0, 2, 1). If the layout is as intended, filter "
            "out sklearn_fastgrnn.exceptions.LayoutWarning.",
            LayoutWarning,
        )


def validate_sequences(estimator, X, y="no_validation", *, reset, y_numeric=False):
    """Validate ``X`` (and ``y``) of a sequence estimator, as ``validate_data`` does.

    ``y`` may be 1D or 2D (several outputs, or a multilabel indicator): what a
    task accepts is the estimator's to check; ``y_numeric`` converts it to float
    (regression).

    A 3D ``X`` is used as is; a 2D ``X`` goes through ``validate_data`` (feature
    names, ``n_features_in_``) and is read with ``estimator.n_timesteps`` when
    ``reset``, else with the fitted ``n_timesteps_``. With ``reset`` the fitted
    ``n_features_in_``, ``n_timesteps_`` and ``n_channels_`` are set, and a 3D
    ``X`` that looks laid out as ``(n_samples, n_channels, n_timesteps)`` is
    warned about (:class:`~sklearn_fastgrnn.exceptions.LayoutWarning`);
    otherwise a 3D ``X`` may have any number of timesteps but must have
    ``n_channels_``.

    Returns
    -------
    X : ndarray
        The validated array, in the layout it came in.
    X3 : ndarray of shape (n_samples, n_timesteps, n_channels)
        A view of ``X`` as sequences.
    lengths : ndarray of shape (n_samples,)
        See :func:`sequence_lengths`.
    y : ndarray
        Only when ``y`` was given.
    """
    name = type(estimator).__name__
    fitting = not (isinstance(y, str) and y == "no_validation")
    ndim = input_ndim(X)
    if ndim > 3:
        raise ValueError(
            f"X has {ndim} dimensions (shape {np.shape(X)}); {name} reads 3D X of "
            "shape (n_samples, n_timesteps, n_channels) or 2D X of shape (n_samples, "
            "n_timesteps * n_channels)."
        )
    if ndim == 3:
        plain = _plain_floats(X) and not hasattr(estimator, "feature_names_in_")
        if not plain:  # what scikit-learn's checks return for a plain array: itself
            X = check_array(X, allow_nd=True, dtype=FLOAT_DTYPES, ensure_all_finite=False)
        n, T, d = X.shape
        if T == 0 or d == 0:
            raise ValueError(
                f"3D X has shape {X.shape}; expected (n_samples, n_timesteps, "
                "n_channels) with at least one timestep and one channel."
            )
        if not plain:  # (a plain array has no feature names, nor had the model)
            _check_feature_names(estimator, X, reset=reset)
        if reset:
            estimator.n_features_in_ = T * d
            _check_layout(name, X.shape)
        elif d != estimator.n_channels_:
            raise ValueError(
                f"X has {d} channels per timestep, but {name} was fitted with "
                f"{estimator.n_channels_} channels. A 3D X may have any number of "
                "timesteps, but its last axis must match."
            )
        if fitting:
            if y is None:
                raise ValueError(f"{name} requires y to be passed, but the target y is None.")
            if not integer_labels(y):  # (which _check_y returns as they are)
                y = _check_y(y, multi_output=True, y_numeric=y_numeric, estimator=estimator)
            check_consistent_length(X, y)
        X3 = X
    else:
        kwargs = dict(reset=reset, dtype=FLOAT_DTYPES, ensure_all_finite=False)
        try:
            if fitting:
                X, y = validate_data(
                    estimator, X, y, multi_output=True, y_numeric=y_numeric, **kwargs
                )
            else:
                X = validate_data(estimator, X, **kwargs)
        except ValueError as exc:
            if _is_ragged(X):
                raise ValueError(
                    "X is a list of sequences of different lengths, which is not an "
                    "array. Stack them with sklearn_fastgrnn.preprocessing."
                    "pad_sequences(X): it NaN-pads them into a 3D array of shape "
                    "(n_samples, n_timesteps, n_channels)."
                ) from None
            if not reset and _one_sequence(estimator, X):
                raise ValueError(
                    f"{exc} X of shape {np.shape(X)} looks like one sequence of "
                    f"{np.shape(X)[0]} timesteps, but a 2D X holds one sample per row. "
                    "Pass X[None]; one sequence is shape (1, T, d)."
                ) from None
            raise
        X3 = reshape_2d(X, estimator.n_timesteps if reset else estimator.n_timesteps_)
    if reset:
        estimator.n_timesteps_, estimator.n_channels_ = X3.shape[1], X3.shape[2]
    lengths = sequence_lengths(X3)
    return (X, X3, lengths, y) if fitting else (X, X3, lengths)


def _plain_floats(X):
    """Whether ``X`` is a non-empty ``numpy.ndarray`` of float32 or float64
    (native byte order): what ``check_array(X, dtype=FLOAT_DTYPES,
    ensure_all_finite=False, allow_nd=True)`` returns unchanged."""
    return (type(X) is np.ndarray and X.size > 0
            and (X.dtype == FLOAT_DTYPES[0] or X.dtype == FLOAT_DTYPES[1]))


def integer_labels(y):
    """Whether ``y`` is a non-empty 1D ``numpy.ndarray`` of integers: what
    scikit-learn's ``_check_y`` returns unchanged, and valid class labels,
    whose checks (``check_classification_targets``, the type checks of
    ``unique_labels``) need not run either."""
    return type(y) is np.ndarray and y.ndim == 1 and y.size > 0 and y.dtype.kind in "iu"


def _is_ragged(X):
    """True for nested lists whose rows have different lengths."""
    if not isinstance(X, (list, tuple)):
        return False
    try:
        np.asarray(X)
    except ValueError:  # NumPy >= 1.24: "inhomogeneous shape"
        return True
    return False


def _one_sequence(estimator, X):
    """True when a 2D ``X`` of numbers is as wide as one timestep: one sequence
    (T, d). (The width of values that are not numbers is not the problem.)"""
    shape = np.shape(X)
    if not (len(shape) == 2 and shape[1] == estimator.n_channels_
            and shape[1] != estimator.n_features_in_):
        return False
    try:
        np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def light_sequences(estimator, X):
    """``validate_sequences(estimator, X, reset=False)`` for plain arrays, cheaply.

    For a C-contiguous float32 or float64 ``numpy.ndarray`` whose shape the
    fitted ``estimator`` accepts (2D of width ``n_features_in_``, 3D with
    ``n_channels_`` channels, at least one sample and timestep; fitted without
    feature names), returns what the full validation returns, the same arrays
    and the same errors from :func:`sequence_lengths` (NaN and infinity). For
    anything else it returns None: the full validation then decides, with its
    own messages and warnings.

    Returns
    -------
    (X3, lengths) or None
    """
    if type(X) is not np.ndarray or not X.flags.c_contiguous:
        return None
    if X.dtype != FLOAT_DTYPES[0] and X.dtype != FLOAT_DTYPES[1]:
        return None
    if hasattr(estimator, "feature_names_in_") or X.size == 0:
        return None
    if X.ndim == 3:
        if X.shape[2] != estimator.n_channels_:
            return None
        X3 = X
    elif X.ndim == 2 and X.shape[1] == estimator.n_features_in_:
        X3 = reshape_2d(X, estimator.n_timesteps_)
    else:
        return None
    return X3, sequence_lengths(X3)


def reshape_2d(X, n_timesteps):
    """View a 2D ``X`` (n_samples, m) as sequences (n_samples, T, m // T).

    ``n_timesteps=None`` reads each row as a univariate series (T = m); otherwise
    each row is ``n_timesteps`` time-major steps of ``m / n_timesteps`` channels.
    """
    n, m = X.shape
    if n_timesteps is None:
        return X.reshape(n, m, 1)
    if m % n_timesteps:
        raise ValueError(
            f"X has {m} columns, which is not divisible by n_timesteps="
            f"{n_timesteps}: a 2D row must hold n_timesteps steps of the same number "
            f"of channels, time-major. Pass an n_timesteps that divides {m}, or a 3D "
            "X of shape (n_samples, n_timesteps, n_channels)."
        )
    return X.reshape(n, n_timesteps, m // n_timesteps)


def sequence_lengths(X):
    """Real length of each sequence of ``X`` (n, T, d), checking its NaN and inf.

    Returns
    -------
    lengths : ndarray of shape (n,), dtype int64
        Number of timesteps before the trailing all-NaN padding.

    Raises
    ------
    ValueError
        On infinity anywhere, NaN anywhere but whole trailing timesteps, or a
        sequence with no real timestep. The message names the sample and step.
    """
    n, T, d = X.shape
    if np.isfinite(X).all():
        return np.full(n, T, dtype=np.int64)
    inf = np.isinf(X)
    if inf.any():
        i, t, _ = np.argwhere(inf)[0]
        raise ValueError(
            f"X contains inf (or a value too large for {X.dtype}) in sample {i} at "
            f"timestep {t}. Remove or clip it before fitting or predicting."
        )
    isnan = np.isnan(X)
    real = ~isnan.all(axis=2)
    empty = ~real.any(axis=1)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"Sample {i} of X has no real timestep: all its values are NaN, which "
            "would be an empty sequence. Drop that sample."
        )
    lengths = T - np.argmax(real[:, ::-1], axis=1)
    inside = isnan.any(axis=2) & (np.arange(T) < lengths[:, None])
    if inside.any():
        i, t = np.argwhere(inside)[0]
        raise ValueError(
            f"X contains NaN in sample {i} at timestep {t}, before the end of that "
            "sequence. NaN is only allowed as padding: whole timesteps (every "
            "channel NaN) at the end of a variable-length sequence. Impute missing "
            "values inside a sequence first."
        )
    return lengths.astype(np.int64)


def windowed(X, lengths, window, shift=0):
    """Sequences of windows: each cell step reads ``window`` consecutive timesteps.

    Step ``j`` of the result is ``[x_{jk}, x_{jk+1}, ..., x_{jk+k-1}]`` (``k =
    window``, time-major inside the window), so a sequence of real length ``L``
    becomes ``ceil(L / k)`` steps of ``k * d`` values. The last, partial window
    of a sequence is filled by repeating its last real timestep (an edge fill:
    it commutes with any per-channel affine map of the input, so standardising
    before or after windowing is the same); the windows after it are NaN
    padding. With a ``shift`` ``s``, every sequence is first preceded by ``s``
    copies of its first timestep (one phase of the windows: see
    :func:`phase_shifts`), so it is ``ceil((L + s) / k)`` steps.

    Parameters
    ----------
    X : ndarray of shape (n, T, d)
        NaN-padded at the end.
    lengths : ndarray of shape (n,)
        Real length of each sequence.
    window : int
        Timesteps per window (1 returns ``X`` and ``lengths`` as they are).
    shift : int, default=0
        Copies of the first timestep before each sequence, ``0 <= shift < window``.

    Returns
    -------
    X_windows : ndarray of shape (n, ceil((T + shift) / window), window * d)
    lengths_windows : ndarray of shape (n,)
    """
    if window == 1:
        return X, lengths
    n, T, d = X.shape
    steps = -(-(T + shift) // window)
    step_lengths = -(-(lengths + shift) // window)
    if not shift and T == steps * window and (step_lengths * window == lengths).all():
        return X.reshape(n, steps, window * d), step_lengths  # no partial window
    t = np.arange(steps * window)
    source = np.clip(t[None, :] - shift, 0, lengths[:, None] - 1)
    out = np.take_along_axis(X, source[:, :, None], axis=1)
    out[t[None, :] >= (step_lengths * window)[:, None]] = np.nan
    return out.reshape(n, steps, window * d), step_lengths


def phase_shifts(window, phases):
    """The shifts of ``phases`` phases of windows of ``window`` timesteps.

    Phase ``j`` reads every sequence after ``s_j = (j * window) // phases``
    copies of its first timestep (:func:`windowed`), so the phases' windows
    start at ``phases`` different places, spread evenly; ``s_0 = 0``.
    Prediction averages the readouts of the phases.

    Returns
    -------
    ndarray of int of shape (phases,)
    """
    return np.arange(phases) * window // phases


def edge_extended(X, lengths, pad, n_steps):
    """``X`` (n, T, d) with ``pad`` copies of each sequence's first timestep before
    it and its last timestep repeated after it, to ``n_steps`` steps (finite).

    What training cuts shifted windows from: sequence ``i`` starting ``s``
    timesteps late (``s <= pad``, prefixed with copies of its first timestep)
    is ``E[i, pad - s:]``, and its last window is edge-filled as
    :func:`windowed` fills it.
    """
    source = np.clip(np.arange(n_steps)[None, :] - pad, 0, lengths[:, None] - 1)
    return np.take_along_axis(X, source[:, :, None], axis=1)
