"""The exported C code, compiled with the system gcc, reproduces Python's predictions."""

import copy
import ctypes
import itertools
import re
import shutil
import subprocess
from functools import partial

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._cell import READOUTS
from sklearn_fastgrnn._channels import cell_values, n_cell_channels, with_changes
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES
from sklearn_fastgrnn.compression import QuantizedFastGRNN, div_round, quantize
from sklearn_fastgrnn.export.c import READ_OUTS, export_c

from .conftest import TASKS, make_sequences, plain_envelope, task_model

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2"]

# every non-linearity once as gate and once as update; low rank and sparse mixed in
CASES = [
    dict(gate_nonlinearity="sigmoid", update_nonlinearity="tanh"),
    dict(gate_nonlinearity="tanh", update_nonlinearity="sigmoid", w_rank=2, u_rank=3),
    dict(gate_nonlinearity="relu", update_nonlinearity="quant_tanh",
         sparsity_w=0.5, sparsity_u=0.3),
    dict(gate_nonlinearity="quant_sigmoid", update_nonlinearity="relu", u_rank=2, sparsity_u=0.5),
    dict(gate_nonlinearity="quant_tanh", update_nonlinearity="quant_sigmoid", w_rank=2,
         sparsity_w=0.6),
]
IDS = [f"{c['gate_nonlinearity']}-{c['update_nonlinearity']}" for c in CASES]


def test_the_cases_cover_every_registered_nonlinearity_as_gate_and_as_update():
    for role in ("gate_nonlinearity", "update_nonlinearity"):
        assert sorted(case[role] for case in CASES) == sorted(NONLINEARITIES), role


def gcc():
    path = shutil.which("gcc")
    assert path, "these tests compile the exported code: install gcc"
    return path


SIZE_SOURCE = """#include <stddef.h>
#include "{name}.h"

size_t {name}_state_size(void)
{{
    return sizeof({name}_state);
}}
"""


def build_library(model, directory, name):
    """The exported code and a file that includes only its header, as a library."""
    header, source = export_c(model, directory, name=name)
    size = directory / f"{name}_size.c"
    size.write_text(SIZE_SOURCE.format(name=name))
    library = directory / f"lib{name}.so"
    subprocess.run([gcc(), *CFLAGS, "-shared", "-fPIC", "-o", str(library), source, str(size),
                    "-lm"], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(library)), header, source


def run_c(library, name, X, lengths, logit_type, n_classes=3):
    """Call the three entry points of the library on each sequence."""
    n, C = len(X), n_classes
    proba = np.zeros((n, C), dtype=np.float32)
    logits = np.zeros((n, C), dtype=logit_type)
    labels = np.zeros(n, dtype=int)
    for i in range(n):
        x = np.ascontiguousarray(X[i, : lengths[i]], dtype=np.float32)
        ptr = x.ctypes.data_as(ctypes.c_void_p)
        length = ctypes.c_int(int(lengths[i]))
        assert getattr(library, f"{name}_predict_proba")(
            ptr, length, proba[i].ctypes.data_as(ctypes.c_void_p)) == 0
        assert getattr(library, f"{name}_logits")(
            ptr, length, logits[i].ctypes.data_as(ctypes.c_void_p)) == 0
        labels[i] = getattr(library, f"{name}_predict")(ptr, length)
    return proba, logits, labels


