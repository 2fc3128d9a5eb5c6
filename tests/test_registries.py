"""One list of names: every back end translates exactly the registered non-linearities,
and the export formats are one tuple that export_model, the CLI and the docs share."""

import argparse
import os
import pathlib
import re

import numpy as np
import pytest
from scipy.special import expit

import sklearn_fastgrnn.export.c as c_backend
import sklearn_fastgrnn.export.onnx as onnx_backend
from sklearn_fastgrnn import FastGRNNClassifier, compression
from sklearn_fastgrnn.__main__ import build_parser
from sklearn_fastgrnn._compiled_cell import C_NONLINEARITIES
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES, scalar_sigmoid
from sklearn_fastgrnn.export import FORMATS, export_model

from .conftest import make_sequences

ROOT = pathlib.Path(__file__).parents[1]
NAMES = sorted(NONLINEARITIES)


# ---------------------------------------------------------- non-linearities
@pytest.mark.parametrize(
    "backend",
    [
        compression.INTEGER_NONLINEARITIES,
        onnx_backend._ONNX_NONLINEARITIES,
        c_backend._FLOAT_NONLINEARITIES,
        c_backend._INTEGER_NONLINEARITIES,
        C_NONLINEARITIES,
    ],
    ids=["int8", "onnx", "c-float", "c-int8", "compiled-engine"],
)
def test_every_backend_translates_exactly_the_registered_nonlinearities(backend):
    assert set(backend) == set(NONLINEARITIES)


def test_the_classifier_accepts_exactly_the_registered_nonlinearities():
    constraints = FastGRNNClassifier._parameter_constraints
    for parameter in ("gate_nonlinearity", "update_nonlinearity"):
        (options,) = constraints[parameter]
        assert options.options == set(NONLINEARITIES)
    X, y = make_sequences(np.random.default_rng(0), n=12)
    with pytest.raises(ValueError, match="gate_nonlinearity"):
        FastGRNNClassifier(gate_nonlinearity="softsign").fit(X, y)


@pytest.mark.parametrize("x", [-800.0, -30.0, -1.5, 0.0, 0.25, 4.0, 800.0])
def test_scalar_sigmoid_is_stable_and_exact(x):
    value = scalar_sigmoid(np.array(x))  # coefs_["zeta"] is a 0-d array
    assert isinstance(value, float)
    assert value == pytest.approx(float(expit(x)), rel=1e-15, abs=1e-300)


# ------------------------------------------------------------------ formats
def _cli_format_choices():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    export = commands.choices["export"]
    (fmt,) = [a for a in export._actions if "--format" in a.option_strings]
    return tuple(fmt.choices)


def test_the_cli_offers_exactly_the_export_formats():
    assert _cli_format_choices() == FORMATS


def test_the_docs_show_one_command_per_export_format():
    page = (ROOT / "docs" / "export.md").read_text()
    shown = re.findall(r"python -m sklearn_fastgrnn export .*--format (\S+)", page)
    assert sorted(shown) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_model_writes_every_format(tmp_path, fmt):
    pytest.importorskip({"safetensors": "safetensors", "onnx": "onnx", "c": "numpy"}[fmt])
    X, y = make_sequences(np.random.default_rng(0), n=20)
    clf = FastGRNNClassifier(4, max_iter=1, random_state=0).fit(X, y)
    out = export_model(clf, fmt, tmp_path / f"model.{fmt}")
    assert out == os.fspath(tmp_path / f"model.{fmt}")
    assert os.path.exists(out)


@pytest.mark.parametrize("bad", ["tflite", "ONNX", None, 3])
def test_export_model_names_the_formats_for_an_unknown_one(tmp_path, bad):
    with pytest.raises(ValueError, match=re.escape(str(list(FORMATS)))):
        export_model(FastGRNNClassifier(), bad, tmp_path / "x")
    assert os.listdir(tmp_path) == []
