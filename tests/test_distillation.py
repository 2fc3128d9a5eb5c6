"""Knowledge distillation: soft targets, their routing, the loss and DistilledClassifier."""

import warnings

import joblib
import numpy as np
import pytest
import sklearn
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from sklearn_fastgrnn import FastGRNNClassifier, _losses
from sklearn_fastgrnn._cell import (
    FastGRNNEngine,
    ParameterLayout,
    init_parameters,
    to_time_major,
)
from sklearn_fastgrnn.datasets import load_digits_sequences
from sklearn_fastgrnn.distillation import (
    DistilledClassifier,
    SoftTargetTransformer,
    generate_soft_targets,
)

from .conftest import assert_same_coefs

N_CLASSES = 10


@pytest.fixture(scope="module")
def digits():
    """300 digits: X3 (300, 8, 8), the same rows flattened X2 (300, 64), y."""
    X, y = load_digits_sequences()
    X3, y = X[:300], y[:300]
    return X3, X3.reshape(len(X3), -1), y


def small_student(**params):
    return FastGRNNClassifier(
        **{"hidden_size": 4, "max_iter": 5, "random_state": 0, **params}
    )


def row_soft_targets(X2):
    """Soft targets computed row by row from X2 itself (elementwise: exact per row).

    They have nothing to do with the labels, so a student that learns from them
    alone (``distillation_alpha=1``) predicts the labels badly.
    """
    return softmax(8.0 * X2[:, 27 : 27 + N_CLASSES], axis=1)


def flatten(X):
    return X.reshape(len(X), -1)


class SoftTargetProbe(FastGRNNClassifier):
    """A FastGRNNClassifier that checks that each fit gets the soft targets of its rows."""

    def fit(self, X, y, sample_weight=None, soft_targets=None):
        X2 = np.asarray(X).reshape(len(X), -1)
        if soft_targets is None or not np.array_equal(soft_targets, row_soft_targets(X2)):
            raise AssertionError("fit did not receive the soft targets of its own rows")
        self.received_soft_targets_ = np.array(soft_targets)
        return super().fit(X, y, sample_weight=sample_weight, soft_targets=soft_targets)


class ProbaOnlyTeacher(ClassifierMixin, BaseEstimator):
    """Gives fixed probabilities (with zeros) through predict_proba only."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, 0] = 0.75
        proba[:, -1] = 0.25
        return proba

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class LabelsOnlyTeacher(ClassifierMixin, BaseEstimator):
    """A classifier with neither predict_proba nor decision_function."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class ReversedTeacher(ClassifierMixin, BaseEstimator):
    """A decision tree whose classes_ (and columns) come in reverse order."""

    def fit(self, X, y):
        self.tree_ = DecisionTreeClassifier(max_depth=4, random_state=0).fit(
            flatten(np.asarray(X)), y
        )
        self.classes_ = self.tree_.classes_[::-1]
        return self

    def predict_proba(self, X):
        return self.tree_.predict_proba(flatten(np.asarray(X)))[:, ::-1]

    def predict(self, X):
        return self.tree_.predict(flatten(np.asarray(X)))


class RecordingTeacher(DecisionTreeClassifier):
    """A decision tree that keeps a copy of the rows it was fitted on."""

    def fit(self, X, y, sample_weight=None, check_input=True):
        self.fit_rows_ = np.array(X)
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


def tree_teacher():
    return DecisionTreeClassifier(max_depth=4, random_state=0)


def flat_tree_teacher():
    """A tabular teacher that reads 3D sequences by flattening them."""
    return make_pipeline(FunctionTransformer(flatten), tree_teacher())


def coefs_differ(a, b):
    return any(not np.array_equal(a[key], b[key]) for key in a)