class CModel:
    """The functions of a model's C code, called with NumPy arrays (ctypes)."""

    def __init__(self, library, name, model):
        self.lib, self.name, self.model = library, name, model
        self.quantized = isinstance(model, QuantizedFastGRNN)
        self.task = READ_OUTS[model.out_activation_].task
        self.n_outputs = model.n_outputs_
        size = self.function("state_size")
        size.restype = ctypes.c_size_t
        self.state_bytes = size()

    def function(self, kind):
        return getattr(self.lib, f"{self.name}_{kind}")

    def call(self, kind, *args):
        return self.function(kind)(*[a.ctypes.data_as(ctypes.c_void_p)
                                     if isinstance(a, np.ndarray) else a for a in args])

    def new_state(self):
        state = np.zeros(-(-self.state_bytes // 8), np.float64)  # 8-byte aligned
        self.call("init", state)
        return state

    def step(self, state, x):
        assert self.call("step", state, np.ascontiguousarray(x, dtype=np.float32)) == 0

    def outputs(self, state):
        out = np.zeros(self.n_outputs, np.int32 if self.quantized else np.float32)
        assert self.call("outputs", state, out) == 0
        return out

    def read(self, state):
        """What the streamer gives: probabilities (classifier) or the prediction."""
        out = np.zeros(self.n_outputs, np.float32)
        assert self.call("proba" if self.task == "classifier" else "value", state, out) == 0
        return out

    def label(self, state):
        """The prediction of a classifier: the class index, or the indicator."""
        if self.model.out_activation_ == "softmax":
            return self.call("label", state)
        labels = np.zeros(self.n_outputs, np.int32)
        assert self.call("labels", state, labels) == 0
        return labels

    def sequence(self, x):
        """outputs, read-out (proba or value) and predict of one sequence x (T, d)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        outputs = np.zeros(self.n_outputs, np.int32 if self.quantized else np.float32)
        assert self.call("sequence_outputs", x, len(x), outputs) == 0
        read = np.zeros(self.n_outputs, np.float32)
        if self.task == "classifier":
            assert self.call("predict_proba", x, len(x), read) == 0
            if self.model.out_activation_ == "softmax":
                predicted = self.call("predict", x, len(x))
            else:
                predicted = np.zeros(self.n_outputs, np.int32)
                assert self.call("predict", x, len(x), predicted) == 0
        else:
            assert self.call("predict", x, len(x), read) == 0
            predicted = read
        return outputs, read, predicted


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=80, T=7)
    X = X.astype(np.float32).astype(np.float64)  # what the C code reads, exactly
    X_test = X[:12].copy()
    lengths = np.full(12, 7)
    for i, length in zip((1, 4, 7, 10), (5, 3, 1, 6)):  # shorter, NaN-padded sequences
        X_test[i, length:] = np.nan
        lengths[i] = length
    return X, y, X_test, lengths


CHANGES = pytest.mark.parametrize("change_channels", [False, True],
                                  ids=["no_changes", "changes"])


def reading_cell_values(model):
    """A copy of a float or int8 ``model`` without change or envelope channels
    whose input is the cell values of ``model`` (``with_changes`` of its base
    values): the model's arithmetic on given cell values, for a reference on
    channels computed elsewhere."""
    twin = copy.deepcopy(model)
    twin.change_channels = twin.change_channels_ = False
    twin.envelope_width = twin.envelope_width_ = 0
    twin.n_channels_ = n_cell_channels(model)
    twin.n_features_in_ = twin.n_timesteps_ * twin.n_channels_
    return twin


@CHANGES
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_float_c_matches_predict_proba(tmp_path, data, params, change_channels):
    X, y, X_test, lengths = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, change_channels=change_channels,
                             **params).fit(X, y)
    library, _, _ = build_library(clf, tmp_path, "model")
    proba, logits, labels = run_c(library, "model", X_test, lengths, np.float32)
    expected = clf.predict_proba(X_test)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, clf.decision_function(X_test), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=1))


@CHANGES
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_int8_c_matches_the_quantized_python_path_exactly(tmp_path, data, params,
                                                          change_channels):
    X, y, X_test, lengths = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, change_channels=change_channels,
                             **params).fit(X, y)
    q = quantize(clf, X)
    library, _, _ = build_library(q, tmp_path, "qmodel")
    proba, logits, labels = run_c(library, "qmodel", X_test, lengths, np.int32)
    np.testing.assert_array_equal(logits, q.quantized_logits(X_test))
    np.testing.assert_array_equal(labels, np.argmax(q.quantized_logits(X_test), axis=1))
    np.testing.assert_allclose(proba, q.predict_proba(X_test), rtol=0, atol=1e-6)


@CHANGES
def test_sparse_matrices_are_stored_sparse_and_the_code_is_self_contained(tmp_path, data,
                                                                         change_channels):
    X, y, _, _ = data
    clf = FastGRNNClassifier(8, u_rank=3, sparsity_u=0.25, max_iter=6, random_state=0,
                             change_channels=change_channels).fit(X, y)
    for model, name in ((clf, "f32"), (quantize(clf, X), "i8")):
        header, source = export_c(model, tmp_path / name, name=name)
        text = open(source).read() + open(header).read()
        assert re.findall(r"#include\s*(\S+)", text) == [
            *["<float.h>"] * change_channels, "<math.h>", "<stddef.h>", f'"{name}.h"',
            "<stdint.h>"]
        macro = re.findall(rf"#define {name.upper()}_CELL_CHANNELS (\d+)", text)
        assert macro == (["9"] if change_channels else [])
        assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\b", text)
        nonzeros = int(np.count_nonzero(model.weights_["U1"] if name == "i8" else clf.coefs_["U1"]))
        assert f"static const uint8_t {name}_U1_row[{nonzeros}]" in text
        rows = 9 if change_channels else 3  # W reads the cell channels
        assert f"{name}_U[" not in text and f"{name}_W[{rows * 8}]" in text  # W is dense


LENGTHS = (7, 4, 1, 7, 5, 2)  # of the test sequences: padded, and one of a single timestep

# windows, window phases and envelope channels: one phase (the code of a model
# without phases), and p = 2 and p = k phases (shifts 0, 1 and 0, 1, 2: the last
# commits a cell step at a stream's first timestep); envelopes as wide as the
# window and narrower (a low-rank W: w_rank="auto" with envelope channels)
WINDOWS = pytest.mark.parametrize(
    "window, phases, envelope",
    [(1, 1, 0), (3, 1, 0), (3, 2, 0), (3, 3, 0), (3, 2, 3), (4, 1, 4), (5, 3, 2)],
    ids=["window1", "window3", "window3-phases2", "window3-phases3",
         "window3-phases2-envelope3", "window4-envelope4", "window5-phases3-envelope2"],
)


def windows_model(task, window, phases, envelope, **params):
    """:func:`task_model` with ``window``, ``phases`` and ``envelope`` (its width),
    checked: with an envelope, ``w_rank="auto"`` gives a low-rank ``W``."""
    model, X = task_model(np.random.default_rng(0), task, window=window,
                          window_phases=phases, envelope_width=envelope, **params)
    assert (model.window_phases_, model.envelope_width_) == (phases, envelope)
    assert ("W1" in model.coefs_) == bool(envelope)
    return model, X


def shifted(X, shift):
    """``X`` (n, T, d) with ``shift`` copies of each sequence's first timestep before it."""
    return np.concatenate([np.repeat(X[:, :1], shift, axis=1), X], axis=1)


def one_phase(model):
    """A copy of ``model`` (float or int8) that reads its input in one phase."""
    twin = copy.copy(model)
    twin.window_phases_ = 1
    return twin


def definition_shifts(model):
    """The shifts of the window phases, ``s_j = (j * k) // p``, as the spec defines them."""
    k, p = model.window_, model.window_phases_
    return [(j * k) // p for j in range(p)]


def phase_outputs(model, X):
    """The outputs of a float ``model`` with window phases by their definition: the
    mean of the outputs of its phases, phase j a one-phase model reading each
    sequence after s_j copies of its first timestep (whose changes are 0 and
    whose envelope is that timestep, so the cell reads s_j copies of its first
    cell timestep)."""
    twin = one_phase(model)
    return np.mean([twin._raw_outputs(shifted(X, s)) for s in definition_shifts(model)],
                   axis=0)


def quantized_phase_outputs(q, X):
    """The integer outputs of an int8 ``q`` by the definition: ``div_round`` of the
    sum of its phases' integer readouts by p, through the output layer."""
    twin = one_phase(q)
    twin.output_layer = lambda r: r  # its quantized_outputs are then its readouts
    readouts = [twin.quantized_outputs(shifted(X, s)) for s in definition_shifts(q)]
    return q.output_layer(div_round(sum(readouts), len(readouts)))


def prefixes(X, lengths):
    """Every prefix ``X[i, :t]`` (t = 1 .. lengths[i]) as a NaN-padded sequence,
    stream by stream: the sequences a streamer has seen after each step."""
    T = X.shape[1]
    return np.array([np.where((np.arange(T) < t)[:, None], X[i], np.nan)
                     for i, length in enumerate(lengths) for t in range(1, length + 1)])


def assert_close(got, expected, task, tol=1e-5):
    """Float32 C against Python: probabilities within ``tol``; a regressor's values
    within ``tol`` relative (and absolute near 0)."""
    rtol = tol if task == "regressor" else 0.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=tol)


@CHANGES
@WINDOWS
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("task", TASKS)
def test_every_model_in_c_float_and_int8_whole_and_streamed(tmp_path, task, readout, window,
                                                            phases, envelope, change_channels):
    model, X = windows_model(task, window, phases, envelope, readout=readout,
                             change_channels=change_channels)
    q = quantize(model, X)
    X_test = X[:6].copy()
    for i, length in enumerate(LENGTHS):
        X_test[i, length:] = np.nan
    c = CModel(build_library(model, tmp_path, "f")[0], "f", model)
    ci = CModel(build_library(q, tmp_path, "i")[0], "i", q)
    kind = c.task
    # whole sequences: the float32 code within 1e-5 of Python; the int8 code exactly;
    # Python's outputs those of the definition of the window phases
    raw = model._raw_outputs(X_test)
    np.testing.assert_allclose(raw, phase_outputs(model, X_test), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(q.quantized_outputs(X_test), quantized_phase_outputs(q, X_test))
    expected_read = model.predict_proba(X_test) if kind == "classifier" else model.predict(X_test)
    expected_read = expected_read.reshape(len(X_test), -1)
    predicted = model.predict(X_test)
    q_outputs = q.quantized_outputs(X_test)
    for i, length in enumerate(LENGTHS):
        outputs, read, label = c.sequence(X_test[i, :length])
        assert_close(outputs, raw[i], kind)
        assert_close(read, expected_read[i], kind)
        if model.out_activation_ == "softmax":
            assert model.classes_[label] == predicted[i]
        elif model.out_activation_ == "logistic":
            clear = np.abs(raw[i]) > 1e-5
            np.testing.assert_array_equal(label[clear], predicted[i][clear])
        outputs, read, label = ci.sequence(X_test[i, :length])
        np.testing.assert_array_equal(outputs, q_outputs[i])
        expected = q._stream_predictions(q_outputs[i : i + 1])[0]
        np.testing.assert_allclose(read, expected, rtol=1e-6, atol=1e-6)
        if kind == "classifier":
            np.testing.assert_array_equal(
                q.classes_[label] if q.out_activation_ == "softmax" else label,
                q._predictions(q_outputs[i : i + 1])[0])
    # streamed: three interleaved streams, stream 2 paused for a few ticks; the C
    # state after every step against the Python streamers, and its outputs those
    # of the definition on the sequence so far
    streams, int8_streams = model.streamer(3), q.streamer(3)
    seen = prefixes(X_test[:3], LENGTHS[:3])
    staged, staged_int8 = phase_outputs(model, seen), quantized_phase_outputs(q, seen)
    starts = np.cumsum([0, *LENGTHS[:2]])  # of each stream's prefixes in seen
    states, int8_states = [c.new_state() for _ in range(3)], [ci.new_state() for _ in range(3)]
    for i in range(3):  # before any timestep
        assert_close(c.read(states[i]), streams.predictions()[i], kind)
        np.testing.assert_array_equal(ci.outputs(int8_states[i]),
                                      int8_streams._cell.outputs()[i])
    fed, lengths = [0, 0, 0], LENGTHS[:3]
    for tick in range(12):
        x = np.full((3, X.shape[2]), np.nan)
        for i in range(3):
            if (i != 2 or tick not in (1, 2, 5)) and fed[i] < lengths[i]:
                x[i] = X_test[i, fed[i]]
                fed[i] += 1
                c.step(states[i], x[i])
                ci.step(int8_states[i], x[i])
        expected, expected_int8 = streams.update(x), int8_streams.update(x)
        expected_outputs = int8_streams._cell.outputs()
        for i in range(3):
            assert_close(c.read(states[i]), expected[i], kind)
            np.testing.assert_array_equal(ci.outputs(int8_states[i]), expected_outputs[i])
            np.testing.assert_allclose(ci.read(int8_states[i]), expected_int8[i],
                                       rtol=1e-6, atol=1e-6)
            if fed[i]:
                assert_close(c.outputs(states[i]), staged[starts[i] + fed[i] - 1], kind)
                np.testing.assert_array_equal(ci.outputs(int8_states[i]),
                                              staged_int8[starts[i] + fed[i] - 1])
    assert fed == list(lengths)


def float32_jumps(X):
    """Four sequences of ``X`` (float32) whose timesteps jump across most of the
    float32 range: their changes (up to 6e38 in float64) exceed it."""
    top = np.float32(3e38)
    jumps = X[:4].astype(np.float32)
    signs = np.where(np.arange(jumps.shape[1]) % 2 == 0, top, -top)  # +3e38, -3e38, ...
    jumps[0] = signs[:, None]  # every channel
    jumps[1, :, 0] = signs  # one channel, the others ordinary
    jumps[2, 3:, 1] = -signs[3:]  # from ordinary values into the jumps
    jumps[3, :2] = top  # down from the maximum to ordinary values
    assert (np.abs(np.diff(jumps.astype(np.float64), axis=1)) > np.finfo(np.float32).max).any()
    return jumps


def float32_jump_case(window, envelope=0):
    """A fitted model with change channels (and envelope channels of width
    ``envelope``), its int8 model, :func:`float32_jumps`, and the reference on
    them: a model reading the capped float32 cell values of ``with_changes`` in
    float64 (as the C code sums the input term near the float32 maximum), and
    those cell values."""
    model, X = task_model(np.random.default_rng(0), "classification", window=window,
                          change_channels=True, envelope_width=envelope)
    jumps = float32_jumps(X)
    cells = cell_values(model, jumps).astype(np.float64)
    return model, quantize(model, X), jumps, reading_cell_values(model), cells


# the envelope of the jumps: +-3e38 in both extremes, changes of 6e38 between them
JUMP_CASES = pytest.mark.parametrize("window, envelope", [(1, 0), (2, 0), (2, 3)],
                                     ids=["window1", "window2", "window2-envelope3"])


@JUMP_CASES
def test_jumps_across_the_float32_range_in_c_float_and_int8(tmp_path, window, envelope):
    # the C code takes each change in double, capped at FLT_MAX: the float32 cell
    # values of with_changes; no NaN where the reference has none
    model, q, jumps, reference, cells = float32_jump_case(window, envelope)
    expected, staged = reference.predict_proba(cells), reference.staged_predict_proba(cells)
    assert np.isfinite(staged).all()
    c = CModel(build_library(model, tmp_path, "f")[0], "f", model)
    ci = CModel(build_library(q, tmp_path, "i")[0], "i", q)
    q_outputs = q.quantized_outputs(jumps)
    int8_streams = q.streamer(len(jumps))
    states, int8_states = [c.new_state() for _ in jumps], [ci.new_state() for _ in jumps]
    for i, x in enumerate(jumps):
        _, proba, _ = c.sequence(x)
        assert_close(proba, expected[i], "classifier")
        np.testing.assert_array_equal(ci.sequence(x)[0], q_outputs[i])
    for t in range(jumps.shape[1]):
        int8_streams.update(jumps[:, t])
        for i, x in enumerate(jumps):
            c.step(states[i], x[t])
            ci.step(int8_states[i], x[t])
            assert_close(c.read(states[i]), staged[i, t], "classifier")
            np.testing.assert_array_equal(ci.outputs(int8_states[i]),
                                          int8_streams._cell.outputs()[i])


DRIVER = r"""
#include <stdio.h>
#include "digits.h"

int main(void)
{
    static const float x[3 * DIGITS_N_CHANNELS] = {%s};
    float proba[DIGITS_N_CLASSES];
    digits_state state;
    int t, k;
    if (digits_predict_proba(x, 3, proba) != 0 || digits_predict(x, 0) != -1
        || digits_predict_proba(NULL, 3, proba) != -1 || digits_step(NULL, x) != -1
        || digits_proba(NULL, proba) != -1 || digits_label(NULL) != -1) {
        return 1;
    }
    for (k = 0; k < DIGITS_N_CLASSES; ++k) {
        printf("%%.9g\n", proba[k]);
    }
    printf("%%d\n", digits_predict(x, 3));
    /* firmware style: init once, a step as each sample arrives, a read-out */
    digits_init(&state);
    for (t = 0; t < 3; ++t) {
        if (digits_step(&state, x + t * DIGITS_N_CHANNELS) != 0
            || digits_proba(&state, proba) != 0) {
            return 1;
        }
        for (k = 0; k < DIGITS_N_CLASSES; ++k) {
            printf("%%.9g\n", proba[k]);
        }
        printf("%%d\n", digits_label(&state));
    }
    return 0;
}
"""


@CHANGES
def test_a_c_program_using_the_header_gets_the_python_probabilities(tmp_path, data,
                                                                   change_channels):
    X, y, _, _ = data
    clf = FastGRNNClassifier(8, w_rank=2, sparsity_w=0.5, window=2, readout="mean",
                             max_iter=6, random_state=0,
                             change_channels=change_channels).fit(X, y)
    _, source = export_c(clf, tmp_path, name="digits")
    x = X[5, :3].astype(np.float32)
    (tmp_path / "main.c").write_text(DRIVER % ", ".join(f"{v:.9e}f" for v in x.ravel()))
    program = tmp_path / "main"
    subprocess.run([gcc(), *CFLAGS, "-o", str(program), str(tmp_path / "main.c"), source, "-lm"],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    rows = np.array(out, dtype=float).reshape(4, 4)  # 3 probabilities and a label per row
    expected = clf.predict_proba(X[5:6, :3])[0]
    np.testing.assert_allclose(rows[0, :3], expected, atol=1e-5)
    assert rows[0, 3] == np.argmax(expected)
    staged = clf.staged_predict_proba(X[5:6, :3])[0]  # after each timestep
    np.testing.assert_allclose(rows[1:, :3], staged, atol=1e-5)
    np.testing.assert_array_equal(rows[1:, 3], np.argmax(staged, axis=1))


def test_export_refuses_what_it_can_not_write(tmp_path, data):
    X, y, _, _ = data
    with pytest.raises(NotFittedError):
        export_c(FastGRNNClassifier(), tmp_path)
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="Pipeline"):
        export_c(make_pipeline(StandardScaler(), clf), tmp_path)
    with pytest.raises(ValueError, match="C identifier"):
        export_c(clf, tmp_path, name="2fast")
    q = quantize(clf, X)
    q.out_activation_ = "softmax2"
    with pytest.raises(ValueError, match="out_activation_='softmax2' is not one the C code"):
        export_c(q, tmp_path)
    reg, _ = task_model(np.random.default_rng(0), "regression", max_iter=2)
    reg.coefs_ = {**reg.coefs_, "V": reg.coefs_["V"] * np.nan}
    with pytest.raises(ValueError, match=r"coefs_\['V'\] contains NaN or inf: export_c"):
        export_c(reg, tmp_path)
    reg.coefs_ = {**reg.coefs_, "V": reg.coefs_["V"][:, :1]}
    with pytest.raises(ValueError, match="n_outputs_ is 2, but coefs_.'V'. has 1 columns"):
        export_c(reg, tmp_path)
    changes = FastGRNNClassifier(4, max_iter=2, random_state=0, change_channels=True).fit(X, y)
    q = quantize(changes, X)
    for offsets in (None, [1.0, 1.0], [1.0, 0.0, 1.0], [1.0, np.nan, 1.0]):
        for model in (changes, q):  # the C code holds one positive offset per channel
            damaged = copy.copy(model)
            damaged.change_offsets_ = None if offsets is None else np.array(offsets)
            with pytest.raises(ValueError, match="change_offsets_ must hold one positive"):
                export_c(damaged, tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_read_outs_cover_every_output_activation():
    from sklearn_fastgrnn.classifier import LOGISTIC, SOFTMAX
    from sklearn_fastgrnn.compression import OUT_ACTIVATIONS
    from sklearn_fastgrnn.regressor import LOSSES

    activations = {SOFTMAX, LOGISTIC} | {activation for _, activation in LOSSES.values()}
    assert set(READ_OUTS) == activations == set(OUT_ACTIVATIONS)


PHASES_DRIVER = r"""
#include <stdio.h>
#include "m.h"

int main(void)
{
    static const float x[5 * M_N_CHANNELS] = {%s};
    %s outputs[M_N_OUTPUTS];
    int j;
#ifdef M_ENVELOPE_WIDTH
    printf("%%d %%d\n", M_ENVELOPE_WIDTH, M_CELL_CHANNELS);
#else
    printf("0 %%d\n", M_CELL_CHANNELS);
#endif
    printf("%%d %%d %%d\n", M_WINDOW_PHASES, (int)sizeof(m_state), (int)sizeof(m_phase));
    for (j = 0; j < M_WINDOW_PHASES; ++j) {
        printf("%%d\n", M_PHASE_SHIFT(j));
    }
    if (m_sequence_outputs(x, 5, outputs) != 0) {
        return 1;
    }
    for (j = 0; j < M_N_OUTPUTS; ++j) {
        printf("%%.17g\n", (double)outputs[j]);
    }
    return 0;
}
"""


@pytest.mark.parametrize("envelope", [0, 3], ids=["no_envelope", "envelope3"])
@pytest.mark.parametrize("phases", [2, 4])
def test_window_phases_in_the_header_and_the_ram_of_the_state(tmp_path, phases, envelope):
    # window 4: shifts 0, 2 and 0, 1, 2, 3; a state is p phase blocks, the
    # base values of the previous timestep and the envelope's history (int8
    # mean readout: an int64 pool)
    model, X = task_model(np.random.default_rng(0), "classification", readout="mean", window=4,
                          window_phases=phases, change_channels=True, max_iter=2,
                          envelope_width=envelope)
    H, k, d = model.hidden_size_, 4, model.n_channels_
    base = 3 * d if envelope else d  # x, and its largest and smallest values
    raw_bytes = 4 * base + 4 * (envelope - 1) * d * bool(envelope)  # previous, history
    x = X[:1, :5].astype(np.float32)  # 5 timesteps: phase j takes ceil((5 + s_j) / 4) steps
    q = quantize(model, X)
    cases = ((model, 4, "float", phase_outputs(model, x)[0]),
             (q, 8, "int32_t", quantized_phase_outputs(q, x)[0]))
    for exported, pool_bytes, ctype, expected in cases:
        directory = tmp_path / ctype
        _, source = export_c(exported, directory, name="m")
        values = ", ".join(f"{v:.9e}f" for v in x.ravel())
        (directory / "main.c").write_text(PHASES_DRIVER % (values, ctype))
        program = directory / "main"
        subprocess.run([gcc(), *CFLAGS, "-o", str(program), str(directory / "main.c"), source,
                        "-lm"], check=True, capture_output=True, text=True)
        out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout
        width, cell_channels, p, state_bytes, phase_bytes, *rest = out.split()
        assert (int(width), int(cell_channels)) == (envelope, 3 * base)
        shifts, outputs = rest[:phases], np.array(rest[phases:], dtype=float)
        assert int(p) == phases and list(map(int, shifts)) == definition_shifts(model)
        if ctype == "float":  # the outputs of the definition
            assert_close(outputs, expected, "classifier")
        else:
            np.testing.assert_array_equal(outputs, expected)
        state_bytes, phase_bytes = int(state_bytes), int(phase_bytes)
        block = 4 * H + pool_bytes * H + 8 + 4 * k * 3 * base  # h, pool, steps, filled, window
        assert block <= phase_bytes < block + 8  # (alignment)
        assert 0 <= state_bytes - phases * phase_bytes - raw_bytes < 8
    # one phase: the code of a model without window phases
    one = one_phase(model)
    header, source = export_c(one, tmp_path / "one", name="m")
    assert "phase" not in (open(header).read() + open(source).read()).lower()


def test_export_refuses_window_phases_the_model_can_not_have(tmp_path):
    model, X = task_model(np.random.default_rng(0), "classification", window=3,
                          window_phases=3, max_iter=2)
    for fitted in (model, quantize(model, X)):
        for phases in (0, 4, 2.0, True):
            damaged = copy.copy(fitted)
            damaged.window_phases_ = phases
            with pytest.raises(ValueError, match="window_phases_ must be an integer from 1 to"):
                export_c(damaged, tmp_path)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ envelope channels
def plain_cell_values(model, X):
    """The cell values of ``model`` (float or int8) on ``X`` (float32), its
    envelope by :func:`plain_envelope`: the input of
    :func:`reading_cell_values`."""
    base = plain_envelope(np.asarray(X, np.float32), model.envelope_width_)
    return with_changes(base, model.change_offsets_) if model.change_channels_ else base


def peaked_sequences(X, lengths):
    """Sequences of ``X`` (as float32) with a peak and a trough each, cut to
    ``lengths`` by NaN padding: envelopes that differ from the values."""
    peaked = X[: len(lengths)].astype(np.float32).astype(np.float64)
    for i, length in enumerate(lengths):
        peaked[i, length // 2, i % peaked.shape[2]] += 25.0
        peaked[i, length - 1, (i + 1) % peaked.shape[2]] -= 25.0
        peaked[i, length:] = np.nan
    return peaked


@CHANGES
@pytest.mark.parametrize("window, phases, envelope", [(1, 1, 3), (4, 2, 4), (2, 1, 5)],
                         ids=["window1-envelope3", "window4-phases2-envelope4",
                              "window2-envelope5"])
def test_the_c_envelope_is_that_of_a_plain_loop_float_and_int8(tmp_path, window, phases,
                                                               envelope, change_channels):
    # the reference: each model's arithmetic on cell values whose envelope a plain
    # loop computes; the C code computes it in its step function
    model, X = windows_model("classification", window, phases, envelope,
                             change_channels=change_channels, T=9)
    q = quantize(model, X)
    lengths = (9, 6, 1, 2, 5, 9)  # NaN-padded, shorter than the envelope too
    seqs = peaked_sequences(X, lengths)
    for fitted, name in ((model, "f"), (q, "i")):
        c = CModel(build_library(fitted, tmp_path, name)[0], name, fitted)
        twin = reading_cell_values(fitted)
        cells = plain_cell_values(fitted, seqs)
        if name == "f":
            expected = twin._raw_outputs(cells)
            staged = twin._raw_outputs(prefixes(cells, lengths))
            same = partial(assert_close, task="classifier")
        else:  # the int8 integers exactly
            expected = twin.quantized_outputs(cells)
            staged = twin.quantized_outputs(prefixes(cells, lengths))
            same = np.testing.assert_array_equal
        starts = np.cumsum([0, *lengths])
        for i, length in enumerate(lengths):
            same(c.sequence(seqs[i, :length])[0], expected[i])
            state = c.new_state()
            for t in range(length):
                c.step(state, seqs[i, t])
                same(c.outputs(state), staged[starts[i] + t])


def test_the_header_has_envelope_channels_only_with_an_envelope(tmp_path):
    # the width, the history and the base values of previous; none of it without
    texts = {}
    for envelope, changes in itertools.product((0, 4), (False, True)):
        model, X = task_model(np.random.default_rng(0), "classification", window=4,
                              window_phases=2, envelope_width=envelope,
                              change_channels=changes, max_iter=2)
        for fitted, kind in ((model, "float"), (quantize(model, X), "int8")):
            header, source = export_c(fitted, tmp_path / f"{envelope}{changes}{kind}", name="m")
            texts[envelope, changes, kind] = open(header).read(), open(source).read()
    for (envelope, changes, kind), (header, source) in texts.items():
        cell_channels = 3 * (3 if envelope else 1) * (3 if changes else 1)
        macros = dict(re.findall(r"#define M_(\w+) (\d+)\n", header))
        assert macros.get("ENVELOPE_WIDTH") == ("4" if envelope else None)
        assert macros.get("CELL_CHANNELS") == (str(cell_channels) if cell_channels > 3 else None)
        members = re.findall(r"\n    float (previous|history)\[([^\]]+)\];", header)
        previous = ("previous", "3 * M_N_CHANNELS" if envelope else "M_N_CHANNELS")
        history = ("history", "(M_ENVELOPE_WIDTH - 1) * M_N_CHANNELS")
        assert members == [previous] * changes + [history] * bool(envelope)
        if not envelope:
            assert not re.search("envelope|history", header + source, re.IGNORECASE)
        else:
            assert ("static void with_envelope(" in source
                    and re.findall(r"#include\s*(\S+)", source)[:1] == (
                        ["<float.h>"] if changes else ["<math.h>"]))


def test_export_refuses_an_envelope_the_model_can_not_have(tmp_path):
    model, X = task_model(np.random.default_rng(0), "classification", window=4,
                          envelope_width=4, max_iter=2)
    for fitted in (model, quantize(model, X)):
        for width in (1, -2, 4.0, True, None):
            damaged = copy.copy(fitted)
            damaged.envelope_width_ = width
            with pytest.raises(ValueError, match="envelope_width_ must be 0"):
                export_c(damaged, tmp_path)
    assert not any(tmp_path.iterdir())
