"""FastGRNN sequence classifiers for scikit-learn, trained by exact BPTT in NumPy."""

from ._version import __version__
from .classifier import FastGRNNClassifier
from .preprocessing import SequenceScaler, make_fastgrnn_pipeline, pad_sequences

__all__ = [
    "FastGRNNClassifier",
    "SequenceScaler",
    "make_fastgrnn_pipeline",
    "pad_sequences",
    "__version__",
]