# ------------------------------------------------------------- soft targets
def test_soft_targets_are_teacher_log_probabilities_over_temperature(digits):
    _, X2, y = digits
    teacher = LogisticRegression(max_iter=200).fit(X2, y)
    log_p = teacher.predict_log_proba(X2)
    np.testing.assert_allclose(
        generate_soft_targets(teacher, X2, 1.0), teacher.predict_proba(X2), rtol=1e-10
    )
    for T in (0.5, 3.0, 20.0):
        soft = generate_soft_targets(teacher, X2, T)
        np.testing.assert_allclose(soft, softmax(log_p / T, axis=1), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-12)
        # never a second softmax of the probabilities themselves
        assert not np.allclose(soft, softmax(np.exp(log_p) / T, axis=1), atol=1e-3)
    # a higher temperature gives softer targets (higher entropy)
    entropy = [
        -(s * np.log(s)).sum(axis=1).mean()
        for s in (generate_soft_targets(teacher, X2, T) for T in (1.0, 3.0, 10.0))
    ]
    assert entropy[0] < entropy[1] < entropy[2]


def test_soft_targets_from_predict_proba_keep_zeros_without_warnings():
    X = np.zeros((4, 2))
    for teacher in (
        ProbaOnlyTeacher().fit(X, [0, 1, 2, 2]),
        DecisionTreeClassifier().fit([[0.0], [1.0], [2.0]], [0, 1, 2]),
    ):
        Xq = X if isinstance(teacher, ProbaOnlyTeacher) else [[0.0], [2.0]]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            soft = generate_soft_targets(teacher, Xq, 2.0)
        proba = teacher.predict_proba(Xq)
        assert np.all(soft[proba == 0] == 0.0)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(soft, softmax(np.log(proba) / 2.0, axis=1))


class BrokenTeacher(ProbaOnlyTeacher):
    """Gives no probability at all for its second sample."""

    def predict_proba(self, X):
        proba = super().predict_proba(X)
        proba[1] = 0.0
        return proba


def test_teacher_without_usable_scores_for_a_sample_is_named():
    X = np.zeros((4, 2))
    teacher = BrokenTeacher().fit(X, [0, 1, 2, 2])
    with pytest.raises(ValueError, match="no usable class scores for sample 1"):
        generate_soft_targets(teacher, X, 2.0)


def test_soft_targets_from_decision_function_read_scores_as_logits(digits):
    _, X2, y = digits
    binary = y % 2
    svm = LinearSVC().fit(X2, binary)
    assert not hasattr(svm, "predict_proba")
    s = svm.decision_function(X2)
    soft = generate_soft_targets(svm, X2, 4.0)
    np.testing.assert_allclose(soft[:, 1], expit(s / 4.0), rtol=1e-12)
    np.testing.assert_allclose(soft[:, 0], expit(-s / 4.0), rtol=1e-12)
    svc = SVC().fit(X2, y)  # probability=False: decision_function only
    np.testing.assert_allclose(
        generate_soft_targets(svc, X2, 2.0),
        softmax(svc.decision_function(X2) / 2.0, axis=1),
        rtol=1e-10,
    )


def test_teacher_without_class_scores_is_a_type_error(digits):
    _, X2, y = digits
    teacher = LabelsOnlyTeacher().fit(X2, y)
    with pytest.raises(TypeError, match="neither predict_proba nor decision_function"):
        generate_soft_targets(teacher, X2, 3.0)
    with pytest.raises(TypeError, match="neither predict_proba nor decision_function"):
        SoftTargetTransformer(LabelsOnlyTeacher()).fit(X2, y)
    with pytest.raises(TypeError, match="neither predict_proba nor decision_function"):
        DistilledClassifier(LabelsOnlyTeacher(), small_student()).fit(X2, y)


def test_soft_target_columns_follow_and_match_classes(digits):
    _, X2, y = digits
    labels = np.array(["zero", "one", "two"])[y % 3]
    teacher = tree_teacher().fit(X2, labels)
    soft = generate_soft_targets(teacher, X2, 3.0)
    order = ["two", "one", "zero"]
    reordered = generate_soft_targets(teacher, X2, 3.0, classes=order)
    for j, label in enumerate(order):
        np.testing.assert_array_equal(
            reordered[:, j], soft[:, list(teacher.classes_).index(label)]
        )
    with pytest.raises(ValueError, match=r"do not match .* the teacher lacks \['three'\]"):
        generate_soft_targets(teacher, X2, 3.0, classes=["zero", "one", "three"])
    with pytest.raises(ValueError, match=r"the student lacks \['two'\]"):
        generate_soft_targets(teacher, X2, 3.0, classes=["zero", "one"])


