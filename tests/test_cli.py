"""The command line: train, predict, info on small files, and how it fails."""

import concurrent.futures
import io
import os
import pickle
import resource
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import Perceptron
from sklearn.pipeline import Pipeline

import sklearn_fastgrnn
from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn.__main__ import main
from sklearn_fastgrnn.preprocessing import SequenceScaler, make_fastgrnn_pipeline

ROOT = Path(sklearn_fastgrnn.__file__).resolve().parents[1]


def run_cli(*args, cwd, file_size_limit=None, env=None):
    """``python -m sklearn_fastgrnn *args`` on this checkout's code, in a subprocess."""
    environment = {k: v for k, v in os.environ.items() if k != "SKLEARN_FASTGRNN_DEBUG"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environment.update(env or {})

    def limit():  # writes beyond the limit raise EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "sklearn_fastgrnn", *map(str, args)], cwd=cwd,
        capture_output=True, text=True, timeout=300, env=environment,
        preexec_fn=limit if file_size_limit is not None else None,
    )


def assert_one_error(result, fragment, status=1):
    """Exit status, exactly one ``error:`` line holding ``fragment``, no traceback."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]
    return errors[0]




def _data(rng, n=80, T=4, d=2):
    X = rng.standard_normal((n, T, d))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y


def test_train_predict_info_with_npz(rng, tmp_path, capsys):
    X, y = _data(rng)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    model = tmp_path / "m.joblib"
    main(["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "5",
          "--hidden-size", "4", "--out", str(model), "--quiet"])
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "model size:" in out and "parameters:" in out
    clf = joblib.load(model)  # the estimator alone: it scales its input itself
    assert type(clf).__name__ == "FastGRNNClassifier" and clf.scale_input
    assert clf.n_channels_ == 2 and clf.n_iter_ <= 5
    main(["predict", "--model", str(model), "--data", str(tmp_path / "d.npz"),
          "--out", str(tmp_path / "p.txt")])
    predicted = np.loadtxt(tmp_path / "p.txt", dtype=int)
    np.testing.assert_array_equal(predicted, clf.predict(X))
    main(["info", "--model", str(model)])
    out = capsys.readouterr().out
    assert "4 timesteps x 2 channels" in out and f"parameters: {clf.n_params_}" in out
    assert "tensor" in out and "bias_out" in out  # the per-tensor summary


def test_info_and_export_of_a_quantized_model(rng, tmp_path, capsys):
    from sklearn_fastgrnn import FastGRNNClassifier, quantize

    X, y = _data(rng)
    clf = FastGRNNClassifier(hidden_size=4, max_iter=3, random_state=0).fit(X, y)
    joblib.dump(quantize(clf, X), tmp_path / "q.joblib")
    main(["info", "--model", str(tmp_path / "q.joblib")])
    out = capsys.readouterr().out
    assert "model: QuantizedFastGRNN" in out and "int8" in out
    assert "cell: hidden_size=4," in out
    main(["export", "--model", str(tmp_path / "q.joblib"), "--format", "c",
          "--out", str(tmp_path / "c")])
    assert (tmp_path / "c" / "fastgrnn.c").exists()
    with pytest.raises(SystemExit, match="error: "):
        main(["export", "--model", str(tmp_path / "q.joblib"), "--format", "onnx",
              "--out", str(tmp_path / "q.onnx")])


def test_train_on_csv_with_target_and_n_timesteps(rng, tmp_path, capsys):
    X, y = _data(rng)
    flat = X.reshape(len(X), -1)
    lines = ["label," + ",".join(f"f{i}" for i in range(flat.shape[1]))]
    lines += [f"{'ab'[label]}," + ",".join(map(str, row)) for label, row in zip(y, flat)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    model = tmp_path / "m.joblib"
    main(["train", "--data", str(tmp_path / "d.csv"), "--target", "label",
          "--n-timesteps", "4", "--max-iter", "3", "--out", str(model), "--quiet"])
    clf = joblib.load(model)
    assert list(clf.classes_) == ["a", "b"]
    assert (clf.n_timesteps_, clf.n_channels_) == (4, 2)
    capsys.readouterr()
    main(["predict", "--model", str(model), "--data", str(tmp_path / "d.csv"),
          "--target", "label"])
    assert set(capsys.readouterr().out.split()) <= {"a", "b"}


def test_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["predict", "--model", str(tmp_path / "none.joblib"), "--data", "x.npz"])
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="needs --target"):
        main(["train", "--data", str(tmp_path / "d.csv")])
    with pytest.raises(SystemExit, match="is not a column"):
        main(["train", "--data", str(tmp_path / "d.csv"), "--target", "label"])


@pytest.mark.slow
def test_default_main_job(tmp_path):
    """`python -m sklearn_fastgrnn train` as README runs it."""
    result = run_cli("train", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch" not in result.stdout  # one line sums up training by default
    assert len(result.stdout.splitlines()) <= 8
    assert "first half / second half: 898 train, 899 test" in result.stdout
    summary = next(line for line in result.stdout.splitlines() if line.startswith("training: "))
    assert " epochs in " in summary and "kept the average of the weights up to epoch" in summary
    accuracy = float(result.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.9
    assert (tmp_path / "model.joblib").exists()
    assert "model size: " in result.stdout
    assert "input scaling: the estimator's own (scale_input" in result.stdout
    model = joblib.load(tmp_path / "model.joblib")
    assert type(model).__name__ == "FastGRNNClassifier" and model.scale_input


def test_help_for_each_command(capsys):
    for command in ("train", "predict", "info", "export", "digits"):
        with pytest.raises(SystemExit) as raised:
            main([command, "--help"])
        assert raised.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "usage:" in out
        if command in ("train", "predict"):  # how a CSV is read
            assert "first row is the header (column names) unless --no-header" in out
            assert "0-based index" in out
        if command not in ("train", "digits"):
            assert ".safetensors" in out


def _accuracy(out):
    return float(out.split("test accuracy: ")[1].split()[0])


def _write_csv(path, X, y=None, *, header=True, ids=None):
    """X flattened time-major, the label first (when given) and the key last."""
    flat = np.asarray(X).reshape(len(X), -1)
    names = ([] if y is None else ["label"]) + [f"x{i}" for i in range(flat.shape[1])]
    names += [] if ids is None else ["key"]
    lines = [",".join(names)] if header else []
    for i, row in enumerate(flat):
        cells = ([] if y is None else [str(y[i])]) + [repr(float(v)) for v in row]
        lines.append(",".join(cells + ([] if ids is None else [ids[i]])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    """The digits as CSV files: as they are, and shifted and stretched (x100 + 500)."""
    from sklearn_fastgrnn.datasets import load_digits_sequences

    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits_sequences()
    return (_write_csv(root / "raw.csv", X, y),
            _write_csv(root / "shifted.csv", X * 100 + 500, y))


def test_train_scales_its_input_by_default(digits_csv, tmp_path, capsys):
    """Values x100+500 learn as well as the raw ones, with the estimator's own input
    scaling (the default: the model file is the estimator alone) or a scaler step."""
    options = ["--target", "label", "--n-timesteps", "8", "--hidden-size", "16",
               "--max-iter", "15", "--quiet"]
    accuracy = {}
    for csv_file, scaler in ((digits_csv[0], None), (digits_csv[1], None),
                             (digits_csv[1], "sequence")):
        out_file = tmp_path / f"{csv_file.stem}-{scaler}.joblib"
        main(["train", "--data", str(csv_file), *options, "--out", str(out_file),
              *(["--scaler", scaler] if scaler else [])])
        out = capsys.readouterr().out
        accuracy[csv_file.stem, scaler] = _accuracy(out)
        assert ("SequenceScaler" in out) == (scaler == "sequence"), out
        model = joblib.load(out_file)
        assert (type(model).__name__ == "Pipeline") == (scaler == "sequence")
    raw, shifted = accuracy["raw", None], accuracy["shifted", None]
    assert raw >= 0.8, accuracy  # learnable in 15 epochs
    assert abs(shifted - raw) <= 0.02, accuracy
    assert abs(accuracy["shifted", "sequence"] - raw) <= 0.02, accuracy
    # the scaling is what helps: without any, x100+500 does not learn
    main(["train", "--data", str(digits_csv[1]), *options, "--no-scale-input",
          "--out", str(tmp_path / "unscaled.joblib")])
    out = capsys.readouterr().out
    assert "input scaling: none, the model reads the values as they are" in out
    assert _accuracy(out) < raw - 0.3
    assert joblib.load(tmp_path / "unscaled.joblib").scale_input is False


def test_standard_scaler_and_scaler_none(rng, tmp_path, capsys):
    X, y = _data(rng)
    _write_csv(tmp_path / "d.csv", X, y)
    for scaler, steps in (("standard", ["require_2d", "standardscaler", "fastgrnnclassifier"]),
                          ("none", None)):
        main(["train", "--data", str(tmp_path / "d.csv"), "--target", "label",
              "--n-timesteps", "4", "--scaler", scaler, "--max-iter", "2", "--quiet",
              "--out", str(tmp_path / "m.joblib")])
        model = joblib.load(tmp_path / "m.joblib")
        assert (list(model.named_steps) if steps else type(model).__name__) == (
            steps or "FastGRNNClassifier")
    main(["train", "--scaler", "standard", "--max-iter", "1", "--hidden-size", "2",
          "--quiet", "--out", str(tmp_path / "digits.joblib")])  # bundled 3D digits
    assert joblib.load(tmp_path / "digits.joblib")[-1].n_timesteps_ == 8


def test_training_options_reach_the_classifier(rng, tmp_path):
    from sklearn_fastgrnn import FastGRNNClassifier

    X, y = _data(rng, n=120, T=4, d=3)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    main(["train", "--data", str(tmp_path / "d.npz"), "--hidden-size", "6",
          "--batch-size", "16", "--learning-rate", "0.02", "--early-stopping",
          "--validation-fraction", "0.2", "--max-iter", "4", "--w-rank", "2",
          "--u-rank", "3", "--sparsity", "0.5", "--quiet",
          "--out", str(tmp_path / "m.joblib")])
    params = joblib.load(tmp_path / "m.joblib").get_params()
    expected = dict(hidden_size=6, batch_size=16, learning_rate_init=0.02,
                    early_stopping=True, validation_fraction=0.2, max_iter=4, w_rank=2,
                    u_rank=3, sparsity_w=0.5, sparsity_u=0.5)
    assert {name: params[name] for name in expected} == expected
    main(["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "1", "--quiet",
          "--out", str(tmp_path / "m.joblib")])
    params = joblib.load(tmp_path / "m.joblib").get_params()
    defaults = FastGRNNClassifier().get_params()  # options not given keep these
    for name in ("hidden_size", "batch_size", "learning_rate_init", "early_stopping",
                 "validation_fraction", "w_rank", "u_rank", "sparsity_w", "sparsity_u"):
        assert params[name] == defaults[name], name


def test_auto_values_are_passed_through():
    from sklearn_fastgrnn.__main__ import _estimator_params, build_parser

    args = build_parser().parse_args(["train", "--batch-size", "auto", "--max-iter", "auto",
                                      "--hidden-size", "auto", "--no-early-stopping"])
    params = _estimator_params(args, "classification")
    assert (params["batch_size"], params["max_iter"], params["hidden_size"],
            params["early_stopping"]) == ("auto", "auto", "auto", False)
    assert "learning_rate_init" not in params
    args = build_parser().parse_args(["train", "--batch-size", "auto"])
    assert "hidden_size" not in _estimator_params(args, "classification")


def test_csv_without_header_and_target_by_index(rng, tmp_path, capsys):
    X, y = _data(rng)
    _write_csv(tmp_path / "named.csv", X, y)
    _write_csv(tmp_path / "bare.csv", X, y, header=False)
    options = ["--n-timesteps", "4", "--max-iter", "3", "--hidden-size", "4", "--quiet"]
    main(["train", "--data", str(tmp_path / "named.csv"), "--target", "label", *options,
          "--out", str(tmp_path / "named.joblib")])
    main(["train", "--data", str(tmp_path / "bare.csv"), "--no-header", "--target", "0",
          *options, "--out", str(tmp_path / "bare.joblib")])
    capsys.readouterr()
    named, bare = (joblib.load(tmp_path / f"{n}.joblib") for n in ("named", "bare"))
    assert bare.n_features_in_ == 8 and not hasattr(bare, "feature_names_in_")
    for key in named.coefs_:  # same data, same split, same weights
        np.testing.assert_array_equal(bare.coefs_[key], named.coefs_[key])
    outputs = []
    for data, target in (("named.csv", "label"), ("named.csv", "0"), ("named.csv", "-9"),
                         ("bare.csv", "0")):
        main(["predict", "--model", str(tmp_path / "bare.joblib"), "--data",
              str(tmp_path / data), "--target", target,
              *(["--no-header"] if data == "bare.csv" else [])])
        outputs.append(capsys.readouterr().out)
    assert len(set(outputs)) == 1 and len(outputs[0].split()) == len(X)
    np.testing.assert_array_equal(np.array(outputs[0].split(), dtype=int), bare.predict(X))


def test_a_header_of_numbers_warns(rng, tmp_path, capsys):
    X, y = _data(rng, n=40)
    main(["train", "--data", str(_write_csv(tmp_path / "d.csv", X, y)), "--target",
          "label", "--n-timesteps", "4", "--max-iter", "1", "--quiet",
          "--out", str(tmp_path / "m.joblib")])
    _write_csv(tmp_path / "bare.csv", X, header=False)
    capsys.readouterr()
    main(["predict", "--model", str(tmp_path / "m.joblib"), "--data",
          str(tmp_path / "bare.csv")])
    captured = capsys.readouterr()
    assert "warning: the first line of" in captured.err and "--no-header" in captured.err
    assert len(captured.out.split()) == len(X) - 1  # the first line was the header


def test_predict_proba_and_id_column(rng, tmp_path, capsys):
    import csv

    X, y = _data(rng, n=90)
    labels = np.array(["cat", "dog", "emu"])[(y + (X[:, 0, 1] > 1)) % 3]
    ids = [f"s-{i:03d}" for i in range(len(X))]
    _write_csv(tmp_path / "keyed.csv", X, labels, ids=ids)
    _write_csv(tmp_path / "plain.csv", X, labels)
    main(["train", "--data", str(tmp_path / "keyed.csv"), "--target", "label",
          "--id-column", "key", "--n-timesteps", "4", "--max-iter", "3", "--quiet",
          "--out", str(tmp_path / "m.joblib")])
    model = joblib.load(tmp_path / "m.joblib")
    assert model.n_features_in_ == 8  # the key is not a feature
    flat = X.reshape(len(X), -1)
    capsys.readouterr()
    main(["predict", "--model", str(tmp_path / "m.joblib"), "--data",
          str(tmp_path / "plain.csv"), "--target", "label", "--proba",
          "--out", str(tmp_path / "p.csv")])
    with open(tmp_path / "p.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["cat", "dog", "emu"] and len(rows) == len(X)
    proba = np.array(rows, dtype=float)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(proba, model.predict_proba(flat), rtol=1e-12)
    capsys.readouterr()
    keyed = ["predict", "--model", str(tmp_path / "m.joblib"), "--data",
             str(tmp_path / "keyed.csv"), "--target", "label"]
    main([*keyed, "--proba", "--id-column", "-1"])  # the key, by index, to stdout
    header, *rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert header == ["key", "cat", "dog", "emu"] and [r[0] for r in rows] == ids
    main([*keyed, "--id-column", "key"])
    header, *rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert header == ["key", "prediction"] and [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == model.predict(flat).tolist()
    with pytest.raises(SystemExit, match="If it is a key, pass --id-column key"):
        main(keyed)


def test_safetensors_models_in_predict_info_and_export(rng, tmp_path, capsys):
    X, y = _data(rng)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    main(["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "3", "--hidden-size",
          "4", "--quiet", "--out", str(tmp_path / "m.joblib")])
    main(["export", "--model", str(tmp_path / "m.joblib"), "--format", "safetensors",
          "--out", str(tmp_path / "m.safetensors")])
    (tmp_path / "weights.bin").write_bytes((tmp_path / "m.safetensors").read_bytes())
    capsys.readouterr()
    predictions = []
    for model in ("m.joblib", "m.safetensors", "weights.bin"):  # by name, by content
        main(["predict", "--model", str(tmp_path / model), "--data", str(tmp_path / "d.npz"),
              "--proba"])
        predictions.append(capsys.readouterr().out)
    assert predictions[0] == predictions[1] == predictions[2]
    main(["info", "--model", str(tmp_path / "m.safetensors")])
    out = capsys.readouterr().out
    assert "model: FastGRNNClassifier" in out
    assert "a weights file" in out and "trained:" not in out
    main(["export", "--model", str(tmp_path / "m.safetensors"), "--format", "onnx",
          "--out", str(tmp_path / "m.onnx")])
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_a_pickle_named_safetensors_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SystemExit, match="is not a readable safetensors file"):
        main(["info", "--model", str(tmp_path / "evil.safetensors")])
    assert not marker.exists()


def test_int8_train_predict_info_export(rng, tmp_path, capsys):
    from sklearn_fastgrnn.compression import QuantizedFastGRNN

    X, y = _data(rng, n=120)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    common = ["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "5", "--int8",
              "--quiet"]
    main([*common, "--out", str(tmp_path / "q.joblib")])
    out = capsys.readouterr().out
    assert "(int8;" in out and "before quantisation)" in out
    q = joblib.load(tmp_path / "q.joblib")  # the int8 model alone: it reads raw values
    assert isinstance(q, QuantizedFastGRNN)
    assert f"model size: {q.model_size_bytes_ / 1024:.2f} KB" in out
    main(["predict", "--model", str(tmp_path / "q.joblib"), "--data", str(tmp_path / "d.npz")])
    predicted = np.array(capsys.readouterr().out.split(), dtype=int)
    np.testing.assert_array_equal(predicted, q.predict(X))
    main(["info", "--model", str(tmp_path / "q.joblib")])
    out = capsys.readouterr().out
    assert "QuantizedFastGRNN" in out and "int8" in out
    with pytest.raises(SystemExit, match="only --format c"):
        main(["export", "--model", str(tmp_path / "q.joblib"), "--format", "onnx",
              "--out", str(tmp_path / "out")])
    main(["export", "--model", str(tmp_path / "q.joblib"), "--format", "c",
          "--out", str(tmp_path / "c")])
    assert "int8" in (tmp_path / "c" / "fastgrnn.c").read_text()
    # behind a scaler step the C code would read unscaled data: refused
    main([*common, "--scaler", "sequence", "--out", str(tmp_path / "scaled.joblib")])
    assert list(joblib.load(tmp_path / "scaled.joblib").named_steps) == [
        "sequencescaler", "quantizedfastgrnn"]
    with pytest.raises(SystemExit, match="scales its input first"):
        main(["export", "--model", str(tmp_path / "scaled.joblib"), "--format", "c",
              "--out", str(tmp_path / "out")])


def test_info_wording(rng, tmp_path, capsys):
    X = rng.standard_normal((60, 5))  # 2D, n_timesteps None: 5 timesteps of 1 channel
    y = (X.sum(axis=1) > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    main(["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "2", "--quiet",
          "--out", str(tmp_path / "m.joblib")])
    capsys.readouterr()
    main(["info", "--model", str(tmp_path / "m.joblib")])
    out = capsys.readouterr().out
    assert "input: 5 timesteps x 1 channel (5 features in 2D)" in out
    assert out.count("model size:") == 1 and "EdgeML" in out
    size = (tmp_path / "m.joblib").stat().st_size
    assert f"file: {tmp_path / 'm.joblib'}, {size} bytes" in out and "optimiser state" in out


def test_a_closed_stdout_stops_quietly(files):
    """``info | head -1``: the reader leaves before the output; no error line."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    environment.pop("SKLEARN_FASTGRNN_DEBUG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "sklearn_fastgrnn", "info", "--model", "model.joblib"],
        cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )
    process.stdout.close()  # before the interpreter has started: every write fails
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1
    assert stderr == "", stderr


