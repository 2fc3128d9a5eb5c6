"""compile_predictor: the C export, built and called from Python, matches the model."""

import os
import pickle
import re
import warnings
from functools import partial

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import READOUTS
from sklearn_fastgrnn._channels import n_cell_channels, with_changes
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export import compile_predictor
from sklearn_fastgrnn.export.compiled import find_compiler

from .conftest import TASKS, make_sequences, plain_envelope, task_model
from .test_export_c import (
    CASES,
    CHANGES,
    IDS,
    JUMP_CASES,
    WINDOWS,
    definition_shifts,
    float32_jump_case,
    peaked_sequences,
    phase_outputs,
    plain_cell_values,
    quantized_phase_outputs,
    reading_cell_values,
    windows_model,
)

COMPILER = find_compiler()
pytestmark = pytest.mark.skipif(
    COMPILER is None, reason="no C compiler ($CC, cc, gcc or clang) on this machine"
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=80, T=7)
    X_test = X[:20].copy()
    for i, length in zip((1, 4, 7, 10), (5, 3, 1, 6)):  # NaN-padded sequences
        X_test[i, length:] = np.nan
    return X, y, X_test


@CHANGES
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_float_predictor_matches_predict_proba(data, params, change_channels):
    X, y, X_test = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, change_channels=change_channels,
                             **params).fit(X, y)
    compiled = compile_predictor(clf)
    expected = clf.predict_proba(X_test)
    for Xc in (X_test, X_test.astype(np.float32), X_test[:, :5]):  # float64, float32, shorter
        proba = compiled.predict_proba(Xc)
        assert proba.shape == (len(Xc), 3) and proba.dtype == np.float32
        assert_allclose(proba, clf.predict_proba(Xc), rtol=0, atol=1e-5)
    assert_allclose(compiled.logits(X_test), clf.decision_function(X_test), atol=1e-4)
    assert_array_equal(compiled.predict(X_test), clf.classes_[np.argmax(expected, axis=1)])
    for i in range(len(X_test)):  # one sequence at a time, as for latency
        assert_allclose(compiled.predict_proba(X_test[i : i + 1]), expected[i : i + 1],
                        rtol=0, atol=1e-5)


@CHANGES
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_int8_predictor_is_the_quantized_path_exactly(data, params, change_channels):
    X, y, X_test = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, change_channels=change_channels,
                             **params).fit(X, y)
    q = quantize(clf, X)
    compiled = compile_predictor(q)
    logits = compiled.logits(X_test)
    assert logits.dtype == np.int32
    assert_array_equal(logits, q.quantized_logits(X_test))
    assert_array_equal(compiled.predict_proba(X_test), q.predict_proba(X_test))
    assert_array_equal(compiled.predict(X_test), q.predict(X_test))
    assert_array_equal(compiled.predict(X_test[4:5]), q.predict(X_test[4:5]))


def test_read_only_input_gives_the_same_results(data):
    X, y, X_test = data
    clf = FastGRNNClassifier(8, max_iter=4, random_state=0).fit(X, y)
    compiled = compile_predictor(clf)
    for dtype in (np.float32, np.float64):  # float32 reaches C as it is, read-only
        writable = np.ascontiguousarray(X_test, dtype=dtype)
        frozen = writable.copy()
        frozen.flags.writeable = False
        assert_array_equal(compiled.predict_proba(frozen), compiled.predict_proba(writable))
        assert_array_equal(compiled.predict(frozen[2:3]), compiled.predict(writable[2:3]))


def test_2d_input_lists_and_string_labels(data):
    X, y, _ = data
    rows = np.ascontiguousarray(X[:, :, 0])
    labels = np.array(["low", "mid", "high"])[y]
    clf = FastGRNNClassifier(6, max_iter=5, random_state=0).fit(rows, labels)
    compiled = compile_predictor(clf)
    assert_allclose(compiled.predict_proba(rows[:9]), clf.predict_proba(rows[:9]), atol=1e-5)
    assert_allclose(compiled.predict_proba(rows[:9].tolist()), clf.predict_proba(rows[:9]),
                    atol=1e-5)
    assert list(compiled.predict(rows[:9])) == list(clf.predict(rows[:9]))
    assert compiled.predict(rows[:9]).dtype == clf.classes_.dtype


