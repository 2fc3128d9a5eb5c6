"""Issue "Hardening": bad input is a clear error, no file is damaged, weights files are
untrusted."""

import json
import os
import re
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, _files
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export import export_c, load_weights, save_weights, to_onnx
from sklearn_fastgrnn.preprocessing import SequenceScaler, make_fastgrnn_pipeline

from .conftest import make_sequences, set_dotted

PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def data():
    return make_sequences(np.random.default_rng(0), n=30, T=5, d=3)


@pytest.fixture(scope="module")
def clf(data):
    return FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(*data)


# ---------------------------------------------------------------------- files
def test_write_all_atomically_puts_back_what_a_failed_rename_replaced(tmp_path, monkeypatch):
    first, second, new = tmp_path / "a.h", tmp_path / "a.c", tmp_path / "new.h"
    first.write_text("old header")
    second.write_text("old source")
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.fspath(dst) == os.fspath(second):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(_files.os, "replace", failing_replace)
    for files in ({first: b"new header", second: b"new source"},
                  {new: b"new header", second: b"new source"}):
        with pytest.raises(OSError, match="No space"):
            _files.write_all_atomically(files)
        assert first.read_text() == "old header" and second.read_text() == "old source"
        assert not new.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.c", "a.h"]


def test_export_c_writes_nothing_when_the_source_is_a_directory(clf, tmp_path):
    (tmp_path / "fastgrnn.c").mkdir()
    (tmp_path / "fastgrnn.h").write_text("old header")
    with pytest.raises(IsADirectoryError, match="fastgrnn.c is a directory"):
        export_c(clf, tmp_path)
    assert (tmp_path / "fastgrnn.h").read_text() == "old header"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastgrnn.c", "fastgrnn.h"]


# ------------------------------------------------------------ scaler, quantize
def test_sequence_scaler_refuses_statistics_that_overflow():
    scaler = SequenceScaler().fit(np.ones((2, 3, 1)))
    for X in (np.full((4, 3, 1), 1.7e308), np.array([[[1.7e308], [-1.7e308]]])):
        with pytest.raises(ValueError, match="channel 0 of X overflows float64"):
            scaler.fit(X)
        np.testing.assert_array_equal(scaler.mean_, [1.0])  # a failed fit changes nothing
    with pytest.raises(ValueError, match="overflows float64"):
        SequenceScaler().fit(np.ones((2, 3, 1))).partial_fit(np.full((2, 3, 1), 1e300))


def test_sequence_scaler_on_large_values_and_float32_overflow():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4, 2))
    scaler = SequenceScaler().fit(X * 1e150)
    np.testing.assert_allclose(scaler.mean_, SequenceScaler().fit(X).mean_ * 1e150)
    Z = scaler.transform(X * 1e150)
    np.testing.assert_allclose(Z, SequenceScaler().fit(X).transform(X), atol=1e-9)
    shifted = SequenceScaler().fit(np.full((1, 2, 1), 3e38))  # mean 3e38, scale 1
    with pytest.raises(ValueError, match="X scaled overflows float32 in sample 0 at timestep 1"):
        shifted.transform(np.array([[[0.0], [-3.4e38]]], dtype=np.float32))


def test_quantize_refuses_calibration_data_beyond_float32(clf, data):
    X, _ = data
    with pytest.raises(ValueError, match="beyond the float32 range"):
        quantize(clf, X * 1e300)


def _message(call):
    try:
        call()
    except ValueError as exc:
        return str(exc).replace("QuantizedFastGRNN", "FastGRNNClassifier")
    return None


def test_quantized_model_validates_exactly_as_the_classifier(clf, data):
    X, y = data
    q = quantize(clf, X)
    nan_inside = X.copy()
    nan_inside[2, 1, 0] = np.nan
    cases = [
        ("score", X, y[:-1]), ("score", X, [0]), ("score", X[:, :0], y),
        ("predict", X[..., None]), ("predict", X[0]), ("predict", nan_inside),
        ("predict", X * np.inf), ("predict", [list(X[0]), list(X[1][:2])]),
        ("predict", X[:, :, :2]), ("predict", X.reshape(len(X), -1)[:, :4]),
    ]
    for method, *args in cases:
        expected = _message(lambda: getattr(clf, method)(*args))
        assert expected is not None, (method, args)
        assert _message(lambda: getattr(q, method)(*args)) == expected
    assert q.score(X, y) == pytest.approx(np.mean(q.predict(X) == y))
    assert q.score(X.reshape(len(X), -1), y, sample_weight=np.ones(len(y))) == q.score(X, y)


