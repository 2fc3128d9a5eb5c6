"""``hidden_size="auto"``: 32 hidden units, or 64 for more than 10 outputs."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export import load_weights, save_weights


def _fit(estimator, y, **params):
    """``estimator`` fitted for 2 epochs on 44 random sequences of 6 steps."""
    X = np.random.default_rng(0).normal(size=(len(y), 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator(max_iter=2, random_state=0, **params).fit(X, y), X


_N = 44
_LABELS = np.random.default_rng(1).random((_N, 11)) < 0.5


@pytest.mark.parametrize("estimator, y, params, size", [
    (FastGRNNClassifier, np.arange(_N) % 2, {}, 32),
    (FastGRNNClassifier, np.arange(_N) % 10, {}, 32),
    (FastGRNNClassifier, np.arange(_N) % 11, {}, 64),
    (FastGRNNClassifier, np.arange(_N) % 11, {"hidden_size": 7}, 7),
    (FastGRNNClassifier, np.arange(_N) % 2, {"hidden_size": 40}, 40),
    (FastGRNNClassifier, _LABELS[:, :10], {}, 32),  # multilabel: one output per label
    (FastGRNNClassifier, _LABELS, {}, 64),
    (FastGRNNRegressor, np.linspace(0, 1, _N), {}, 32),
    (FastGRNNRegressor, np.ones((_N, 11)) * np.arange(_N)[:, None], {}, 64),
    (FastGRNNRegressor, np.ones((_N, 11)), {"hidden_size": 3}, 3),
])
def test_auto_hidden_size_follows_the_outputs(estimator, y, params, size):
    model, X = _fit(estimator, y, **params)
    assert model.hidden_size_ == size
    assert model.coefs_["V"].shape[0] == size
    assert model.coefs_["U"].shape == (size, size)
    assert np.isfinite(model.predict(X).astype(float)).all()


def test_continued_training_keeps_the_fitted_size():
    y = np.arange(_N) % 12
    model, X = _fit(FastGRNNClassifier, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True).fit(X, y)
        model.partial_fit(X, y)
    assert model.hidden_size_ == 64 and model.coefs_["V"].shape == (64, 12)
    with pytest.raises(ValueError, match="warm_start=False"):
        model.set_params(hidden_size=16).fit(X, y)  # the weights are 64 wide
    assert model.hidden_size_ == 64  # the failed fit left the model as it was


def test_a_weights_file_keeps_auto_and_the_fitted_size(tmp_path):
    model, X = _fit(FastGRNNClassifier, np.arange(_N) % 12)
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    loaded = load_weights(path)
    assert loaded.hidden_size == "auto" and loaded.hidden_size_ == 64
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert clone(loaded).get_params()["hidden_size"] == "auto"


def test_a_size_changed_after_fit_or_damaged_is_refused_by_the_exports(tmp_path):
    model, _ = _fit(FastGRNNClassifier, np.arange(_N) % 3)
    with pytest.raises(ValueError, match=r"hidden_size=16 was changed after fit.*hidden_size_=32"):
        save_weights(_with(model, hidden_size=16), tmp_path / "a.st")
    for damaged in (0, 2.5, True, None):
        broken = pickle.loads(pickle.dumps(model))
        broken.hidden_size_ = damaged
        with pytest.raises(ValueError, match="hidden_size_ must be a positive integer"):
            save_weights(broken, tmp_path / "b.st")
    assert not (tmp_path / "a.st").exists() and not (tmp_path / "b.st").exists()


def _with(model, **params):
    """A pickled copy of fitted ``model`` with ``params`` set afterwards."""
    return pickle.loads(pickle.dumps(model)).set_params(**params)


def test_pickles_from_before_the_fitted_size_read_it_off_the_weights():
    model, X = _fit(FastGRNNClassifier, np.arange(_N) % 12, hidden_size=9)
    state = dict(model.__getstate__())
    del state["hidden_size_"]
    old = FastGRNNClassifier.__new__(FastGRNNClassifier)
    old.__setstate__(state)
    assert old.hidden_size_ == 9
    np.testing.assert_array_equal(old.predict(X), model.predict(X))

    int8 = quantize(model, X)
    state = dict(int8.__getstate__())  # a copy: the default state is the live __dict__
    state["hidden_size"] = state.pop("hidden_size_")  # release 0.1's name
    before = type(int8).__new__(type(int8))
    before.__setstate__(state)
    assert before.hidden_size_ == 9 and not hasattr(before, "hidden_size")
    assert int8.hidden_size_ == 9 and not hasattr(int8, "hidden_size")
    np.testing.assert_array_equal(before.predict(X), int8.predict(X))


def test_a_weights_file_with_auto_reads_the_size_off_its_weights(tmp_path):
    # "auto" would be 32 for 3 classes: the loader takes V's 5 rows instead
    model, X = _fit(FastGRNNClassifier, np.arange(_N) % 3, hidden_size=5)
    save_weights(_with(model, hidden_size="auto"), tmp_path / "m.st")
    loaded = load_weights(tmp_path / "m.st")
    assert loaded.hidden_size == "auto" and loaded.hidden_size_ == 5
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
