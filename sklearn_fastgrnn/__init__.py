"""FastGRNN sequence classifiers for scikit-learn, trained by exact BPTT in NumPy."""

from ._version import __version__
from .classifier import FastGRNNClassifier

__all__ = ["FastGRNNClassifier", "__version__"]