def test_bad_input_gets_the_estimator_messages(data):
    X, y, X_test = data
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    compiled = compile_predictor(clf)
    cases = {}
    bad = X_test.astype(np.float32)
    bad[6, 2, 1] = np.nan
    cases["nan inside"] = bad
    bad = X_test.astype(np.float32)
    bad[9, 0, 0] = np.inf
    cases["inf"] = bad
    bad = X_test.astype(np.float32)
    bad[3] = np.nan
    cases["empty"] = bad
    cases["channels"] = X_test[:, :, :2]
    for name, Xb in cases.items():
        with pytest.raises(ValueError) as expected:
            clf.predict_proba(Xb)
        for method in ("predict_proba", "predict", "logits"):
            with pytest.raises(ValueError) as got:
                getattr(compiled, method)(Xb)
            assert str(got.value) == str(expected.value), name


def test_pickle_rebuilds_and_directory_is_used(tmp_path, data):
    X, y, X_test = data
    clf = FastGRNNClassifier(5, max_iter=3, random_state=0).fit(X, y)
    compiled = compile_predictor(clf, tmp_path / "build")
    assert sorted(os.listdir(tmp_path / "build")) == [
        "fastgrnn.c", "fastgrnn.h", "fastgrnn_batch.c", "fastgrnn_batch.o", "libfastgrnn.so"]
    restored = pickle.loads(pickle.dumps(compiled))
    assert restored.library_path != compiled.library_path
    assert os.path.exists(restored.library_path)
    assert_array_equal(restored.predict_proba(X_test), compiled.predict_proba(X_test))


def test_no_compiler_is_a_clear_error(monkeypatch, data):
    X, y, _ = data
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(RuntimeError, match="needs a C compiler.*set CC"):
        compile_predictor(clf)
    monkeypatch.setenv("CC", f"{COMPILER[0]} -g")  # CC with arguments is honoured
    compiled = compile_predictor(clf)
    assert_allclose(compiled.predict_proba(X[:3]), clf.predict_proba(X[:3]), atol=1e-5)
    monkeypatch.setenv("CC", f"{COMPILER[0]} -no-such-flag-xyz")
    with pytest.raises(RuntimeError, match="Building the compiled predictor failed"):
        compile_predictor(clf)


def test_refuses_what_it_can_not_compile(data):
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = data
    with pytest.raises(NotFittedError):
        compile_predictor(FastGRNNClassifier())
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="Pipeline"):
        compile_predictor(make_pipeline(StandardScaler(), clf))


def test_large_batches_run_in_slices_with_the_same_results_and_errors(data, monkeypatch):
    import sklearn_fastgrnn.export.compiled as compiled_module

    X, y, X_test = data
    clf = FastGRNNClassifier(8, max_iter=4, random_state=0).fit(X, y)
    compiled = compile_predictor(clf)
    big = np.concatenate([X_test] * 150)  # 3,000 sequences, padded ones among them
    monkeypatch.setattr(compiled_module.os, "cpu_count", lambda: 3)
    assert len(big) >= compiled_module._PARALLEL_MIN_SEQUENCES
    sliced = compiled.predict_proba(big)
    monkeypatch.setattr(compiled_module, "_PARALLEL_MIN_SEQUENCES", 10**9)
    assert_array_equal(sliced, compiled.predict_proba(big))
    assert_allclose(sliced, clf.predict_proba(big), rtol=0, atol=1e-5)
    monkeypatch.setattr(compiled_module, "_PARALLEL_MIN_SEQUENCES", 2048)
    broken = big.copy()
    broken[2500, 0, 1] = np.nan  # inside the third slice
    with pytest.raises(ValueError, match="sample 2500 at timestep 0"):
        compiled.predict(broken)


# ---------------------------------------------- extreme inputs (issue 20, item 1)
def assert_agrees_with_predict_proba(clf, compiled, X, reference=None):
    """Probabilities within 1e-5 of ``predict_proba(reference)`` (``X`` unless given)
    and the same labels, except where the model's own top two probabilities tie
    (to 1e-6)."""
    expected = clf.predict_proba(X if reference is None else reference)
    assert np.isfinite(expected).all()
    proba = compiled.predict_proba(X)
    assert not np.isnan(proba).any()
    assert_allclose(proba, expected, rtol=0, atol=1e-5)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-6
    assert clear.mean() > 0.5
    labels = clf.classes_[np.argmax(expected, axis=1)]
    assert_array_equal(compiled.predict(X)[clear], labels[clear])


@pytest.fixture(scope="module")
def digits():
    from sklearn_fastgrnn.datasets import load_digits_sequences

    return load_digits_sequences()


@pytest.mark.filterwarnings("ignore:overflow encountered in matmul:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("cell", [("sigmoid", "tanh"), ("tanh", "sigmoid"),
                                  ("quant_sigmoid", "quant_tanh"), ("sigmoid", "relu")],
                         ids="/".join)
