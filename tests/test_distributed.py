"""Scale-out on existing engines: joblib's loky, Dask and Ray backends, dask-ml.

The Dask and Ray tests start a real local cluster on this machine (Dask: worker
processes on 127.0.0.1; Ray: a local instance with 2 CPUs). They need the
``distributed`` extra and are skipped cleanly without it.
"""

import logging
import os

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.model_selection import GridSearchCV

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline, pad_sequences

GRID = {
    "fastgrnnclassifier__hidden_size": [8, 16],
    "fastgrnnclassifier__learning_rate_init": [0.01, 0.05],
}


@pytest.fixture(scope="module")
def data():
    """180 digit sequences cut to random lengths 4-8 (NaN-padded), labels."""
    X, y = load_digits_sequences()
    lengths = np.random.default_rng(0).integers(4, 9, 180)
    return pad_sequences([x[:t] for x, t in zip(X, lengths)]), y[:180]


def accuracy_and_pid(estimator, X, y):
    """Score of a fold and the id of the process that ran it."""
    return {"accuracy": estimator.score(X, y), "pid": os.getpid()}


def run_search(X, y, n_jobs):
    """The grid search every backend runs: 4 candidates x 3 folds."""
    # a local function is pickled by value, so workers need not import this file
    def scoring(estimator, X, y):
        return accuracy_and_pid(estimator, X, y)

    search = GridSearchCV(
        make_fastgrnn_pipeline("sequence", hidden_size=8, max_iter=4, random_state=0),
        GRID, cv=3, scoring=scoring, refit="accuracy", n_jobs=n_jobs,
    )
    return search.fit(X, y)


def fold_pids(search):
    return {int(search.cv_results_[f"split{k}_test_pid"][c]) for k in range(3) for c in range(4)}


@pytest.fixture(scope="module")
def serial_search(data):
    search = run_search(*data, n_jobs=1)
    assert fold_pids(search) == {os.getpid()}
    return search


def assert_same_search(search, reference):
    assert search.best_params_ == reference.best_params_
    assert search.best_score_ == pytest.approx(reference.best_score_, abs=1e-12)
    assert_allclose(
        search.cv_results_["mean_test_accuracy"],
        reference.cv_results_["mean_test_accuracy"], rtol=0, atol=1e-12,
    )
    X = np.zeros((1, 8, 8))
    assert_allclose(search.predict_proba(X), reference.predict_proba(X), rtol=1e-10)


@pytest.mark.slow
def test_loky_search_matches_serial(data, serial_search):
    with joblib.parallel_backend("loky"):
        search = run_search(*data, n_jobs=2)
    assert os.getpid() not in fold_pids(search)  # the folds ran in loky workers
    assert_same_search(search, serial_search)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.slow
def test_dask_search_matches_serial(data, serial_search, dask_client):
    worker_pids = set(dask_client.run(os.getpid).values())
    workers = dask_client.scheduler_info()["workers"]
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    with joblib.parallel_backend("dask"):
        search = run_search(*data, n_jobs=2)
    assert fold_pids(search) <= worker_pids  # every fold ran on a Dask worker
    assert_same_search(search, serial_search)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray_joblib = pytest.importorskip("ray.util.joblib")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray_joblib.register_ray()
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_search_matches_serial(data, serial_search, ray_local):
    assert ray_local.cluster_resources()["CPU"] == 2
    with joblib.parallel_backend("ray"):
        search = run_search(*data, n_jobs=2)
    assert os.getpid() not in fold_pids(search)  # the folds ran in Ray workers
    assert_same_search(search, serial_search)


@pytest.mark.slow
def test_dask_ml_incremental_equals_partial_fit_over_blocks(data, dask_client):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    distributed = pytest.importorskip("dask.distributed")
    X, y = data
    X2 = X.reshape(len(X), -1)  # dask-ml streams the row blocks of a 2D array
    chunks = 40
    params = dict(hidden_size=8, n_timesteps=8, random_state=0)
    X_dask, y_dask = da.from_array(X2, chunks=(chunks, 64)), da.from_array(y, chunks=chunks)
    incremental = wrappers.Incremental(FastGRNNClassifier(**params), shuffle_blocks=False)
    with distributed.get_task_stream(dask_client) as tasks:
        incremental.fit(X_dask, y_dask, classes=np.arange(10))
    workers = set(dask_client.scheduler_info()["workers"])
    assert tasks.data and {task["worker"] for task in tasks.data} <= workers
    model = incremental.estimator_
    n_blocks = -(-len(X2) // chunks)
    assert (model.n_iter_, model.t_) == (n_blocks, len(X2))

    local = FastGRNNClassifier(**params)
    for start in range(0, len(X2), chunks):
        local.partial_fit(X2[start:start + chunks], y[start:start + chunks], classes=np.arange(10))
    assert model.coefs_.keys() == local.coefs_.keys()
    for key in local.coefs_:
        assert_allclose(model.coefs_[key], local.coefs_[key], rtol=1e-9, atol=1e-12, err_msg=key)
    predicted = incremental.predict(X_dask).compute()
    assert_array_equal(predicted, local.predict(X2))
