"""Model compression and EdgeML's model-size accounting (DESIGN.md section 5)."""

import numpy as np

DENSE_BYTES = 4


def model_size_bytes(coefs):
    """Size of a model in bytes, as EdgeML counts it.

    Every entry of a dense float32 tensor costs 4 bytes; this is the size of the
    parameters of a dense model (biases, ``zeta``, ``nu``, ``V`` and ``bias_out``
    included). KB in the paper's tables are ``bytes / 1024``.

    Parameters
    ----------
    coefs : dict of ndarray
        A fitted model's ``coefs_``.

    Returns
    -------
    int
    """
    return DENSE_BYTES * int(sum(np.size(value) for value in coefs.values()))