def test_generate_soft_targets_rejects_bad_temperature_and_unfitted_teacher(digits):
    _, X2, y = digits
    teacher = tree_teacher().fit(X2, y)
    for bad in (0.0, -1.0, float("nan"), "3"):
        with pytest.raises(ValueError, match="temperature must be a number > 0"):
            generate_soft_targets(teacher, X2, bad)
    with pytest.raises(NotFittedError):
        generate_soft_targets(tree_teacher(), X2, 3.0)


# -------------------------------------------------------- the transformer
def test_transformer_fits_a_clone_and_transforms_with_it(digits):
    _, X2, y = digits
    teacher = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    transformer = SoftTargetTransformer(teacher, temperature=2.0).fit(X2, y)
    assert not hasattr(teacher, "classes_")  # the given teacher stays unfitted
    out = transformer.transform(X2)
    np.testing.assert_array_equal(out, generate_soft_targets(transformer.teacher_, X2, 2.0))
    np.testing.assert_array_equal(transformer.classes_, np.arange(N_CLASSES))
    assert transformer.n_features_in_ == 64
    assert list(transformer.get_feature_names_out())[:2] == ["soft_target_0", "soft_target_1"]
    np.testing.assert_array_equal(transformer.fit_transform(X2, y), out)


def test_transformer_with_prefit_teacher(digits):
    _, X2, y = digits
    teacher = tree_teacher().fit(X2, y)
    transformer = SoftTargetTransformer(teacher, prefit=True).fit(X2, y)
    assert transformer.teacher_ is teacher
    np.testing.assert_array_equal(
        transformer.transform(X2), generate_soft_targets(teacher, X2, 3.0)
    )
    with pytest.raises(ValueError, match=r"labels \[10\] that the prefit teacher"):
        SoftTargetTransformer(teacher, prefit=True).fit(X2, np.where(y == 0, 10, y))
    with pytest.raises(NotFittedError):
        SoftTargetTransformer(tree_teacher(), prefit=True).fit(X2, y)
    # a frozen teacher survives cloning (prefit=True does not: clone unfits it)
    frozen = clone(SoftTargetTransformer(FrozenEstimator(teacher)))
    np.testing.assert_array_equal(
        frozen.fit(X2[:10], y[:10]).transform(X2), generate_soft_targets(teacher, X2, 3.0)
    )


def test_transformer_reads_3d_sequences_when_its_teacher_does(digits):
    X3, _, y = digits
    teacher = small_student(hidden_size=6)
    transformer = SoftTargetTransformer(teacher, temperature=2.0).fit(X3, y)
    out = transformer.transform(X3)
    assert out.shape == (len(X3), N_CLASSES)
    np.testing.assert_allclose(
        out, softmax(transformer.teacher_.predict_log_proba(X3) / 2.0, axis=1), rtol=1e-10
    )


def test_transformer_passes_fit_params_to_the_teacher(digits):
    _, X2, y = digits
    w = np.random.RandomState(0).rand(len(y))
    transformer = SoftTargetTransformer(tree_teacher()).fit(X2, y, sample_weight=w)
    expected = tree_teacher().fit(X2, y, sample_weight=w)
    np.testing.assert_array_equal(
        transformer.transform(X2), generate_soft_targets(expected, X2, 3.0)
    )


def test_transformer_rejects_bad_temperature(digits):
    _, X2, y = digits
    with pytest.raises(ValueError, match="'temperature' parameter"):
        SoftTargetTransformer(tree_teacher(), temperature=0).fit(X2, y)