@CHANGES
def test_unscaled_and_extreme_inputs_agree_with_the_numpy_engine(digits, cell, change_channels):
    # -ffast-math gave all-NaN rows (and wrong labels) on digits x 100 + 500.
    # The default model standardises its input and folds the map into coefs_: W
    # divided by each channel's spread (0.004 for a nearly blank pixel column),
    # so raw inputs far from the training range reach the cell amplified.
    X, y = digits
    clf = FastGRNNClassifier(16, max_iter=2, random_state=0, gate_nonlinearity=cell[0],
                             update_nonlinearity=cell[1],
                             change_channels=change_channels).fit(X[:300], y[:300])
    assert clf.scale_input and np.ptp(clf._maps.input_scale) > 0.1
    compiled = compile_predictor(clf)
    ordinary = {
        "digits x 100 + 500": X[:200] * 100 + 500,
        "zeros": np.zeros((4, 8, 8)),
        "constant": np.stack([np.full((8, 8), v) for v in (-3.0, 0.5, 16.0, 1e6)]),
        "1e30": np.full((2, 8, 8), 1e30),
        "-1e30": np.full((2, 8, 8), -1e30),
    }
    for name, Xc in ordinary.items():  # predict_proba in the input's own dtype
        try:
            assert_agrees_with_predict_proba(clf, compiled, Xc)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    # Near the float32 maximum the right answer is the model's arithmetic on the
    # float32 values without an overflow halfway through x @ W: predict_proba of
    # the same values in float64. The NumPy float32 path sums x_i W_ij in float32,
    # where a partial sum overflows (to inf, or NaN) although the whole sum does
    # not; the C code computes that input term in double and rounds it once.
    top = np.finfo(np.float32).max
    signs = np.random.default_rng(1).choice([-1.0, 1.0], (6, 8, 8))
    near_max = {
        "near float32 max": np.full((3, 8, 8), top * 0.99, dtype=np.float32),
        "near float32 max, mixed signs": (signs * top * 0.5).astype(np.float32),
    }
    W32 = clf.coefs_["W"].astype(np.float32)[:8]  # the rows of x_0 (its changes are 0)
    for name, Xc in near_max.items():
        with np.errstate(over="ignore", invalid="ignore"):
            halfway = np.cumsum(Xc[:, 0, :, None] * W32, axis=1, dtype=np.float32)
        exact = Xc[:, 0].astype(np.float64) @ W32.astype(np.float64)
        assert not np.isfinite(halfway).all() and np.isfinite(exact).all(), name
        if cell[1] == "relu":  # an unbounded state leaves float32's range: an error
            with pytest.raises(ValueError, match="overflows on sample 0"):
                compiled.predict_proba(Xc)
            continue
        try:
            assert_agrees_with_predict_proba(clf, compiled, Xc, reference=Xc.astype(np.float64))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_long_standard_normal_sequences_at_h64():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 20, 3)), rng.integers(0, 3, 200)
    clf = FastGRNNClassifier(64, max_iter=2, random_state=0).fit(X, y)
    compiled = compile_predictor(clf)
    X_long = rng.standard_normal((30, 2000, 3))
    assert_agrees_with_predict_proba(clf, compiled, X_long)
    assert_agrees_with_predict_proba(clf, compiled, X_long.astype(np.float32))


def overflowing_in_float32_only(X, y, change_channels):
    """A relu-gated model, its compiled predictor and the first of the inputs
    ``X[:5] * 2^k + 5 * 2^k`` on which the C code's float32 arithmetic overflows
    while the model's float64 arithmetic stays finite."""
    for seed in range(12):  # a relu gate on standardised digits may diverge
        try:
            clf = FastGRNNClassifier(16, max_iter=2, random_state=seed, gate_nonlinearity="relu",
                                     change_channels=change_channels).fit(X[:300], y[:300])
        except ValueError:
            continue
        compiled = compile_predictor(clf)
        for scale in 2.0 ** np.arange(0, 60):
            big = X[:5] * scale + 5 * scale
            try:
                compiled.predict(big)
            except ValueError as exc:
                assert "overflows" in str(exc)
                break
        else:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the model's own overflow
            if np.isfinite(clf.predict_proba(big)).all():
                return clf, compiled, big
    raise AssertionError("no model overflowed in float32 only")


