"""The exported C code, compiled with the system gcc, reproduces Python's predictions."""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES
from sklearn_fastgrnn.compression import quantize
from sklearn_fastgrnn.export.c import export_c

from .conftest import make_sequences

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


def build_library(model, directory, name):
    header, source = export_c(model, directory, name=name)
    library = directory / f"lib{name}.so"
    subprocess.run([gcc(), *CFLAGS, "-shared", "-fPIC", "-o", str(library), source, "-lm"],
                   check=True, capture_output=True, text=True)
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


@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_float_c_matches_predict_proba(tmp_path, data, params):
    X, y, X_test, lengths = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, **params).fit(X, y)
    library, _, _ = build_library(clf, tmp_path, "model")
    proba, logits, labels = run_c(library, "model", X_test, lengths, np.float32)
    expected = clf.predict_proba(X_test)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, clf.decision_function(X_test), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=1))


@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_int8_c_matches_the_quantized_python_path_exactly(tmp_path, data, params):
    X, y, X_test, lengths = data
    clf = FastGRNNClassifier(8, max_iter=8, random_state=0, **params).fit(X, y)
    q = quantize(clf, X)
    library, _, _ = build_library(q, tmp_path, "qmodel")
    proba, logits, labels = run_c(library, "qmodel", X_test, lengths, np.int32)
    np.testing.assert_array_equal(logits, q.quantized_logits(X_test))
    np.testing.assert_array_equal(labels, np.argmax(q.quantized_logits(X_test), axis=1))
    np.testing.assert_allclose(proba, q.predict_proba(X_test), rtol=0, atol=1e-6)


def test_sparse_matrices_are_stored_sparse_and_the_code_is_self_contained(tmp_path, data):
    X, y, _, _ = data
    clf = FastGRNNClassifier(8, u_rank=3, sparsity_u=0.25, max_iter=6, random_state=0).fit(X, y)
    for model, name in ((clf, "f32"), (quantize(clf, X), "i8")):
        header, source = export_c(model, tmp_path / name, name=name)
        text = open(source).read() + open(header).read()
        assert re.findall(r"#include\s*(\S+)", text) == [
            "<math.h>", "<stddef.h>", f'"{name}.h"', "<stdint.h>"]
        assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\b", text)
        nonzeros = int(np.count_nonzero(model.weights_["U1"] if name == "i8" else clf.coefs_["U1"]))
        assert f"static const uint8_t {name}_U1_row[{nonzeros}]" in text
        assert f"{name}_U[" not in text and f"{name}_W[{3 * 8}]" in text  # W is dense


DRIVER = r"""
#include <stdio.h>
#include "digits.h"

int main(void)
{
    static const float x[2 * DIGITS_N_CHANNELS] = {%s};
    float proba[DIGITS_N_CLASSES];
    int k;
    if (digits_predict_proba(x, 2, proba) != 0 || digits_predict(x, 0) != -1
        || digits_predict_proba(NULL, 2, proba) != -1) {
        return 1;
    }
    for (k = 0; k < DIGITS_N_CLASSES; ++k) {
        printf("%%.9g\n", proba[k]);
    }
    printf("%%d\n", digits_predict(x, 2));
    return 0;
}
"""


def test_a_c_program_using_the_header_gets_the_python_probabilities(tmp_path, data):
    X, y, _, _ = data
    clf = FastGRNNClassifier(8, w_rank=2, sparsity_w=0.5, max_iter=6, random_state=0).fit(X, y)
    _, source = export_c(clf, tmp_path, name="digits")
    x = X[5, :2].astype(np.float32)
    (tmp_path / "main.c").write_text(DRIVER % ", ".join(f"{v:.9e}f" for v in x.ravel()))
    program = tmp_path / "main"
    subprocess.run([gcc(), *CFLAGS, "-o", str(program), str(tmp_path / "main.c"), source, "-lm"],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    expected = clf.predict_proba(X[5:6, :2])[0]
    np.testing.assert_allclose(np.array(out[:-1], dtype=float), expected, atol=1e-5)
    assert int(out[-1]) == np.argmax(expected)


def test_export_refuses_what_it_can_not_write(tmp_path, data):
    X, y, _, _ = data
    with pytest.raises(NotFittedError):
        export_c(FastGRNNClassifier(), tmp_path)
    clf = FastGRNNClassifier(4, max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="Pipeline"):
        export_c(make_pipeline(StandardScaler(), clf), tmp_path)
    with pytest.raises(ValueError, match="C identifier"):
        export_c(clf, tmp_path, name="2fast")
