"""ONNX graphs of every model (softmax, multilabel, squared-error and Poisson
regressors; readouts; windows and their phases; with and without envelope and
change channels) against predict_proba / predict, and the step graph against the
Python streamer, step by step."""

import copy
import json
import warnings

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._channels import n_base_channels, n_cell_channels
from sklearn_fastgrnn.export import state_layout, to_onnx
from sklearn_fastgrnn.preprocessing import SequenceScaler

from .conftest import pad, plain_envelope

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

KINDS = ["softmax", "multilabel", "squared_error", "poisson"]
READOUTS = ["last", "mean", "max"]
# (window, window_phases, envelope_width): one phase, and p = 2 and p = k phases
# of windows of 3, without envelope channels; then envelopes of 2 to 4 timesteps
# (with them, w_rank="auto" makes W low-rank)
WINDOWS = [(1, 1, 0), (3, 1, 0), (3, 2, 0), (3, 3, 0), (3, 2, 3), (4, 1, 4), (5, 3, 2)]
CHANGES = [False, True]  # change_channels
N, T, D = 48, 7, 3  # T = 7: the last window of 3 is partial


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, D))
    targets = {
        "softmax": (X[:, :, 0].sum(1) > 0).astype(int) + (X[:, -1, 2] > 0.5),
        "multilabel": np.stack([X[:, :, 0].sum(1) > 0, X[:, -1, 1] > 0, X[:, 0, 2] > 0.3],
                               axis=1).astype(int),
        "squared_error": 3 * X[:, :, 0].sum(1) + 10,
        "poisson": rng.poisson(np.exp(0.3 * X[:, :, 1].sum(1))),
    }
    padded = pad(X, rng.integers(1, T + 1, N))
    return X, padded, targets


MODELS = {}


