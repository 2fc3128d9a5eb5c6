"""TrainingHistoryDisplay draws history_; matplotlib stays optional."""

import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_fastgrnn import FastGRNNClassifier, FastGRNNRegressor
from sklearn_fastgrnn.preprocessing import SequenceScaler

from .conftest import make_sequences

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sklearn_fastgrnn.plotting import TrainingHistoryDisplay  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fit(rng, **params):
    X, y = make_sequences(rng, n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FastGRNNClassifier(hidden_size=4, max_iter=6, random_state=0, **params).fit(X, y)


def test_without_validation(rng):
    clf = _fit(rng)
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert set(display.lines_) == {"train_loss", "learning_rate"}
    assert len(display.axes_) == 2 and display.ax_ is display.axes_[0]
    assert display.figure_ is display.ax_.get_figure()
    x, loss = display.lines_["train_loss"].get_data()
    np.testing.assert_array_equal(x, np.arange(1, clf.n_iter_ + 1))
    np.testing.assert_allclose(loss, [r["train_loss"] for r in clf.history_])
    _, lr = display.lines_["learning_rate"].get_data()
    np.testing.assert_allclose(lr, [r["learning_rate"] for r in clf.history_])
    assert display.ax_.get_title() == "FastGRNNClassifier"
    assert display.axes_[-1].get_xlabel() == "epoch"


def test_with_early_stopping(rng):
    clf = _fit(rng, early_stopping=True, validation_fraction=0.25, n_iter_no_change=20)
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert set(display.lines_) == {"train_loss", "val_loss", "val_score", "learning_rate"}
    assert len(display.axes_) == 3
    _, val_loss = display.lines_["val_loss"].get_data()
    np.testing.assert_allclose(val_loss, [r["val_loss"] for r in clf.history_])
    _, val_score = display.lines_["val_score"].get_data()
    np.testing.assert_allclose(val_score, clf.validation_scores_)
    # one mark per panel, at the kept epoch
    assert len(display.kept_epoch_lines_) == 3
    kept = display.kept_epoch
    assert 1 <= kept <= clf.n_iter_
    for line in display.kept_epoch_lines_:
        assert line.get_xdata()[0] == kept
    if hasattr(clf, "best_epoch_"):
        assert kept == clf.best_epoch_
    legend = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert any(f"({kept})" in text for text in legend)


def test_kept_epoch_comes_from_best_epoch(rng):
    clf = _fit(rng)
    clf.best_epoch_ = 2
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert display.kept_epoch == 2 and display.kept_label == "kept epoch"


def test_older_model_marks_lowest_loss(rng):
    clf = _fit(rng, early_stopping=True, validation_fraction=0.25, n_iter_no_change=20)
    if hasattr(clf, "best_epoch_"):
        del clf.best_epoch_
    display = TrainingHistoryDisplay.from_estimator(clf)
    val_loss = [r["val_loss"] for r in clf.history_]
    assert display.kept_epoch == int(np.argmin(val_loss)) + 1
    assert display.kept_label == "lowest validation loss"

    clf = _fit(rng)
    if hasattr(clf, "best_epoch_"):
        del clf.best_epoch_
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert display.kept_epoch == int(np.argmin(clf.loss_curve_)) + 1
    assert display.kept_label == "lowest training loss"


def test_pipeline(rng):
    X, y = make_sequences(rng, n=60)
    pipe = make_pipeline(SequenceScaler(), FastGRNNClassifier(4, max_iter=4, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
    display = TrainingHistoryDisplay.from_estimator(pipe)
    assert display.ax_.get_title() == "Pipeline"
    _, loss = display.lines_["train_loss"].get_data()
    np.testing.assert_allclose(loss, pipe[-1].loss_curve_)


def test_unfitted_is_a_clear_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        TrainingHistoryDisplay.from_estimator(FastGRNNClassifier())
    with pytest.raises(NotFittedError):
        TrainingHistoryDisplay.from_estimator(make_pipeline(SequenceScaler(), FastGRNNClassifier()))


def test_model_without_history_is_a_clear_error(rng):
    X, y = make_sequences(rng)
    with pytest.raises(TypeError, match="no training history"):
        TrainingHistoryDisplay.from_estimator(LogisticRegression().fit(X[:, :, 0], y))


def test_ax_passed(rng):
    clf = _fit(rng, early_stopping=True, validation_fraction=0.25)
    # an array of Axes, one per panel
    fig, axes = plt.subplots(3, 1)
    display = TrainingHistoryDisplay.from_estimator(clf, ax=axes)
    assert display.figure_ is fig and list(display.axes_) == list(axes)
    # one Axes is split into the panels, in place
    fig, (left, right) = plt.subplots(1, 2)
    display = TrainingHistoryDisplay.from_estimator(clf, ax=right, learning_rate=False)
    assert display.figure_ is fig and len(display.axes_) == 2
    assert "learning_rate" not in display.lines_
    assert not right.axison
    left_edge = right.get_position().x0
    assert all(a.get_position().x0 >= left_edge - 1e-9 for a in display.axes_)
    # the wrong number of Axes says how many it needs
    with pytest.raises(ValueError, match="Expected 3 Axes"):
        TrainingHistoryDisplay.from_estimator(clf, ax=plt.subplots(2, 1)[1])


def test_plot_again_on_new_axes(rng):
    display = TrainingHistoryDisplay.from_estimator(_fit(rng), learning_rate=False)
    first = display.figure_
    fig, ax = plt.subplots()
    assert display.plot(ax=ax, name="again").figure_ is fig is not first
    assert ax.get_title() == "again"


def test_importing_the_package_does_not_import_matplotlib():
    code = (
        "import sys, sklearn_fastgrnn, sklearn_fastgrnn.plotting\n"
        "from sklearn_fastgrnn.plotting import TrainingHistoryDisplay\n"
        "assert 'matplotlib' not in sys.modules, "
        "sorted(m for m in sys.modules if 'matplotlib' in m)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr


def _whole_epoch_ticks(display):
    display.figure_.canvas.draw()
    low, high = display.ax_.get_xlim()
    ticks = [t for t in display.axes_[-1].get_xticks() if low <= t <= high]
    return ticks and all(float(t).is_integer() for t in ticks)


def test_one_epoch_is_drawn_as_points(rng):
    X, y = make_sequences(rng, n=60)
    clf = FastGRNNClassifier(hidden_size=4, random_state=0).partial_fit(X, y, np.unique(y))
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert len(display.lines_["train_loss"].get_xdata()) == 1
    for line in display.lines_.values():
        assert line.get_marker() == "o", line.get_label()  # a one-point line draws nothing
    assert _whole_epoch_ticks(display)
    assert TrainingHistoryDisplay.from_estimator(_fit(rng)).lines_["train_loss"].get_marker() \
        in ("None", None, "")


def test_partial_fit_epochs_are_whole_numbers_on_the_axis(rng):
    X, y = make_sequences(rng, n=60)
    clf = FastGRNNClassifier(hidden_size=4, random_state=0)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    display = TrainingHistoryDisplay.from_estimator(clf)
    np.testing.assert_array_equal(display.lines_["train_loss"].get_xdata(), [1, 2, 3])
    assert _whole_epoch_ticks(display)


def test_a_model_from_a_weights_file_is_told_why_it_has_no_history(rng, tmp_path):
    pytest.importorskip("safetensors")
    from sklearn_fastgrnn.export import load_weights, save_weights

    save_weights(_fit(rng), tmp_path / "m.safetensors")
    loaded = load_weights(tmp_path / "m.safetensors")
    message = "weights file .load_weights. holds the weights only"
    with pytest.raises(TypeError, match=message) as info:
        TrainingHistoryDisplay.from_estimator(loaded)
    assert "pass a fitted FastGRNNClassifier" not in str(info.value)


def _labels(display):
    return ([t.get_text() for t in display.ax_.get_legend().get_texts()],
            display.axes_[1].get_ylabel(), display.lines_["val_score"].get_label())


def test_a_regressor_shows_its_validation_r2(rng):
    X, _ = make_sequences(rng, n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = FastGRNNRegressor(4, max_iter=5, early_stopping=True, validation_fraction=0.25,
                                random_state=0).fit(X, X[:, :, 0].sum(axis=1))
    display = TrainingHistoryDisplay.from_estimator(make_pipeline(SequenceScaler(), reg))
    assert display.score_name == "R²"
    _, ylabel, label = _labels(display)
    assert ylabel == "validation\nR²" and label == "validation R²"
    _, val_score = display.lines_["val_score"].get_data()
    np.testing.assert_allclose(val_score, reg.validation_scores_)
    assert display.ax_.get_title() == "Pipeline"


def test_multilabel_and_scoring_name_their_score(rng):
    X, y = make_sequences(rng, n=60)
    Y = np.column_stack([y == 0, y == 1, X[:, 0, 0] > 0]).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        multilabel = FastGRNNClassifier(4, max_iter=4, early_stopping=True, random_state=0,
                                        validation_fraction=0.25).fit(X, Y)
        scored = FastGRNNRegressor(4, max_iter=4, early_stopping=True, random_state=0,
                                   scoring="neg_mean_absolute_error").fit(X, X[:, 0, 0])
    display = TrainingHistoryDisplay.from_estimator(multilabel)
    assert _labels(display)[1:] == ("validation\naccuracy", "validation accuracy")
    display = TrainingHistoryDisplay.from_estimator(scored, learning_rate=False)
    assert _labels(display)[2] == "validation neg_mean_absolute_error"
    direct = TrainingHistoryDisplay(epoch=[1, 2], train_loss=[2, 1], val_score=[0.1, 0.2],
                                    score_name="F1").plot()
    assert direct.axes_[1].get_ylabel() == "validation\nF1"
