"""Sparsity by IHT, int8 quantisation with integer-exact arithmetic, model size."""

import math
import pickle

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._cell import READOUTS, ParameterLayout
from sklearn_fastgrnn._channels import with_changes
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES
from sklearn_fastgrnn._optimizers import SGD, Adam
from sklearn_fastgrnn._scaling import unfold
from sklearn_fastgrnn._sparsity import SparseTraining, hard_threshold, keep_count
from sklearn_fastgrnn.compression import (
    OUT_ACTIVATIONS,
    QuantizedFastGRNN,
    integer_nonlinearity,
    quantize,
    size_report,
)
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

from .conftest import TASKS, make_sequences, task_model
from .test_old_models import PICKLED_BY_NUMPY_2

# --------------------------------------------------------------------- IHT


def test_keep_count_is_ceil_of_fraction_at_least_one():
    assert keep_count(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floats
    assert keep_count(10, 0.31) == 4
    assert keep_count(256, 0.25) == 64
    assert keep_count(7, 0.01) == 1
    assert keep_count(5, 1.0) == 5


def test_hard_threshold_keeps_largest_magnitudes_and_breaks_ties_by_index():
    M = np.array([[1.0, -1.0, 1.0], [0.5, -2.0, 1.0]])
    # |-2| first, then four entries of magnitude 1: flat indices 0, 1 win
    expected = np.array([[1.0, -1.0, 0.0], [0.0, -2.0, 0.0]])
    np.testing.assert_array_equal(hard_threshold(M, 0.5), expected)
    np.testing.assert_array_equal(hard_threshold(-M, 0.5), -expected)


def _assert_exact_sparsity(clf, fractions):
    for key, value in clf.coefs_.items():
        fraction = fractions.get(key[0], 1.0) if key[0] in "WU" else 1.0
        expected = keep_count(value.size, fraction) if fraction < 1 else value.size
        assert np.count_nonzero(value) == expected, key


@pytest.mark.parametrize(
    "ranks", [{}, {"w_rank": 2, "u_rank": 3}], ids=["full rank", "low rank"]
)
def test_fit_keeps_exactly_the_requested_fraction_per_matrix(rng, ranks):
    X, y = make_sequences(rng, n=60)
    clf = FastGRNNClassifier(
        8, sparsity_w=0.3, sparsity_u=0.45, max_iter=8, iht_interval=2, random_state=0,
        **ranks,
    ).fit(X, y)
    _assert_exact_sparsity(clf, {"W": 0.3, "U": 0.45})
    assert clf.n_iter_ == 8


def _support(clf):
    return {k: clf.coefs_[k] != 0 for k in clf.coefs_ if k[0] in "WU"}


def test_partial_fit_runs_dense_then_iht_then_a_frozen_support(rng):
    X, y = make_sequences(rng, n=64)
    clf = FastGRNNClassifier(
        6, sparsity_w=0.5, sparsity_u=0.25, sparsity_phases=(0.25, 0.25), max_iter=8,
        iht_interval=3, batch_size=8, random_state=0,
    )
    supports = []
    for call in range(1, 13):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        if call <= 2:  # dense phase: floor(0.25 * 8) epochs
            assert all(np.count_nonzero(v) == v.size for v in clf.coefs_.values())
        else:
            _assert_exact_sparsity(clf, {"W": 0.5, "U": 0.25})
        if call >= 5:  # frozen from epoch floor(0.5 * 8) on, also after max_iter calls
            supports.append(_support(clf))
    for later in supports[1:]:
        for key, mask in supports[0].items():
            np.testing.assert_array_equal(later[key], mask)
    # the optimiser can not revive a pruned entry: its moments are exactly 0
    pruned = clf._sparse_training.pruned
    assert pruned.size and not clf._optimizer.m[pruned].any()
    assert not clf._optimizer.v[pruned].any()


def test_warm_start_continues_on_the_frozen_support(rng):
    X, y = make_sequences(rng, n=60)
    clf = FastGRNNClassifier(
        6, sparsity_w=0.4, sparsity_u=0.4, max_iter=6, warm_start=True, random_state=1
    ).fit(X, y)
    before = _support(clf)
    clf.fit(X, y)
    for key, mask in _support(clf).items():
        np.testing.assert_array_equal(mask, before[key])


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_frozen_entries_stay_exactly_zero_under_any_gradient(rng, solver):
    layout = ParameterLayout(3, 5, 2)
    flat = rng.standard_normal(layout.size)
    optimizer = Adam(layout.size, np.float64) if solver == "adam" else SGD(layout.size, np.float64)
    for _ in range(5):  # moments / velocity non-zero everywhere
        optimizer.step(flat, rng.standard_normal(layout.size), 0.1)
    sparse = SparseTraining(layout, {"W": 0.5, "U": 0.2}, (0.0, 0.0), 1, 1)
    assert sparse.begin_epoch(flat, optimizer)  # phase 3 at once: freeze now
    kept = flat.copy()
    pruned = sparse.pruned
    assert pruned.size == (15 - keep_count(15, 0.5)) + (25 - keep_count(25, 0.2))
    for _ in range(50):
        grad = rng.standard_normal(layout.size)
        sparse.before_step(grad)
        optimizer.step(flat, grad, 0.1)
        sparse.after_step(flat)
        assert not flat[pruned].any()
    free = np.setdiff1d(np.arange(layout.size), pruned)
    assert (flat[free] != kept[free]).all()


def test_iht_thresholds_every_interval_steps_and_reapplies_between(rng):
    layout = ParameterLayout(2, 4, 2)
    flat = rng.standard_normal(layout.size)
    sparse = SparseTraining(layout, {"U": 0.25}, (0.0, 0.5), 3, 2)
    assert not sparse.begin_epoch(flat, None)  # epoch 0 is in the IHT phase
    sparse.after_step(flat)  # step 0: threshold
    U = layout.views(flat)["U"]
    assert np.count_nonzero(U) == 4
    outside = int(sparse.pruned[0])
    for _ in range(2):  # steps 1, 2: the support is re-applied
        flat[outside] = 100.0
        sparse.after_step(flat)
        assert flat[outside] == 0.0
    flat[outside] = 100.0
    sparse.after_step(flat)  # step 3: threshold again, the large entry comes in
    assert flat[outside] == 100.0 and outside not in sparse.pruned
    assert np.count_nonzero(U) == 4


def test_stopping_waits_for_the_frozen_support(rng):
    X, y = make_sequences(rng, n=80)
    # tol=10: no epoch ever counts as an improvement, so a dense fit stops early
    params = dict(max_iter=20, early_stopping=True, n_iter_no_change=2, tol=10.0,
                  learning_rate="constant", random_state=0)
    assert FastGRNNClassifier(6, **params).fit(X, y).n_iter_ == 3
    clf = FastGRNNClassifier(6, sparsity_w=0.5, sparsity_u=0.5, **params).fit(X, y)
    assert clf.n_iter_ == 15 + 3  # floor(0.75 * 20) epochs, then the rule in phase 3
    _assert_exact_sparsity(clf, {"W": 0.5, "U": 0.5})


@pytest.mark.parametrize("phases", [(0.5, 0.5), (0.9,), (-0.1, 0.5), ("a", 0.1)])
def test_bad_sparsity_phases_are_refused(rng, phases):
    X, y = make_sequences(rng)
    with pytest.raises(ValueError, match="sparsity_phases"):
        FastGRNNClassifier(4, sparsity_phases=phases, max_iter=1).fit(X, y)


def test_sparsity_must_keep_something(rng):
    X, y = make_sequences(rng)
    with pytest.raises(ValueError, match="sparsity_w"):
        FastGRNNClassifier(4, sparsity_w=0.0).fit(X, y)


# ------------------------------------------------------------ model size


def test_model_size_dense_and_sparse_follow_edgeml(rng):
    X, y = make_sequences(rng, n=50)
    dense = FastGRNNClassifier(8, max_iter=2, random_state=0).fit(X, y)
    # 4 bytes an entry, 8 a float64 change offset (one per channel)
    assert dense.model_size_bytes_ == 4 * dense.n_params_ + 4 * X.shape[2]
    sparse = FastGRNNClassifier(
        8, u_rank=2, sparsity_w=0.5, sparsity_u=0.5, max_iter=4, random_state=0
    ).fit(X, y)
    c = sparse.coefs_
    expected = 8 * sum(np.count_nonzero(c[k]) for k in ("W", "U1", "U2"))
    dense = ("V", "bias_gate", "bias_update", "zeta", "nu", "bias_out")
    expected += 4 * sum(c[k].size for k in dense)
    expected += 8 * X.shape[2]  # a float64 change offset per channel
    assert sparse.model_size_bytes_ == expected
    assert sum(r["bytes"] for r in size_report(sparse)) == expected


def test_model_size_int8_counts_one_byte_per_entry_plus_index_when_sparse(rng):
    X, y = make_sequences(rng, n=50)
    clf = FastGRNNClassifier(
        8, u_rank=3, sparsity_u=0.5, max_iter=4, random_state=0
    ).fit(X, y)
    q = quantize(clf, X)
    w = q.weights_
    sparse_bytes = 2 * (np.count_nonzero(w["U1"]) + np.count_nonzero(w["U2"]))  # value + uint8 row
    dense_bytes = sum(w[k].size for k in ("W", "V", "bias_gate", "bias_update", "bias_out"))
    scalars = 4 * 2 + 4 * len(w)  # zeta, nu and one scale per int8 tensor
    # the input quantisation: a mean and a multiplier per channel, per change channel and
    # per logarithm of a change; and a change offset per channel
    maps = 4 * 2 * 3 * X.shape[2] + 8 * X.shape[2]
    assert q.sparse_keys_ == ("U1", "U2")
    assert q.model_size_bytes_ == sparse_bytes + dense_bytes + scalars + maps
    # without an input map (scale_input=False) the input is x * 2**Fx: nothing stored
    plain = quantize(clf.set_params(scale_input=False).fit(X, y), X)
    assert "maps" not in [r["tensor"] for r in size_report(plain)]


def test_summary_lists_every_tensor_and_the_size_in_kb(rng):
    X, y = make_sequences(rng, n=50)
    clf = FastGRNNClassifier(8, sparsity_u=0.5, max_iter=3, random_state=0).fit(X, y)
    for model in (clf, quantize(clf, X)):
        text = model.summary()
        lines = text.splitlines()
        for key in ("W", "U", "V", "bias_gate", "bias_update", "zeta", "nu", "bias_out"):
            assert any(line.split()[0] == key for line in lines), key
        u_line = next(line for line in lines if line.split()[0] == "U")
        # int8 may round a tiny kept entry to 0: count the model's own tensor
        U = model.weights_["U"] if hasattr(model, "weights_") else model.coefs_["U"]
        assert "sparse" in u_line and str(np.count_nonzero(U)) in u_line.split()
        total = model.model_size_bytes_
        assert lines[-1] == f"model size: {total} bytes = {total / 1024:.2f} KB"
        assert lines[-2].split()[-1] == str(total)


def test_summary_of_an_unfitted_model_says_so():
    with pytest.raises(NotFittedError):
        FastGRNNClassifier().summary()


# ----------------------------------------------------------- quantisation


def _rshift_round(v, s):
    return (v + (1 << (s - 1))) >> s  # Python's >> floors, as the spec says


_TABLE = [math.floor(math.tanh(i / 32) * 4096 + 0.5) for i in range(257)]


def _lut(a, k):
    i = a >> k
    if i >= 256:
        return _TABLE[256]
    return _TABLE[i] + _rshift_round((_TABLE[i + 1] - _TABLE[i]) * (a & ((1 << k) - 1)), k)


_INTEGER = {
    "sigmoid": lambda v: _rshift_round(4096 + (-_lut(-v, 8) if v < 0 else _lut(v, 8)), 1),
    "tanh": lambda v: -_lut(-v, 7) if v < 0 else _lut(v, 7),
    "relu": lambda v: max(v, 0),
    "quant_sigmoid": lambda v: min(max(_rshift_round(v + 4096, 1), 0), 4096),
    "quant_tanh": lambda v: min(max(v, -4096), 4096),
}


@pytest.mark.parametrize("name", sorted(NONLINEARITIES))
def test_every_registered_nonlinearity_has_the_documented_integer_kernel(name):
    assert set(_INTEGER) == set(NONLINEARITIES)
    v = np.concatenate([np.arange(-40000, 40001, 37), [-4097, -4096, 0, 4095, 4096, 2**20]])
    expected = [_INTEGER[name](int(a)) for a in v]
    np.testing.assert_array_equal(integer_nonlinearity(name, v.astype(np.int64)), expected)


def _sat16(v):
    return min(max(v, -32767), 32767)


def literal_quantized_outputs(q, X):
    """The documented integer arithmetic, one Python int at a time."""
    w = {k: v.astype(int).tolist() for k, v in q.weights_.items()}

    def requantize(acc, key):
        m, s = q.multipliers_[key]
        return _rshift_round(acc * m, s)

    def product(v, chain):
        keys = [chain] if chain in w else [chain + "1", chain + "2"]
        for n, key in enumerate(keys):
            M = w[key]
            v = [requantize(sum(v[i] * M[i][j] for i in range(len(v))), key)
                 for j in range(len(M[0]))]
            if n == 0 and len(keys) == 2:
                v = [_sat16(a) for a in v]
        return v

    def quantized(value, c):  # sat16(rint((x - mean_c) * multiplier_c)), Python's round: half even
        x = float(np.float32(value))
        return _sat16(round((x - float(q.input_mean_[c])) * float(q.input_multiplier_[c])))

    def with_changes(real):  # each channel, |x_t - x_{t-1}| of the float32 inputs, its log
        if not q.change_channels_:
            return real
        previous = real[:1] + real[:-1]
        cells = []
        for x, before in zip(real, previous):
            changes = [float(np.float32(abs(float(np.float32(v)) - float(np.float32(p)))))
                       for v, p in zip(x, before)]
            logs = [float(np.float32(math.log(c + o))) for c, o in zip(changes, q.change_offsets_)]
            cells.append(x + changes + logs)
        return cells

    H, d, k = len(w["bias_gate"]), q.n_channels_ * (3 if q.change_channels_ else 1), q.window_
    b = {key: [requantize(x, key) for x in w[key]]
         for key in ("bias_gate", "bias_update", "bias_out")}
    gate, update = _INTEGER[q.gate_nonlinearity], _INTEGER[q.update_nonlinearity]
    sz, sn = q.sigmoid_zeta_q15_, q.sigmoid_nu_q15_
    def readout(real):  # the readout of one phase of the windows
        states = []
        h = [0] * H
        for start in range(0, len(real), k):
            window = real[start:start + k]
            window += [window[-1]] * (k - len(window))  # the last timestep repeated
            xq = [quantized(v, c) for x in window for c, v in enumerate(x)]
            pre = [a + r for a, r in zip(product(xq, "W"), product(h, "U"))]
            new_h = []
            for j in range(H):
                z = gate(pre[j] + b["bias_gate"][j])
                c = _sat16(update(pre[j] + b["bias_update"][j]))
                coef = _rshift_round(sz * (4096 - z), 12) + sn
                new_h.append(_sat16(_rshift_round(coef * c, 15) + _rshift_round(z * h[j], 12)))
            h = new_h
            states.append(h)
        L = len(states)
        return {"last": h,
                "mean": [(2 * sum(s[j] for s in states) + L) // (2 * L) for j in range(H)],
                "max": [max(s[j] for s in states) for j in range(H)]}[q.readout]

    p = q.window_phases_
    out = []
    for seq in X:
        real = with_changes([list(x) for x in seq if not all(math.isnan(v) for v in x)])
        # phase j reads the sequence after (j k) // p copies of its first timestep;
        # the readout is their mean, rounded half up
        phases = [readout([real[0]] * (j * k // p) + real) for j in range(p)]
        r = [(2 * sum(rs[i] for rs in phases) + p) // (2 * p) for i in range(H)]
        out.append([a + c for a, c in zip(product(r, "V"), b["bias_out"])])
    assert d == len(q.input_mean_)
    return np.array(out)


# every non-linearity, and with them every readout, windows, the four output
# activations, with and without the input map
CASES = [
    dict(gate_nonlinearity="sigmoid", update_nonlinearity="tanh", scale_input=False),
    dict(gate_nonlinearity="quant_sigmoid", update_nonlinearity="quant_tanh",
         w_rank=2, u_rank=3, sparsity_w=0.6, sparsity_u=0.5, readout="mean", window=2,
         task="multilabel"),
    dict(gate_nonlinearity="tanh", update_nonlinearity="relu", u_rank=2, readout="max",
         window=3, window_phases=2, task="regression"),
    dict(gate_nonlinearity="relu", update_nonlinearity="sigmoid", sparsity_u=0.4,
         readout="mean", task="poisson"),
]


def fitted(rng, n=60, T=5, d=3, task="classification", **params):
    """A small fitted model of a task, its data, and test sequences (some padded)."""
    model, X = task_model(rng, task, n=n, T=T, d=d, **params)
    X_test = X[:8].copy()
    X_test[2, 3:] = np.nan  # shorter sequences, NaN-padded
    X_test[5, 1:] = np.nan
    return model, X, X_test


@pytest.mark.parametrize(
    "params", CASES, ids=lambda p: f"{p['gate_nonlinearity']}-{p['update_nonlinearity']}"
)
def test_quantized_prediction_matches_a_literal_integer_implementation(rng, params):
    model, X, Xt = fitted(rng, **params)
    q = quantize(model, X)
    expected = literal_quantized_outputs(q, Xt)
    got = q.quantized_outputs(Xt)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    # the read-outs of the documented integers
    real = expected / 4096
    if q.output_offset_ is not None:
        real = q.output_offset_ + q.output_spread_ * real
    activation = q.out_activation_
    expected_predictions = {
        "softmax": lambda: model.classes_[np.argmax(expected, axis=1)],
        "logistic": lambda: (expected > 0).astype(int),
        "identity": lambda: real,
        "exp": lambda: np.exp(real),
    }[activation]()
    assert set(OUT_ACTIVATIONS) == {"softmax", "logistic", "identity", "exp"}
    np.testing.assert_array_equal(q.predict(Xt), expected_predictions)
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(
            q.predict_proba(Xt),
            1 / (1 + np.exp(-real)) if activation == "logistic"
            else np.exp(real) / np.exp(real).sum(axis=1, keepdims=True), rtol=1e-12)
    else:
        assert not hasattr(q, "predict_proba")
    # a padded sequence predicts what its unpadded prefix predicts
    np.testing.assert_array_equal(q.quantized_outputs(Xt[2:3, :3]), got[2:3])


def test_quantized_tensors_and_multipliers_are_what_the_docstring_says(rng):
    X, y = make_sequences(rng, n=60)
    X[:, :, 0] = 100 * X[:, :, 0] + 7  # a channel 100 times wider than the others
    clf = FastGRNNClassifier(6, u_rank=3, max_iter=4, random_state=0).fit(X, y)
    q = quantize(clf, X)
    # the weights trained on standardised input, not the folded coefs_
    maps = clf._maps
    trained = unfold(clf.coefs_, maps)
    assert not np.allclose(trained["W"], clf.coefs_["W"])
    assert set(q.weights_) == set(clf.coefs_) - {"zeta", "nu"}
    for key, values in q.weights_.items():
        assert values.dtype == np.int8 and np.abs(values).max() == 127
        scale = q.scales_[key]
        assert scale == pytest.approx(np.abs(trained[key]).max() / 127)
        np.testing.assert_allclose(values * scale, trained[key], atol=scale / 2 + 1e-6)
    # x_q = sat16(rint((x - mean_c) * multiplier_c)), the standardised input in Q(Fx)
    bits = q.frac_bits_
    cells = with_changes(X.astype(np.float32), clf.change_offsets_)
    standardised = (cells - maps.input_mean) / maps.input_scale
    assert bits["input"] == math.floor(math.log2(32767 / (2 * np.abs(standardised).max())))
    np.testing.assert_array_equal(q.input_mean_, maps.input_mean.astype(np.float32))
    np.testing.assert_allclose(q.input_multiplier_, 2.0 ** bits["input"] / maps.input_scale,
                               rtol=2**-24)
    assert q.input_multiplier_.dtype == np.float64  # float32 values
    np.testing.assert_array_equal(q.input_multiplier_.astype(np.float32), q.input_multiplier_)
    cells = with_changes(X[:4].astype(np.float32), clf.change_offsets_)  # what the cell reads
    xq = q.quantize_input(cells)
    np.testing.assert_array_equal(xq, np.clip(np.rint(
        (cells.astype(np.float64) - q.input_mean_) * q.input_multiplier_), -32767, 32767))
    assert np.abs(xq).max() <= 32767 // 2 + 1  # headroom: calibration data use half the range
    formats = {"W": (bits["input"], 12), "U1": (12, bits["U1"]), "U2": (bits["U1"], 12),
               "V": (12, 12), "bias_gate": (0, 12)}
    for key, (f_in, f_out) in formats.items():
        m, s = q.multipliers_[key]
        assert 2**14 <= m <= 2**15
        assert m * 2.0**-s == pytest.approx(q.scales_[key] * 2.0 ** (f_out - f_in), rel=2**-14)
    assert q.zeta == clf.coefs_["zeta"] and q.nu == clf.coefs_["nu"]
    assert q.sigmoid_nu_q15_ == math.floor(32768 / (1 + math.exp(-q.nu)) + 0.5)
    assert quantize(clf).frac_bits_["input"] == 10
    assert q.output_offset_ is None and q.output_spread_ is None


@PICKLED_BY_NUMPY_2
def test_a_model_without_maps_is_quantised_as_it_is():
    # a model of release 0.1 (or one loaded from a weights file) has no _maps:
    # its coefs_ are quantised, and the input is x * 2**Fx
    import joblib

    from .test_old_models import DATA, EXPECTED

    with pytest.warns(Warning):
        clf = joblib.load(DATA / "classifier-0.1.0.joblib")
    assert not hasattr(clf, "_maps")
    X = EXPECTED["X"]
    q = quantize(clf, X)
    assert (q.readout, q.window_, q.out_activation_) == ("last", 1, "softmax")
    np.testing.assert_array_equal(q.input_mean_, 0.0)
    np.testing.assert_array_equal(q.input_multiplier_, 2.0 ** q.frac_bits_["input"])
    for key, values in q.weights_.items():
        np.testing.assert_allclose(values * q.scales_[key], clf.coefs_[key],
                                   atol=q.scales_[key] / 2 + 1e-6)
    np.testing.assert_array_equal(q.quantized_outputs(X), literal_quantized_outputs(q, X))
    assert np.mean(q.predict(X) == clf.predict(X)) >= 0.95


def test_an_int8_model_pickled_by_release_0_1_loads_with_its_meaning():
    # release 0.1 stored none of the attributes of readouts, windows, tasks and maps
    rng = np.random.default_rng(0)
    X, y = make_sequences(rng, n=40)
    clf = FastGRNNClassifier(6, scale_input=False, window=1, max_iter=3, random_state=0).fit(X, y)
    q = quantize(clf, X)
    old = {key: value for key, value in q.__dict__.items() if key not in (
        "out_activation_", "readout", "window_", "n_outputs_", "input_mean_",
        "input_multiplier_", "output_offset_", "output_spread_")}
    loaded = QuantizedFastGRNN.__new__(QuantizedFastGRNN)
    loaded.__setstate__(pickle.loads(pickle.dumps(old)))
    np.testing.assert_array_equal(loaded.quantized_outputs(X), q.quantized_outputs(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), q.predict_proba(X))


def test_int8_digits_model_predicts_like_the_float_model():
    X, y = load_digits_sequences()
    X_train, X_test, y_train, y_test = split_halves(X, y)
    clf = FastGRNNClassifier(16, max_iter=15, random_state=0).fit(X_train, y_train)
    q = quantize(clf, X_train)
    agree = np.mean(q.predict(X_test) == clf.predict(X_test))
    assert agree >= 0.97
    assert abs(q.score(X_test, y_test) - clf.score(X_test, y_test)) <= 0.02
    np.testing.assert_allclose(q.predict_proba(X_test).sum(axis=1), 1.0)
    assert np.abs(q.predict_proba(X_test) - clf.predict_proba(X_test)).max() < 0.1
    # the int8 tensors are 3.5 times smaller; the input quantisation adds a
    # float32 mean and multiplier per channel, change and logarithm (4 * 2 * 24
    # bytes), both models a float64 offset per channel
    rows = {r["tensor"]: r["bytes"] for r in size_report(q)}
    assert rows["maps"] == 4 * 2 * 3 * X.shape[2]
    assert rows["change_offsets"] == 8 * X.shape[2]
    assert q.model_size_bytes_ - rows["maps"] < clf.model_size_bytes_ / 3.5


def test_quantized_model_reads_the_classifier_layouts_and_pickles(rng):
    X, y = make_sequences(rng, n=40, T=4, d=2)
    clf = FastGRNNClassifier(4, n_timesteps=4, max_iter=3, random_state=0)
    clf.fit(X.reshape(40, 8), y)
    q = quantize(clf, X.reshape(40, 8))
    np.testing.assert_array_equal(q.quantized_outputs(X.reshape(40, 8)), q.quantized_outputs(X))
    again = pickle.loads(pickle.dumps(q))
    np.testing.assert_array_equal(again.predict(X), q.predict(X))
    with pytest.raises(ValueError, match="channels"):
        q.predict(X[:, :, :1])
    with pytest.raises(ValueError, match="features"):
        q.predict(X.reshape(40, 8)[:, :6])


def test_quantize_needs_a_fitted_classifier(rng):
    with pytest.raises(NotFittedError):
        quantize(FastGRNNClassifier())
    X, y = make_sequences(rng)
    q = quantize(FastGRNNClassifier(4, max_iter=1, random_state=0).fit(X, y))
    assert isinstance(q, QuantizedFastGRNN)
    with pytest.raises(TypeError, match="FastGRNNClassifier"):
        quantize(q)


# ------------------------------------------------- int8 streaming, every task
def interleaved_feed(X, lengths, n_streams=3, pause=(2, 3, 6)):
    """Ticks of one timestep per stream: stream 2 pauses (a row of NaN) for the
    ticks in ``pause``; yields the rows and how many timesteps each stream has."""
    fed = [0] * n_streams
    tick = 0
    while any(fed[i] < lengths[i] for i in range(n_streams)):
        x = np.full((n_streams, X.shape[2]), np.nan)
        for i in range(n_streams):
            if (i != 2 or tick not in pause) and fed[i] < lengths[i]:
                x[i] = X[i, fed[i]]
                fed[i] += 1
        yield x, list(fed)
        tick += 1


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("task", TASKS)
def test_int8_streamer_equals_the_whole_sequence_arithmetic_after_every_step(
        rng, task, readout, window):
    model, X, _ = fitted(rng, n=40, T=7, task=task, readout=readout, window=window)
    q = quantize(model, X)
    Xs = X[:3].copy()
    Xs[1, 4:] = np.nan  # padded: 4 real timesteps
    lengths = [7, 4, 7]
    stream = q.streamer(3)
    predicted_before = stream.predictions()
    for x, fed in interleaved_feed(Xs, lengths):
        got = stream.update(x)
        for i in range(3):
            expected = q._stream_predictions(q.quantized_outputs(Xs[i : i + 1, : fed[i]]))[0]
            np.testing.assert_array_equal(got[i], expected)
    np.testing.assert_array_equal(stream.n_timesteps_seen_, lengths)
    # at the end: predict_proba (classifier) or predict (regressor) of the sequences
    final = q.predict_proba(Xs) if task in ("classification", "multilabel") else q.predict(Xs)
    np.testing.assert_array_equal(stream.predictions(), final)
    # before any timestep: the readout is 0, the outputs are b_out
    np.testing.assert_array_equal(
        predicted_before, q._stream_predictions(np.tile(q._bias("bias_out"), (3, 1))))


def test_int8_streamer_pickles_mid_stream_and_its_state_round_trips(rng):
    model, X, _ = fitted(rng, n=40, T=7, task="multilabel", readout="max", window=3)
    q = quantize(model, X)
    stream = q.streamer(2)
    for t in range(4):  # a window partly filled
        stream.update(X[:2, t])
    state = stream.state
    d = X.shape[2]
    # integers, but for the raw float32 values of the last timestep (for its change)
    np.testing.assert_array_equal(state[:, -1 - d : -1], X[:2, 3].astype(np.float32))
    integers = np.delete(state, np.s_[-1 - d : -1], axis=1)
    assert (integers == np.round(integers)).all()
    copy = pickle.loads(pickle.dumps(stream))
    other = q.streamer(2)
    other.state = state
    for t in range(4, 7):
        expected = stream.update(X[:2, t])
        np.testing.assert_array_equal(copy.update(X[:2, t]), expected)
        np.testing.assert_array_equal(other.update(X[:2, t]), expected)
    np.testing.assert_array_equal(expected, q.predict_proba(X[:2]))
    bad = state.copy()
    bad[0, 0] = 40000  # beyond the int16 range of h
    with pytest.raises(ValueError, match="int16"):
        other.state = bad
    bad = state.copy()
    bad[0, 1] = 0.5
    with pytest.raises(ValueError, match="state holds"):
        other.state = bad


def test_int8_streamer_saturates_huge_values_as_predict_does(rng):
    model, X, _ = fitted(rng, n=40, T=5)
    q = quantize(model, X)
    big = X[:1].copy()
    big[0, 2, 1] = 1e300  # beyond float32: saturates, as in predict
    stream = q.streamer()
    for t in range(5):
        got = stream.update(big[0, t])
    np.testing.assert_array_equal(got, q.predict_proba(big)[0])
    with pytest.raises(ValueError, match="NaN in some channels only, or inf"):
        stream.update([np.inf, 0.0, 0.0])


@pytest.mark.parametrize("task", ["regression", "poisson"])
def test_int8_regressor_predicts_like_the_float_model(task):
    # the output map stays out of the int8 bias: targets of any offset and scale
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12, 3))
    signal = X[:, :, 0].mean(axis=1) + 0.5 * X[:, -1, 1]
    if task == "poisson":
        y, params = rng.poisson(np.exp(1.5 + signal)), dict(loss="poisson")
    else:
        y, params = 1000.0 + 50.0 * signal, {}
    reg = FastGRNNRegressor(16, max_iter=40, random_state=0, **params).fit(X[:200], y[:200])
    q = quantize(reg, X[:200])
    np.testing.assert_array_equal(q.output_offset_, reg._maps.output_offset.astype(np.float32))
    assert q.score(X[200:], y[200:]) == pytest.approx(reg.score(X[200:], y[200:]), abs=0.02)
    relative = np.abs(q.predict(X[200:]) - reg.predict(X[200:])) / np.abs(reg.predict(X[200:]))
    assert np.median(relative) < 0.01
    assert q.predict(X[:3]).shape == (3,)
    assert not hasattr(q, "predict_proba")
    from sklearn.base import is_regressor

    assert is_regressor(q)


def test_quantize_refuses_what_it_can_not_read_out(rng):
    model, X, _ = fitted(rng, n=30)
    model.out_activation_ = "softmax2"
    with pytest.raises(ValueError, match="output activations"):
        quantize(model, X)