def model(data, kind, readout, window, phases=1, envelope=0, **extra):
    """A fitted model of ``kind`` reading ``phases`` phases of its windows and
    envelopes of ``envelope`` timesteps (cached: fitting is most of the cost)."""
    key = (kind, readout, window, phases, envelope, tuple(sorted(extra.items())))
    if key not in MODELS:
        _, padded, targets = data
        params = {"hidden_size": 6, "max_iter": 3, "random_state": 0, "readout": readout,
                  "window": window, "window_phases": phases, "envelope_width": envelope,
                  **extra}
        if kind in ("softmax", "multilabel"):
            est = FastGRNNClassifier(**params)
        else:
            est = FastGRNNRegressor(loss=kind, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 3 epochs do not converge
            MODELS[key] = est.fit(padded, targets[kind])
    return MODELS[key]


def session(model, **kwargs):
    return ort.InferenceSession(to_onnx(model, **kwargs).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def expected(est, X):
    """What the graph must give: predict_proba and predict, or predict."""
    if isinstance(est, FastGRNNClassifier):
        return [est.predict_proba(X), est.predict(X)]
    return [est.predict(X)]


def assert_close(est, got, want, tol=1e-5):
    """float32 parity: probabilities to ``tol``, predictions to ``tol`` relative
    (and absolute near 0), labels exactly."""
    assert len(got) == len(want)
    assert got[0].shape == want[0].shape
    if isinstance(est, FastGRNNClassifier):
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=tol)
        np.testing.assert_array_equal(got[1], want[1])
        assert got[1].dtype == np.int64
    else:
        np.testing.assert_allclose(got[0], want[0], rtol=tol, atol=tol)


# ------------------------------------------------------------- sequence graph
@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_graph_reproduces_the_model(data, kind, readout, window, phases, envelope,
                                            change_channels):
    X, padded, _ = data
    est = model(data, kind, readout, window, phases, envelope, change_channels=change_channels)
    assert (est.window_, est.window_phases_, est.envelope_width_) == (window, phases, envelope)
    assert ("W1" in est.coefs_) == (envelope > 0)  # w_rank="auto"
    run = session(est)
    for Z in (X, padded, X[:, :4], padded[:, :5], 30 * padded - 7):  # time is free
        Z = Z.astype(np.float32)
        assert_close(est, run.run(None, {"X": Z}), expected(est, Z))


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", ["softmax", "squared_error"])
def test_sequence_graph_on_inputs_near_the_float32_maximum(data, kind, readout, window,
                                                           phases, envelope, change_channels):
    rng = np.random.default_rng(1)
    top = np.finfo(np.float32).max
    X_big = (rng.choice([-1.0, 1.0], (40, T, D)) * top * rng.uniform(0.5, 1.0, (40, T, D)))
    est = model(data, kind, readout, window, phases, envelope, change_channels=change_channels)
    if envelope:  # W reads three times the values, and predict's float32 sum x @ W (the
        # graph's is float64) overflows halfway at the largest: keep its partial sums finite
        X_big /= 2 * window * n_cell_channels(est)
    X_big = pad(X_big, rng.integers(1, T + 1, 40)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = expected(est, X_big)
    assert np.isfinite(want[0]).all()
    assert_close(est, session(est).run(None, {"X": X_big}), want, tol=1e-4)


@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", ["softmax", "squared_error"])
def test_a_jump_across_the_float32_range_gives_a_capped_change(data, kind, readout, window,
                                                                phases, envelope):
    """+3e38 then -3e38: a change of 6e38, beyond float32, capped at its maximum as
    predict caps it (not infinite, which W would turn into NaN), in both graphs."""
    top = np.float32(3e38)
    X_jump = np.zeros((4, T, D), np.float32)
    X_jump[:, ::2, 0], X_jump[:, 1::2, 0] = top, -top
    X_jump[1, :, 1] = -top
    X_jump[2, 4:] = np.nan  # padding after a jump
    X_jump[3, :, 2] = np.linspace(-3e38, 3e38, T)  # steps of 1e38
    est = model(data, kind, readout, window, phases, envelope, change_channels=True)
    got = both_graphs_follow_predict(est, X_jump, tol=1e-4)
    assert_close(est, got, expected(est, X_jump), tol=1e-4)


def both_graphs_follow_predict(est, X, tol=1e-5):
    """Assert that the sequence graph gives ``predict``'s answers on float32
    ``X``, and the step graph the float32 streamer's after every timestep, all
    finite; the step graph's last answers."""
    n, steps, _ = X.shape
    with np.errstate(over="ignore", invalid="ignore"):
        want = expected(est, X)
        streamer = est.streamer(n, dtype="float32")
        stream_want = [streamer.update(X[:, t]) for t in range(steps)]
    assert np.isfinite(want[0]).all()
    got = session(est).run(None, {"X": X})
    assert np.isfinite(got[0]).all()
    assert_close(est, got, want, tol=tol)
    run = session(est, step=True)
    state = np.zeros(streamer.state.shape)
    for t in range(steps):
        *got, state = run.run(None, {"x": X[:, t], "state": state})
        assert np.isfinite(got[0]).all()
        assert_close(est, got, with_labels(est, stream_want[t]), tol=tol)
    return got


@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", ["softmax", "squared_error"])
def test_the_logarithm_of_changes_of_every_magnitude(data, kind, readout, window, phases,
                                                     envelope):
    """No change, changes of 1e-6 to 1e6 and a ±3e38 jump: both graphs read
    ``log(change + change_offsets_)`` as predict does, finite."""
    X_mag = np.zeros((5, T, D), np.float32)
    X_mag[0, :, 1] = 1e-6 * np.arange(T)
    X_mag[0, :, 2] = np.cumsum([0.0, 1e-5, 1e-3, 0.1, 1.0, -10.0, 0.01])
    X_mag[1, :, 0] = [0.0, 1e-6, 1.0, 1e6, -1e6, 1.0, 0.0]
    X_mag[1, :, 1] = [1.0, 1.0 + 2**-20, 1.0, 0.5, 0.5, 0.0, 1e-6]
    X_mag[2, :, 2] = [0.0, 3e38, -3e38, -3e38, 1.0, 0.0, 1e-6]
    X_mag[3] = 1e-3 * np.arange(T * D).reshape(T, D) ** 2
    X_mag[4, :, 0] = [1e6, 0.0, 1e-6, 0.0, np.nan, np.nan, np.nan]  # padding after
    X_mag[4, :4, 1:] = 0.25
    X_mag[4, 4:] = np.nan
    est = model(data, kind, readout, window, phases, envelope, change_channels=True)
    both_graphs_follow_predict(est, X_mag)


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", ["multilabel", "squared_error"])
def test_sequence_graph_on_long_sequences(data, kind, readout, window, phases, envelope,
                                          change_channels):
    """400 timesteps (time is free at run time): within the 1e-5 documented for
    float32 over long sequences (docs/export.md)."""
    rng = np.random.default_rng(2)
    X_long = pad(rng.standard_normal((20, 400, D)), rng.integers(300, 401, 20))
    X_long = X_long.astype(np.float32)
    est = model(data, kind, readout, window, phases, envelope, change_channels=change_channels)
    assert_close(est, session(est).run(None, {"X": X_long}), expected(est, X_long))


# (window, window_phases, envelope_width): shifts (0, 1), (0, 1, 2), (0, 2) and
# (0, 1, 2, 3), without and with envelope channels
PHASE_CASES = [(3, 2, 0), (3, 3, 0), (4, 2, 0), (5, 4, 0), (3, 2, 3), (5, 4, 2)]


def one_phase(est):
    """A copy of ``est`` reading its windows in one phase, from the first timestep."""
    single = copy.deepcopy(est)
    single.window_phases_ = 1
    return single


def shifted(X, shift):
    """Each sequence of ``X`` after ``shift`` copies of its first timestep."""
    return np.concatenate([np.repeat(X[:, :1], shift, axis=1), X], axis=1)


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"), PHASE_CASES)
@pytest.mark.parametrize("readout", READOUTS)
def test_the_phases_are_the_shifted_sequences_averaged(data, readout, window, phases, envelope,
                                                       change_channels):
    """The definition, without the phases' code: with the identity output of a
    squared-error regressor, p phases predict the mean of what one phase
    predicts for each sequence after ``s_j = j * k // p`` copies of its first
    timestep; the step graph, the mean of one-phase streamers that read the
    first timestep ``s_j`` more times (copies of the first timestep change no
    envelope: the envelope of the first timesteps is over the timesteps there are)."""
    _, padded, _ = data
    est = model(data, "squared_error", readout, window, phases, envelope,
                change_channels=change_channels)
    single, shifts = one_phase(est), [j * window // phases for j in range(phases)]
    Z = padded[:12].astype(np.float32)  # lengths 1 to 7
    want = np.mean([single.predict(shifted(Z, shift)) for shift in shifts], axis=0)
    assert np.abs(want - single.predict(Z)).max() > 1e-3  # the phases matter here
    (got,) = session(est).run(None, {"X": Z})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    run, state = session(est, step=True), np.zeros((len(Z), state_layout(est)["size"]))
    streamers = [single.streamer(len(Z), dtype="float32") for _ in shifts]
    for streamer, shift in zip(streamers, shifts):
        for _ in range(shift):
            streamer.update(Z[:, 0])
    for t in range(T):  # rows of NaN after a sequence's end
        want = np.mean([streamer.update(Z[:, t]) for streamer in streamers], axis=0)
        got, state = run.run(None, {"x": Z[:, t], "state": state})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize(("phases", "envelope"), [(1, 0), (3, 0), (1, 2), (3, 3)])
def test_padding_gives_the_unpadded_sequence_exactly(data, phases, envelope, readout,
                                                     change_channels):
    X, _, _ = data
    est = model(data, "softmax", readout, 3, phases, envelope, change_channels=change_channels)
    run = session(est)
    base = X[:6].astype(np.float32)
    reference = run.run(None, {"X": base})[0]
    longer = np.concatenate([base, np.full((6, 5, D), np.nan, np.float32)], axis=1)
    np.testing.assert_array_equal(run.run(None, {"X": longer})[0], reference)
    for length in range(1, T + 1):  # a partial last window of every size
        alone = run.run(None, {"X": base[:2, :length]})[0]
        padded = run.run(None, {"X": pad(base[:2], [length] * 2).astype(np.float32)})[0]
        np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-6)


def test_outputs_names_shapes_and_metadata(data):
    X, _, targets = data
    multilabel = model(data, "multilabel", "mean", 3, 3)
    proto = to_onnx(multilabel)
    assert [o.name for o in proto.graph.output] == ["probabilities", "label"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["out_activation"] == "logistic" and props["n_outputs"] == "3"
    assert props["readout"] == "mean" and props["window"] == "3"
    assert props["window_phases"] == "3"  # named only when there are several
    assert "envelope_width" not in props  # named only with envelope channels
    assert json.loads(props["classes"]) == [0, 1, 2]
    proba, label = session(multilabel).run(None, {"X": X.astype(np.float32)})
    assert proba.shape == label.shape == (N, 3)
    np.testing.assert_array_equal(label, (proba > 0.5).astype(int))
    one = model(data, "poisson", "last", 1)
    proto = to_onnx(one)
    assert [o.name for o in proto.graph.output] == ["predictions"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["estimator"] == "FastGRNNRegressor" and "window_phases" not in props
    (pred,) = session(one).run(None, {"X": X.astype(np.float32)})
    assert pred.shape == (N,) and (pred > 0).all()  # exp of the outputs
    two = FastGRNNRegressor(4, max_iter=2, random_state=0, window=2).fit(
        X, np.column_stack([targets["squared_error"], -targets["squared_error"]]))
    (pred,) = session(two).run(None, {"X": X.astype(np.float32)})
    assert pred.shape == (N, 2)
    assert_close(two, [pred], [two.predict(X.astype(np.float32))])
    enveloped = model(data, "softmax", "last", 4, 1, 4)
    for step in (False, True):
        props = {p.key: p.value for p in to_onnx(enveloped, step=step).metadata_props}
        assert props["envelope_width"] == "4" and "window_phases" not in props


@pytest.mark.parametrize("envelope", [0, 3])
@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize("scaler", ["sequence", "standard"])
def test_pipelines_ending_in_a_regressor(data, scaler, change_channels, envelope):
    """The envelope and change channels are those of the scaled input, as the
    estimator gets it."""
    X, padded, targets = data
    X2 = (5 * padded - 2).reshape(N, -1)
    first = SequenceScaler(n_timesteps=T) if scaler == "sequence" else StandardScaler()
    pipe = make_pipeline(first, FastGRNNRegressor(5, n_timesteps=T, window=2, readout="max",
                                                  change_channels=change_channels,
                                                  envelope_width=envelope,
                                                  max_iter=2, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X2, targets["squared_error"])
    (pred,) = session(pipe).run(None, {"X": X2.reshape(N, T, D).astype(np.float32)})
    np.testing.assert_allclose(pred, pipe.predict(X2.astype(np.float32)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ step graph
def with_labels(est, predictions):
    """A streamer's predictions and, for a classifier, the labels they decide."""
    if not isinstance(est, FastGRNNClassifier):
        return [predictions]
    if est.out_activation_ == "softmax":
        return [predictions, est.classes_[np.argmax(predictions, axis=1)]]
    return [predictions, (predictions > 0.5).astype(int)]


def stream_inputs(X, lengths, n_steps, seed):
    """Timesteps of several streams: each its own sequence, NaN (nothing new)
    after its end and now and then before it (an interleaved stream waiting);
    at least ``n_steps`` of them, and on until every stream has ended."""
    rng = np.random.default_rng(seed)
    steps = []
    position = np.zeros(len(X), int)
    while len(steps) < n_steps or (position < lengths).any():
        x = np.full((len(X), X.shape[2]), np.nan)
        for i in range(len(X)):
            if position[i] < lengths[i] and rng.random() < 0.75:
                x[i] = X[i, position[i]]
                position[i] += 1
        steps.append(x.astype(np.float32))
    return steps


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"), WINDOWS)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_step_graph_follows_the_streamer(data, kind, readout, window, phases, envelope,
                                         change_channels):
    X, _, _ = data
    est = model(data, kind, readout, window, phases, envelope, change_channels=change_channels)
    run = session(est, step=True)
    n_streams = 5
    lengths = np.array([7, 1, 4, 6, 3])  # fixed and padded sequences
    streamer = est.streamer(n_streams, dtype="float32")
    state = np.zeros((n_streams, state_layout(est)["size"]))
    assert state.shape == streamer.state.shape
    for x in stream_inputs(X[:n_streams], lengths, 12, seed=window):
        want = streamer.update(x)
        *got, state = run.run(None, {"x": x, "state": state})
        assert_close(est, got, with_labels(est, want))
        np.testing.assert_allclose(state, streamer.state, rtol=1e-5, atol=1e-6)
    # at the end of each sequence: what predict gives for the whole of it
    whole = expected(est, pad(X[:n_streams], lengths).astype(np.float32))
    assert_close(est, got, whole)


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize(("phases", "envelope"), [(1, 0), (2, 0), (1, 3), (2, 2)])
def test_a_state_moves_between_python_and_onnx_runtime(data, phases, envelope, readout,
                                                       change_channels):
    X, _, _ = data
    est = model(data, "softmax", readout, 3, phases, envelope, change_channels=change_channels)
    run = session(est, step=True)
    inputs = stream_inputs(X[:4], [7, 7, 5, 2], 10, seed=0)
    streamer = est.streamer(4, dtype="float32")
    state = np.zeros(streamer.state.shape)
    for t, x in enumerate(inputs):
        if t % 2:  # Python steps, the state then goes to onnxruntime
            want = streamer.update(x)
            state = streamer.state
        else:  # onnxruntime steps, the state then goes to Python
            want, _, state = run.run(None, {"x": x, "state": state})
            streamer.state = state
        reference = est.streamer(4, dtype="float32")
        for earlier in inputs[: t + 1]:
            expected_now = reference.update(earlier)
        np.testing.assert_allclose(want, expected_now, rtol=0, atol=1e-5)


@pytest.mark.parametrize("envelope", [0, 3])
@pytest.mark.parametrize("change_channels", CHANGES)
def test_step_graph_of_a_sequence_scaler_pipeline(data, change_channels, envelope):
    X, _, targets = data
    pipe = make_pipeline(SequenceScaler(), FastGRNNClassifier(
        5, window=2, readout="mean", change_channels=change_channels,
        envelope_width=envelope, max_iter=2, random_state=0))
    pipe.fit(10 * X + 3, targets["softmax"])
    run = session(pipe, step=True)
    est, scaler = pipe[-1], pipe[0]
    streamer = est.streamer(3, dtype="float32")
    state = np.zeros((3, state_layout(pipe)["size"]))
    for t in range(T):
        x = (10 * X[:3, t] + 3).astype(np.float32)
        want = streamer.update(scaler.transform(x.astype(np.float64)[:, None])[:, 0])
        proba, _, state = run.run(None, {"x": x, "state": state})
        np.testing.assert_allclose(proba, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(proba, pipe.predict_proba((10 * X[:3] + 3).astype(np.float32)),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("change_channels", CHANGES)
def test_step_graph_interface(data, change_channels):
    X, _, _ = data
    est = model(data, "squared_error", "max", 3, change_channels=change_channels)
    proto = to_onnx(est, step=True)
    inputs = {i.name: i for i in proto.graph.input}
    assert list(inputs) == ["x", "state"]
    layout = state_layout(est)
    cell_channels, n_previous = (3 * D, D) if change_channels else (D, 0)
    window_end = 2 * 6 + 2 + 3 * cell_channels
    assert layout["window"] == [2 * 6 + 2, window_end]
    assert layout["n_timesteps_seen"] == window_end + n_previous
    assert layout["size"] == window_end + n_previous + 1 == est.streamer().state.shape[1]
    assert layout.get("previous") == ([window_end, window_end + D] if change_channels else None)
    assert inputs["state"].type.tensor_type.shape.dim[1].dim_value == layout["size"]
    assert inputs["state"].type.tensor_type.elem_type == 11  # float64: counts stay exact
    assert [o.name for o in proto.graph.output] == ["predictions", "new_state"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["state_layout"]) == layout
    run = session(est, step=True)
    zeros = np.zeros((2, layout["size"]))
    nothing = np.full((2, D), np.nan, np.float32)
    pred, state = run.run(None, {"x": nothing, "state": zeros})  # no timestep yet
    np.testing.assert_array_equal(state, zeros)
    np.testing.assert_allclose(pred, est.streamer(2).predictions(), rtol=1e-6)
    if change_channels:  # the last timestep, kept through a row of NaN
        x = X[:2, 0].astype(np.float32)
        _, state = run.run(None, {"x": x, "state": zeros})
        _, state = run.run(None, {"x": nothing, "state": state})
        np.testing.assert_array_equal(state[:, window_end : window_end + D], x)
    with pytest.raises(ValueError, match="StandardScaler holds statistics per timestep"):
        to_onnx(make_pipeline(StandardScaler(), FastGRNNClassifier(3, n_timesteps=T,
                                                                   max_iter=1)).fit(
            X.reshape(N, -1), np.arange(N) % 2), step=True)


@pytest.mark.parametrize("envelope", [0, 2])
@pytest.mark.parametrize("change_channels", CHANGES)
def test_the_state_of_window_phases(data, change_channels, envelope):
    """One block ``[h | pool | steps | filled | window]`` per phase, then
    ``previous``, ``history`` and the timesteps seen; at a stream's first
    timestep phase ``j`` reads it ``s_j + 1`` times (phase 2 of windows of 3
    takes a cell step), and a row of NaN before it changes nothing."""
    X, _, _ = data
    est = model(data, "squared_error", "mean", 3, 3, envelope,
                change_channels=change_channels)
    H, k, b = 6, 3, 3 * D if envelope else D  # b: the base values of a timestep
    c = 3 * b if change_channels else b
    block = 2 * H + 2 + k * c
    layout = state_layout(est)
    phases = layout["phases"]
    for j, phase in enumerate(phases):
        start = j * block
        assert phase == {"shift": j, "h": [start, start + H], "pool": [start + H, start + 2 * H],
                         "steps": start + 2 * H, "filled": start + 2 * H + 1,
                         "window": [start + 2 * H + 2, start + block]}
        assert all(layout[key] == phases[0][key] for key in phase if key != "shift")
    n_previous, n_history = b if change_channels else 0, (envelope - 1) * D if envelope else 0
    assert layout["size"] == 3 * block + n_previous + n_history + 1
    assert layout["size"] == est.streamer().state.shape[1]
    previous_end = 3 * block + n_previous
    assert layout.get("previous") == ([3 * block, previous_end] if change_channels else None)
    assert layout.get("history") == ([previous_end, previous_end + n_history] if envelope
                                     else None)
    assert layout["n_timesteps_seen"] == layout["size"] - 1
    props = {p.key: p.value for p in to_onnx(est, step=True).metadata_props}
    assert props["window_phases"] == "3" and json.loads(props["state_layout"]) == layout

    run = session(est, step=True)
    zeros = np.zeros((2, layout["size"]))
    _, state = run.run(None, {"x": np.full((2, D), np.nan, np.float32), "state": zeros})
    np.testing.assert_array_equal(state, zeros)
    x = X[:2, 0].astype(np.float32)
    _, state = run.run(None, {"x": x, "state": zeros})
    row = x.astype(np.float64)  # the first cell-input row: no change yet
    if envelope:  # its own largest and smallest value
        row = np.tile(row, 3)
    if change_channels:
        log_offsets = np.log(est.change_offsets_).astype(np.float32)
        row = np.column_stack([row, np.zeros((2, b)), np.broadcast_to(log_offsets, (2, b))])
    for j, phase in enumerate(phases):
        np.testing.assert_array_equal(state[:, phase["steps"]], (j + 1) // k)
        np.testing.assert_array_equal(state[:, phase["filled"]], (j + 1) % k)
        window = state[:, slice(*phase["window"])].reshape(2, k, c)
        np.testing.assert_allclose(window[:, : j + 1], np.repeat(row[:, None], j + 1, axis=1),
                                   rtol=1e-6)
        assert (state[:, slice(*phase["h"])] != 0).any() == (j == 2)
    np.testing.assert_array_equal(state[:, -1], 1)
    too_many = copy.deepcopy(est)
    too_many.window_phases_ = 4
    with pytest.raises(ValueError, match="window_phases_"):
        to_onnx(too_many)


# ----------------------------------------------------------- envelope channels
def loop_history(received, width, d):
    """The state's history of a stream that ``received`` these timesteps: the
    last ``width - 1``, oldest first, the first repeated before them while
    there are fewer (zeros before any)."""
    if not received:
        return np.zeros((width - 1) * d)
    recent = [received[0]] * (width - 1) + received
    return np.concatenate(recent[-(width - 1):])


def without_envelope(est):
    """The weights of ``est`` as a model without envelope channels whose input
    channels are those of :func:`plain_envelope`."""
    plain = copy.deepcopy(est)
    plain.envelope_width_, plain.n_channels_ = 0, n_base_channels(est)
    plain.n_features_in_ = est.n_timesteps_ * plain.n_channels_
    plain.w_rank = est.coefs_["W1"].shape[1] if "W1" in est.coefs_ else None
    return plain


@pytest.mark.parametrize("change_channels", CHANGES)
@pytest.mark.parametrize(("window", "phases", "envelope"),
                         [case for case in WINDOWS if case[2]] + [(1, 1, 5)])
@pytest.mark.parametrize("readout", READOUTS)
def test_the_envelope_is_the_largest_and_smallest_of_the_last_timesteps(
        data, readout, window, phases, envelope, change_channels):
    """The definition, without the package's envelope code: both graphs give
    what the model's weights give reading the envelope of a plain loop as their
    input channels, and the step graph's state is that model's streamer's, with
    the last timesteps received as the history between ``previous`` and the
    timesteps seen."""
    _, padded, _ = data
    est = model(data, "squared_error", readout, window, phases, envelope,
                change_channels=change_channels)
    plain = without_envelope(est)
    Z = padded[:12].astype(np.float32)  # lengths 1 to 7
    lengths = (~np.isnan(Z).all(axis=2)).sum(axis=1)
    base = plain_envelope(Z, envelope).astype(np.float32)
    want = plain.predict(base)
    assert np.abs(want - plain.predict(np.tile(Z, 3))).max() > 1e-3  # the envelope matters
    (got,) = session(est).run(None, {"X": Z})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    layout = state_layout(est)
    history = np.arange(*layout["history"])
    assert layout["history"] == [layout["n_timesteps_seen"] - len(history),
                                 layout["n_timesteps_seen"]] and len(history) == (envelope - 1) * D
    run, state = session(est, step=True), np.zeros((len(Z), layout["size"]))
    streamer = plain.streamer(len(Z), dtype="float32")
    received = [[] for _ in Z]
    # the same streams of the input and of its envelope: NaN rows at the same ticks
    for x, x_base in zip(stream_inputs(Z, lengths, T + 3, seed=envelope),
                         stream_inputs(base, lengths, T + 3, seed=envelope)):
        want = streamer.update(x_base)
        got, state = run.run(None, {"x": x, "state": state})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        for stream, timestep in zip(received, x.astype(np.float64)):
            if not np.isnan(timestep).all():
                stream.append(timestep)
        np.testing.assert_array_equal(
            state[:, history], [loop_history(stream, envelope, D) for stream in received])
        np.testing.assert_allclose(np.delete(state, history, axis=1), streamer.state,
                                   rtol=1e-5, atol=1e-6)