# ------------------------------------------------ failures: one line, no traceback
def _npy_bytes(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _npz_of_members(path, **members):
    """A zip archive with one ``name.npy`` member per keyword, holding those bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)


def _deeply_nested_weights(path):
    """The bytes of weights file ``path`` with 100,000 nested JSON arrays added to
    its metadata."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(path, framework="np") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        text = f.metadata()["sklearn_fastgrnn"]
    junk = "[" * 100_000 + "]" * 100_000
    return save(tensors, {"sklearn_fastgrnn": text[:-1] + f', "junk": {junk}}}'})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained model, its data, and broken model and data files."""
    from sklearn_fastgrnn import FastGRNNClassifier
    from sklearn_fastgrnn.export import save_weights

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X, y = _data(rng, n=40, T=4, d=2)
    clf = FastGRNNClassifier(hidden_size=3, max_iter=2, random_state=0).fit(X, y)
    joblib.dump(clf, root / "model.joblib")
    good = (root / "model.joblib").read_bytes()
    (root / "empty.joblib").write_bytes(b"")
    (root / "random.joblib").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "truncated.joblib").write_bytes(good[: len(good) // 2])
    joblib.dump({"model": clf}, root / "dict.joblib")
    joblib.dump(FastGRNNClassifier(), root / "unfitted.joblib")
    save_weights(clf, root / "model.safetensors")
    weights = (root / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(weights[: len(weights) // 2])
    flat = X.reshape(len(X), -1)
    header = "label," + ",".join(f"f{i}" for i in range(flat.shape[1]))
    rows = [f"{label}," + ",".join(map(str, row)) for label, row in zip(y, flat)]
    (root / "d.csv").write_text("\n".join([header, *rows]) + "\n")
    (root / "short.csv").write_text("\n".join([header, rows[0], "1,2"]) + "\n")
    (root / "long.csv").write_text("\n".join([header, rows[0], rows[1] + ",3"]) + "\n")
    (root / "header.csv").write_text(header + "\n")
    (root / "latin1.csv").write_bytes(("label,f0\n1,caf\xe9\n").encode("latin-1"))
    (root / "strings.csv").write_text(
        "\n".join([header, *(f"{'ab'[label]}" + r[1:] for label, r in zip(y, rows))]) + "\n"
    )
    np.savez(root / "d.npz", X=X, y=y)
    np.savez(root / "wide.npz", X=rng.standard_normal((40, 64)), y=y)
    np.savez(root / "one_class.npz", X=X, y=np.zeros(len(X)))
    X_nan = X.copy()
    X_nan[3, 1, 0] = np.nan
    np.savez(root / "nan.npz", X=X_nan, y=y)
    (root / "truncated.npz").write_bytes((root / "d.npz").read_bytes()[:300])
    np.savez(root / "objects.npz", X=np.array([[1.0], "a"], dtype=object), y=y)
    _npz_of_members(root / "short_member.npz", X=_npy_bytes(X)[:300], y=_npy_bytes(y))
    huge = io.BytesIO()  # a header claiming 80 GB, and 64 bytes of data
    np.lib.format.write_array_header_1_0(
        huge, {"descr": "<f8", "fortran_order": False, "shape": (10**10,)})
    _npz_of_members(root / "huge_header.npz", X=huge.getvalue() + bytes(64), y=_npy_bytes(y))
    (root / "nested.safetensors").write_bytes(_deeply_nested_weights(root / "model.safetensors"))
    (root / "pickle.npz").write_bytes(pickle.dumps({"X": X, "y": y}))
    (root / "joblib.safetensors").write_bytes(good)  # a pickle is never read as weights
    joblib.dump(make_fastgrnn_pipeline(hidden_size=3, max_iter=2, random_state=0).fit(X, y),
                root / "scaled.joblib")
    joblib.dump(Perceptron().fit(flat, y), root / "perceptron.joblib")
    values = X[:, :, 0].sum(axis=1) + 0.5
    np.savez(root / "values.npz", X=X, y=values)
    np.savez(root / "words.npz", X=X, y=np.array(["up", "down"])[y])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joblib.dump(Pipeline([("sequencescaler", SequenceScaler())]).fit(X),
                    root / "scaler_only.joblib")
        joblib.dump(Pipeline([("sequencescaler", SequenceScaler()), ("fastgrnnregressor",
                    FastGRNNRegressor(3, max_iter=2, random_state=0))]).fit(X, values),
                    root / "regressor.joblib")
    return root


FAILURES = [  # (command line, what its error line says, exit status)
    (["info", "--model", "empty.joblib"], "empty.joblib is not a model file", 1),
    (["info", "--model", "random.joblib"], "random.joblib is not a model file", 1),
    (["info", "--model", "truncated.joblib"], "truncated.joblib is not a model file", 1),
    (["predict", "--model", "d.csv", "--data", "d.npz"], "d.csv is not a model file", 1),
    (["info", "--model", "truncated.safetensors"],
     "truncated.safetensors is not a readable safetensors file", 1),
    (["info", "--model", "dict.joblib"], "holds a dict, not a FastGRNNClassifier", 1),
    (["export", "--model", "unfitted.joblib", "--format", "c", "--out", "c"],
     "holds an unfitted FastGRNNClassifier", 1),
    (["predict", "--model", "model.joblib", "--data", "short.csv", "--target", "label"],
     "line 3 of short.csv has 2 values but the header has 9 columns", 1),
    (["predict", "--model", "model.joblib", "--data", "long.csv", "--target", "label"],
     "line 3 of long.csv has 10 values", 1),
    (["train", "--data", "header.csv", "--target", "label", "--out", "m.joblib"],
     "header.csv has a header but no data lines", 1),
    (["train", "--data", "latin1.csv", "--target", "label", "--out", "m.joblib"],
     "latin1.csv is not UTF-8 text", 1),
    (["predict", "--model", "model.joblib", "--data", "truncated.npz"],
     "truncated.npz is not a readable .npz archive", 1),
    (["train", "--data", "objects.npz", "--out", "m.joblib"],
     "array 'X' of objects.npz holds Python objects", 1),
    (["predict", "--model", "model.joblib", "--data", "pickle.npz"],
     "or pickled (which is not read: it can run code)", 1),
    (["predict", "--model", "model.joblib", "--data", "d.csv"],
     "one more than the model reads (8). If one of them is the label column, pass "
     "--target", 1),
    (["predict", "--model", "model.joblib", "--data", "strings.csv"],
     "If 'label' is the label column, pass --target label", 1),
    (["train", "--data", "wide.npz", "--n-timesteps", "7", "--max-iter", "1",
      "--out", "m.joblib"], "not divisible by n_timesteps=7", 1),
    (["train", "--data", "nan.npz", "--max-iter", "1", "--out", "m.joblib"],
     "X contains NaN in sample", 1),
    (["train", "--data", "one_class.npz", "--out", "m.joblib"],
     "hold one class only (0.0)", 1),
    (["train", "--data", "d.npz", "--test-size=-0.1"], "argument --test-size", 2),
    (["train", "--data", "d.npz", "--test-size", "1"], "argument --test-size", 2),
    (["train", "--data", "d.npz", "--class-weight", "0=x"], "argument --class-weight", 2),
    (["train", "--data", "d.npz", "--class-weight", "0=-1"], "argument --class-weight", 2),
    (["train", "--data", "d.npz", "--gate-nonlinearity", "Sigmoid"],
     "argument --gate-nonlinearity", 2),
    (["train", "--data", "d.npz", "--dtype", "float16"], "argument --dtype", 2),
    (["train", "--data", "d.npz", "--quiet", "--verbose"], "not allowed with argument", 2),
    (["digits", "--out", "digits.txt"], "name a .npz or a .csv file", 1),
    (["train", "--data", "d.npz", "--test-size", "1.5"], "argument --test-size", 2),
    (["train", "--data", "d.npz", "--hidden-size", "0"], "argument --hidden-size", 2),
    (["train", "--data", "d.npz", "--max-iter", "x"], "argument --max-iter", 2),
    (["train", "--out", "missing/dir/m.joblib"], "does not exist", 1),
    (["predict", "--model", "model.joblib", "--data", "d.npz", "--out", "missing/p.txt"],
     "does not exist", 1),
    (["train", "--data", "d.csv", "--target", "9"], "'9' is not a column of d.csv", 1),
    (["train", "--data", "d.csv", "--target", "label", "--no-header"],
     "which has no header (--no-header) and 9 columns; pass a 0-based index", 1),
    (["predict", "--model", "model.joblib", "--data", "d.npz", "--id-column", "0"],
     "--id-column names a column of a CSV file", 1),
    (["train", "--data", "d.csv", "--target", "label", "--id-column", "0"],
     "--target and --id-column name the same column", 1),
    (["train", "--data", "d.npz", "--scaler", "standard"],
     "--scaler standard scales each column of 2D data, but X of d.npz is 3D", 1),
    (["export", "--model", "scaled.joblib", "--format", "c", "--out", "c"],
     "scales its input first", 1),
    (["predict", "--model", "joblib.safetensors", "--data", "d.npz"],
     "joblib.safetensors is not a readable safetensors file", 1),
    (["predict", "--model", "perceptron.joblib", "--data", "d.csv", "--target", "label",
      "--proba"], "has no predict_proba; predict without --proba", 1),
    (["train", "--data", "d.npz", "--sparsity", "0"], "argument --sparsity", 2),
    (["train", "--data", "d.npz", "--batch-size", "many"], "argument --batch-size", 2),
    (["train", "--data", "d.npz", "--learning-rate", "0"], "must be > 0", 2),
    (["train", "--data", "d.npz", "--scaler", "minmax"], "argument --scaler", 2),
    *[(["train", "--data", "d.npz", f"{option}={value}"], f"argument {option}: must be a finite "
       f"number, got {value}", 2)
      for option in ("--learning-rate", "--validation-fraction", "--test-size", "--sparsity")
      for value in ("nan", "inf", "-inf", "NaN")],
    (["train", "--data", "short_member.npz", "--out", "m.joblib"],
     "array 'X' of short_member.npz is damaged or truncated: its header says shape "
     "(40, 4, 2) of float64 (2.6 KB), but the archive holds 172 bytes", 1),
    (["train", "--data", "huge_header.npz", "--out", "m.joblib"],
     "array 'X' of huge_header.npz is damaged or truncated: its header says shape "
     "(10000000000,) of float64 (80.0 GB), but the archive holds 64 bytes", 1),
    (["info", "--model", "nested.safetensors"],
     "its metadata nests JSON arrays or objects deeper", 1),
    (["train", "--data", "words.npz", "--task", "regression", "--out", "m.joblib"],
     "--task regression needs numbers to predict, but the targets of words.npz hold '", 1),
    (["train", "--data", "values.npz", "--task", "classification", "--loss", "poisson"],
     "argument --loss: chooses the loss of a regression", 2),
    (["train", "--data", "d.npz", "--task", "regression", "--class-weight", "balanced"],
     "argument --class-weight: weighs classes", 2),
    (["train", "--data", "values.npz", "--class-weight", "balanced", "--out", "m.joblib"],
     "--class-weight weighs classes, but the task inferred from values.npz is regression", 1),
    (["train", "--data", "d.npz", "--loss", "poisson", "--out", "m.joblib"],
     "--loss chooses the loss of a regression, but the task inferred from d.npz is "
     "classification. Pass --task regression", 1),
    (["train", "--data", "d.npz", "--task", "clustering"], "argument --task", 2),
    (["train", "--data", "d.npz", "--loss", "huber"], "argument --loss", 2),
    (["predict", "--model", "regressor.joblib", "--data", "d.npz", "--proba"],
     "is a FastGRNNRegressor: it predicts values, not class probabilities", 1),
    (["export", "--model", "regressor.joblib", "--format", "c", "--out", "c"],
     "scales its input first", 1),
    (["info", "--model", "scaler_only.joblib"],
     "holds a Pipeline, not a FastGRNNClassifier, FastGRNNRegressor", 1),
]


# one of each kind, also run as a real process (each costs an interpreter start)
IN_SUBPROCESS = [0, 5, 7, 11, 13, 16, 19, 22, 30, 31, 64, 70]


@pytest.mark.parametrize("index", range(len(FAILURES)),
                         ids=[" ".join(args) for args, _, _ in FAILURES])
def test_every_failure_is_one_error_line(files, index, monkeypatch, capsys):
    args, fragment, status = FAILURES[index]
    monkeypatch.chdir(files)
    with pytest.raises(SystemExit) as raised:
        main(args)
    stderr = capsys.readouterr().err
    if status == 2:  # argparse prints usage and its error line itself
        assert raised.value.code == 2
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and fragment in errors[0], stderr
    else:  # printed by the interpreter as one line, exit status 1
        message = raised.value.code
        assert isinstance(message, str) and message.startswith("error: "), message
        assert "\n" not in message and fragment in message, message
        assert "np.float64" not in message
    if args[0] == "train" and status == 1 and "--data" not in args:
        assert "Training" not in capsys.readouterr().out  # refused before training


@pytest.fixture(scope="module")
def subprocess_runs(files):
    """The command lines IN_SUBPROCESS, run at once in subprocesses."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(IN_SUBPROCESS, pool.map(
            lambda i: run_cli(*FAILURES[i][0], cwd=files), IN_SUBPROCESS)))