# ----------------------------------------------------------------- wording
def test_wording_of_layout_errors(clf, data):
    X, y = data
    with pytest.raises(ValueError, match=r"X has 4 dimensions .* reads 3D X") as info:
        FastGRNNClassifier().fit(X[..., None], y)
    assert "dim <= 2" not in str(info.value)
    with pytest.raises(ValueError, match=r"sklearn_fastgrnn.preprocessing.pad_sequences\(X\)"):
        FastGRNNClassifier().fit([X[0], X[1][:3]], y[:2])
    with pytest.raises(ValueError, match=r"X has 3 features, but FastGRNNClassifier is "
                       r"expecting 15 .* Pass X\[None\]; one sequence is shape \(1, T, d\)"):
        clf.predict_proba(X[0])
    with pytest.raises(ValueError, match="could not convert string to float") as info:
        clf.predict_proba([["a", "b", "c"]] * 5)  # as wide as a timestep, but not numbers
    assert "X[None]" not in str(info.value)


# ------------------------------------------------------------ weights files
@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    """(path, tensors, metadata) of a saved SequenceScaler Pipeline."""
    from safetensors import safe_open

    model = make_fastgrnn_pipeline(
        hidden_size=4, max_iter=2, random_state=0, dtype="float64"
    ).fit(*data)
    path = tmp_path_factory.mktemp("weights") / "p.safetensors"
    save_weights(model, path)
    with safe_open(path, framework="np") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        meta = json.loads(f.metadata()["sklearn_fastgrnn"])
    return path, tensors, meta


def _write(tmp_path, tensors, meta):
    import safetensors.numpy

    path = tmp_path / "edited.safetensors"
    path.write_bytes(safetensors.numpy.save(tensors, {"sklearn_fastgrnn": json.dumps(meta)}))
    return path


def _edited(saved, tensors=None, **fields):
    """Copies of the saved tensors and metadata with ``fields`` (dotted, "." as "__") set."""
    _, saved_tensors, saved_meta = saved
    tensors = {**saved_tensors, **(tensors or {})}
    meta = json.loads(json.dumps(saved_meta))
    for dotted, value in fields.items():
        set_dotted(meta, dotted.replace("__", "."), value)
    return tensors, meta


@pytest.mark.parametrize("n_timesteps", [10**6, 2 * 10**11, 10**30])
def test_sizes_in_the_metadata_allocate_nothing(saved, tmp_path, n_timesteps):
    d = saved[2]["classifier"]["input"]["n_channels"]
    tensors, meta = _edited(
        saved, classifier__input__n_timesteps=n_timesteps,
        classifier__input__n_features_in=n_timesteps * d,
        pipeline__0__attributes__n_timesteps_=n_timesteps,
        pipeline__0__attributes__n_features_in_=n_timesteps * d,
    )
    path = _write(tmp_path, tensors, meta)
    assert path.stat().st_size < 4096
    tracemalloc.start()
    try:
        if n_timesteps < 2**31:
            model = load_weights(path)
        else:
            with pytest.raises(ValueError, match="must be between 1 and 2147483647"):
                load_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6
    if n_timesteps < 2**31:
        proba = model.predict_proba(np.zeros((2, 3, d)))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"tensors": {"V": np.full((4, 3), 1.7e308)}}, r"'V' holds 1.7e\+308 in magnitude"),
        ({"tensors": {"bias_out": np.array([-1e16, 0, 0])}}, "beyond the 1e\\+15"),
        ({"tensors": {"scaler.mean_": np.array([1e200, 0, 0])}}, "'scaler.mean_' holds values"),
        ({"tensors": {"scaler.scale_": np.array([1e-200, 1, 1])}}, "'scaler.scale_' holds"),
        ({"tensors": {"scaler.var_": np.array([-1.0, 1, 1])}}, "must not be negative"),
        ({"pipeline__0__attributes__n_channels_": KeyError},
         "no field 'pipeline.0.attributes.n_channels_'"),
        ({"pipeline__0__attributes__n_channels_": "3"}, "must be int, got '3'"),
        ({"pipeline__0__attributes__n_channels_": 4}, "the SequenceScaler saw sequences of"),
        ({"pipeline__0__attributes__n_steps_seen_": -1}, "must be a count >= 0"),
        ({"pipeline__0__attributes__n_features_in_": 16}, "the classifier reads 15"),
        ({"pipeline__0__attributes__mean_": 1.0}, "not a fitted attribute name of"),
        ({"classifier__input__n_timesteps": 1e30}, r"must be int, got 1e\+30"),
        ({"classifier__classes__dtype": "<U100000000"}, "far wider than its longest label"),
    ],
)
def test_weights_files_out_of_range_or_incomplete(saved, tmp_path, edit, message):
    edit = dict(edit)
    if "classifier__classes__dtype" in edit:
        edit["classifier__classes__values"] = ["a", "b", "c"]
    tensors, meta = _edited(saved, edit.pop("tensors", None), **edit)
    with pytest.raises(ValueError, match=message):
        load_weights(_write(tmp_path, tensors, meta))