# ----------------------------------------------- soft targets in the student
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda S: S[:-1], r"soft_targets has shape \(299, 10\), expected \(300, 10\)"),
        (lambda S: S[:, :-1], r"soft_targets has shape \(300, 9\), expected \(300, 10\)"),
        (lambda S: S[:, 0], r"must be 2D, of shape \(n_samples, n_classes\) = \(300, 10\)"),
        (lambda S: np.where(S == S[5].max(), np.nan, S), r"NaN or inf \(first in row 5\)"),
        (lambda S: S - (np.arange(len(S)) == 7)[:, None], r"negative entries \(first in row 7\)"),
        (lambda S: S * 1.1, "Row 0 of soft_targets sums to 1.1, not 1"),
    ],
    ids=["rows", "columns", "1d", "nan", "negative", "sum"],
)
def test_student_rejects_bad_soft_targets(digits, mutate, message):
    X3, X2, y = digits
    bad = mutate(row_soft_targets(X2))
    with pytest.raises(ValueError, match=message):
        small_student().fit(X3, y, soft_targets=bad)
    with pytest.raises(ValueError, match=message):
        small_student().partial_fit(X3, y, classes=np.arange(N_CLASSES), soft_targets=bad)


@pytest.mark.parametrize(
    "params",
    [
        {"distillation_alpha": -0.1},
        {"distillation_alpha": 1.5},
        {"distillation_temperature": 0.0},
        {"distillation_temperature": -2.0},
    ],
)
def test_distillation_parameters_are_validated(digits, params):
    X3, X2, y = digits
    (name,) = params
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        small_student(**params).fit(X3, y, soft_targets=row_soft_targets(X2))


@pytest.mark.parametrize("params", [{"alpha": 1.01}, {"alpha": -1}, {"temperature": 0}])
def test_distilled_classifier_parameters_are_validated(digits, params):
    _, X2, y = digits
    (name,) = params
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        DistilledClassifier(tree_teacher(), small_student(), **params).fit(X2, y)


def test_alpha_zero_trains_exactly_as_without_soft_targets(digits):
    X3, X2, y = digits
    S = row_soft_targets(X2)
    plain = small_student().fit(X3, y)
    distilled = small_student(distillation_alpha=0.0).fit(X3, y, soft_targets=S)
    assert_same_coefs(plain.coefs_, distilled.coefs_)
    assert plain.loss_curve_ == distilled.loss_curve_
    classes = np.arange(N_CLASSES)
    plain = small_student().partial_fit(X3, y, classes=classes)
    distilled = small_student(distillation_alpha=0.0).partial_fit(
        X3, y, classes=classes, soft_targets=S
    )
    assert_same_coefs(plain.coefs_, distilled.coefs_)
    # and any alpha > 0 does change the training
    assert coefs_differ(
        plain.coefs_,
        small_student(distillation_alpha=0.1)
        .partial_fit(X3, y, classes=classes, soft_targets=S)
        .coefs_,
    )


def test_alpha_one_learns_from_the_soft_targets_alone(digits):
    X3, X2, y = digits
    S = row_soft_targets(X2)
    shuffled = np.random.RandomState(0).permutation(y)
    a = small_student(distillation_alpha=1.0).fit(X3, y, soft_targets=S)
    b = small_student(distillation_alpha=1.0).fit(X3, shuffled, soft_targets=S)
    assert_same_coefs(a.coefs_, b.coefs_)


