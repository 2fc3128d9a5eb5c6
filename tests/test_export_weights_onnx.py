"""Deployment files: safetensors weights round trips and ONNX graphs run by onnxruntime."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.export import export_model, load_weights, save_weights, to_onnx
from sklearn_fastgrnn.preprocessing import SequenceScaler, make_fastgrnn_pipeline

from .conftest import make_sequences, pad, set_dotted


@pytest.fixture(scope="module")
def safetensors():
    return pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def fit(X, y, **params):
    params = {"hidden_size": 8, "max_iter": 4, "random_state": 0, **params}
    return FastGRNNClassifier(**params).fit(X, y)


@pytest.fixture(scope="module")
def data():
    X, y = make_sequences(np.random.default_rng(0), n=60, T=6, d=3)
    return X, y


@pytest.fixture(scope="module")
def padded(data):
    X, _ = data
    return pad(X, np.random.default_rng(1).integers(1, 7, len(X)))


# ---------------------------------------------------------------- safetensors
def assert_same_model(loaded, model, X):
    assert type(loaded) is type(model)
    clf = model[-1] if isinstance(model, Pipeline) else model
    got = loaded[-1] if isinstance(loaded, Pipeline) else loaded
    assert got.classes_.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(got.classes_, clf.classes_)
    assert sorted(got.coefs_) == sorted(clf.coefs_)
    for key, value in clf.coefs_.items():
        assert got.coefs_[key].dtype == value.dtype
        np.testing.assert_array_equal(got.coefs_[key], value)
    for name in ("n_features_in_", "n_timesteps_", "n_channels_", "n_params_",
                 "model_size_bytes_"):
        assert getattr(got, name) == getattr(clf, name)
    np.testing.assert_array_equal(got.change_offsets_, clf.change_offsets_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize(
    "labels, params, dtype",
    [
        ("int", {}, np.float64),
        ("str", {"w_rank": 2, "u_rank": 3}, np.float32),
        ("str", {"class_weight": {"a": 2.0, "b": 1.0, "c": 0.5},
                 "random_state": np.random.RandomState(3)}, np.float64),
        ("int", {"gate_nonlinearity": "quant_sigmoid",
                 "update_nonlinearity": "quant_tanh"}, np.float32),
        ("int", {"sparsity_w": 0.5, "sparsity_u": 0.3, "sparsity_phases": (0.2, 0.4),
                 "w_rank": 2, "max_iter": 6}, np.float64),
    ],
    ids=["dense", "low-rank-float32-str", "class-weight", "quant", "sparse"],
)
def test_weights_round_trip_predicts_identically(safetensors, data, padded, tmp_path,
                                                labels, params, dtype):
    X, y = data
    if labels == "str":
        y = np.array(["a", "b", "c"])[y]
    clf = fit(X.astype(dtype), y, **params)
    path = tmp_path / "model.safetensors"
    assert save_weights(clf, path) == str(path)
    loaded = load_weights(path)
    assert_same_model(loaded, clf, padded.astype(dtype))
    expected = clf.get_params()
    if not isinstance(expected["random_state"], int):
        expected["random_state"] = None  # an instance only mattered for training
    assert loaded.get_params() == expected
    with open(path, "rb") as f:  # the file is plain safetensors with our metadata
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = json.loads(header["__metadata__"]["sklearn_fastgrnn"])
    assert meta["format_version"] == 2
    assert set(header) - {"__metadata__"} == set(clf.coefs_)


def test_weights_keep_2d_layout_and_feature_names(safetensors, data, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X.reshape(len(X), -1), columns=[f"f{i}" for i in range(18)])
    clf = fit(frame, y, n_timesteps=6)
    save_weights(clf, tmp_path / "m.st")
    loaded = load_weights(tmp_path / "m.st")
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert_same_model(loaded, clf, frame)
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(frame.rename(columns={"f0": "other"}))


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_fastgrnn_pipeline("sequence", hidden_size=8, n_timesteps=6,
                                       max_iter=4, random_state=0),
        lambda: make_fastgrnn_pipeline("standard", hidden_size=8, n_timesteps=6,
                                       max_iter=4, random_state=0),
        lambda: make_pipeline(StandardScaler(with_mean=False),
                              FastGRNNClassifier(8, n_timesteps=6, max_iter=4, random_state=0)),
        lambda: Pipeline([("model", FastGRNNClassifier(8, n_timesteps=6, max_iter=4,
                                                        random_state=0))]),
    ],
    ids=["sequence", "require_2d+standard", "standard-no-mean", "classifier-only"],
)
def test_weights_round_trip_pipelines(safetensors, data, padded, tmp_path, make):
    X, y = data
    X2 = 5 * padded.reshape(len(X), -1) + 3
    model = make().fit(X2, y)
    save_weights(model, tmp_path / "p.st")
    loaded = load_weights(tmp_path / "p.st")
    assert [name for name, _ in loaded.steps] == [name for name, _ in model.steps]
    assert [type(s) for _, s in loaded.steps] == [type(s) for _, s in model.steps]
    for (_, step), (_, original) in zip(loaded.steps[:-1], model.steps[:-1]):
        for attr in ("mean_", "var_", "scale_", "n_features_in_"):
            np.testing.assert_array_equal(getattr(step, attr, None), getattr(original, attr, None))
    assert_same_model(loaded, model, X2)
    np.testing.assert_array_equal(
        loaded.predict_proba(X2.astype(np.float32)), model.predict_proba(X2.astype(np.float32))
    )


def test_load_never_unpickles(safetensors, data, tmp_path, monkeypatch):
    import _pickle

    X, y = data
    model = make_fastgrnn_pipeline("sequence", hidden_size=8, max_iter=2, random_state=0)
    model.fit(X, np.array(["no", "yes", "maybe"])[y])
    save_weights(model, tmp_path / "p.st")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was called while loading a weights file")

    for module in (pickle, _pickle):
        for name in ("loads", "load", "Unpickler"):
            monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    loaded = load_weights(tmp_path / "p.st")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(AssertionError, match="pickle was called"):
        pickle.loads(pickle.dumps(1))  # the trap is armed


def test_quantized_models_are_exported_to_c_only(safetensors, data, tmp_path):
    X, y = data
    quantized = quantize(fit(X, y), X)
    with pytest.raises(TypeError, match="only the C export reproduces"):
        save_weights(quantized, tmp_path / "q.st")
    with pytest.raises(TypeError, match="only the C export reproduces"):
        to_onnx(quantized)
    assert not os.listdir(tmp_path)


def test_save_refuses_what_it_can_not_write(safetensors, data, tmp_path):
    X, y = data
    with pytest.raises(NotFittedError):
        save_weights(FastGRNNClassifier(), tmp_path / "m.st")
    model = make_pipeline(MinMaxScaler(), FastGRNNClassifier(8, max_iter=1)).fit(X[:, 0], y)
    with pytest.raises(TypeError, match=r"Pipeline of \['MinMaxScaler'"):
        save_weights(model, tmp_path / "m.st")
    with pytest.raises(TypeError, match="got StandardScaler"):
        save_weights(StandardScaler().fit(X[:, 0]), tmp_path / "m.st")
    with pytest.raises(ValueError, match="changed after fit"):
        save_weights(fit(X, y).set_params(hidden_size=5), tmp_path / "m.st")
    assert not os.listdir(tmp_path)


def _fitted(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.mark.parametrize(
    "make, target",
    [
        (lambda: FastGRNNRegressor(6, max_iter=3, random_state=0, readout="mean", window=2),
         "one"),
        (lambda: FastGRNNRegressor(6, loss="poisson", max_iter=3, random_state=0,
                                   readout="max", w_rank=2, dtype="float64"), "counts"),
        (lambda: FastGRNNRegressor(6, max_iter=3, random_state=0, window=3), "two"),
        (lambda: FastGRNNClassifier(6, max_iter=3, random_state=0, readout="max", window=3),
         "multilabel"),
        (lambda: make_pipeline(SequenceScaler(), FastGRNNRegressor(
            5, max_iter=3, random_state=0, readout="mean", window=2)), "one"),
        (lambda: make_fastgrnn_pipeline("sequence", hidden_size=5, max_iter=3,
                                        random_state=0, window=2), "multilabel"),
    ],
    ids=["regressor-mean-window", "poisson-max-low-rank", "two-outputs",
         "multilabel-max-window", "pipeline-regressor", "pipeline-multilabel"],
)
def test_weights_round_trip_of_regressors_and_multilabel(safetensors, data, padded, tmp_path,
                                                         make, target):
    X, y = data
    targets = {
        "one": X[:, :, 0].sum(axis=1) * 4 + 20,
        "counts": np.random.default_rng(0).poisson(np.exp(0.3 * X[:, :, 1].sum(axis=1))),
        "two": np.column_stack([X[:, :, 0].sum(axis=1), X[:, -1, 2]]),
        "multilabel": np.column_stack([y == 0, y == 1, X[:, 0, 0] > 0]).astype(int),
    }
    model = _fitted(make(), padded, targets[target])
    save_weights(model, tmp_path / "m.st")
    loaded = load_weights(tmp_path / "m.st")
    est = model[-1] if isinstance(model, Pipeline) else model
    got = loaded[-1] if isinstance(loaded, Pipeline) else loaded
    assert type(got) is type(est) and got.get_params() == est.get_params()
    for name in ("out_activation_", "n_outputs_", "window_", "n_timesteps_", "n_channels_",
                 "n_features_in_", "n_params_", "model_size_bytes_"):
        assert getattr(got, name) == getattr(est, name), name
    np.testing.assert_array_equal(got.change_offsets_, est.change_offsets_)
    for key, value in est.coefs_.items():
        assert got.coefs_[key].dtype == value.dtype
        np.testing.assert_array_equal(got.coefs_[key], value)
    for Z in (X, padded, padded.astype(np.float32)):
        np.testing.assert_array_equal(loaded.predict(Z), model.predict(Z))
        if hasattr(model, "predict_proba"):
            np.testing.assert_array_equal(loaded.predict_proba(Z), model.predict_proba(Z))
    if isinstance(est, FastGRNNRegressor):
        assert loaded.score(X, targets[target]) == model.score(X, targets[target])
    with open(tmp_path / "m.st", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = json.loads(header["__metadata__"]["sklearn_fastgrnn"])
    role = "regressor" if isinstance(est, FastGRNNRegressor) else "classifier"
    assert meta["format_version"] == 2 and set(meta) & {"classifier", "regressor"} == {role}
    assert meta[role]["outputs"] == {"n_outputs": est.n_outputs_,
                                     "out_activation": est.out_activation_}
    assert meta[role]["input"]["window"] == est.window_


@pytest.fixture(scope="module")
def saved_regressor(safetensors, data, tmp_path_factory):
    """Tensors and metadata of a saved SequenceScaler + regressor Pipeline."""
    from safetensors import safe_open

    X, _ = data
    model = make_pipeline(SequenceScaler(), FastGRNNRegressor(
        8, max_iter=2, random_state=0, dtype="float64", window=2))
    path = tmp_path_factory.mktemp("weights") / "r.st"
    save_weights(_fitted(model, X, np.column_stack([X[:, 0, 0], X[:, 1, 1]])), path)
    with safe_open(path, framework="np") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        meta = json.loads(f.metadata()["sklearn_fastgrnn"])
    return path, tensors, meta


def _write_edited(tmp_path, tensors, meta, tensor_edit=None, meta_edits=()):
    import safetensors.numpy

    tensors, meta = dict(tensors), json.loads(json.dumps(meta))
    for key, value in (tensor_edit or {}).items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    for edit in meta_edits:
        set_dotted(meta, *edit)
    path = tmp_path / "bad.st"
    path.write_bytes(safetensors.numpy.save(tensors, {"sklearn_fastgrnn": json.dumps(meta)}))
    return path


@pytest.mark.parametrize(
    "tensor_edit, meta_edits, message",
    [
        (None, [("regressor.outputs.out_activation", "exp")],
         "out_activation is 'exp', but loss='squared_error' predicts with 'identity'"),
        (None, [("regressor.params.loss", "poisson")],
         "out_activation is 'identity', but loss='poisson' predicts with 'exp'"),
        (None, [("regressor.outputs.n_outputs", 3)],
         r"'V' has shape \(8, 2\), expected \(8, 3\)"),
        (None, [("regressor.outputs.n_outputs", 0)], "must be between 1 and"),
        (None, [("regressor.outputs", KeyError)], "no field 'regressor.outputs.out_activation'"),
        (None, [("regressor.input.window", KeyError)], "no field 'regressor.input.window'"),
        (None, [("regressor.input.window", 3)], r"'W' has shape \(18, 8\), expected \(27, 8\)"),
        (None, [("regressor.input.window", 0)], "'regressor.input.window' must be between 1"),
        (None, [("classifier", {})], r"exactly one of the fields \['classifier', 'regressor'\]"),
        (None, [("regressor", KeyError)], "it holds \\[\\]"),
        (None, [("pipeline.1.kind", "FastGRNNClassifier")],
         "'FastGRNNClassifier' is not the estimator the file holds"),
        (None, [("format_version", 1)], "format_version 1 holds a classifier"),
        (None, [("regressor.params.readout", "median")], "hyper-parameters in regressor.params"),
        ({"bias_out": np.full(2, np.inf)}, [], "'bias_out' contains NaN or inf"),
        (None, [("pipeline.0.attributes.n_features_in_", 20)], "the regressor reads 18"),
        (None, [("regressor.input.change_offsets", KeyError)],
         "no field 'regressor.input.change_offsets'"),
        (None, [("regressor.input.change_offsets", [1.0])],
         "regressor.input.change_offsets must be 3 positive finite numbers"),
        (None, [("regressor.input.change_offsets", [1.0, 0.0, 2.0])],
         "regressor.input.change_offsets must be 3 positive finite numbers"),
        (None, [("regressor.input.change_offsets", [1.0, True, 2.0])],
         "regressor.input.change_offsets must be 3 positive finite numbers"),
    ],
)
def test_load_rejects_malformed_regressor_files(saved_regressor, tmp_path, tensor_edit,
                                                meta_edits, message):
    _, tensors, meta = saved_regressor
    with pytest.raises(ValueError, match=message):
        load_weights(_write_edited(tmp_path, tensors, meta, tensor_edit, meta_edits))


@pytest.mark.parametrize(
    "meta_edits, message",
    [
        ([("classifier.outputs.out_activation", "identity")],
         "must be 'softmax' or 'logistic', got 'identity'"),
        ([("classifier.outputs.n_outputs", 2)],
         "classifier.outputs.n_outputs is 2, but classifier.classes holds 3 labels"),
        ([("classifier.outputs.out_activation", "logistic"),
          ("classifier.classes.values", ["a", "b", "c"]), ("classifier.classes.dtype", "<U1")],
         "must be the integers 0 to n_outputs - 1"),
        ([("format_version", 1), ("classifier.outputs", KeyError),
          ("classifier.input.window", KeyError)], None),  # a file of release 0.1.0's layout
    ],
)
def test_classifier_outputs_are_checked_and_version_1_still_loads(saved, tmp_path,
                                                                  meta_edits, message):
    _, tensors, meta = saved
    path = _write_edited(tmp_path, tensors, meta, None, meta_edits)
    if message is None:
        loaded = load_weights(path)
        assert loaded[-1].out_activation_ == "softmax" and loaded[-1].window_ == 1
        return
    with pytest.raises(ValueError, match=message):
        load_weights(path)


def test_exports_refuse_what_the_loader_would(data, tmp_path):
    import copy

    X, y = data
    reg = _fitted(FastGRNNRegressor(4, max_iter=2, random_state=0), X, X[:, 0, 0])
    changed = copy.deepcopy(reg).set_params(loss="poisson")
    with pytest.raises(ValueError, match="the loss was changed after fit: load_weights would"):
        save_weights(changed, tmp_path / "m.st")
    with pytest.raises(ValueError, match="the loss was changed after fit: to_onnx refuses"):
        to_onnx(changed)
    damaged = copy.deepcopy(reg)
    damaged.n_outputs_ = 2
    with pytest.raises(ValueError, match="n_outputs_ is 2, but coefs_.'V'. has 1 columns"):
        save_weights(damaged, tmp_path / "m.st")
    multilabel = _fitted(FastGRNNClassifier(4, max_iter=2, random_state=0), X,
                         np.column_stack([y == 0, y == 1]).astype(int))
    multilabel.classes_ = np.array([1, 2])
    with pytest.raises(ValueError, match="classes_ must be arange"):
        save_weights(multilabel, tmp_path / "m.st")
    assert reg.change_channels_  # its change offsets damaged: one per channel, positive
    for offsets in (None, np.ones(reg.n_channels_ + 1), np.full(reg.n_channels_, np.inf)):
        damaged = copy.deepcopy(reg)
        damaged.change_offsets_ = offsets
        with pytest.raises(ValueError, match="change_offsets_ must hold one positive finite "
                                             "value per channel .*load_weights would"):
            save_weights(damaged, tmp_path / "m.st")
        with pytest.raises(ValueError, match="change_offsets_ must hold .*to_onnx refuses"):
            to_onnx(damaged)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_save_keeps_the_previous_file(safetensors, data, tmp_path, monkeypatch, fail_at):
    X, y = data
    path = tmp_path / "model.safetensors"
    save_weights(fit(X, y), path)
    before = path.read_bytes()
    other = fit(X, y, hidden_size=4)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, fail_at, broken)
    with pytest.raises(OSError, match="disk full"):
        save_weights(other, path)
    with pytest.raises(OSError, match="disk full"):
        save_weights(other, tmp_path / "new.safetensors")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file, no new file
    save_weights(other, path)
    assert load_weights(path).hidden_size == 4
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0o600


@pytest.fixture(scope="module")
def saved(safetensors, data, tmp_path_factory):
    """Tensors and metadata of a saved Pipeline, to tamper with."""
    from safetensors import safe_open

    X, y = data
    model = make_fastgrnn_pipeline(  # float64: the edits below write float64 tensors
        "sequence", hidden_size=8, max_iter=2, random_state=0, dtype="float64"
    )
    path = tmp_path_factory.mktemp("weights") / "p.st"
    save_weights(model.fit(X, y), path)
    with safe_open(path, framework="np") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        meta = json.loads(f.metadata()["sklearn_fastgrnn"])
    return path, tensors, meta


@pytest.mark.parametrize(
    "tensor_edit, meta_edit, message",
    [
        ({"V": None}, None, r"missing \['V'\]"),
        ({"extra": np.ones(2)}, None, r"unexpected \['extra'\]"),
        ({"U": np.ones((8, 9))}, None, r"'U' has shape \(8, 9\), expected \(8, 8\)"),
        ({"V": np.ones((8, 3), dtype=np.int64)}, None, "must all be float32 or all float64"),
        ({"V": np.ones((8, 3), dtype=np.float32)}, None, "must all be float32 or all float64"),
        ({"V": np.ones((8, 3), dtype=np.float16)}, None, "unsupported dtypes"),
        ({"W": np.full((9, 8), np.nan)}, None, "'W' contains NaN"),
        ({"zeta": np.ones(1)}, None, r"'zeta' has shape \(1,\), expected \(\)"),
        ({"scaler.mean_": np.ones(4)}, None, "'scaler.mean_' must hold 3"),
        ({"scaler.scale_": np.zeros(3)}, None, "must be positive"),
        ({"scaler.mean_": None}, None, r"no tensors \['scaler.mean_'\]"),
        (None, ("format_version", 3), "format_version 3 is not supported"),
        (None, ("format", "other"), "format is 'other'"),
        (None, ("classifier.params.hidden_size", "big"), "hyper-parameters in classifier"),
        (None, ("classifier.params.wings", 2), "Invalid parameter 'wings'"),
        (None, ("classifier.params.class_weight", {"evil": 1}), "class_weight is malformed"),
        (None, ("classifier.params.sparsity_phases", "dense"), "'sparsity_phases'"),
        (None, ("classifier.params.hidden_size", 9), r"'W' has shape \(9, 8\), expected \(9, 9\)"),
        (None, ("classifier.classes.values", [0, 1]),
         r"'V' has shape \(8, 3\), expected \(8, 2\)"),
        (None, ("classifier.classes.values", [0, 2, 1]), "distinct sorted"),
        (None, ("classifier.classes.values", [0, 1, "x"]), "not of dtype int64"),
        (None, ("classifier.classes.dtype", "V8"), "unsupported dtype 'V8'"),
        (None, ("classifier.input.n_channels", 4), "n_timesteps \\* n_channels"),
        (None, ("classifier.input.n_timesteps", True), "must be int, got True"),
        (None, ("classifier.input", KeyError), "no field 'classifier.input.n_timesteps'"),
        (None, ("pipeline.0.kind", "Evil"), "'Evil' is not a supported step"),
        (None, ("pipeline.0.attributes.fit", 1), "not a fitted attribute name"),
        (None, ("pipeline", [{"name": "m", "kind": "FastGRNNClassifier"}]),
         "scaler tensors but no scaler step"),
    ],
)
def test_load_rejects_malformed_files(saved, tmp_path, tensor_edit, meta_edit, message):
    _, tensors, meta = saved
    path = _write_edited(tmp_path, tensors, meta, tensor_edit, [meta_edit] if meta_edit else ())
    with pytest.raises(ValueError, match=message):
        load_weights(path)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: data[:-7], "truncated"),
        (lambda data: data[:5], "truncated"),
        (lambda data: b"", "not a readable safetensors file"),
        (lambda data: b"\x80\x04K\x01." + data, "not a readable safetensors file"),
    ],
    ids=["truncated-tail", "truncated-header", "empty", "pickle-prefix"],
)
def test_load_rejects_corrupt_bytes(saved, tmp_path, corrupt, message):
    path = tmp_path / "bad.st"
    path.write_bytes(corrupt(saved[0].read_bytes()))
    with pytest.raises(ValueError, match=message):
        load_weights(path)


@pytest.mark.parametrize(
    "header, message",
    [
        ({"sklearn_fastgrnn": "{not json"}, "not valid JSON"),
        ({"sklearn_fastgrnn": "[1, 2]"}, "not a JSON object"),
        (None, "without sklearn_fastgrnn metadata"),
    ],
)
def test_load_rejects_bad_metadata(saved, tmp_path, header, message):
    import safetensors.numpy

    path = tmp_path / "bad.st"
    path.write_bytes(safetensors.numpy.save(saved[1], header))
    with pytest.raises(ValueError, match=message):
        load_weights(path)


# ----------------------------------------------------------------------- ONNX
def run_onnx(ort, model, X):
    session = ort.InferenceSession(
        to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"X": np.asarray(X, dtype=np.float32)})


def assert_onnx_matches(ort, model, X3, X_python=None):
    """onnxruntime on float32 ``X3`` (n, T, d) reproduces predict_proba and predict."""
    X_python = (X3 if X_python is None else X_python).astype(np.float32)
    proba, label = run_onnx(ort, model, X3)
    np.testing.assert_allclose(proba, model.predict_proba(X_python), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(X_python))
    return proba, label


@pytest.mark.parametrize("gate", sorted(NONLINEARITIES))
@pytest.mark.parametrize("update", ["tanh", "quant_tanh", "relu"])
@pytest.mark.parametrize("ranks", [(None, None), (2, 3)], ids=["full", "low-rank"])
def test_onnx_reproduces_predict_proba(ort, data, padded, gate, update, ranks):
    X, y = data
    clf = fit(X, y, gate_nonlinearity=gate, update_nonlinearity=update,
              w_rank=ranks[0], u_rank=ranks[1])
    assert_onnx_matches(ort, clf, X)
    assert_onnx_matches(ort, clf, padded)
    assert_onnx_matches(ort, clf, X[:, :2])  # time is free at run time


def test_onnx_on_a_trained_digits_model(ort):
    import onnx

    X, y = load_digits_sequences(dtype=np.float32)
    clf = fit(X[:600], y[:600], hidden_size=16, max_iter=8, w_rank=4, sparsity_u=0.5,
              batch_size=32)
    assert clf.score(X[600:900], y[600:900]) > 0.5  # real, trained weights
    assert np.count_nonzero(clf.coefs_["U"]) == 128  # sparse U
    proto = to_onnx(clf)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == ["probabilities", "label"]
    assert any(node.op_type == "Scan" for node in proto.graph.node)
    proba, label = assert_onnx_matches(ort, clf, pad(X[600:900], np.arange(300) % 8 + 1))
    assert label.dtype == np.int64
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("envelope", [0, 3])
@pytest.mark.parametrize("change_channels", [False, True])
def test_onnx_padding_stops_the_state(ort, data, change_channels, envelope):
    X, y = data
    clf = fit(X, y, change_channels=change_channels, envelope_width=envelope)
    long = np.concatenate([X[:5], np.full((5, 4, 3), np.nan)], axis=1)
    padded_proba, _ = run_onnx(ort, clf, long)
    for i in range(5):
        alone, _ = run_onnx(ort, clf, X[i : i + 1, : 6 - i])
        ragged, _ = run_onnx(ort, clf, pad(long[i : i + 1], [6 - i]))
        np.testing.assert_allclose(ragged, alone, atol=1e-6)
    np.testing.assert_allclose(padded_proba, run_onnx(ort, clf, X[:5])[0], atol=1e-6)


def test_onnx_string_and_bool_labels(ort, data):
    X, y = data
    words = np.array(["cat", "dog", "émeu"])[y]
    _, label = assert_onnx_matches(ort, fit(X, words), X)
    assert label.dtype == object and set(label) <= set(words)
    _, label = assert_onnx_matches(ort, fit(X, y == 1), X)
    assert label.dtype == np.bool_


@pytest.mark.parametrize("envelope", [0, 2])
@pytest.mark.parametrize("change_channels", [False, True])
@pytest.mark.parametrize("scaler", ["sequence", "standard"])
def test_onnx_pipelines_with_scalers(ort, data, padded, scaler, change_channels, envelope):
    X, y = data
    n, T, d = X.shape
    X2 = 4 * padded.reshape(n, T * d) - 7  # 2D rows of T time-major steps, unscaled
    model = make_fastgrnn_pipeline(scaler, hidden_size=8, n_timesteps=T, max_iter=4,
                                   random_state=0, change_channels=change_channels,
                                   envelope_width=envelope).fit(X2, y)
    assert_onnx_matches(ort, model, X2.reshape(n, T, d), X2)
    sklearn_pipeline = make_pipeline(
        StandardScaler() if scaler == "standard" else SequenceScaler(n_timesteps=T),
        FastGRNNClassifier(8, n_timesteps=T, max_iter=4, random_state=0, w_rank=2,
                           change_channels=change_channels, envelope_width=envelope),
    ).fit(X2, y)
    assert_onnx_matches(ort, sklearn_pipeline, X2.reshape(n, T, d), X2)


@pytest.mark.parametrize("change_channels", [False, True])
def test_onnx_of_a_loaded_envelope_model(ort, safetensors, data, padded, tmp_path,
                                         change_channels):
    """A weights file keeps the envelope: the loaded model has the same graphs,
    which say the envelope's width."""
    X, y = data
    clf = fit(X, y, window=4, change_channels=change_channels)
    assert (clf.envelope_width_, "W1" in clf.coefs_) == (4, True)  # "auto": window_, low rank
    save_weights(clf, tmp_path / "m.st")
    loaded = load_weights(tmp_path / "m.st")
    for step in (False, True):
        proto = to_onnx(loaded, step=step)
        assert proto.SerializeToString() == to_onnx(clf, step=step).SerializeToString()
        assert {p.key: p.value for p in proto.metadata_props}["envelope_width"] == "4"
    assert_onnx_matches(ort, loaded, padded, padded)