def test_save_weights_refuses_what_load_weights_would(clf, tmp_path):
    import copy

    huge = copy.deepcopy(clf)
    huge.coefs_["V"] = huge.coefs_["V"] * 1e20
    with pytest.raises(ValueError, match=r"coefs_\['V'\] holds .* load_weights would refuse"):
        save_weights(huge, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


ERRORS = ("Invalid weights file", "is not a readable safetensors file",
          "is a safetensors file without sklearn_fastgrnn metadata")


def _load_mutated(path, tmp_path, in_tensors, mutations):
    """The model of weights file ``path`` with bytes overwritten (``mutations``:
    (where in [0, 1), byte) pairs, within the tensors' bytes when ``in_tensors``),
    or None when loading refuses it with one of :data:`ERRORS`."""
    raw = bytearray(path.read_bytes())
    # the tensors' bytes follow the 8-byte header length and the JSON header
    start = 8 + int.from_bytes(raw[:8], "little") if in_tensors else 0
    for where, byte in mutations:
        raw[start + int(where * (len(raw) - start))] = byte
    mutated = tmp_path / "mutated.safetensors"
    mutated.write_bytes(bytes(raw))
    try:
        return load_weights(mutated)
    except ValueError as exc:
        assert str(exc).startswith(ERRORS) or any(e in str(exc) for e in ERRORS), exc
        return None


@pytest.mark.parametrize("kind", ["classifier", "pipeline"])
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_tensors=st.booleans(),
       mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                    st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_weights_files_fail_clearly_or_predict_probabilities(
    data, clf, saved, tmp_path, kind, in_tensors, mutations
):
    X, _ = data
    path = saved[0] if kind == "pipeline" else tmp_path / "clf.safetensors"
    if kind == "classifier" and not path.exists():
        save_weights(clf, path)
    model = _load_mutated(path, tmp_path, in_tensors, mutations)
    if model is None:
        return
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), len(model.classes_))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def saved_new_models(data, tmp_path_factory):
    """Weights files of a regressor Pipeline and a multilabel classifier.

    (Squared error: its outputs stay finite within the loader's bounds; a
    Poisson model predicts exp of them, which a bounded weight can overflow.)
    """
    from sklearn.pipeline import make_pipeline

    from sklearn_fastgrnn import FastGRNNRegressor

    X, y = data
    root = tmp_path_factory.mktemp("weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regressor = make_pipeline(SequenceScaler(), FastGRNNRegressor(
            4, readout="mean", window=2, max_iter=2, random_state=0)
        ).fit(X, np.arange(len(X)) % 4)
        multilabel = FastGRNNClassifier(4, readout="max", max_iter=2, random_state=0).fit(
            X, np.column_stack([y == 0, y == 1, y == 2]).astype(int))
    save_weights(regressor, root / "regressor.safetensors")
    save_weights(multilabel, root / "multilabel.safetensors")
    return root


