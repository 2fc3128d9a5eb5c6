"""An epoch in one C call trains exactly as the Python loop over its batches,
and the loop stays where the C call cannot run (``_compiled_epoch.py``)."""

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn import _compiled_epoch as epoch_module
from sklearn_fastgrnn import _training as training_module
from sklearn_fastgrnn._compiled_cell import CompiledEngine
from sklearn_fastgrnn._compiled_epoch import CompiledEpoch

from .conftest import assert_same_coefs, make_sequences, needs_compiler, pad

pytestmark = needs_compiler


def small(**params):
    defaults = dict(hidden_size=6, max_iter=5, batch_size=8, random_state=0, tol=0,
                    engine="compiled")
    return FastGRNNClassifier(**{**defaults, **params})


@pytest.fixture
def epochs_in_c(monkeypatch):
    """The number of epochs run in C so far (a list of one counter)."""
    count = [0]
    run = CompiledEpoch.run

    def counted(self, *args):
        count[0] += 1
        return run(self, *args)

    monkeypatch.setattr(CompiledEpoch, "run", counted)
    return count


def python_loop(monkeypatch):
    """From now on every epoch runs its batches in Python."""
    monkeypatch.setattr(training_module.TrainingRun, "_compiled_epoch", lambda *args: None)


def _case(rng, case):
    """``(X, y, fit parameters, fit keyword arguments)`` of a case."""
    if case == "plain":  # 40 sequences in batches of 8, float32, input noise ("auto")
        X, y = make_sequences(rng, n=40)
        return X, y, {}, {}
    if case == "ragged":  # a short last batch, padding, float64, the mean readout
        X, y = make_sequences(rng, n=45, T=9)
        X = pad(X, rng.integers(2, 10, len(X)))
        return X, y, dict(dtype="float64", readout="mean"), {}
    if case == "weights":  # a batch of zero weight (skipped), class weights
        X, y = make_sequences(rng, n=44)
        weights = rng.uniform(0.1, 3.0, len(X))
        weights[:8] = 0.0
        return X, y, dict(shuffle=False, class_weight="balanced"), {"sample_weight": weights}
    if case == "windows":  # windows that move and crops, read in place; the max readout
        X, y = make_sequences(rng, n=30, T=60)
        X = pad(X, rng.integers(30, 61, len(X)))
        return X, y, dict(window=3, crop_fraction=0.5, readout="max"), {}
    if case == "noised windows":  # the moving windows' timesteps noised, in place
        X, y = make_sequences(rng, n=30, T=60)
        X = pad(X, rng.integers(30, 61, len(X)))
        return X, y, dict(window=3, crop_fraction=0.5, input_noise=0.3), {}
    if case == "static windows":  # windows of 3 that stay put, the last one edge-filled
        X, y = make_sequences(rng, n=30, T=40)
        X = pad(X, rng.integers(20, 41, len(X)))
        return X, y, dict(window=3, shift_windows=False, crop_fraction=1.0), {}
    if case == "factors":  # a low-rank W of 12 inputs, trained as its factors; padding
        X, y = make_sequences(rng, n=40, T=8, d=12)
        X[::3, 5:] = np.nan
        return X, y, dict(w_rank=2, window=1, change_channels=False), {}
    if case == "long":  # the defaults of long series: windows, crops, envelopes, factors
        X, y = make_sequences(rng, n=30, T=240)
        return X, y, dict(hidden_size="auto", batch_size="auto"), {}
    if case == "smoothing":  # 12 classes: smoothed labels
        X = rng.standard_normal((60, 5, 2))
        y = np.arange(60) % 12
        return X, y, dict(label_smoothing="auto", batch_size=16), {}
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "plain", "ragged", "weights", "windows", "noised windows", "static windows", "factors",
    "long", "smoothing"])