# ---------------------------------------- finite-difference gradient check
@pytest.mark.parametrize("ranks", [(None, None), (2, 3)], ids=["full", "low-rank"])
def test_distillation_gradient_matches_finite_differences(ranks):
    rng = np.random.RandomState(0)
    n, T, d, H, C = 7, 5, 3, 4, 3
    X = rng.standard_normal((n, T, d))
    X[0, 3:] = np.nan  # one padded sequence
    lengths = np.full(n, T)
    lengths[0] = 3
    y = np.arange(n) % C
    weights = rng.rand(n)
    weights /= weights.sum()
    soft = rng.dirichlet(np.ones(C), size=n)
    layout = ParameterLayout(d, H, C, *ranks)
    engine = FastGRNNEngine(layout, "sigmoid", "tanh", np.float64)
    flat = init_parameters(layout, np.random.RandomState(1), 1.0, -4.0, np.float64)
    flat += 0.5 * rng.standard_normal(layout.size)  # away from the symmetric init
    Xa = to_time_major(X, np.float64)
    eps = 1e-5  # central differences: truncation ~eps**2, round-off ~1e-16 / eps

    def loss(params, alpha, temperature, dlogits=None):
        logits = engine.forward(params, Xa, lengths)
        out = np.empty_like(logits) if dlogits is None else dlogits
        return _losses.distillation(logits, y, weights, soft, alpha, temperature, out)

    for alpha in (0.0, 0.3, 1.0):
        for temperature in (0.5, 1.0, 3.0, 10.0):
            logits = engine.forward(flat, Xa, lengths)
            # the loss is the formula of docs/design.md, section "Loss"
            q = softmax(logits / temperature, axis=1)
            kl = (soft * np.log(soft / q)).sum(axis=1)
            ce = -np.log(softmax(logits, axis=1)[np.arange(n), y])
            expected = alpha * temperature**2 * weights @ kl + (1 - alpha) * weights @ ce
            dlogits = np.empty_like(logits)
            assert loss(flat, alpha, temperature, dlogits) == pytest.approx(
                expected, rel=1e-12
            )
            grad = engine.backward(dlogits, np.empty(layout.size))
            numeric = np.empty(layout.size)
            for i in range(layout.size):
                step = np.zeros(layout.size)
                step[i] = eps
                numeric[i] = (
                    loss(flat + step, alpha, temperature)
                    - loss(flat - step, alpha, temperature)
                ) / (2 * eps)
            exact, approx = layout.views(grad), layout.views(numeric)
            for key in layout.shapes:
                err = np.linalg.norm(exact[key] - approx[key]) / np.linalg.norm(exact[key])
                assert err < 1e-6, (key, alpha, temperature, err)


# ------------------------------------------------------------------ routing
def test_pipeline_routes_soft_targets_without_metadata_routing(digits):
    _, X2, y = digits
    S = row_soft_targets(X2)
    student = small_student(n_timesteps=8, distillation_alpha=1.0)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", student)])
    pipe.fit(X2, y, clf__soft_targets=S)
    direct = clone(student).fit(StandardScaler().fit_transform(X2), y, soft_targets=S)
    assert_same_coefs(pipe[-1].coefs_, direct.coefs_)
    plain = clone(pipe).fit(X2, y)
    assert coefs_differ(pipe[-1].coefs_, plain[-1].coefs_)


def test_grid_search_slices_soft_targets_without_metadata_routing(digits):
    _, X2, y = digits
    S = row_soft_targets(X2)
    probe = SoftTargetProbe(hidden_size=8, n_timesteps=8, max_iter=20, random_state=0)
    search = GridSearchCV(
        probe, {"distillation_alpha": [0.0, 1.0]}, cv=KFold(3), error_score="raise"
    ).fit(X2, y, soft_targets=S)
    # the probe checked that every fold got its own rows; the refit got all of them
    assert search.best_estimator_.received_soft_targets_.shape == S.shape
    scores = search.cv_results_["mean_test_score"]
    # learning only from soft targets unrelated to the labels scores far worse
    assert scores[0] > scores[1] + 0.2


def test_cross_validate_slices_soft_targets_without_metadata_routing(digits):
    _, X2, y = digits
    S = row_soft_targets(X2)
    probe = SoftTargetProbe(hidden_size=4, n_timesteps=8, max_iter=2, random_state=0)
    result = cross_validate(
        probe, X2, y, params={"soft_targets": S}, cv=KFold(3),
        return_estimator=True, return_indices=True, error_score="raise",
    )
    for estimator, train in zip(result["estimator"], result["indices"]["train"]):
        np.testing.assert_array_equal(estimator.received_soft_targets_, S[train])


