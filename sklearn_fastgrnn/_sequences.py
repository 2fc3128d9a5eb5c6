"""Input layouts of ``../shared/DESIGN.md`` section 3: 2D/3D arrays to sequences.

A sequence batch is a 3D array ``(n_samples, n_timesteps, n_channels)``. Trailing
timesteps whose every channel is NaN are padding; :func:`sequence_lengths` finds
the real length of every sequence and rejects NaN or infinity anywhere else.
"""

import numpy as np


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