def test_an_epoch_in_c_trains_as_the_python_loop_to_the_bit(rng, monkeypatch, epochs_in_c, case):
    X, y, params, fit_params = _case(rng, case)
    factored = []  # whether each C epoch trained a low-rank W as its factors
    contexts = CompiledEngine.training_contexts
    monkeypatch.setattr(CompiledEngine, "training_contexts", lambda engine, *args: (
        factored.append(engine.factored) or contexts(engine, *args)))
    in_c = small(**params).fit(X, y, **fit_params)
    assert factored == [case in ("factors", "long")] * 5
    assert epochs_in_c[0] == in_c.n_iter_ == 5
    python_loop(monkeypatch)
    in_python = small(**params).fit(X, y, **fit_params)
    assert epochs_in_c[0] == 5
    assert_same_coefs(in_c, in_python)
    assert in_c.loss_curve_ == in_python.loss_curve_  # the epochs' losses, to the bit
    assert in_c.t_ == in_python.t_


@pytest.mark.parametrize("case", ["plain", "ragged", "noised windows", "factors", "long"])
def test_epochs_in_c_and_in_python_alternating_train_as_the_python_loop(rng, monkeypatch,
                                                                         case):
    """The C loop keeps its contexts from epoch to epoch; a Python epoch between
    two (whose forward and backward passes point the same contexts at its own
    batches) must not leave them stale."""
    X, y, params, fit_params = _case(rng, case)
    compiled = training_module.TrainingRun._compiled_epoch
    calls = []

    def every_other(run, *args):
        calls.append(1)
        return compiled(run, *args) if len(calls) % 2 else None

    monkeypatch.setattr(training_module.TrainingRun, "_compiled_epoch", every_other)
    alternating = small(**params).fit(X, y, **fit_params)
    assert len(calls) == 5
    python_loop(monkeypatch)
    in_python = small(**params).fit(X, y, **fit_params)
    assert_same_coefs(alternating, in_python)
    assert alternating.loss_curve_ == in_python.loss_curve_


def test_an_epoch_in_several_calls_trains_as_in_one(rng, monkeypatch, epochs_in_c):
    """A long epoch is several C calls (Ctrl-C acts between two): here one a batch."""
    X, y = make_sequences(rng, n=45, T=9)
    whole = small().fit(X, y)
    calls = []
    function = CompiledEpoch.__init__

    def counting_calls(self, c_function, *args):
        function(self, lambda pointer: calls.append(1) or c_function(pointer), *args)

    monkeypatch.setattr(CompiledEpoch, "__init__", counting_calls)
    monkeypatch.setattr(epoch_module, "UNITS_PER_CALL", 1)
    in_calls = small().fit(X, y)
    assert len(calls) == 5 * 6  # 6 batches an epoch
    assert_same_coefs(whole, in_calls)
    assert whole.loss_curve_ == in_calls.loss_curve_


def test_ctrl_c_between_two_calls_keeps_the_weights_so_far(rng, monkeypatch):
    X, y = make_sequences(rng, n=45, T=9)
    calls = []
    function = CompiledEpoch.__init__

    def interrupted(pointer, c_function):
        calls.append(1)
        if len(calls) == 9:  # the third batch of epoch 2
            raise KeyboardInterrupt
        c_function(pointer)

    def init(self, c_function, *args):
        function(self, lambda pointer: interrupted(pointer, c_function), *args)

    monkeypatch.setattr(CompiledEpoch, "__init__", init)
    monkeypatch.setattr(epoch_module, "UNITS_PER_CALL", 1)
    with pytest.warns(UserWarning, match="interrupted by the user in epoch 2"):
        model = small(max_iter=10).fit(X, y)
    assert model.n_iter_ == 1
    assert all(np.isfinite(value).all() for value in model.coefs_.values())


def test_partial_fit_continues_adams_steps_from_c(rng, monkeypatch, epochs_in_c):
    """Adam's step count carries over from one C epoch to the next call."""
    X, y = make_sequences(rng)
    in_c = small()
    for _ in range(3):
        in_c.partial_fit(X, y, classes=np.unique(y))
    python_loop(monkeypatch)
    in_python = small()
    for _ in range(3):
        in_python.partial_fit(X, y, classes=np.unique(y))
    assert epochs_in_c[0] == 3
    assert_same_coefs(in_c, in_python)