@CHANGES
def test_float32_overflow_in_the_c_code_is_an_error_not_nan(digits, change_channels):
    # a relu gate lets the state grow without bound: on large inputs it leaves
    # float32's range in C while the float64 engine stays finite
    X, y = digits
    clf, compiled, big = overflowing_in_float32_only(X, y, change_channels)
    for method in ("predict_proba", "predict", "logits", "outputs"):
        with pytest.raises(ValueError, match=r"overflows on sample \d of X"):
            getattr(compiled, method)(big)
    first = int(re.search(r"sample (\d)", _error(compiled.predict, big)).group(1))
    big[first] = X[first]  # that row is fine now: the error names a later one
    later = int(re.search(r"sample (\d)", _error(compiled.predict, big)).group(1))
    assert later > first
    stream = compiled.streamer()
    with pytest.raises(ValueError, match="overflows on stream 0.*reset"):
        for x in big[later]:
            stream.update(x)


def _error(call, *args):
    with pytest.raises(ValueError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.parametrize("value", [1e15, 1e16, 1e30, -1e30, float(np.finfo(np.float32).max),
                                   -float(np.finfo(np.float32).max)])
@CHANGES
def test_int8_input_saturates_as_in_python_for_huge_values(data, value, change_channels):
    # quantize_input converted floor(x * 2^F + 1/2) to int64 before clamping: it
    # overflowed from |x| = 1e15 on and disagreed with the Python path
    X, y, _ = data
    q = quantize(FastGRNNClassifier(8, max_iter=3, random_state=0,
                                    change_channels=change_channels).fit(X, y), X)
    compiled = compile_predictor(q)
    X_big = X[:6].astype(np.float32)
    X_big[:3] = np.float32(value)  # whole sequences
    X_big[3:, 2, 1] = np.float32(value)  # one value among ordinary ones
    assert_array_equal(compiled.logits(X_big), q.quantized_logits(X_big))
    assert_array_equal(compiled.predict_proba(X_big), q.predict_proba(X_big))
    assert_array_equal(compiled.predict(X_big), q.predict(X_big))


@CHANGES
@pytest.mark.parametrize("w_rank", [None, 2])
def test_inputs_near_the_float32_maximum_in_several_channels(w_rank, change_channels):
    # a float32 sum of x_i W_ij over 4 channels near the float32 maximum overflows
    # halfway (and low rank twice: x W1, then W2) where predict_proba does not
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4, 4)), np.arange(60) % 2
    top = np.finfo(np.float32).max
    X_big = (rng.choice([-1.0, 1.0], (200, 4, 4)) * top * rng.uniform(0.5, 1.0, (200, 4, 4))
             ).astype(np.float32)
    cells = (("tanh", "quant_sigmoid"), ("sigmoid", "tanh"), ("quant_sigmoid", "quant_tanh"))
    for gate, update in cells:
        clf = FastGRNNClassifier(8, w_rank=w_rank, gate_nonlinearity=gate,
                                 update_nonlinearity=update, max_iter=2, random_state=1,
                                 change_channels=change_channels).fit(X, y)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = clf.predict_proba(X_big)
        assert np.isfinite(expected).all()
        assert_allclose(compile_predictor(clf).predict_proba(X_big), expected, rtol=0, atol=1e-5)


@JUMP_CASES
def test_jumps_across_the_float32_range_compiled_and_streamed(window, envelope):
    # timesteps of opposite signs near the float32 maximum: the changes, capped at
    # FLT_MAX, are with_changes' float32 values; no NaN
    model, q, jumps, reference, cells = float32_jump_case(window, envelope)
    compiled, compiled_int8 = compile_predictor(model), compile_predictor(q)
    proba = compiled.predict_proba(jumps)
    assert_allclose(proba, reference.predict_proba(cells), rtol=0, atol=1e-5)
    assert_array_equal(compiled.predict_proba(jumps.astype(np.float64)), proba)
    assert_allclose(compiled.logits(jumps), reference.decision_function(cells), atol=1e-4)
    assert_array_equal(compiled_int8.outputs(jumps), q.quantized_outputs(jumps))
    staged = reference.staged_predict_proba(cells)
    assert np.isfinite(staged).all()
    n = len(jumps)
    stream, stream_int8, python_int8 = (compiled.streamer(n), compiled_int8.streamer(n),
                                        q.streamer(n))
    for t in range(jumps.shape[1]):
        assert_allclose(stream.update(jumps[:, t]), staged[:, t], rtol=0, atol=1e-5)
        assert_array_equal(stream_int8.update(jumps[:, t]), python_int8.update(jumps[:, t]))


