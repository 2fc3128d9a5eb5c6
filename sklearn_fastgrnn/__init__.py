"""FastGRNN sequence classifiers and regressors for scikit-learn, trained by exact BPTT.

The root's public names are imported when first used (PEP 562), so that
``import sklearn_fastgrnn`` stays light and the command line handles Ctrl-C
from its first line on (before scikit-learn and NumPy are imported).
"""

import importlib

from ._version import __version__

# each public name of the root -> the module that defines it (the one list)
_PUBLIC = {
    "DistilledClassifier": ".distillation",
    "FastGRNNClassifier": ".classifier",
    "FastGRNNRegressor": ".regressor",
    "QuantizedFastGRNN": ".compression",
    "SequenceScaler": ".preprocessing",
    "SoftTargetTransformer": ".distillation",
    "generate_soft_targets": ".distillation",
    "make_fastgrnn_pipeline": ".preprocessing",
    "pad_sequences": ".preprocessing",
    "quantize": ".compression",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})
