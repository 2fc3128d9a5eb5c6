"""Random crops: each training epoch reads half of the sequences as a random
part of themselves (``crop_fraction``)."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn._training import TrainingRun
from sklearn_fastgrnn.export import load_weights, save_weights

from .conftest import materialized, needs_compiler, padded_model


@pytest.mark.parametrize("estimator, params, fraction, schedule", [
    (FastGRNNClassifier, {"window": 4}, 0.3, "adaptive"),
    (FastGRNNClassifier, {"window": 9}, 0.3, "adaptive"),
    (FastGRNNClassifier, {"window": 3}, 1.0, "constant"),
    (FastGRNNClassifier, {"window": 1, "crop_fraction": 0.5}, 0.5, "adaptive"),
    (FastGRNNClassifier, {"window": 4, "crop_fraction": 1}, 1.0, "constant"),
    (FastGRNNClassifier, {"window": 4, "learning_rate": "constant"}, 0.3, "constant"),
    (FastGRNNRegressor, {"window": 4}, 1.0, "constant"),
    (FastGRNNRegressor, {"window": 2, "crop_fraction": 0.25}, 0.25, "adaptive"),
])
def test_auto_crop_fraction_and_its_learning_rate(estimator, params, fraction, schedule):
    model, X = padded_model(estimator, **params)
    assert model.crop_fraction_ == fraction
    assert model._schedule.kind == schedule
    assert np.isfinite(model.predict(X)).all()


def _batches_read(monkeypatch, epochs, path, **params):
    """The timesteps each training batch row read, over ``epochs`` epochs of a fit
    on sequences whose values name their place: channel 0 holds the timestep
    (1-based), channel 1 the sequence; ``path``: the epochs in one C call
    ("c", the steps where the C loop reads them) or batch by batch ("python").
    Returns (rows, lengths): a list of (sequence, timesteps read) and the real
    length of each sequence."""
    rng = np.random.default_rng(1)
    n, T = 24, 40
    lengths = rng.integers(12, T + 1, n)
    X = np.full((n, T, 2), np.nan)
    for i, length in enumerate(lengths):
        X[i, :length, 0] = np.arange(1, length + 1)
        X[i, :length, 1] = i
    y = np.arange(n) % 2
    rows = []
    original = TrainingRun._batch

    def spy(self, idx, batch_lengths, uniform=False):
        Xb, padded = original(self, idx, batch_lengths, uniform)
        k = self.estimator.window_
        for j, (i, steps) in enumerate(zip(idx, batch_lengths)):
            read = materialized(Xb)[:steps, j, :-1].reshape(steps * k, 2)
            assert (read[:, 1] == i).all()  # only sequence i, no padding
            rows.append((int(i), read[:, 0].astype(int)))
        return Xb, padded

    def spy_in_c(self, order):
        (data, step), bases = original_rows(self, order)
        flat, d, k = data.ravel(), self.layout.n_inputs, self.estimator.window_
        for i, base in zip(order, bases):
            steps = self.lengths[i]
            read = np.concatenate([flat[base + t * step:][:d] for t in range(steps)])
            read = read.reshape(steps * k, 2)
            assert (read[:, 1] == i).all()  # only sequence i, no padding
            rows.append((int(i), read[:, 0].astype(int)))
        return (data, step), bases

    original_rows = TrainingRun._epoch_rows
    if path == "c":
        monkeypatch.setattr(TrainingRun, "_epoch_rows", spy_in_c)
    else:
        monkeypatch.setattr(TrainingRun, "_compiled_epoch", lambda *args: None)
        monkeypatch.setattr(TrainingRun, "_batch", spy)
    params = {"hidden_size": 4, "max_iter": epochs, "random_state": 0, "dtype": "float64",
              "scale_input": False, "change_channels": False, "envelope_width": 0,
              "batch_size": 8, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastGRNNClassifier(**params).fit(X, y)
    return rows, lengths


# the epochs in C (with a compiler) and batch by batch in Python
PATHS = pytest.mark.parametrize("path", [pytest.param("c", marks=needs_compiler), "python"])


@PATHS
@pytest.mark.parametrize("window, shift_windows", [(1, False), (3, False), (3, True), (5, True)])
def test_an_epoch_reads_half_of_the_sequences_as_parts_of_themselves(
        monkeypatch, window, shift_windows, path):
    epochs, fraction = 6, 0.3
    rows, lengths = _batches_read(monkeypatch, epochs, path, window=window,
                                  shift_windows=shift_windows, crop_fraction=fraction)
    assert len(rows) == epochs * len(lengths)
    whole = 0
    starts = set()
    for i, read in rows:
        length = lengths[i]
        first = read[0]
        copies = int(np.argmax(read != first)) - 1 if (read != first).any() else len(read) - 1
        # a shift reads the timesteps before a part, or, at the sequence's
        # start, copies of its first timestep
        assert copies < window and (copies == 0 or first == 1)
        body = read[copies:]
        last = int(body.max())
        # consecutive timesteps, then the sequence's last one repeated to the
        # end of the last window
        n_real = last - first + 1
        np.testing.assert_array_equal(body[:n_real], np.arange(first, last + 1))
        assert (body[n_real:] == length).all() and len(body) - n_real < window
        assert 1 <= first and last <= length
        # a part has at least crop_fraction of the timesteps
        assert n_real >= np.ceil(fraction * length)
        if not shift_windows:
            assert copies == 0
        whole += first == 1 and last == length
        starts.add(first)
    assert 0.3 < whole / len(rows) < 0.7  # half of them are cropped (of 144 rows)
    assert len(starts) > 10


@PATHS
@pytest.mark.parametrize("window", [1, 4])
def test_without_crops_every_epoch_reads_the_whole_sequences(monkeypatch, window, path):
    rows, lengths = _batches_read(monkeypatch, 3, path, window=window, shift_windows=False,
                                  crop_fraction=1.0)
    assert len(rows) == 3 * len(lengths)
    for i, read in rows:
        real = read[:lengths[i]]
        np.testing.assert_array_equal(real, np.arange(1, lengths[i] + 1))


def test_crops_refit_to_the_bit_and_change_the_fit():
    model, X = padded_model(FastGRNNClassifier, window=4, max_iter=6)
    again, _ = padded_model(FastGRNNClassifier, window=4, max_iter=6)
    plain, _ = padded_model(FastGRNNClassifier, window=4, max_iter=6, crop_fraction=1.0,
                            learning_rate="adaptive")
    assert model.crop_fraction_ == 0.3 and plain.crop_fraction_ == 1.0
    for name, value in model.coefs_.items():
        np.testing.assert_array_equal(value, again.coefs_[name])
    assert any(not np.array_equal(value, plain.coefs_[name])
               for name, value in model.coefs_.items())


def test_training_goes_on_with_crops():
    model, X = padded_model(FastGRNNClassifier, window=4, max_iter=3)
    y = model.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.partial_fit(X, y)
        assert model.crop_fraction_ == 0.3 and model.n_iter_ == 4
        model.set_params(crop_fraction=0.6).partial_fit(X, y)  # training only: any value
        assert model.crop_fraction_ == 0.6 and model.n_iter_ == 5
    assert clone(model).crop_fraction == 0.6


def test_crops_learn_a_long_oscillation():
    """Two frequencies of noisy sines of 400 steps, at random phases and
    amplitudes: the class holds in any part of a series, as crops assume."""
    rng = np.random.default_rng(0)

    def sines(n):
        y = rng.integers(0, 2, n)
        t = np.arange(400)
        phase, amplitude = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.5, 2, n)
        X = amplitude[:, None] * np.sin(2 * np.pi * t / (np.where(y, 20, 31)[:, None])
                                         + phase[:, None])
        return X + 0.3 * rng.standard_normal(X.shape), y

    X, y = sines(40)
    X_test, y_test = sines(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = FastGRNNClassifier(hidden_size=8, random_state=0).fit(X, y)
    assert model.window_ == 8 and model.crop_fraction_ == 0.3
    assert model.score(X_test, y_test) >= 0.95


def test_old_models_and_files_read_whole_sequences(tmp_path):
    model, X = padded_model(FastGRNNClassifier, window=4)
    old = pickle.loads(pickle.dumps(model))
    del old.crop_fraction_, old.crop_fraction
    old = pickle.loads(pickle.dumps(old))
    assert old.crop_fraction == 1.0 and old.crop_fraction_ == 1.0
    np.testing.assert_array_equal(old.predict_proba(X), model.predict_proba(X))
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    assert load_weights(path).crop_fraction == "auto"