def changes_of_every_magnitude(X):
    """Six float32 sequences from ``X`` (n, T, 3) whose changes span 0 to the float32
    maximum: constant; steps of 1e-6, 1 and 1e6; a mix of those in two channels with
    +-3e38 jumps in the third; +-3e38 jumps in every channel."""
    T = X.shape[1]
    top = np.float32(3e38)
    alternating = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)[:, None]
    seqs = np.empty((6, T, X.shape[2]), np.float32)
    seqs[0] = X[0, :1]  # every change 0: the cell reads log(offset)
    for i, size in zip((1, 2, 3), (1e-6, 1.0, 1e6)):
        seqs[i] = X[i, :1] + 0.5 * size * alternating
    mixed = np.resize([0.0, 1e-6, 1.0, 1e6], T)
    seqs[4, :, 0] = X[4, 0, 0] + np.cumsum(mixed)
    seqs[4, :, 1] = X[4, 0, 1] + np.cumsum(mixed[::-1])
    seqs[4, :, 2] = top * alternating[:, 0]
    seqs[5] = top * alternating
    return seqs


@pytest.mark.parametrize("window", [1, 3])
def test_log_change_channel_of_changes_of_every_magnitude(window):
    # the C code's log(c + change_offsets_), summed and taken in double and
    # rounded to float, is with_changes': the compiled predictions are
    # predict_proba's on the float32 input, finite, and the int8 integers exact.
    # A missing log channel or offsets off by 2 move these probabilities by 1e-3.
    model, X = task_model(np.random.default_rng(0), "classification", window=window,
                          change_channels=True)
    seqs = changes_of_every_magnitude(X)
    changes = np.abs(np.diff(seqs.astype(np.float64), axis=1))
    assert changes.min() == 0 and 0 < changes[1].max() < 1e-5 and changes.max() > 5e38
    expected, staged = model.predict_proba(seqs), model.staged_predict_proba(seqs)
    assert np.isfinite(staged).all()
    compiled = compile_predictor(model)
    proba = compiled.predict_proba(seqs)
    assert np.isfinite(proba).all()
    assert_allclose(proba, expected, rtol=0, atol=1e-5)
    stream = compiled.streamer(len(seqs))
    cells = with_changes(seqs, model.change_offsets_).reshape(len(seqs), -1)  # float32
    width, start = 3 * X.shape[2], 2 * model.hidden_size_ + 2  # cell channels; the window
    for t in range(seqs.shape[1]):
        assert_allclose(stream.update(seqs[:, t]), staged[:, t], rtol=0, atol=1e-5)
        filled = (t + 1) % window  # with window 3 the state holds the cell values
        assert_array_equal(stream.state[:, start : start + filled * width],
                           cells[:, (t + 1 - filled) * width : (t + 1) * width])
    q = quantize(model, X)
    assert_array_equal(compile_predictor(q).outputs(seqs), q.quantized_outputs(seqs))


# ------------------------------------------- every model, whole and streamed
LENGTHS = (7, 4, 1, 7, 5, 2)  # of the test sequences: NaN-padded, one of a single step


def assert_close(got, expected, regressor, tol=1e-5):
    """Float32 C against Python: within ``tol``, relative for a regressor's values."""
    np.testing.assert_allclose(got, expected, rtol=tol if regressor else 0.0, atol=tol)


def filled_windows(state, model):
    """Streamer ``state`` rows with the window timesteps past each block's
    ``filled`` count zeroed: what is left of earlier windows (and with window 1
    the C state has no window, the Python streamer's last timestep)."""
    state = state.copy()
    H, k, d = model.hidden_size_, model.window_, n_cell_channels(model)
    block = 2 * H + 2 + k * d
    for j in range(model.window_phases_):
        start = j * block + 2 * H
        for row in state:
            row[start + 2 + int(row[start + 1]) * d : start + 2 + k * d] = 0.0
    return state


def raw_width(model):
    """Values of a state row between the blocks and the timesteps seen, by the
    spec: the base values of the last timestep (change channels), the last
    ``envelope_width_ - 1`` timesteps (envelope channels)."""
    d, w = model.n_channels_, model.envelope_width_
    base = 3 * d if w else d
    return base * model.change_channels_ + (w - 1) * d * bool(w)