@pytest.mark.parametrize("kind", ["regressor", "multilabel"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_tensors=st.booleans(),
       mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                    st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_regressor_and_multilabel_files_fail_clearly_or_predict(
    data, saved_new_models, tmp_path, kind, in_tensors, mutations
):
    X, _ = data
    model = _load_mutated(saved_new_models / f"{kind}.safetensors", tmp_path, in_tensors,
                          mutations)
    if model is None:
        return
    if kind == "regressor":
        predicted = model.predict(X)
        assert predicted.shape == (len(X),)
    else:
        predicted = model.predict_proba(X)
        assert predicted.shape == (len(X), 3) and ((0 <= predicted) & (predicted <= 1)).all()
        assert set(np.unique(model.predict(X))) <= {0, 1}
    assert np.isfinite(predicted).all()


# ---------------------------------------------------------------------- ONNX
def test_onnx_nan_behaviour_is_as_documented(clf, data):
    ort = pytest.importorskip("onnxruntime")
    X, _ = data
    session = ort.InferenceSession(to_onnx(clf).SerializeToString(),
                                   providers=["CPUExecutionProvider"])

    def run(Z):
        return session.run(None, {"X": np.asarray(Z, dtype=np.float32)})[0]

    base = X[:3]
    reference = run(base)
    padded = np.concatenate([base, np.full((3, 4, 3), np.nan)], axis=1)
    np.testing.assert_array_equal(run(padded), reference)  # exact
    for t, channels in ((2, [1]), (0, [0, 1, 2]), (slice(None), [0, 1, 2])):
        Z = base.copy()
        Z[0, t, channels] = np.nan
        with pytest.raises(ValueError):
            clf.predict_proba(Z)
        proba = run(Z)
        assert np.isnan(proba[0]).all()
        np.testing.assert_array_equal(proba[1:], reference[1:])


# ------------------------------------------------------- properties of fit
@PROPERTY
@given(
    n=st.integers(4, 10), T=st.integers(1, 5), d=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]), flat=st.booleans(),
    seed=st.integers(0, 2**16), n_empty=st.integers(0, 1),
    inside=st.none() | st.tuples(st.integers(0, 9), st.integers(0, 4), st.integers(0, 2)),
)
def test_fit_predict_over_shapes_dtypes_and_nan(n, T, d, dtype, flat, seed, n_empty, inside):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d)).astype(dtype)
    lengths = rng.integers(1, T + 1, n)
    lengths[:n_empty] = 0  # a sequence with no real timestep
    for i, length in enumerate(lengths):
        X[i, length:] = np.nan
    valid = n_empty == 0
    if inside is not None:
        i, t, c = inside[0] % n, inside[1] % T, inside[2] % d
        if t < lengths[i] and not (d == 1 and t == lengths[i] - 1):
            X[i, t, c] = np.nan  # inside the sequence: not padding
            valid = False
    y = np.arange(n) % 2
    model = FastGRNNClassifier(hidden_size=2, max_iter=2, n_timesteps=T if flat else None,
                               random_state=0)
    Xin = X.reshape(n, T * d) if flat else X
    if flat and d == 1:
        model.set_params(n_timesteps=None)
    if not valid:
        with pytest.raises(ValueError, match="NaN"):
            model.fit(Xin, y)
        return
    model.fit(Xin, y)
    proba = model.predict_proba(Xin)
    assert proba.shape == (n, 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(model.predict(Xin)) <= {0, 1}


# --------------------------------------------------- models in memory, fit's inputs
def test_a_failing_partial_fit_does_not_erase_concurrent_successful_calls(monkeypatch):
    import threading

    from sklearn_fastgrnn import _training as training_module

    X, y = make_sequences(np.random.default_rng(0), n=30)
    clf = FastGRNNClassifier(hidden_size=4, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    started, finish = threading.Event(), threading.Event()
    real_epoch = training_module.TrainingRun.epoch

    def epoch(self, *args):
        if threading.current_thread().name == "failing":
            started.set()
            finish.wait(30)
            raise ValueError("simulated failure")
        return real_epoch(self, *args)

    monkeypatch.setattr(training_module.TrainingRun, "epoch", epoch)
    errors = []

    def failing():
        try:
            clf.partial_fit(X, y)
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=failing, name="failing")
    thread.start()
    assert started.wait(30)
    for _ in range(3):
        clf.partial_fit(X, y)
    finish.set()
    thread.join()
    assert len(errors) == 1
    assert clf.n_iter_ == 4  # the three calls that succeeded are all kept


def test_predict_during_fit_sees_the_old_model_until_the_new_one_is_published(monkeypatch):
    import threading

    from sklearn_fastgrnn import _training as training_module

    X, y = make_sequences(np.random.default_rng(0), n=30)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=2, random_state=0).fit(X, y)
    old = clf.predict(X)
    inside, proceed = threading.Event(), threading.Event()
    real_epoch = training_module.TrainingRun.epoch

    def epoch(self, *args):
        inside.set()
        proceed.wait(30)
        return real_epoch(self, *args)

    monkeypatch.setattr(training_module.TrainingRun, "epoch", epoch)
    thread = threading.Thread(target=lambda: clf.fit(X, y + 10))
    thread.start()
    assert inside.wait(30)
    during = clf.predict(X)  # the new fit has classes 10, 11, 12 but no weights yet
    proceed.set()
    thread.join()
    np.testing.assert_array_equal(during, old)
    assert set(clf.predict(X)) <= {10, 11, 12}


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({0: -1, 1: 1.5}, r"class_weight\[0\] is -1; class weights must be finite non-negative"),
        ({0: np.inf}, r"class_weight\[0\] is inf"),
        ({0: np.nan}, r"class_weight\[0\] is nan"),
        ({0: "2"}, r"class_weight\[0\] is '2'"),
        ({7: 1.0}, r"class_weight has keys \[7\] that are not labels of y"),
    ],
)
def test_bad_class_weights_are_refused(data, class_weight, match):
    clf = FastGRNNClassifier(hidden_size=4, max_iter=1, class_weight=class_weight)
    with pytest.raises(ValueError, match=match):
        clf.fit(*data)
    assert not hasattr(clf, "coefs_")


