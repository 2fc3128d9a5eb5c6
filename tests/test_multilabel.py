"""FastGRNNClassifier with a multilabel indicator y: one sigmoid output per label,
as MLPClassifier, with partial_fit too (which MLPClassifier lacks: scikit-learn #12505)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves


def digit_labels(y):
    """Even, greater than 4, prime: three labels per digit."""
    return np.column_stack([y % 2 == 0, y > 4, np.isin(y, [2, 3, 5, 7])]).astype(int)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_sequences()
    X_train, X_test, y_train, y_test = split_halves(X, y)
    return X_train, digit_labels(y_train), X_test, digit_labels(y_test)


def test_multilabel_fit_predict_and_probabilities(digits):
    X_train, Y_train, X_test, Y_test = digits
    clf = FastGRNNClassifier(random_state=0).fit(X_train, Y_train)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3) and ((proba > 0) & (proba < 1)).all()
    Y_pred = clf.predict(X_test)
    np.testing.assert_array_equal(Y_pred, (proba > 0.5).astype(int))
    assert clf.decision_function(X_test).shape == (len(X_test), 3)
    assert clf.score(X_test, Y_test) == accuracy_score(Y_test, Y_pred) > 0.8
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X_test)), proba, rtol=1e-6)


def test_multilabel_partial_fit_over_chunks(digits):
    X_train, Y_train, X_test, Y_test = digits
    clf = FastGRNNClassifier(random_state=0)
    for epoch in range(30):
        for chunk in np.array_split(np.arange(len(X_train)), 3):
            clf.partial_fit(X_train[chunk], Y_train[chunk], classes=[0, 1, 2])
    assert clf.score(X_test, Y_test) > 0.75
    with pytest.raises(ValueError, match="same kind of y"):
        clf.partial_fit(X_train[:10], Y_train[:10, 0])
    with pytest.raises(ValueError, match="multilabel indicator of 2 labels"):
        clf.partial_fit(X_train[:10], Y_train[:10, :2])
    with pytest.raises(ValueError, match="multilabel indicator of 3 labels, but classes has 2"):
        FastGRNNClassifier().partial_fit(X_train[:10], Y_train[:10], classes=[0, 1])


def test_multilabel_early_stopping_class_weight_and_soft_targets(digits):
    X_train, Y_train, _, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastGRNNClassifier(max_iter=3, early_stopping=True, random_state=0)
        clf.fit(X_train, Y_train)
    assert len(clf.validation_scores_) == 3
    with pytest.raises(ValueError, match="with a multilabel y, weight the samples"):
        FastGRNNClassifier(class_weight="balanced", max_iter=1).fit(X_train, Y_train)
    soft = np.clip(Y_train * 0.9 + 0.05, 0, 1)  # label probabilities from a teacher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastGRNNClassifier(max_iter=2, random_state=0).fit(X_train, Y_train, soft_targets=soft)
    with pytest.raises(ValueError, match="entries above 1"):
        FastGRNNClassifier(max_iter=1).fit(X_train, Y_train, soft_targets=soft * 2)