@CHANGES
@WINDOWS
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("task", TASKS)
def test_every_model_compiled_and_streamed(task, readout, window, phases, envelope,
                                           change_channels):
    model, X = windows_model(task, window, phases, envelope, readout=readout,
                             change_channels=change_channels)
    q = quantize(model, X)
    X_test = X[:6].copy()
    for i, length in enumerate(LENGTHS):
        X_test[i, length:] = np.nan
    compiled, compiled_int8 = compile_predictor(model), compile_predictor(q)
    regressor = task in ("regression", "poisson")
    # whole sequences, float32 and float64 input; with window phases the outputs of
    # their definition (the mean of the phases' outputs)
    assert_close(compiled.outputs(X_test), phase_outputs(model, X_test), regressor)
    assert_array_equal(compiled_int8.outputs(X_test), quantized_phase_outputs(q, X_test))
    for Xc in (X_test, X_test.astype(np.float32)):
        assert_close(compiled.outputs(Xc), model._raw_outputs(Xc), regressor)
        predicted, expected = compiled.predict(Xc), model.predict(Xc)
        assert predicted.shape == expected.shape
        if regressor:
            assert_close(predicted, expected, True)
        else:
            assert_close(compiled.predict_proba(Xc), model.predict_proba(Xc), False)
            clear = np.abs(model._raw_outputs(Xc)).min(axis=1) > 1e-4
            assert_array_equal(predicted[clear], expected[clear])
    assert_array_equal(compiled_int8.outputs(X_test), q.quantized_outputs(X_test))
    assert_array_equal(compiled_int8.predict(X_test), q.predict(X_test))
    if not regressor:
        assert_array_equal(compiled_int8.predict_proba(X_test), q.predict_proba(X_test))
        assert_array_equal(compiled_int8.logits(X_test), q.quantized_outputs(X_test))
    else:
        assert not hasattr(compiled, "predict_proba") and not hasattr(compiled, "logits")
    # three interleaved streams (stream 2 pauses), compared after every step: their
    # predictions, and their states row for row (a block per window phase)
    streams = [model.streamer(3), compiled.streamer(3), q.streamer(3), compiled_int8.streamer(3)]
    for stream, reference in ((streams[1], streams[0]), (streams[3], streams[2])):
        assert_close(stream.predictions(), reference.predictions(), regressor)
    width = phases * (2 * model.hidden_size_ + 2 + window * n_cell_channels(model))
    assert streams[1].state.shape == (3, width + raw_width(model) + 1)
    fed = [0, 0, 0]
    for tick in range(12):
        x = np.full((3, X.shape[2]), np.nan)
        for i in range(3):
            if (i != 2 or tick not in (1, 2, 5)) and fed[i] < LENGTHS[i]:
                x[i] = X_test[i, fed[i]]
                fed[i] += 1
        python, c, python_int8, c_int8 = (stream.update(x) for stream in streams)
        assert_close(c, python, regressor)
        assert_array_equal(c_int8, python_int8)
        # float32 in C: the state within 1e-5 (relative: the window holds inputs of ~10)
        rows = [filled_windows(stream.state, model) for stream in streams]
        assert_allclose(rows[1], rows[0], rtol=1e-6, atol=1e-5)
        assert_array_equal(rows[3], rows[2])
    for stream in streams:
        assert_array_equal(stream.n_timesteps_seen_, LENGTHS[:3])
    final = model.predict(X_test[:3]) if regressor else model.predict_proba(X_test[:3])
    assert_close(streams[1].predictions(), final, regressor)
    # one stream, one row at a time: without the stream axis
    one, one_python = compiled.streamer(), model.streamer()
    for t in range(LENGTHS[1]):
        got, expected = one.update(X_test[1, t]), one_python.update(X_test[1, t])
        assert np.shape(got) == np.shape(expected)
        assert_close(got, expected, regressor)


