"""``label_smoothing``: what "auto" resolves to, what smoothing does to a fit,
the compiled engine against NumPy, and models from before it."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.export import load_weights, save_weights

from .conftest import needs_compiler

_N = 44
_LABELS = np.random.default_rng(1).random((_N, 11)) < 0.5


def _fit(y, **params):
    """A classifier fitted for 2 epochs on 44 random sequences of 6 steps."""
    X = np.random.default_rng(0).normal(size=(len(y), 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FastGRNNClassifier(max_iter=2, random_state=0, **params).fit(X, y), X


@pytest.mark.parametrize("y, params, expected", [
    (np.arange(_N) % 2, {}, 0.0),
    (np.arange(_N) % 10, {}, 0.0),
    (np.arange(_N) % 11, {}, 0.1),
    (_LABELS, {}, 0.0),  # multilabel: "auto" smooths one label per sample only
    (np.arange(_N) % 2, {"label_smoothing": 0.25}, 0.25),
    (np.arange(_N) % 11, {"label_smoothing": 0}, 0.0),
    (_LABELS, {"label_smoothing": 0.2}, 0.2),
])
def test_auto_label_smoothing_follows_the_classes(y, params, expected):
    clf, _ = _fit(y, **params)
    assert clf.label_smoothing_ == expected
    assert type(clf._task_loss()).__name__ == (
        "BinaryCrossEntropy" if y.ndim == 2 else "CrossEntropy")
    assert clf._task_loss().label_smoothing == expected


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, "0.1", None])
def test_label_smoothing_outside_zero_to_one_is_refused(value):
    with pytest.raises(InvalidParameterError, match="label_smoothing"):
        FastGRNNClassifier(label_smoothing=value).fit(np.zeros((4, 3)), [0, 1, 0, 1])


def _separable(n=60, T=5):
    """Three classes told apart by the sign and size of the first step."""
    rng = np.random.default_rng(3)
    y = np.arange(n) % 3
    X = rng.normal(0, 0.1, (n, T, 1))
    X[:, 0, 0] += np.array([-2.0, 0.0, 2.0])[y]
    return X, y


@pytest.mark.parametrize("multilabel", [False, True])
def test_smoothing_keeps_the_probabilities_off_zero_and_one(multilabel):
    """Long training on separable data: plain labels push the right class's
    probability towards 1; smoothed labels hold it near their target
    (``1 - e + e / C``, or ``1 - e / 2`` per label), with the same labels
    predicted."""
    X, y = _separable()
    if multilabel:
        y = np.eye(3, dtype=int)[y]
    params = dict(hidden_size=8, max_iter=400, tol=0, n_iter_no_change=400, alpha=0.0,
                  weight_averaging=0.0, random_state=0, learning_rate_init=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = FastGRNNClassifier(label_smoothing=0.0, **params).fit(X, y)
        smooth = FastGRNNClassifier(label_smoothing=0.3, **params).fit(X, y)
    np.testing.assert_array_equal(smooth.predict(X), plain.predict(X))
    np.testing.assert_array_equal(plain.predict(X), y)
    if multilabel:
        p_plain = np.where(y == 1, plain.predict_proba(X), 1 - plain.predict_proba(X))
        p_smooth = np.where(y == 1, smooth.predict_proba(X), 1 - smooth.predict_proba(X))
        target = 1 - 0.3 / 2
    else:
        p_plain = plain.predict_proba(X)[np.arange(len(y)), y]
        p_smooth = smooth.predict_proba(X)[np.arange(len(y)), y]
        target = 1 - 0.3 + 0.3 / 3
    assert p_plain.min() > 0.99
    assert np.median(p_smooth) == pytest.approx(target, abs=0.03)
    assert p_smooth.max() < 0.95


@needs_compiler
@pytest.mark.parametrize("distill", [False, True])
def test_the_compiled_engine_trains_with_smoothing_as_numpy_does(distill):
    """The C loss with smoothing against NumPy's, through 3 epochs of float64
    training (with soft targets too: the hard part of a distillation)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(48, 7, 2))
    y = np.arange(48) % 12  # 12 classes: "auto" smooths
    fit = {}
    if distill:
        soft = rng.random((48, 12))
        fit["soft_targets"] = soft / soft.sum(axis=1, keepdims=True)
    models = {}
    for engine in ("numpy", "compiled"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            models[engine] = FastGRNNClassifier(
                hidden_size=5, max_iter=3, dtype="float64", engine=engine,
                random_state=0).fit(X, y, **fit)
    assert models["numpy"].label_smoothing_ == 0.1
    np.testing.assert_allclose(models["compiled"].loss_curve_, models["numpy"].loss_curve_,
                               rtol=1e-10)
    np.testing.assert_allclose(models["compiled"].predict_proba(X),
                               models["numpy"].predict_proba(X), rtol=1e-9, atol=1e-12)


def test_smoothing_changes_the_fit_and_zero_is_the_plain_loss():
    y = np.arange(_N) % 11
    auto, X = _fit(y)
    off, _ = _fit(y, label_smoothing=0.0)
    smoothed, _ = _fit(y, label_smoothing=0.1)
    assert not np.allclose(off.loss_curve_, auto.loss_curve_)
    np.testing.assert_array_equal(auto.loss_curve_, smoothed.loss_curve_)
    np.testing.assert_array_equal(auto.predict_proba(X), smoothed.predict_proba(X))


def test_the_parameter_round_trips_and_old_states_read_no_smoothing(tmp_path):
    pytest.importorskip("safetensors")
    clf, X = _fit(np.arange(_N) % 11, label_smoothing=0.05)
    path = tmp_path / "m.safetensors"
    save_weights(clf, path)
    loaded = load_weights(path)
    assert loaded.label_smoothing == 0.05
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # a pickle from before label smoothing: no parameter, no fitted value
    state = clf.__getstate__()
    del state["label_smoothing"], state["label_smoothing_"]
    old = FastGRNNClassifier.__new__(FastGRNNClassifier)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.label_smoothing == 0.0 and old.label_smoothing_ == 0.0
    np.testing.assert_array_equal(old.predict_proba(X), clf.predict_proba(X))