def test_metadata_routing_through_pipeline_grid_search_and_cross_validate(digits):
    _, X2, y = digits
    S = row_soft_targets(X2)
    with sklearn.config_context(enable_metadata_routing=True):
        student = small_student(n_timesteps=8, distillation_alpha=1.0)
        pipe = Pipeline(
            [("scale", StandardScaler()), ("clf", student.set_fit_request(soft_targets=True))]
        )
        pipe.fit(X2, y, soft_targets=S)
        direct = small_student(n_timesteps=8, distillation_alpha=1.0).fit(
            StandardScaler().fit_transform(X2), y, soft_targets=S
        )
        assert_same_coefs(pipe[-1].coefs_, direct.coefs_)

        probe = SoftTargetProbe(hidden_size=8, n_timesteps=8, max_iter=20, random_state=0)
        probe.set_fit_request(soft_targets=True)
        search = GridSearchCV(
            probe, {"distillation_alpha": [0.0, 1.0]}, cv=KFold(3), error_score="raise"
        ).fit(X2, y, soft_targets=S)
        scores = search.cv_results_["mean_test_score"]
        assert scores[0] > scores[1] + 0.2

        result = cross_validate(
            probe, X2, y, params={"soft_targets": S}, cv=KFold(3),
            return_estimator=True, return_indices=True, error_score="raise",
        )
        for estimator, train in zip(result["estimator"], result["indices"]["train"]):
            np.testing.assert_array_equal(estimator.received_soft_targets_, S[train])

        unrequested = Pipeline([("clf", small_student(n_timesteps=8))])
        with pytest.raises(ValueError, match="soft_targets"):
            unrequested.fit(X2, y, soft_targets=S)


# ------------------------------------------------------ DistilledClassifier
# scikit-learn's estimator checks: tests/test_estimator_checks.py
@pytest.mark.parametrize("seed", [0, 7])
def test_random_state_seeds_only_what_is_unseeded(digits, seed):
    _, X2, y = digits
    student = FastGRNNClassifier(4, n_timesteps=8, max_iter=2)

    def fit(**params):
        teacher = LogisticRegression(max_iter=200)
        return DistilledClassifier(teacher, student, **params).fit(X2, y)

    a, b = fit(random_state=seed), fit(random_state=seed)
    assert isinstance(a.student_.random_state, int)
    assert isinstance(a.teacher_.random_state, int)
    assert a.student_.random_state == b.student_.random_state
    assert_same_coefs(a.student_.coefs_, b.student_.coefs_)
    assert student.random_state is None  # the given estimators are left as they were
    seeded = DistilledClassifier(
        LogisticRegression(max_iter=200), clone(student).set_params(random_state=3),
        random_state=seed,
    ).fit(X2, y)
    assert seeded.student_.random_state == 3
    assert fit().student_.random_state is None


def test_distilled_classifier_is_teacher_soft_targets_then_student(digits):
    X3, _, y = digits
    model = DistilledClassifier(
        flat_tree_teacher(), small_student(), temperature=2.0, alpha=0.7
    ).fit(X3, y)
    teacher = flat_tree_teacher().fit(X3, y)
    S = generate_soft_targets(teacher, X3, 2.0)
    student = small_student(distillation_alpha=0.7, distillation_temperature=2.0)
    student.fit(X3, y, soft_targets=S)
    assert_same_coefs(model.student_.coefs_, student.coefs_)
    assert model.student_.distillation_temperature == 2.0
    assert model.student_.distillation_alpha == 0.7
    np.testing.assert_array_equal(model.predict(X3), student.predict(X3))
    np.testing.assert_array_equal(model.predict_proba(X3), student.predict_proba(X3))
    np.testing.assert_array_equal(model.classes_, student.classes_)
    assert model.n_features_in_ == 64


def test_distilled_classifier_aligns_teacher_columns_to_student_classes(digits):
    X3, _, y = digits
    reversed_teacher = DistilledClassifier(ReversedTeacher(), small_student()).fit(X3, y)
    plain_teacher = DistilledClassifier(flat_tree_teacher(), small_student()).fit(X3, y)
    # the same soft targets up to rounding (log-softmax sums the columns in another order)
    np.testing.assert_allclose(
        generate_soft_targets(reversed_teacher.teacher_, X3, 3.0)[:, ::-1],
        generate_soft_targets(plain_teacher.teacher_, X3, 3.0),
        rtol=1e-14, atol=1e-16,
    )
    for key, value in plain_teacher.student_.coefs_.items():
        np.testing.assert_allclose(
            reversed_teacher.student_.coefs_[key], value, rtol=1e-9, atol=1e-12
        )
    # reading the reversed columns as they come would teach other targets
    misaligned = small_student().fit(
        X3, y, soft_targets=generate_soft_targets(reversed_teacher.teacher_, X3, 3.0)
    )
    assert not np.allclose(misaligned.coefs_["V"], plain_teacher.student_.coefs_["V"])


