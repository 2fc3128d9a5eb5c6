"""
Quick start: digits read as sequences
=====================================

Train a FastGRNN on scikit-learn's 8x8 digits read row by row (8 timesteps of 8
pixels), report test accuracy, size and the training curve, and save the model.
"""

import os
import tempfile
import time

import joblib

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

X, y = load_digits_sequences()
X_train, X_test, y_train, y_test = split_halves(X, y)

start = time.perf_counter()
clf = FastGRNNClassifier(hidden_size=32, random_state=0).fit(X_train, y_train)
seconds = time.perf_counter() - start

print(f"test accuracy {clf.score(X_test, y_test):.3f} after {clf.n_iter_} epochs "
      f"({seconds:.1f} s)")
print(f"{clf.n_params_} parameters, {clf.model_size_bytes_ / 1024:.1f} KB as float32")
for record in clf.history_[:: max(1, clf.n_iter_ // 5)]:
    print(f"  epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}")

path = os.path.join(tempfile.mkdtemp(), "digits.joblib")
joblib.dump(clf, path)
assert (joblib.load(path).predict(X_test) == clf.predict(X_test)).all()
print(f"saved to {path}")
