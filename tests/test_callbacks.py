"""scikit-learn's callbacks (``sklearn.callback``): tasks, per-epoch models, stopping."""

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

import sklearn_fastgrnn
from sklearn_fastgrnn import DistilledClassifier, FastGRNNClassifier, SequenceScaler
from sklearn_fastgrnn.datasets import load_digits_sequences

from .conftest import press_ctrl_c_in_epoch

callback = pytest.importorskip(
    "sklearn.callback", reason="scikit-learn < 1.9 has no sklearn.callback"
)
ProgressBar, ScoringMonitor = callback.ProgressBar, callback.ScoringMonitor

ROOT = Path(sklearn_fastgrnn.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_sequences()
    return X[:300].reshape(300, -1), y[:300]


def small(**params):
    """A classifier that trains a few epochs in milliseconds on ``digits``."""
    return FastGRNNClassifier(
        **{"hidden_size": 8, "n_timesteps": 8, "max_iter": 5, "early_stopping": False,
           "random_state": 0, **params}
    )


def fit_quietly(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


def no_warning(fit, *args, **kwargs):
    """Run ``fit`` with every warning an error (ConvergenceWarning aside: max_iter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(*args, **kwargs)


class Recorder:
    """Records every hook call; keeps the ``fitted_estimator`` of each task end."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.calls, self.ends = [], []

    def setup(self, estimator, context):
        self.calls.append(("setup", type(estimator).__name__))

    def teardown(self, estimator, context):
        self.calls.append(("teardown", type(estimator).__name__))

    def on_fit_task_begin(self, estimator, context):
        self.calls.append(("begin", context.estimator_name, context.task_name))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, fitted_estimator=None):
        self.calls.append(("end", context.estimator_name, context.task_name))
        self.ends.append({
            "estimator": estimator, "context": context, "fitted": fitted_estimator,
            "n_iter": getattr(estimator, "n_iter_", None),
            "n_history": len(getattr(estimator, "history_", [])), "X": X, "y": y,
        })
        return (
            self.stop_after is not None and context.task_name == "epoch"
            and estimator.n_iter_ >= self.stop_after
        )

    def epochs(self, estimator_name="FastGRNNClassifier"):
        return [e for e in self.ends if e["context"].task_name == "epoch"
                and e["context"].estimator_name == estimator_name]


class PropagatedRecorder(Recorder):
    """The same, set on a meta-estimator and passed on to its sub-estimators."""

    max_propagation_depth = None


def epoch_rows(log):
    return [row for row in log.data if row["task_name"] == "epoch"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_set_callbacks_and_clone_share_the_callbacks(digits):
    monitor = ScoringMonitor(scoring="accuracy")
    clf = small().set_callbacks(monitor)
    assert clf._skl_callbacks == [monitor]
    twin = clone(clf)
    assert twin._skl_callbacks is clf._skl_callbacks  # by reference, as sklearn clones
    assert twin.get_params() == clf.get_params()
    assert "_skl_callbacks" not in clone(small()).__dict__
    with pytest.raises(TypeError, match="FitCallback protocol"):
        small().set_callbacks(object())
    assert "_skl_callbacks" not in clf.set_callbacks().__dict__


def test_scoring_monitor_logs_one_entry_per_epoch(digits):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    # the last weights (no average): fit(max_iter=k) keeps epoch k's weights
    # unless its guard restores a better epoch, which it never does on a model
    # whose every epoch is the last one
    clf = fit_quietly(small(max_iter=6, weight_averaging=0).set_callbacks(monitor), X, y)
    log = monitor.get_logs()
    rows = epoch_rows(log)
    assert clf.n_iter_ == 6 and [row["task_id"] for row in rows] == list(range(6))
    scores = [row["accuracy"] for row in rows]
    assert len(set(scores)) > 1  # the model of each epoch, not the final one six times
    for epochs, score in enumerate(scores, start=1):
        reference = fit_quietly(small(max_iter=epochs, weight_averaging=0), X, y)
        assert score == reference.score(X, y)
    (root,) = [row for row in log.data if row["task_name"] == "fit"]
    assert root["accuracy"] == clf.score(X, y)


def test_scoring_monitor_on_a_dataframe_scores_what_fit_was_given(digits):
    X, y = digits
    frame = pd.DataFrame(X, columns=[f"pixel_{i}" for i in range(X.shape[1])])
    monitor = ScoringMonitor(scoring="accuracy")
    clf = no_warning(small(max_iter=3).set_callbacks(monitor).fit, frame, pd.Series(y))
    rows = epoch_rows(monitor.get_logs())
    assert len(rows) == 3 and rows[-1]["accuracy"] == clf.score(frame, y)


def test_callbacks_see_the_training_state_and_copies_of_each_epoch(digits):
    X, y = digits
    recorder = Recorder()
    clf = small(max_iter=4, weight_averaging=0).set_callbacks(recorder)
    fit_quietly(clf, X, y)
    epochs = recorder.epochs()
    assert [e["n_iter"] for e in epochs] == [1, 2, 3, 4]
    assert [e["n_history"] for e in epochs] == [1, 2, 3, 4]
    assert all(e["estimator"] is not clf for e in epochs)  # the working copy trains
    assert all(e["X"] is not None and e["y"] is not None for e in epochs)
    for k, e in enumerate(epochs, start=1):
        reference = fit_quietly(small(max_iter=k, weight_averaging=0), X, y)
        fitted = e["fitted"]
        # kept after fit, the epoch's model still holds that epoch's weights
        assert_same_weights(fitted.coefs_, reference.coefs_)
        np.testing.assert_array_equal(fitted.predict_proba(X), reference.predict_proba(X))
        assert fitted.n_iter_ == k and fitted.loss_curve_ == reference.loss_curve_
        assert fitted.n_timesteps_ == 8 and fitted.n_channels_ == 8
    assert recorder.calls[0] == ("setup", "FastGRNNClassifier")
    assert recorder.calls[-1] == ("teardown", "FastGRNNClassifier")
    assert [c[2] for c in recorder.calls if c[0] == "begin"] == ["fit"] + ["epoch"] * 4
    leftovers = {"_callback_fit_ctx", "_skl_callbacks_to_teardown", "_parent_callback_ctx"}
    assert not leftovers & clf.__dict__.keys()


def test_callbacks_see_the_average_of_the_weights_that_fit_keeps(digits):
    X, y = digits
    recorder = Recorder()
    clf = fit_quietly(small(max_iter=8, learning_rate_init=0.05).set_callbacks(recorder), X, y)
    assert clf.best_epoch_ == clf.n_iter_ == 8  # the average, not a restored epoch
    epochs = recorder.epochs()
    assert_same_weights(epochs[-1]["fitted"].coefs_, clf.coefs_)
    last = fit_quietly(small(max_iter=8, learning_rate_init=0.05, weight_averaging=0), X, y)
    assert last.loss_curve_ == clf.loss_curve_  # the same optimiser's path
    assert not np.array_equal(clf.coefs_["U"], last.coefs_["U"])


def test_a_callback_stops_training_after_its_epoch(digits):
    X, y = digits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = small(max_iter=20).set_callbacks(Recorder(stop_after=3)).fit(X, y)
    assert not [w for w in caught if "maximum iterations" in str(w.message)]
    reference = fit_quietly(small(max_iter=3), X, y)
    assert clf.n_iter_ == 3 and clf.best_epoch_ == 3
    assert_same_weights(clf.coefs_, reference.coefs_)
    assert "callback" in clf.stop_reason_
    assert clf.history_[-1]["event"] == clf.stop_reason_


def test_a_callback_stop_with_early_stopping_keeps_the_best_epoch(digits):
    X, y = digits
    # the last weights, not their average (which improves at every epoch here);
    # the first seed whose 7 epochs end worse than their best (a fast learning
    # rate makes some)
    for seed in range(10):
        params = {"early_stopping": True, "learning_rate_init": 0.3, "max_iter": 7,
                  "random_state": seed, "weight_averaging": 0}
        reference = fit_quietly(small(**params), X, y)
        if reference.best_epoch_ < 7:
            break
    val_losses = [record["val_loss"] for record in reference.history_]
    assert reference.best_epoch_ == np.argmin(val_losses) + 1 < 7  # a worse last epoch
    params["max_iter"] = 30
    clf = small(**params).set_callbacks(Recorder(stop_after=7)).fit(X, y)
    assert clf.n_iter_ == 7 and clf.best_epoch_ == reference.best_epoch_
    assert_same_weights(clf.coefs_, reference.coefs_)
    assert "callback" in clf.stop_reason_


def test_partial_fit_is_one_task_of_one_epoch(digits):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    clf = small().set_callbacks(monitor)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    logs = monitor.get_logs(select="all")
    assert len(logs) == 3
    for log in logs:
        assert [row["task_name"] for row in log.data] == ["partial_fit", "epoch"]
    assert [epoch_rows(log)[0]["accuracy"] for log in logs][-1] == clf.score(X, y)
    stopped = small().set_callbacks(Recorder(stop_after=1))
    stopped.partial_fit(X, y, classes=np.unique(y))
    assert stopped.n_iter_ == 1 and "callback" in stopped.stop_reason_


def test_a_failing_callback_tears_down_and_leaves_the_model(digits):
    X, y = digits
    clf = fit_quietly(small(max_iter=2), X, y)
    before = {key: value.copy() for key, value in clf.coefs_.items()}

    class Failing(Recorder):
        def on_fit_task_end(self, estimator, context, **kwargs):
            if context.task_name == "epoch":
                raise RuntimeError("callback failed")

    failing = Failing()
    with pytest.raises(RuntimeError, match="callback failed"):
        clf.set_callbacks(failing).fit(X, y)
    assert failing.calls[-1] == ("teardown", "FastGRNNClassifier")
    assert clf.n_iter_ == 2
    assert_same_weights(clf.coefs_, before)
    assert "_callback_fit_ctx" not in clf.__dict__


def test_ctrl_c_ends_the_open_epoch_empty(digits, monkeypatch):
    X, y = digits
    press_ctrl_c_in_epoch(monkeypatch, 3)
    recorder, monitor = Recorder(), ScoringMonitor(scoring="accuracy")
    clf = small(max_iter=10).set_callbacks(recorder, monitor)
    with pytest.warns(UserWarning, match="interrupted by the user in epoch 3"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and len(epoch_rows(monitor.get_logs())) == 2
    begins = [c[2] for c in recorder.calls if c[0] == "begin"]
    ends = [c[2] for c in recorder.calls if c[0] == "end"]
    assert begins == ["fit"] + ["epoch"] * 3 and ends == ["epoch"] * 3 + ["fit"]
    assert recorder.epochs()[-1]["fitted"] is None  # the third epoch has no weights


def test_pickle_with_callbacks(digits):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    clf = fit_quietly(small(max_iter=2).set_callbacks(monitor), X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert type(loaded._skl_callbacks[0]) is ScoringMonitor
    fit_quietly(loaded, X, y)  # the unpickled callback still works
    assert len(epoch_rows(loaded._skl_callbacks[0].get_logs())) == 2


def test_grid_search_with_progress_bar_shows_epochs_without_warning(digits, capsys,
                                                                    monkeypatch):
    X, y = digits
    monkeypatch.setenv("COLUMNS", "200")
    recorder = PropagatedRecorder()
    search = GridSearchCV(small(max_iter=3), {"hidden_size": [4, 8]}, cv=2)
    search.set_callbacks(ProgressBar(), recorder)
    no_warning(search.fit, X, y)
    assert "GridSearchCV - candidate-split-evaluation | FastGRNNClassifier - fit" in (
        capsys.readouterr().out
    )
    epochs = recorder.epochs()
    assert len(epochs) == (2 * 2 + 1) * 3  # 4 fits of the search and the refit
    assert {e["context"].parent.source_estimator_name for e in epochs} == {"GridSearchCV"}


@pytest.mark.slow
def test_grid_search_in_processes(digits):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")  # each worker sends its rows back
    search = GridSearchCV(small(max_iter=3).set_callbacks(monitor), {"hidden_size": [4, 8]},
                          cv=2, n_jobs=2)
    no_warning(search.set_callbacks(ProgressBar()).fit, X, y)
    rows = epoch_rows(monitor.get_logs())
    assert len(rows) == (2 * 2 + 1) * 3
    assert len({row["task_id_path"][:-1] for row in rows}) == 2 * 2 + 1


def test_pipeline_with_progress_bar_and_scoring_monitor(digits, capsys):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    recorder = PropagatedRecorder()
    pipe = make_pipeline(SequenceScaler(n_timesteps=8), small(max_iter=4).set_callbacks(monitor))
    pipe.set_callbacks(ProgressBar(max_propagation_depth=None), recorder)
    no_warning(pipe.fit, X, y)
    assert "Pipeline - fit-final-estimator | FastGRNNClassifier - fit" in capsys.readouterr().out
    assert len(recorder.epochs()) == 4
    scaler_ends = [e for e in recorder.ends if e["context"].estimator_name == "SequenceScaler"]
    assert len(scaler_ends) == 1
    np.testing.assert_array_equal(scaler_ends[0]["fitted"].mean_, pipe[0].mean_)
    rows = epoch_rows(monitor.get_logs())
    assert len(rows) == 4 and rows[0]["task_id_path"][0] == 0
    assert rows[-1]["accuracy"] == pipe[-1].score(pipe[0].transform(X), y)


def test_cross_validate(digits):
    X, y = digits
    monitor = ScoringMonitor(scoring="accuracy")
    clf = small(max_iter=3).set_callbacks(monitor, ProgressBar())
    result = no_warning(cross_validate, clf, X, y, cv=3, return_estimator=True)
    logs = monitor.get_logs(select="all")
    assert len(logs) == 3  # one run per fold
    assert [len(epoch_rows(log)) for log in logs] == [e.n_iter_ for e in result["estimator"]]


def test_distilled_classifier_passes_callbacks_to_the_student(digits, capsys):
    X, y = digits
    recorder = PropagatedRecorder()
    monitor = ScoringMonitor(scoring="accuracy")  # set on the student: cloned with it
    student = small(max_iter=3).set_callbacks(monitor)
    model = DistilledClassifier(DecisionTreeClassifier(random_state=0), student)
    model.set_callbacks(ProgressBar(), recorder)
    no_warning(model.fit, X, y)  # the teacher does not support callbacks: no warning
    assert "DistilledClassifier - fit-student | FastGRNNClassifier - fit" in (
        capsys.readouterr().out
    )
    epochs = recorder.epochs()
    assert len(epochs) == model.student_.n_iter_ == 3
    assert epochs[0]["context"].parent.source_task_name == "fit-student"
    steps = [c[2] for c in recorder.calls if c[0] == "end" and c[1] == "DistilledClassifier"]
    assert steps == ["fit-teacher", "fit"]  # the student's root task ends fit-student
    assert recorder.ends[-1]["fitted"].predict(X).tolist() == model.predict(X).tolist()
    assert len(epoch_rows(monitor.get_logs())) == 3


def test_scaler_fit_is_one_task(digits):
    X, _ = digits
    recorder = Recorder()
    scaler = SequenceScaler(n_timesteps=8).set_callbacks(recorder)
    scaler.fit(X)
    scaler.partial_fit(X)
    assert [c[0] for c in recorder.calls] == ["setup", "begin", "end", "teardown"] * 2
    np.testing.assert_array_equal(recorder.ends[0]["fitted"].scale_, SequenceScaler(
        n_timesteps=8).fit(X).scale_)


NO_SKLEARN_CALLBACK = textwrap.dedent("""
    import importlib.abc, pickle, sys, warnings
    # scikit-learn 1.9 itself imports sklearn.callback: import its parts first
    # (the package root imports its names when first used: use them all)
    import sklearn.model_selection, sklearn.tree, sklearn_fastgrnn
    [getattr(sklearn_fastgrnn, name) for name in sklearn_fastgrnn.__all__]
    for name in [n for n in sys.modules if n.split(".")[0] == "sklearn_fastgrnn"]:
        del sys.modules[name]
    del sys.modules["sklearn.callback"]

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sklearn.callback":
                raise ModuleNotFoundError("No module named 'sklearn.callback'", name=name)

    sys.meta_path.insert(0, Block())
    import numpy as np
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier
    from sklearn_fastgrnn import DistilledClassifier, FastGRNNClassifier, make_fastgrnn_pipeline
    from sklearn_fastgrnn import SequenceScaler
    from sklearn_fastgrnn.datasets import load_digits_sequences
    warnings.simplefilter("ignore")
    X, y = load_digits_sequences()
    X, y = X[:200].reshape(200, -1), y[:200]
    params = dict(hidden_size=4, n_timesteps=8, max_iter=3, random_state=0)
    for cls in (FastGRNNClassifier, DistilledClassifier, SequenceScaler):
        assert not hasattr(cls, "set_callbacks"), cls
    clf = FastGRNNClassifier(**params).fit(X, y)
    assert clf.n_iter_ == 3 and clf.predict(X).shape == (200,)
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 4
    pickle.loads(pickle.dumps(clf)).predict(X)
    DistilledClassifier(DecisionTreeClassifier(), FastGRNNClassifier(**params)).fit(X, y)
    pipe = make_fastgrnn_pipeline(**params)
    GridSearchCV(pipe, {"fastgrnnclassifier__hidden_size": [4, 6]}, cv=2).fit(X, y)
    print("ok", "sklearn.callback" in sys.modules)
""")


def test_works_without_sklearn_callback(tmp_path):
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", NO_SKLEARN_CALLBACK], cwd=tmp_path, env=environment,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "False"]
