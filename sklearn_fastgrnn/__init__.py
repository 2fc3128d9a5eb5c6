"""FastGRNN sequence classifiers for scikit-learn, trained by exact BPTT in NumPy."""

from ._version import __version__
from .classifier import FastGRNNClassifier
from .compression import QuantizedFastGRNN, quantize
from .preprocessing import SequenceScaler, make_fastgrnn_pipeline, pad_sequences

__all__ = [
    "FastGRNNClassifier",
    "QuantizedFastGRNN",
    "SequenceScaler",
    "make_fastgrnn_pipeline",
    "pad_sequences",
    "quantize",
    "__version__",
]