def test_onnx_sequence_scaler_on_3d_sequences(ort, data, padded):
    X, y = data
    model = make_pipeline(SequenceScaler(), FastGRNNClassifier(8, max_iter=4, random_state=0))
    model.fit(10 * padded + 2, y)
    assert_onnx_matches(ort, model, 10 * padded + 2)
    assert_onnx_matches(ort, model, 10 * X[:, :3] + 2)


def test_onnx_standard_scaler_fixes_the_time_axis(ort, data):
    X, y = data
    n, T, d = X.shape
    model = make_pipeline(StandardScaler(), FastGRNNClassifier(8, n_timesteps=T, max_iter=2))
    model.fit(X.reshape(n, -1), y)
    dims = to_onnx(model).graph.input[0].type.tensor_type.shape.dim
    assert [dim.dim_param or dim.dim_value for dim in dims] == ["batch", T, d]
    with pytest.raises(Exception, match="dimensions"):
        run_onnx(ort, model, X[:, :3])


def test_onnx_and_export_model_write_files(ort, safetensors, data, tmp_path):
    import onnx

    X, y = data
    model = make_fastgrnn_pipeline("sequence", hidden_size=8, max_iter=2, random_state=0)
    model.fit(X, y)
    out = export_model(model, "onnx", tmp_path / "m.onnx")
    assert out == str(tmp_path / "m.onnx")
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    proba, _ = session.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(proba, model.predict_proba(X.astype(np.float32)), atol=1e-5)
    assert onnx.load(out).producer_name == "sklearn_fastgrnn"
    export_model(model, "safetensors", tmp_path / "m.st")
    np.testing.assert_array_equal(load_weights(tmp_path / "m.st").predict(X), model.predict(X))
    with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
        export_model(model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(TypeError, match="FastGRNNClassifier"):
        to_onnx(StandardScaler().fit(X[:, 0]))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.st"]


def test_export_model_dispatches_c(data, tmp_path):
    pytest.importorskip("sklearn_fastgrnn.export.c")
    X, y = data
    out = export_model(fit(X, y, max_iter=1), "c", tmp_path / "c_model")
    assert out == str(tmp_path / "c_model")
    assert {os.path.splitext(f)[1] for f in os.listdir(out)} >= {".c", ".h"}
