"""Models written by release 0.1.0 (committed under tests/data) still load, predict
and train on."""

import pathlib
import warnings

import joblib
import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.exceptions import InconsistentVersionWarning
from sklearn_fastgrnn.export import load_weights

DATA = pathlib.Path(__file__).parent / "data"
EXPECTED = np.load(DATA / "expected-0.1.0.npz")
# The joblib files hold the estimator's NumPy random Generator, pickled by NumPy 2:
# NumPy 1.x cannot unpickle it (the bit generator is pickled as a class, which
# NumPy 1.x's unpickler does not accept), so these run on NumPy 2 only.
PICKLED_BY_NUMPY_2 = pytest.mark.skipif(
    np.lib.NumpyVersion(np.__version__) < "2.0.0",
    reason="the 0.1.0 joblib files were pickled by NumPy 2, which NumPy 1.x cannot read")


@PICKLED_BY_NUMPY_2
def test_a_joblib_classifier_of_0_1_0_loads_predicts_and_continues_exactly():
    with pytest.warns(InconsistentVersionWarning, match="0.1.0"):
        clf = joblib.load(DATA / "classifier-0.1.0.joblib")
    assert type(clf) is FastGRNNClassifier
    X = EXPECTED["X"]
    np.testing.assert_allclose(clf.predict_proba(X), EXPECTED["classifier_proba"], rtol=1e-6)
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 10
    # 0.1.0 trained against the labels as they are
    assert clf.label_smoothing == 0.0 and clf.label_smoothing_ == 0.0
    assert clf.input_noise == 0.0  # nor noise
    # one more partial_fit epoch from the stored optimiser state and RNG: what
    # 0.1.0 itself computed
    from sklearn_fastgrnn.datasets import load_digits_sequences

    X_all, y_all = load_digits_sequences()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        clf.partial_fit(X_all[:150].astype(np.float32), y_all[:150])
    np.testing.assert_allclose(clf.predict_proba(X), EXPECTED["continued_proba"], rtol=1e-5,
                               atol=1e-7)
    assert "_split_seed" in vars(clf) and not hasattr(clf._monitor, "split_seed")


def test_a_weights_file_of_0_1_0_loads_and_predicts():
    pytest.importorskip("safetensors")
    pipe = load_weights(DATA / "pipeline-0.1.0.safetensors")
    X = EXPECTED["X"].reshape(len(EXPECTED["X"]), -1)
    np.testing.assert_allclose(pipe.predict_proba(X), EXPECTED["pipeline_proba"], rtol=1e-6)
    assert pipe[-1].label_smoothing == 0.0  # 0.1.0 had none
    assert pipe[-1].input_noise == 0.0
