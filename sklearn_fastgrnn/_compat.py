"""What differs between the scikit-learn versions the package supports (1.6 on).

One function per difference, named after what it does, so that the rest of the
package calls one signature; ``.ci/run`` runs the fast tests on the oldest
declared versions.
"""

import inspect

from sklearn.utils.metadata_routing import _raise_for_params
from sklearn.utils.validation import _check_sample_weight

# scikit-learn 1.8 added allow_all_zero_weights (and refuses all-zero weights
# by default); before, all-zero weights passed
_HAS_ALL_ZERO_OPTION = (
    "allow_all_zero_weights" in inspect.signature(_check_sample_weight).parameters
)
# scikit-learn 1.8 added allow (parameters accepted without metadata routing)
_HAS_ALLOW = "allow" in inspect.signature(_raise_for_params).parameters


def check_sample_weight(sample_weight, X, *, dtype=None, ensure_non_negative=False,
                        allow_all_zero_weights=False):
    """scikit-learn's ``_check_sample_weight``, with ``allow_all_zero_weights`` on
    every supported version.

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), float or None
    X : array-like
        Its length is the number of samples.
    dtype : dtype, default=None
    ensure_non_negative : bool, default=False
    allow_all_zero_weights : bool, default=False
        False raises a ValueError when every weight is 0 (scikit-learn 1.8's
        message, also before 1.8).

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    if _HAS_ALL_ZERO_OPTION:
        return _check_sample_weight(sample_weight, X, dtype=dtype,
                                    ensure_non_negative=ensure_non_negative,
                                    allow_all_zero_weights=allow_all_zero_weights)
    weights = _check_sample_weight(sample_weight, X, dtype=dtype,
                                   ensure_non_negative=ensure_non_negative)
    if not allow_all_zero_weights and len(weights) and not weights.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return weights


def raise_for_params(params, owner, method, *, allow=()):
    """scikit-learn's ``_raise_for_params`` with ``allow`` on every supported
    version: the parameters named in ``allow`` pass without metadata routing.

    Parameters
    ----------
    params : dict
        The keyword arguments a method received.
    owner : object
        The estimator, for the message.
    method : str
        The method's name, for the message.
    allow : sequence of str, default=()
    """
    if _HAS_ALLOW:
        _raise_for_params(params, owner, method, allow=list(allow))
    else:
        _raise_for_params({k: v for k, v in params.items() if k not in allow}, owner, method)