def test_a_non_finite_loss_in_c_stops_as_the_python_loop_does(rng, monkeypatch, epochs_in_c):
    X, y = make_sequences(rng, n=40)
    explode = dict(learning_rate_init=1e38, clip_grad_norm=None, alpha=0.0)
    with pytest.raises(ValueError, match="Training diverged") as in_c:
        small(**explode).fit(X, y)
    assert epochs_in_c[0] >= 1
    python_loop(monkeypatch)
    with pytest.raises(ValueError, match="Training diverged") as in_python:
        small(**explode).fit(X, y)
    assert str(in_c.value) == str(in_python.value)
    assert "the loss became nan in epoch 1, mini-batch 2" in str(in_c.value)


@pytest.mark.parametrize("params", [
    dict(solver="sgd"),
    dict(w_rank=2, window=1, change_channels=False),  # the product W1 @ W2
    dict(u_rank=2),
    dict(engine="numpy"),
    dict(sparsity_w=0.5),
    dict(verbose=2, batch_size=1, max_iter=1),  # a progress bar: 50 batches or more
], ids=["sgd", "low-rank W", "low-rank U", "numpy", "sparse", "progress"])
def test_the_batches_stay_in_python_where_c_cannot_run_them(rng, epochs_in_c, capsys, params):
    X, y = make_sequences(rng, n=60, d=4)
    model = small(**params).fit(X, y)
    assert epochs_in_c[0] == 0 and model.n_iter_ >= 1


def test_other_losses_stay_in_python(rng, epochs_in_c):
    X, y = make_sequences(rng)
    FastGRNNRegressor(6, max_iter=2, random_state=0, engine="compiled").fit(X, y.astype(float))
    teacher = small(max_iter=2).fit(X, y)
    small(max_iter=2).fit(X, y, soft_targets=teacher.predict_proba(X))
    assert epochs_in_c[0] == 2  # the teacher's fit only


def test_without_a_compiler_for_the_loop_the_batches_run_in_python(rng, monkeypatch,
                                                                   epochs_in_c):
    X, y = make_sequences(rng)
    reference = small().fit(X, y)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(epoch_module.LIBRARY, "loaded", None)
    model = small().fit(X, y)
    assert epochs_in_c[0] == reference.n_iter_  # the reference's epochs only
    assert_same_coefs(model, reference)


def test_rows_outside_their_array_are_refused_before_c_reads_them(rng, monkeypatch):
    X, y = make_sequences(rng)
    rows = training_module.TrainingRun._epoch_rows

    def shifted(run, order):
        source, bases = rows(run, order)
        return source, bases + source[0].size

    monkeypatch.setattr(training_module.TrainingRun, "_epoch_rows", shifted)
    with pytest.raises(ValueError, match="read outside their array"):
        small().fit(X, y)


@pytest.mark.parametrize("shift, inside", [(6, True), (7, False)])
def test_a_row_is_checked_against_its_own_batchs_steps(rng, monkeypatch, shift, inside):
    """A row may start late in its array when its batch reads fewer steps than
    the epoch's longest: the check reads each batch's own number of steps."""
    X, y = make_sequences(rng, n=16, T=9)
    run = CompiledEpoch.run

    def second_batch_late(self, rows, bases, lengths, *rest):
        # the second batch reads the last 3 of its rows' 9 steps (or one beyond)
        late = np.arange(len(bases)) >= 8
        bases = bases + np.where(late, shift * rows[1], 0)
        return run(self, rows, bases, np.where(late, 3, lengths), *rest)

    monkeypatch.setattr(CompiledEpoch, "run", second_batch_late)
    model = small(shuffle=False, change_channels=False, window=1, max_iter=1)
    if inside:  # the last row reads its last 3 steps, up to the array's end
        assert model.fit(X, y).n_iter_ == 1
    else:
        with pytest.raises(ValueError, match="read outside their array"):
            model.fit(X, y)


def test_arrays_of_another_dtype_or_size_are_refused(rng, monkeypatch):
    X, y = make_sequences(rng)
    run = CompiledEpoch.run

    def with_int32_labels(self, rows, bases, lengths, labels, *rest):
        return run(self, rows, bases, lengths, labels.astype(np.int32), *rest)

    monkeypatch.setattr(CompiledEpoch, "run", with_int32_labels)
    with pytest.raises(ValueError, match="contiguous, of n"):
        small().fit(X, y)
