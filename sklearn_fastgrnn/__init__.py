"""FastGRNN sequence classifiers for scikit-learn, trained by exact BPTT in NumPy."""

from ._version import __version__
from .classifier import FastGRNNClassifier
from .compression import QuantizedFastGRNN, quantize
from .distillation import DistilledClassifier, SoftTargetTransformer, generate_soft_targets
from .preprocessing import SequenceScaler, make_fastgrnn_pipeline, pad_sequences
from .regressor import FastGRNNRegressor

__all__ = [
    "DistilledClassifier",
    "FastGRNNClassifier",
    "FastGRNNRegressor",
    "QuantizedFastGRNN",
    "SequenceScaler",
    "SoftTargetTransformer",
    "generate_soft_targets",
    "make_fastgrnn_pipeline",
    "pad_sequences",
    "quantize",
    "__version__",
]
