"""The command line: train, predict, info on small files."""

import subprocess
import sys

import joblib
import numpy as np
import pytest

from sklearn_fastgrnn.__main__ import main


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
    clf = joblib.load(model)
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
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_fastgrnn", "train"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch 1, loss" in result.stdout
    accuracy = float(result.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.9
    assert (tmp_path / "model.joblib").exists()


def test_help_for_each_command():
    for command in ("train", "predict", "info", "export"):
        result = subprocess.run(
            [sys.executable, "-m", "sklearn_fastgrnn", command, "--help"],
            capture_output=True, text=True,
        )
        assert result.returncode == 0 and "usage:" in result.stdout
