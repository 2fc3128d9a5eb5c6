"""Distributed hyper-parameter search on joblib, Dask and Ray
==========================================================

``GridSearchCV`` runs its fits through joblib, so the same search scales out
by switching joblib's backend, with no change to the model:

* ``n_jobs=2`` on joblib's default ``loky`` backend (local worker processes);
* ``joblib.parallel_backend("dask")`` with a ``dask.distributed.Client``, here
  of a ``LocalCluster`` of 2 worker processes on 127.0.0.1 (give the client a
  scheduler address to use a real cluster);
* ``joblib.parallel_backend("ray")`` after ``ray.util.joblib.register_ray()``,
  here with a local Ray started with 2 CPUs (``ray.init(address=...)`` joins a
  cluster).

With a fixed ``random_state`` every backend finds the same best parameters and
scores. Dask and Ray come with ``pip install sklearn-fastgrnn[distributed]``;
a backend that is not installed is skipped.
"""

import importlib.util
import logging
import time

import joblib
import numpy as np
from sklearn.model_selection import GridSearchCV

from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline

PARAM_GRID = {
    "fastgrnnclassifier__hidden_size": [8, 16],
    "fastgrnnclassifier__learning_rate_init": [0.01, 0.05],
}


def search(X, y, n_jobs):
    """4 candidates x 3 folds of a scaled FastGRNN pipeline."""
    pipeline = make_fastgrnn_pipeline(
        "sequence", early_stopping=True, n_iter_no_change=3, max_iter=200, random_state=0
    )
    return GridSearchCV(pipeline, PARAM_GRID, cv=3, n_jobs=n_jobs).fit(X, y)


def run_dask(X, y):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster), joblib.parallel_backend("dask"):
        return search(X, y, n_jobs=2)


def run_ray(X, y):
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            return search(X, y, n_jobs=2)
    finally:
        ray.shutdown()


def main():
    X, y = load_digits_sequences()
    X, y = X[:300], y[:300]
    runs = {
        "serial": lambda: search(X, y, n_jobs=1),
        "loky, n_jobs=2": lambda: search(X, y, n_jobs=2),
        "dask LocalCluster": lambda: run_dask(X, y),
        "ray local": lambda: run_ray(X, y),
    }
    needs = {"dask LocalCluster": "distributed", "ray local": "ray"}
    print(f"{'backend':<18} {'best parameters':<44} {'best CV':>8} {'seconds':>8}")
    reference = None
    for name, run in runs.items():
        if name in needs and importlib.util.find_spec(needs[name]) is None:
            print(f"{name:<18} skipped: pip install sklearn-fastgrnn[distributed]")
            continue
        tic = time.perf_counter()  # includes starting the cluster
        result = run()
        seconds = time.perf_counter() - tic
        best = {k.split("__")[1]: v for k, v in result.best_params_.items()}
        print(f"{name:<18} {str(best):<44} {result.best_score_:8.4f} {seconds:8.1f}")
        scores = result.cv_results_["mean_test_score"]
        if reference is None:
            reference = scores
        elif not np.allclose(scores, reference, rtol=0, atol=1e-12):
            raise RuntimeError(f"{name} scores {scores} differ from serial {reference}")
    print("every backend gave the same mean CV score for every candidate")


if __name__ == "__main__":
    main()