def test_numpy_integers_work_as_integers_and_booleans_are_refused(data):
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = data
    small = FastGRNNClassifier(hidden_size=np.int8(3), max_iter=np.int64(1),
                               batch_size=np.int16(8), random_state=0).fit(X, y)
    assert small.coefs_["U"].shape == (3, 3) and small.n_iter_ == 1
    wide = FastGRNNClassifier(hidden_size=np.int16(300), max_iter=1, random_state=0)
    assert wide.fit(X, y).coefs_["U"].shape == (300, 300)  # 300 * 300 overflows int16
    for name in ("batch_size", "max_iter", "hidden_size", "n_iter_no_change"):
        with pytest.raises(InvalidParameterError, match=f"'{name}' .* got the boolean True"):
            FastGRNNClassifier(**{name: True}).fit(X, y)


def test_validation_scores_are_exact_fractions(data):
    X, y = data
    clf = FastGRNNClassifier(hidden_size=4, max_iter=3, early_stopping=True,
                             validation_fraction=0.2, random_state=0).fit(X, y)
    n_val = len(X) - clf.t_ // clf.n_iter_
    assert all(score * n_val == round(score * n_val) for score in clf.validation_scores_)
    assert all(repr(score) == repr(round(score * n_val) / n_val)
               for score in clf.validation_scores_)


# ------------------------------------------------- issue 20: hardening round 2
def _raw_metadata_file(saved, tmp_path, text):
    import safetensors.numpy

    path = tmp_path / "crafted.safetensors"
    path.write_bytes(safetensors.numpy.save(saved[1], {"sklearn_fastgrnn": text}))
    return path


@pytest.mark.parametrize("junk, message", [
    ("[" * 100_000 + "]" * 100_000, "nests JSON arrays or objects deeper"),
    ("9" * 5000, "holds an integer of more than 4300 digits"),
], ids=["deep nesting", "5,000 digits"])
def test_crafted_json_metadata_is_an_invalid_weights_file(saved, tmp_path, junk, message):
    text = json.dumps(saved[2])[:-1] + f', "junk": {junk}}}'
    with pytest.raises(ValueError, match="Invalid weights file .*" + message) as raised:
        load_weights(_raw_metadata_file(saved, tmp_path, text))
    assert "set_int_max_str_digits" not in str(raised.value)


def test_a_malformed_value_is_quoted_short(saved, tmp_path):
    tensors, meta = _edited(saved, classifier__params__alpha=json.loads("[" * 900 + "]" * 900))
    with pytest.raises(ValueError, match="alpha is malformed") as raised:
        load_weights(_write(tmp_path, tensors, meta))
    assert len(str(raised.value)) < 400


def _damaged(clf, how):
    import copy

    damaged = copy.deepcopy(clf)
    if how == "NaN in V":
        damaged.coefs_ = {**damaged.coefs_, "V": damaged.coefs_["V"] * np.nan}
    elif how == "fewer classes than outputs":
        damaged.classes_ = damaged.classes_[:2]
    else:  # more classes than outputs
        damaged.classes_ = np.arange(len(damaged.classes_) + 1)
    return damaged


