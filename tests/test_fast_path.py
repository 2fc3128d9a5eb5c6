"""The fast prediction path: the full path's results and errors, bit for bit."""

import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info

import sklearn_fastgrnn._base as base_module
import sklearn_fastgrnn._sequences as sequences_module
from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import Predictor, predictor_for
from sklearn_fastgrnn._channels import with_changes
from sklearn_fastgrnn._compiled_cell import make_engine
from sklearn_fastgrnn._losses import log_softmax
from sklearn_fastgrnn._sequences import light_sequences, validate_sequences
from sklearn_fastgrnn._threads import one_blas_thread

from .conftest import make_sequences

METHODS = ["predict", "predict_proba", "predict_log_proba", "decision_function"]


def full_path(monkeypatch, clf, method, X):
    """``clf.method(X)`` with the light validation switched off."""
    with monkeypatch.context() as m:
        m.setattr(base_module, "light_sequences", lambda estimator, X: None)
        return getattr(clf, method)(X)


def outcome(call):
    """``(result, warnings)`` of ``call()``: its result or the type and message of
    what it raised, and the category and text of each warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - compared below, type and text
            result = type(exc), str(exc)
    return result, [(w.category, str(w.message)) for w in caught]


def assert_same(fast, full, where):
    (fast, fast_warnings), (full, full_warnings) = fast, full
    assert fast_warnings == full_warnings, where  # the same warnings too
    if isinstance(full, tuple):
        assert fast == full, where
    else:
        assert fast.dtype == full.dtype and fast.shape == full.shape, where
        assert_array_equal(fast, full, err_msg=str(where))


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=60, T=6, d=3)
    seq = FastGRNNClassifier(8, max_iter=3, random_state=0).fit(X, y)
    flat = np.ascontiguousarray(X[:, :, 0])  # rows as univariate series of 6 steps
    series = FastGRNNClassifier(8, max_iter=3, random_state=0).fit(flat, y)
    rows = np.ascontiguousarray(X.reshape(60, -1)[:, :12])  # 2 steps of 6 channels
    steps = FastGRNNClassifier(8, n_timesteps=2, max_iter=3, random_state=0).fit(rows, y)
    binary = FastGRNNClassifier(5, max_iter=3, random_state=0).fit(X, y % 2)
    return {"sequences": (seq, X), "series": (series, flat), "steps": (steps, rows),
            "binary": (binary, X)}


def inputs(X):
    """Every input kind the tests know, named: valid ones and broken ones."""
    cases = {}
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        Xd = X.astype(dtype)
        cases[name] = Xd
        cases[name + "-one"] = Xd[:1].copy()
        cases[name + "-two"] = Xd[3:5].copy()
        if Xd.ndim == 3:
            padded = Xd.copy()
            padded[2, 4:] = np.nan
            padded[5, 1:] = np.nan
            cases[name + "-padded"] = padded
            cases[name + "-one-padded"] = padded[2:3].copy()
            cases[name + "-longer"] = np.concatenate([Xd, Xd[:, :2]], axis=1)
        nan_inside = Xd.copy()
        nan_inside[(4,) + (1,) * (Xd.ndim - 1)] = np.nan
        cases[name + "-nan-inside"] = nan_inside
        inf = Xd.copy()
        inf[(7,) + (2,) * (Xd.ndim - 1)] = -np.inf
        cases[name + "-inf"] = inf
        empty = Xd.copy()
        empty[1] = np.nan
        cases[name + "-all-nan"] = empty
    if X.ndim == 3:
        cases["wrong-channels"] = X[:, :, :2].copy()
        cases["no-timestep"] = X[:, :0].copy()
        cases["4D"] = X[..., None].copy()
    else:
        cases["wrong-width"] = X[:, :-1].copy()
    cases["no-sample"] = X[:0].copy()
    cases["fortran-order"] = np.asfortranarray(X)
    cases["strided"] = X[::2]
    cases["int"] = np.round(X * 3).astype(np.int64)
    cases["float16"] = X.astype(np.float16)
    cases["list"] = X.tolist()
    if X.ndim == 2:
        cases["dataframe"] = pd.DataFrame(X)
        cases["dataframe-named"] = pd.DataFrame(X, columns=[f"c{i}" for i in range(X.shape[1])])
    return cases


LABELS = {
    "int64": lambda y: y, "int8": lambda y: y.astype(np.int8),
    "uint8": lambda y: y.astype(np.uint8), "float": lambda y: y.astype(float),
    "str": lambda y: y.astype(str), "column": lambda y: y[:, None], "list": list,
    "short": lambda y: y[:-1], "empty": lambda y: y[:0], "nan": lambda y: np.r_[np.nan, y[1:]],
}


@pytest.mark.parametrize("fitted", ["fresh", "fitted", "fitted-with-names"])
def test_fit_validation_of_plain_arrays_equals_scikit_learns(monkeypatch, models, fitted):
    """validate_sequences in a training call: plain float arrays and integer
    labels skip scikit-learn's checks, and give the same arrays, fitted
    attributes, errors and warnings as the checks would, on every input kind."""
    rng = np.random.default_rng(1)
    X, y = make_sequences(rng, n=12, T=6, d=3)

    def estimator():
        clf = FastGRNNClassifier(4, max_iter=1, random_state=0)
        if fitted == "fitted":
            clf.fit(X, y)
        elif fitted == "fitted-with-names":
            clf.fit(pd.DataFrame(X.reshape(12, -1)), y)
        return clf

    def validate(clf, Xc, yc):
        out = validate_sequences(clf, Xc, yc, reset=fitted == "fresh")
        return out, {k: getattr(clf, k, None) for k in
                     ("n_features_in_", "n_timesteps_", "n_channels_", "feature_names_in_")}

    for name, Xc in inputs(X).items():
        for label, make in LABELS.items():
            yc = make(y)
            fast = outcome(lambda: validate(estimator(), Xc, yc))
            with monkeypatch.context() as m:
                m.setattr(sequences_module, "_plain_floats", lambda X: False)
                m.setattr(sequences_module, "integer_labels", lambda y: False)
                full = outcome(lambda: validate(estimator(), Xc, yc))
            where = (name, label)
            assert fast[1] == full[1], where
            if isinstance(full[0], tuple) and isinstance(full[0][0], type):
                assert fast[0] == full[0], where  # the same error
                continue
            (fast_arrays, fast_attrs), (full_arrays, full_attrs) = fast[0], full[0]
            assert fast_attrs.keys() == full_attrs.keys(), where
            for key in fast_attrs:
                assert_array_equal(np.asarray(fast_attrs[key], dtype=object),
                                   np.asarray(full_attrs[key], dtype=object), err_msg=str(where))
            for a, b in zip(fast_arrays, full_arrays):
                a, b = np.asarray(a), np.asarray(b)
                assert a.dtype == b.dtype and a.shape == b.shape, where
                assert_array_equal(a, b, err_msg=str(where))


@pytest.mark.parametrize("model", ["sequences", "series", "steps", "binary"])
def test_fast_path_equals_full_path_on_every_input_kind(monkeypatch, models, model):
    clf, X = models[model]
    for name, Xc in inputs(X).items():
        for method in METHODS:
            fast = outcome(lambda: getattr(clf, method)(Xc))
            full = outcome(lambda: full_path(monkeypatch, clf, method, Xc))
            assert_same(fast, full, (name, method))
            # a named DataFrame for a model fitted without names: scikit-learn's
            # warning, on both paths (and no other warning anywhere)
            expected = [(UserWarning, "X has feature names, but FastGRNNClassifier was "
                         "fitted without feature names")] if name == "dataframe-named" else []
            assert fast[1] == expected, (name, method)


def test_the_plain_arrays_take_the_fast_path_and_the_rest_do_not(models):
    clf, X = models["sequences"]
    cases = inputs(X)
    for name in ("float32", "float64-one", "float32-padded", "float64-longer"):
        X3, lengths = light_sequences(clf, cases[name])
        assert X3 is cases[name] and lengths.dtype == np.int64
    for name in ("wrong-channels", "no-sample", "fortran-order", "strided", "int", "list",
                 "no-timestep", "4D"):
        assert light_sequences(clf, cases[name]) is None, name
    with pytest.raises(ValueError, match="NaN in sample 4 at timestep 1"):
        light_sequences(clf, cases["float64-nan-inside"])
    series, flat = models["series"]
    X3, _ = light_sequences(series, flat)
    assert X3.shape == (60, 6, 1) and np.shares_memory(X3, flat)
    steps, rows = models["steps"]
    assert light_sequences(steps, rows)[0].shape == (60, 2, 6)
    assert light_sequences(series, pd.DataFrame(flat)) is None


def test_fitted_with_feature_names_always_takes_the_full_path(monkeypatch, models):
    _, flat = models["series"]
    y = np.arange(60) % 3
    named = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(
        pd.DataFrame(flat, columns=[f"t{i}" for i in range(6)]), y)
    assert light_sequences(named, flat) is None
    with pytest.warns(UserWarning, match="feature names"):
        named.predict(flat)


def test_not_fitted_gives_the_usual_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FastGRNNClassifier().predict(np.zeros((1, 3, 2)))


@pytest.mark.parametrize("params", [
    dict(),
    dict(gate_nonlinearity="tanh", update_nonlinearity="sigmoid", w_rank=2, u_rank=3),
    dict(gate_nonlinearity="relu", update_nonlinearity="quant_tanh"),
    dict(gate_nonlinearity="quant_sigmoid", update_nonlinearity="relu", u_rank=2),
    dict(gate_nonlinearity="quant_tanh", update_nonlinearity="quant_sigmoid"),
    dict(gate_nonlinearity="sigmoid", update_nonlinearity="relu"),
], ids=["default", "tanh-sigmoid-lowrank", "relu-quant_tanh", "quant_sigmoid-relu",
        "quant_tanh-quant_sigmoid", "sigmoid-relu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_sequence_equals_its_row_of_a_batch_to_rounding(params, dtype):
    rng = np.random.default_rng(1)
    X, y = make_sequences(rng, n=50, T=7, d=3, dtype=dtype)
    X[3, 5:] = np.nan
    X[8, 1:] = np.nan
    clf = FastGRNNClassifier(6, max_iter=4, random_state=0, **params).fit(X, y)
    batch = clf.decision_function(X[:12])
    ones = np.vstack([clf.decision_function(X[i : i + 1]) for i in range(12)])
    assert ones.dtype == batch.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(ones, batch, rtol=tol, atol=tol)
    # the padded one equals the same sequence cut to its length
    assert_array_equal(clf.decision_function(X[3:4]), clf.decision_function(X[3:4, :5]))


def test_stacked_weights_follow_new_coefs(models):
    _, X = models["sequences"]
    y = np.arange(60) % 2
    clf = FastGRNNClassifier(8, max_iter=3, random_state=0).fit(X, y)
    other = FastGRNNClassifier(8, max_iter=3, random_state=1).fit(X, y)

    def check(estimator):
        for Xs in (X[:1], X[:5]):
            fresh = Predictor(estimator.coefs_, estimator.gate_nonlinearity,
                              estimator.update_nonlinearity, np.float64, estimator.readout,
                              estimator.engine, make_engine)
            cells = with_changes(Xs, estimator.change_offsets_)
            expected = log_softmax(fresh.outputs(cells, np.full(len(Xs), 6)))
            assert_array_equal(estimator.predict_log_proba(Xs), expected)

    check(clf)
    settings = ("sigmoid", "tanh", np.float64, "last", clf.engine, make_engine)
    cached = predictor_for(clf, clf.coefs_, *settings)
    assert predictor_for(clf, clf.coefs_, *settings) is cached
    clf.coefs_["U"] = other.coefs_["U"].copy()  # a new array under a key
    assert predictor_for(clf, clf.coefs_, *settings) is not cached
    check(clf)
    clf.coefs_ = dict(other.coefs_)  # a new dict
    assert_array_equal(clf.predict_proba(X[:1]), other.predict_proba(X[:1]))
    check(clf)
    clf.set_params(update_nonlinearity="relu")  # the settings count too
    check(clf)
    assert not np.array_equal(clf.predict_proba(X[:1]), other.predict_proba(X[:1]))


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_limits_and_restores_also_across_threads():
    before = _blas_threads()
    seen, entered, release = [], threading.Event(), threading.Event()

    def worker():
        with one_blas_thread():  # entered while the main thread holds the limit
            seen.append(_blas_threads())
            entered.set()
            release.wait(5)
        seen.append(_blas_threads())

    thread = threading.Thread(target=worker)
    with one_blas_thread():
        assert all(n == 1 for n in _blas_threads())
        with one_blas_thread():  # nested: still one thread, nothing restored
            pass
        assert all(n == 1 for n in _blas_threads())
        thread.start()
        entered.wait(5)
    assert _blas_threads() == before  # the holder restored it
    release.set()
    thread.join()
    assert all(n == 1 for n in seen[0]) and seen[1] == before
    assert _blas_threads() == before
    with pytest.raises(KeyError):  # restored after an error too
        with one_blas_thread():
            raise KeyError
    assert _blas_threads() == before