@CHANGES
@WINDOWS
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "int8"])
def test_a_compiled_streamer_pickles_mid_stream_and_shares_the_state_layout(
        quantized, window, phases, envelope, change_channels):
    model, X = windows_model("classification", window, phases, envelope, readout="mean",
                             change_channels=change_channels)
    if quantized:
        model = quantize(model, X)
    assert_same = assert_array_equal if quantized else partial(assert_allclose, atol=1e-5)
    compiled = compile_predictor(model)
    stream = compiled.streamer(2)
    for t in range(4):  # with window 3, a window partly filled
        stream.update(X[:2, t])
    copy = pickle.loads(pickle.dumps(stream))
    assert copy._states.ctypes.data != stream._states.ctypes.data
    python = model.streamer(2)
    python.state = stream.state  # the Python streamer's row layout
    for t in range(4, 7):
        expected = stream.update(X[:2, t])
        assert_array_equal(copy.update(X[:2, t]), expected)
        assert_same(python.update(X[:2, t]), expected)
    assert_array_equal(copy.state, stream.state)
    # a block per window phase: after 7 timesteps phase j has read 7 + s_j
    H = model.hidden_size_
    block = 2 * H + 2 + window * n_cell_channels(model)
    for j, shift in enumerate(definition_shifts(model)):
        counts = stream.state[:, j * block + 2 * H : j * block + 2 * H + 2]
        assert_array_equal(counts, [[(7 + shift) // window, (7 + shift) % window]] * 2)
    if phases > 1:  # a phase a cell step ahead of its shift: no state of a stream
        bad = copy.state
        bad[1, block + 2 * H] += 1
        with pytest.raises(ValueError, match="invalid counts"):
            stream.state = bad
    # the row ends with the base values of the last timestep (change channels),
    # then the last envelope_width_ - 1 timesteps as given (envelope), then the count
    raw = stream.state[:, -1 - raw_width(model) : -1]
    seen = X[:2, :7].astype(np.float32)
    previous = plain_envelope(seen, envelope)[:, 6] if envelope else seen[:, 6]
    history = seen[:, 7 - max(envelope - 1, 0) :].reshape(2, -1)
    assert_array_equal(raw, np.hstack([previous] * change_channels + [history]))
    back = compiled.streamer(2)
    back.state = python.state  # and back; the next change is taken from that state
    assert_same(back.update(X[2:4, 0]), python.update(X[2:4, 0]))
    stream.reset(0)
    assert_array_equal(stream.n_timesteps_seen_, [0, 7])
    assert_array_equal(stream.state[0, :-1], 0.0)
    with pytest.raises(ValueError, match="state must have shape"):
        stream.state = np.zeros((3, 4))
    bad = copy.state
    bad[1, 2 * model.hidden_size_ + 1] = window  # a window of k holds at most k - 1 timesteps
    with pytest.raises(ValueError, match="invalid counts"):
        stream.state = bad


def test_compiled_streamer_errors_are_the_streamer_errors():
    model, X = task_model(np.random.default_rng(0), "classification")
    stream, python = compile_predictor(model).streamer(2), model.streamer(2)
    cases = [np.zeros(3), [[0.0, np.nan, 1.0], [0.0, 0.0, 0.0]],
             [[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]], np.zeros((2, 2))]
    for x in cases:
        with pytest.raises(ValueError) as expected:
            python.update(x)
        with pytest.raises(ValueError) as got:
            stream.update(x)
        assert str(got.value) == str(expected.value)
    with pytest.raises(ValueError, match="stream 1 holds values beyond the range of float32"):
        stream.update([[0.0, 0.0, 0.0], [1e300, 0.0, 0.0]])
    assert_array_equal(stream.n_timesteps_seen_, [0, 0])  # nothing changed
    with pytest.raises(ValueError, match="n_streams must be a positive integer"):
        compile_predictor(model).streamer(0)


def test_float64_input_takes_the_fast_path_with_the_same_results_and_errors(data):
    X, y, X_test = data
    clf = FastGRNNClassifier(8, max_iter=3, random_state=0).fit(X, y)
    compiled = compile_predictor(clf)
    assert_array_equal(compiled.predict_proba(X_test),
                       compiled.predict_proba(X_test.astype(np.float32)))
    flat = np.ascontiguousarray(X_test.reshape(len(X_test), -1))
    clf2 = FastGRNNClassifier(8, n_timesteps=7, max_iter=3, random_state=0).fit(
        X.reshape(len(X), -1), y)
    assert_allclose(compile_predictor(clf2).predict_proba(flat), clf2.predict_proba(flat),
                    atol=1e-5)
    cases = {"nan inside": (6, 2, 1, np.nan), "inf": (9, 0, 0, np.inf),
             "beyond float32": (3, 1, 2, 1e300)}
    for name, (i, t, c, value) in cases.items():
        bad = X_test.copy()
        bad[i, t, c] = value
        if name == "beyond float32":  # the model computes in float64: fine there
            assert np.isfinite(clf.predict_proba(bad)).all()
            with pytest.raises(ValueError, match="too large for float32"):
                compiled.predict_proba(bad)
            continue
        with pytest.raises(ValueError) as expected:
            clf.predict_proba(bad)
        with pytest.raises(ValueError) as got:
            compiled.predict_proba(bad)
        assert str(got.value) == str(expected.value), name
    empty = X_test.copy()
    empty[3] = np.nan
    with pytest.raises(ValueError, match="Sample 3 of X has no real timestep"):
        compiled.predict(empty)


def test_compiled_streamers_in_threads_are_independent():
    from concurrent.futures import ThreadPoolExecutor

    model, X = task_model(np.random.default_rng(0), "regression", readout="max", window=2)
    compiled = compile_predictor(model)

    def run(i):
        stream = compiled.streamer()
        return [stream.update(x) for _ in range(50) for x in X[i]]

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, range(8)))
    for i in range(8):
        assert_array_equal(np.array(threaded[i]), np.array(run(i)))


@pytest.mark.parametrize("phases", [1, 3])
def test_a_stream_with_a_phase_at_int32_max_cell_steps_takes_no_more(phases):
    # the last phase (the largest shift) has taken the most cell steps; with
    # phases, it alone is at the limit
    model, X = task_model(np.random.default_rng(0), "classification", window=3,
                          window_phases=phases, max_iter=2)
    stream = compile_predictor(model).streamer(2)
    H, k = model.hidden_size_, 3
    block = 2 * H + 2 + k * n_cell_channels(model)
    state = stream.state
    shifts = definition_shifts(model)
    for j, shift in enumerate(shifts):  # read: timesteps, copies of the first among them
        read = k * (2**31 - 1) - shifts[-1] + shift
        state[1, j * block + 2 * H : j * block + 2 * H + 2] = read // k, read % k
    stream.state = state
    before = stream.state
    assert (before[1, 2 * H] < 2**31 - 1) == (phases > 1)
    with pytest.raises(ValueError, match="Stream 1 has taken 2147483647 cell steps"):
        stream.update(X[:2, 0])
    assert_array_equal(stream.state, before)  # nothing changed, in no stream
    stream.update(np.stack([X[0, 0], np.full(X.shape[2], np.nan)]))  # stream 1 pauses
    assert_array_equal(stream.state[1], before[1])
    assert_array_equal(stream.n_timesteps_seen_, [1, 0])


@CHANGES
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "int8"])
def test_the_compiled_envelope_and_its_state_are_those_of_a_plain_loop(quantized,
                                                                     change_channels):
    # the envelope's timesteps and extremes by the definition, without the
    # package's helpers: whole sequences, and the raw values of the state row
    # (previous: base values; history: the last 3 timesteps, oldest first,
    # copies of the first at the start) after every tick of paused streams
    model, X = windows_model("classification", 3, 2, 4, change_channels=change_channels, T=9)
    if quantized:
        model = quantize(model, X)
    lengths = (9, 6, 1, 2)
    seqs = peaked_sequences(X, lengths)
    compiled = compile_predictor(model)
    twin, cells = reading_cell_values(model), plain_cell_values(model, seqs)
    if quantized:
        assert_array_equal(compiled.outputs(seqs), twin.quantized_outputs(cells))
    else:
        assert_allclose(compiled.outputs(seqs), twin._raw_outputs(cells), rtol=1e-5, atol=1e-5)
    stream, python = compiled.streamer(4), model.streamer(4)
    fed = [0] * 4
    for tick in range(12):
        x = np.full((4, X.shape[2]), np.nan)
        for i in range(4):
            if (i != 1 or tick not in (0, 3, 4)) and fed[i] < lengths[i]:
                x[i] = seqs[i, fed[i]]
                fed[i] += 1
        assert_close(stream.update(x), python.update(x), regressor=False)
        raw = stream.state[:, -1 - raw_width(model) : -1]
        for i in range(4):
            if not fed[i]:  # zeros before the first timestep
                assert_array_equal(raw[i], 0.0)
                continue
            seen = seqs[i, : fed[i]].astype(np.float32)
            base = plain_envelope(seen[None], 4)[0, -1]
            history = seen[[max(t, 0) for t in range(fed[i] - 3, fed[i])]].ravel()
            assert_array_equal(raw[i], np.hstack([base] * change_channels + [history]))
    assert fed == list(lengths)
    # a reset stream, and a state whose history is not the stream's (phase 0 has
    # read nothing): its next timestep is a first one, as in a fresh streamer
    stream.reset(0)
    assert_array_equal(stream.state[0, :-1], 0.0)
    state = stream.state
    state[0, -1 - raw_width(model) : -1] = 1e6
    stream.state = python.state = state
    fresh = compiled.streamer(4)
    for t in range(3):
        assert_array_equal(stream.update(seqs[:, t])[0], fresh.update(seqs[:, t])[0])
        assert_array_equal(stream.state[0], fresh.state[0])
        assert_close(python.update(seqs[:, t])[0], fresh.predictions()[0], regressor=False)