DAMAGE = {"NaN in V": r"coefs_\['V'\] contains NaN or inf: {}",
          "fewer classes than outputs": "classes_ holds 2 labels, but coefs_.'V'. has 3 "
                                        "columns, one per class: {}",
          "more classes than outputs": "classes_ holds 4 labels, but coefs_.'V'. has 3"}


@pytest.mark.parametrize("how", DAMAGE)
def test_exports_refuse_a_damaged_classifier_as_save_weights_does(clf, tmp_path, how):
    from sklearn_fastgrnn.export import compile_predictor

    damaged = _damaged(clf, how)
    assert len(clf.classes_) == 3
    with pytest.raises(ValueError, match=DAMAGE[how].format("load_weights would refuse the file")):
        save_weights(damaged, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=DAMAGE[how].format("to_onnx refuses it")):
        to_onnx(damaged)
    with pytest.raises(ValueError, match=DAMAGE[how].format("export_c refuses it")):
        export_c(damaged, tmp_path / "c")
    with pytest.raises(ValueError, match=DAMAGE[how].format("export_c refuses it")):
        compile_predictor(damaged)
    assert not any(tmp_path.iterdir())


def test_exports_refuse_a_damaged_int8_model_or_scaler(clf, data, tmp_path):
    q = quantize(clf, data[0])
    q.classes_ = q.classes_[:2]
    with pytest.raises(ValueError, match="classes_ holds 2 labels, but the int8 output"):
        export_c(q, tmp_path / "c")
    pipe = make_fastgrnn_pipeline(hidden_size=3, max_iter=2, random_state=0).fit(*data)
    pipe[0].scale_ = pipe[0].scale_ * np.nan
    with pytest.raises(ValueError, match=r"SequenceScaler.scale_ contains NaN or inf: "
                       "to_onnx refuses it"):
        to_onnx(pipe)


@pytest.mark.parametrize("how", DAMAGE)
def test_the_command_line_refuses_a_damaged_joblib_model(clf, data, tmp_path, how, capsys):
    import joblib

    from sklearn_fastgrnn.__main__ import main

    joblib.dump(_damaged(clf, how), tmp_path / "m.joblib")
    np.savez(tmp_path / "d.npz", X=data[0])
    for args in (["predict", "--data", str(tmp_path / "d.npz")], ["info"],
                 ["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]):
        with pytest.raises(SystemExit) as raised:
            main([args[0], "--model", str(tmp_path / "m.joblib"), *args[1:]])
        assert raised.value.code.startswith(f"error: {tmp_path / 'm.joblib'} holds a "
                                            "damaged model: ")
        assert re.search(DAMAGE[how].format("it would predict NaN or fail"),
                         raised.value.code), raised.value.code
    assert not (tmp_path / "m.onnx").exists()


def test_an_error_quoting_a_long_value_of_the_file_is_cut(saved, tmp_path):
    tensors, meta = _edited(saved, format="x" * 5000, classifier__params__solver="y" * 5000)
    with pytest.raises(ValueError, match="Invalid weights file .*format is 'xxx") as raised:
        load_weights(_write(tmp_path, tensors, meta))
    assert len(str(raised.value)) < 500 + len(str(tmp_path)) + 50
    tensors, meta = _edited(saved, classifier__params__solver="y" * 5000)
    with pytest.raises(ValueError, match="hyper-parameters in classifier.params") as raised:
        load_weights(_write(tmp_path, tensors, meta))
    assert len(str(raised.value)) < 500 + len(str(tmp_path)) + 50


@pytest.mark.parametrize("w_rank", [None, 2])
def test_onnx_inputs_near_the_float32_maximum_do_not_overflow_halfway(w_rank):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4, 4)), np.arange(60) % 2
    top = np.finfo(np.float32).max
    X_big = (rng.choice([-1.0, 1.0], (200, 4, 4)) * top * rng.uniform(0.5, 1.0, (200, 4, 4))
             ).astype(np.float32)
    for gate, update in (("tanh", "quant_tanh"), ("sigmoid", "quant_tanh"), ("sigmoid", "tanh")):
        clf = FastGRNNClassifier(5, w_rank=w_rank, gate_nonlinearity=gate,
                                 update_nonlinearity=update, max_iter=2, random_state=1).fit(X, y)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = clf.predict_proba(X_big)
        assert np.isfinite(expected).all()
        session = ort.InferenceSession(to_onnx(clf).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        proba = session.run(None, {"X": X_big})[0]
        np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-4)