@pytest.mark.parametrize("index", IN_SUBPROCESS,
                         ids=[" ".join(FAILURES[i][0]) for i in IN_SUBPROCESS])
def test_failures_in_a_real_process(subprocess_runs, index):
    _, fragment, status = FAILURES[index]
    assert_one_error(subprocess_runs[index], fragment, status)


def test_debug_shows_the_traceback(files):
    for args, env in (
        (["--debug", "info", "--model", "empty.joblib"], None),
        (["info", "--model", "empty.joblib", "--debug"], None),
        (["info", "--model", "empty.joblib"], {"SKLEARN_FASTGRNN_DEBUG": "1"}),
    ):
        result = run_cli(*args, cwd=files, env=env)
        assert result.returncode == 1 and "Traceback" in result.stderr, result.stderr
        assert "EOFError" in result.stderr and result.stderr.rstrip().endswith(
            "fitted model.")  # the cause's traceback, then the error line


def test_predict_out_under_a_file_size_limit_keeps_the_old_file(files, tmp_path):
    rng = np.random.default_rng(1)
    X, _ = _data(rng, n=1500, T=4, d=2)  # 1,500 lines of predictions: > 2 KB
    np.savez(tmp_path / "big.npz", X=X)
    old = tmp_path / "pred.txt"
    old.write_bytes(b"previous predictions\n" * 10)
    before = old.read_bytes()
    result = run_cli("predict", "--model", files / "model.joblib", "--data",
                     tmp_path / "big.npz", "--out", old, cwd=tmp_path, file_size_limit=2048)
    assert_one_error(result, "File too large")
    assert old.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"big.npz", "pred.txt"}  # no temporary