def test_distilled_classifier_fits_the_teacher_on_training_folds_only(digits):
    _, X2, y = digits
    model = DistilledClassifier(RecordingTeacher(max_depth=3), small_student(n_timesteps=8))
    result = cross_validate(
        model, X2, y, cv=KFold(3), return_estimator=True, return_indices=True
    )
    for fitted, train in zip(result["estimator"], result["indices"]["train"]):
        np.testing.assert_array_equal(fitted.teacher_.fit_rows_, X2[train])


def test_distilled_classifier_needs_a_student_that_takes_soft_targets(digits):
    _, X2, y = digits
    with pytest.raises(TypeError, match="does not accept soft_targets"):
        DistilledClassifier(tree_teacher(), LogisticRegression()).fit(X2, y)


def test_distilled_classifier_default_student_is_fastgrnn(digits):
    _, X2, y = digits
    model = DistilledClassifier(tree_teacher())
    with pytest.raises(NotFittedError):
        model.predict(X2)
    model.set_params(student=None, alpha=1.0)
    model.fit(X2[:40, :16], y[:40])  # default student: a univariate series
    assert isinstance(model.student_, FastGRNNClassifier)
    assert model.student_.get_params() == FastGRNNClassifier(
        distillation_alpha=1.0, distillation_temperature=3.0
    ).get_params()
    assert model.student_.n_timesteps_ == 16


def test_distilled_classifier_clone_and_joblib_round_trip(digits, tmp_path):
    X3, _, y = digits
    model = DistilledClassifier(flat_tree_teacher(), small_student(), temperature=4.0)
    copy = clone(model)
    assert copy.get_params()["student__hidden_size"] == 4
    assert not hasattr(copy, "student_")
    model.fit(X3, y)
    joblib.dump(model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X3), model.predict_proba(X3))
    assert_same_coefs(loaded.student_.coefs_, model.student_.coefs_)


def test_grid_search_over_student_size_and_temperature(digits):
    X3, _, y = digits
    model = DistilledClassifier(flat_tree_teacher(), small_student())
    grid = {"student__hidden_size": [2, 5], "temperature": [1.0, 4.0]}
    search = GridSearchCV(model, grid, cv=2, error_score="raise").fit(X3, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    assert best.student_.hidden_size == search.best_params_["student__hidden_size"]
    assert best.student_.distillation_temperature == search.best_params_["temperature"]
    assert best.student_.coefs_["U"].shape == (best.student_.hidden_size,) * 2


def test_distilled_classifier_sample_weight_with_and_without_routing(digits):
    _, X2, y = digits
    w = np.random.RandomState(0).rand(len(y))
    student = small_student(n_timesteps=8)
    model = DistilledClassifier(tree_teacher(), student).fit(X2, y, sample_weight=w)
    teacher = tree_teacher().fit(X2, y, sample_weight=w)
    expected = clone(student).fit(
        X2, y, sample_weight=w, soft_targets=generate_soft_targets(teacher, X2, 3.0)
    )
    assert_same_coefs(model.student_.coefs_, expected.coefs_)
    with sklearn.config_context(enable_metadata_routing=True):
        routed = DistilledClassifier(
            tree_teacher().set_fit_request(sample_weight=True),
            clone(student).set_fit_request(sample_weight=True),
        ).fit(X2, y, sample_weight=w)
        assert_same_coefs(routed.student_.coefs_, expected.coefs_)
        with pytest.raises(ValueError, match="makes the student's soft_targets"):
            DistilledClassifier(
                tree_teacher(), clone(student).set_fit_request(soft_targets=True)
            ).fit(X2, y, soft_targets=row_soft_targets(X2))
    with pytest.raises(ValueError, match="enable_metadata_routing=True"):
        DistilledClassifier(tree_teacher(), student).fit(X2, y, soft_targets=w)