def test_train_out_under_a_file_size_limit_prints_results_and_keeps_the_old_file(
    files, tmp_path
):
    old = tmp_path / "m.joblib"
    old.write_bytes(b"the previous model")
    result = run_cli("train", "--data", files / "d.npz", "--max-iter", "2", "--hidden-size",
                     "3", "--quiet", "--out", old, cwd=tmp_path, file_size_limit=2048)
    assert_one_error(result, "could not write the model")
    assert "test accuracy:" in result.stdout and "parameters:" in result.stdout
    assert old.read_bytes() == b"the previous model"
    assert {p.name for p in tmp_path.iterdir()} == {"m.joblib"}


def test_export_c_under_a_file_size_limit_keeps_both_old_files(files, tmp_path):
    from sklearn_fastgrnn.export import export_c

    header, source = export_c(joblib.load(files / "model.joblib"), tmp_path / "probe")
    sizes = os.path.getsize(header), os.path.getsize(source)
    assert sizes[0] < sizes[1]
    out = tmp_path / "c"
    out.mkdir()
    (out / "fastgrnn.h").write_text("old header")
    (out / "fastgrnn.c").write_text("old source")
    result = run_cli("export", "--model", files / "model.joblib", "--format", "c", "--out",
                     out, cwd=tmp_path, file_size_limit=(sizes[0] + sizes[1]) // 2)
    assert_one_error(result, "File too large")
    assert (out / "fastgrnn.h").read_text() == "old header"
    assert (out / "fastgrnn.c").read_text() == "old source"
    assert {p.name for p in out.iterdir()} == {"fastgrnn.h", "fastgrnn.c"}


# --------------------------------------------- special files (issue 20, item 10)
def test_out_through_a_symlink_replaces_its_target_and_keeps_the_link(files, tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to("real.txt")
    main(["predict", "--model", str(files / "model.joblib"), "--data",
          str(files / "d.npz"), "--out", str(link)])
    assert link.is_symlink() and os.readlink(link) == "real.txt"
    assert len(target.read_text().split()) == 40
    chained = tmp_path / "chained.joblib"  # a link to a link to a file not there yet
    (tmp_path / "middle").symlink_to("trained.joblib")
    chained.symlink_to("middle")
    main(["train", "--data", str(files / "d.npz"), "--max-iter", "1", "--hidden-size", "2",
          "--quiet", "--out", str(chained)])
    assert chained.is_symlink() and (tmp_path / "middle").is_symlink()
    assert joblib.load(tmp_path / "trained.joblib").predict(np.zeros((1, 4, 2))).shape == (1,)


def test_out_to_a_fifo_or_a_device_writes_through(files, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that opening to write can not block
    try:
        main(["predict", "--model", str(files / "model.joblib"), "--data",
              str(files / "d.npz"), "--out", str(fifo)])
        assert len(os.read(reader, 1 << 16).split()) == 40
    finally:
        os.close(reader)
    assert fifo.is_fifo()
    for args in (["predict", "--model", "model.joblib", "--data", "d.npz"],
                 ["train", "--data", "d.npz", "--max-iter", "1", "--hidden-size", "2",
                  "--quiet"],
                 ["export", "--model", "model.joblib", "--format", "safetensors"]):
        result = run_cli(*args, "--out", "/dev/null", cwd=files)
        assert result.returncode == 0, result.stderr
        assert "/dev/null" in result.stdout
        assert Path("/dev/null").is_char_device()
    result = run_cli("predict", "--model", "model.joblib", "--data", "d.npz", "--out",
                     "/dev/stdout", cwd=files)
    assert result.returncode == 0 and len(result.stdout.split("\n")) > 40, result.stderr


def test_out_to_a_socket_a_directory_link_or_a_loop_is_one_error_line(files, tmp_path):
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    (tmp_path / "dir").symlink_to(tmp_path)
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    try:
        for name, fragment in (("sock", "is a socket"), ("dir", "is a directory"),
                               ("loop1", "Too many levels of symbolic links")):
            with pytest.raises(SystemExit) as raised:
                main(["predict", "--model", str(files / "model.joblib"), "--data",
                      str(files / "d.npz"), "--out", str(tmp_path / name)])
            assert raised.value.code.startswith("error: ") and fragment in raised.value.code
            assert "\n" not in raised.value.code and "Errno" not in raised.value.code
    finally:
        server.close()
    assert (tmp_path / "sock").is_socket() and (tmp_path / "dir").is_symlink()


# ------------------------------------------------------ Ctrl-C (issue 20, item 11)
INTERRUPTED = "error: interrupted (Ctrl-C); nothing was written, files already there are kept."


def test_ctrl_c_in_training_writes_nothing_and_exits_130(tmp_path):
    rng = np.random.default_rng(0)
    X, y = _data(rng, n=6000, T=30, d=4)
    np.savez(tmp_path / "big.npz", X=X, y=y)
    out = tmp_path / "m.joblib"
    out.write_bytes(b"the previous model")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        # one sequence a step: seconds an epoch, even with the compiled engine
        [sys.executable, "-m", "sklearn_fastgrnn", "train", "--data", "big.npz",
         "--hidden-size", "32", "--batch-size", "1", "--max-iter", "100000",
         "--out", "m.joblib"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        for line in process.stdout:  # the first line of training is printed first
            if line.startswith("input scaling"):
                break
        import time

        time.sleep(1.5)  # in training now (it takes a minute)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [INTERRUPTED]
    assert "test accuracy" not in stdout and "written" not in stdout
    assert out.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz", "m.joblib"]


STARTUP_INTERRUPT = """
import os, runpy, signal, sys

class CtrlCOnImport:  # presses Ctrl-C when the start-up first imports numpy
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlCOnImport())
sys.argv = ["sklearn_fastgrnn", *sys.argv[1:]]
runpy.run_module("sklearn_fastgrnn", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_starting_is_one_line_not_a_traceback(files, tmp_path):
    out = tmp_path / "m.joblib"
    out.write_bytes(b"the previous model")
    environment = {**os.environ,
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", STARTUP_INTERRUPT, "train", "--data", str(files / "d.npz"),
         "--out", str(out)], capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == [INTERRUPTED]
    assert out.read_bytes() == b"the previous model"


def test_importing_the_command_line_leaves_the_sigint_handler_alone():
    code = ("import signal; before = signal.getsignal(signal.SIGINT); "
            "import sklearn_fastgrnn.__main__ as m; "
            "assert signal.getsignal(signal.SIGINT) is before; "
            "m.main(['info', '--model', 'missing.joblib'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert "AssertionError" not in result.stderr


# ------------------------------------------------ newcomer items (issue 20)
def test_version(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    version = sklearn_fastgrnn.__version__
    assert capsys.readouterr().out.strip() == f"python -m sklearn_fastgrnn {version}"


def test_train_on_all_the_data_with_the_new_options(files, tmp_path, capsys):
    main(["train", "--data", str(files / "d.npz"), "--test-size", "0", "--max-iter", "2",
          "--hidden-size", "3", "--gate-nonlinearity", "quant_sigmoid",
          "--update-nonlinearity", "quant_tanh", "--dtype", "float64",
          "--class-weight", "0=1,1=3", "--out", str(tmp_path / "m.joblib")])
    out = capsys.readouterr().out
    assert "all of it (--test-size 0: no test split): 40 train, 0 test" in out
    assert "test accuracy: not measured" in out and "Epoch" not in out
    clf = joblib.load(tmp_path / "m.joblib")
    assert clf.t_ == 2 * 40 and clf.n_iter_ == 2  # every sample trained on
    assert (clf.gate_nonlinearity, clf.update_nonlinearity) == ("quant_sigmoid", "quant_tanh")
    assert clf.dtype == "float64" and clf.class_weight == {0: 1.0, 1: 3.0}
    main(["train", "--data", str(files / "d.npz"), "--max-iter", "2", "--hidden-size", "3",
          "--class-weight", "balanced", "--verbose", "--out", str(tmp_path / "m.joblib")])
    out = capsys.readouterr().out
    assert "Epoch 1, loss" in out and "Epoch 2, loss" in out
    assert joblib.load(tmp_path / "m.joblib").class_weight == "balanced"


def test_a_class_of_one_sample_trains_on_all_the_data(rng, tmp_path, capsys):
    X, y = _data(rng, n=30)
    y[0] = 2  # one sample of class 2
    np.savez(tmp_path / "d.npz", X=X, y=y)
    with pytest.raises(SystemExit, match="or train on all the data .--test-size 0."):
        main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m.joblib")])
    main(["train", "--data", str(tmp_path / "d.npz"), "--test-size", "0", "--max-iter", "1",
          "--out", str(tmp_path / "m.joblib")])
    assert list(joblib.load(tmp_path / "m.joblib").classes_) == [0, 1, 2]


def test_digits_command_writes_both_formats(tmp_path, capsys):
    main(["digits", "--out", str(tmp_path / "d.npz")])
    main(["digits", "--out", str(tmp_path / "d.csv")])
    with np.load(tmp_path / "d.npz") as data:
        X, y = data["X"], data["y"]
    assert X.shape == (1797, 8, 8) and y.shape == (1797,)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert len(lines) == 1798 and lines[0].startswith("key,label,t0c0,t0c1")
    first = lines[1].split(",")
    assert first[:2] == ["digit0", str(y[0])]
    np.testing.assert_array_equal(np.array(first[2:], dtype=float), X[0].ravel())


def _readme_cli_lines():
    text = (ROOT / "README.md").read_text()
    block = text.split("The command line")[1].split("```bash\n")[1].split("```")[0]
    return [line.split("#")[0].split() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readme_command_list_runs_in_order(tmp_path):
    lines = _readme_cli_lines()
    assert len(lines) >= 10
    for args in lines:
        assert args[:3] == ["python", "-m", "sklearn_fastgrnn"], args
        result = run_cli(*args[3:], cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "warning:" not in result.stderr, (args, result.stderr)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"model.joblib", "model.onnx", "model.safetensors", "pred.txt"} <= written


# ----------------------------------------------------- regression and multilabel
@pytest.mark.parametrize("y, task, reason", [
    (np.array(["a", "b", "a"]), "classification", "labels that are not numbers"),
    (np.array([True, False, True]), "classification", "labels that are not numbers"),
    (np.array([0, 1, 2, 1]), "classification", "3 distinct whole numbers, at most 100"),
    (np.array([0.0, 1.0, 2.0]), "classification", "3 distinct whole numbers"),
    (np.arange(101), "regression", "101 distinct whole numbers, more than the 100"),
    (np.arange(100), "classification", "100 distinct whole numbers"),
    (np.array([0.5, 1.0, 2.0]), "regression", "numbers with a fractional part"),
    (np.array([1.0, np.nan]), "regression", "numbers with a fractional part"),
    (np.array([[0, 1], [1, 1], [0, 0]]), "classification", "2 columns of 0 and 1: a multilabel"),
    (np.array([[0, 2], [1, 1]]), "regression", "2 columns of numbers: several outputs"),
])
def test_the_task_inference_rule(y, task, reason):
    from sklearn_fastgrnn.__main__ import infer_task

    got, why = infer_task(y)
    assert got == task and reason in why, why


def _regression_data(rng, n=80, T=4, d=2):
    X = rng.standard_normal((n, T, d))
    return X, 3 * X[:, :, 0].sum(axis=1) + 0.1 * X[:, -1, 1] + 20


def test_regression_train_predict_info_export(rng, tmp_path, capsys):
    from sklearn_fastgrnn.export import load_weights

    X, y = _regression_data(rng)
    np.savez(tmp_path / "r.npz", X=X, y=y)
    main(["train", "--data", str(tmp_path / "r.npz"), "--max-iter", "30", "--hidden-size",
          "8", "--out", str(tmp_path / "r.joblib")])
    out = capsys.readouterr().out
    assert "random 75% / 25%: 60 train, 20 test" in out
    assert ("task: regression (inferred: y holds numbers with a fractional part; --task "
            "classification to override)") in out
    model = joblib.load(tmp_path / "r.joblib")
    assert type(model).__name__ == "FastGRNNRegressor" and model.n_iter_ <= 30
    line = next(line for line in out.splitlines() if line.startswith("test R²: "))
    r2, rmse = float(line.split()[2].rstrip(",")), float(line.split()[4])
    assert r2 > 0.5 and 0 < rmse < y.std()  # it learned
    assert "test accuracy" not in out
    main(["predict", "--model", str(tmp_path / "r.joblib"), "--data", str(tmp_path / "r.npz")])
    predicted = np.array(capsys.readouterr().out.split(), dtype=float)
    np.testing.assert_allclose(predicted, model.predict(X), rtol=1e-12)
    main(["info", "--model", str(tmp_path / "r.joblib")])
    out = capsys.readouterr().out
    assert "task: regression, 1 output, loss=squared_error" in out and "classes" not in out
    assert "readout=last, window=1, window_phases=1, envelope_width=0, change_channels=True" in out
    assert ("FastGRNNRegressor: sigmoid gate, tanh update, change channels, 1 output "
            "(squared_error loss)") in out
    for fmt in ("safetensors", "onnx"):
        main(["export", "--model", str(tmp_path / "r.joblib"), "--format", fmt,
              "--out", str(tmp_path / f"r.{fmt}")])
    loaded = load_weights(tmp_path / "r.safetensors")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    capsys.readouterr()
    main(["predict", "--model", str(tmp_path / "r.safetensors"), "--data",
          str(tmp_path / "r.npz")])
    np.testing.assert_allclose(np.array(capsys.readouterr().out.split(), dtype=float),
                               predicted, rtol=1e-12)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    (onnx_predicted,) = session.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(onnx_predicted, model.predict(X.astype(np.float32)),
                               rtol=1e-5, atol=1e-5)


def test_regression_from_a_csv_with_keys_and_the_options(rng, tmp_path, capsys):
    import csv

    X, y = _regression_data(rng, n=90)
    counts = np.round(np.exp(X[:, :, 1].mean(axis=1)) * 3)  # whole numbers: a choice
    _write_csv(tmp_path / "r.csv", X, counts, ids=[f"s{i}" for i in range(len(X))])
    common = ["train", "--data", str(tmp_path / "r.csv"), "--target", "label", "--id-column",
              "key", "--n-timesteps", "4", "--max-iter", "3", "--out", str(tmp_path / "r.joblib")]
    main([*common, "--test-size", "0", "--task", "classification"])
    assert isinstance(joblib.load(tmp_path / "r.joblib"), FastGRNNClassifier)
    main([*common, "--task", "regression", "--loss", "poisson", "--scaler", "none"])
    out = capsys.readouterr().out
    assert "task: regression (--task)" in out and "test R²: " in out and ", RMSE: " in out
    reg = joblib.load(tmp_path / "r.joblib")
    assert isinstance(reg, FastGRNNRegressor) and reg.loss == "poisson"
    main(["predict", "--model", str(tmp_path / "r.joblib"), "--data", str(tmp_path / "r.csv"),
          "--target", "label", "--id-column", "key", "--out", str(tmp_path / "p.csv")])
    with open(tmp_path / "p.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["key", "prediction"] and [r[0] for r in rows][:2] == ["s0", "s1"]
    flat = X.reshape(len(X), -1)
    np.testing.assert_allclose([float(r[1]) for r in rows], reg.predict(flat), rtol=1e-12)
    assert (np.array([float(r[1]) for r in rows]) > 0).all()  # exp of the outputs
    main([*common, "--test-size", "0"])  # whole numbers, few of them: classes
    out = capsys.readouterr().out
    assert "task: classification (inferred: y holds" in out and "--task regression" in out
    main([*common, "--test-size", "0", "--task", "regression"])
    assert "test R² and RMSE: not measured" in capsys.readouterr().out


def test_multilabel_and_several_outputs_from_npz(rng, tmp_path, capsys):
    import csv

    X, y = _regression_data(rng, n=80)
    labels = np.column_stack([y > 20, X[:, 0, 0] > 0, X[:, -1, 1] > 0.5]).astype(int)
    np.savez(tmp_path / "ml.npz", X=X, y=labels)
    main(["train", "--data", str(tmp_path / "ml.npz"), "--max-iter", "5", "--hidden-size", "6",
          "--out", str(tmp_path / "ml.joblib")])
    out = capsys.readouterr().out
    assert "task: classification (inferred: y has 3 columns of 0 and 1: a multilabel" in out
    assert "(subset accuracy: every label of a sample right)" in out
    model = joblib.load(tmp_path / "ml.joblib")
    assert model.out_activation_ == "logistic"
    main(["predict", "--model", str(tmp_path / "ml.joblib"), "--data", str(tmp_path / "ml.npz")])
    header, *rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert header == ["0", "1", "2"]
    np.testing.assert_array_equal(np.array(rows, dtype=int), model.predict(X))
    main(["predict", "--model", str(tmp_path / "ml.joblib"), "--data", str(tmp_path / "ml.npz"),
          "--proba"])
    header, *rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    np.testing.assert_allclose(np.array(rows, dtype=float), model.predict_proba(X), rtol=1e-12)
    main(["info", "--model", str(tmp_path / "ml.joblib")])
    assert "task: multilabel classification, 3 labels [0, 1, 2]" in capsys.readouterr().out
    for fmt in ("safetensors", "onnx"):
        main(["export", "--model", str(tmp_path / "ml.joblib"), "--format", fmt,
              "--out", str(tmp_path / f"ml.{fmt}")])
    targets = np.column_stack([y, -2 * y])
    np.savez(tmp_path / "two.npz", X=X, y=targets)
    main(["train", "--data", str(tmp_path / "two.npz"), "--max-iter", "3", "--test-size", "0.5",
          "--out", str(tmp_path / "two.joblib")])
    out = capsys.readouterr().out
    assert "y has 2 columns of numbers: several outputs" in out
    assert "(R² averaged over the outputs, RMSE over all of them)" in out
    main(["predict", "--model", str(tmp_path / "two.joblib"), "--data", str(tmp_path / "two.npz")])
    header, *rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert header == ["output_0", "output_1"]
    np.testing.assert_allclose(np.array(rows, dtype=float),
                               joblib.load(tmp_path / "two.joblib").predict(X), rtol=1e-12)
