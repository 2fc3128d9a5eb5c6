"""Does a small FastGRNN learn more from a strong teacher than from the labels alone?

Data: scikit-learn's digits read as sequences of 8 rows of 8 pixels
(``load_digits_sequences``), trained on the first half and tested on the second
(``split_halves``). Every choice below is made on the training half only:

1. Teacher: an RBF SVC on the 64 flattened pixels with the ``C`` that scores
   best in 5-fold cross-validation on the training half. It gives soft targets
   in one of two ways, chosen in step 3: its ``decision_function`` scores read
   as logits, or probabilities from
   ``CalibratedClassifierCV(SVC(C=C), ensemble=False)`` (what scikit-learn 1.9
   recommends over ``SVC(probability=True)``).
2. Student: ``FastGRNNClassifier(hidden_size=8)`` reading the 3D sequences, all
   other parameters at their defaults.
3. Teacher output, ``temperature`` and ``alpha`` of ``DistilledClassifier``:
   ``GridSearchCV`` with 3-fold cross-validation repeated twice on the training
   half (student seed 0). ``alpha=0``, training on the labels alone, is in the
   grid, so the search may reject distillation.
4. With those fixed, student alone and distilled student are trained with seeds
   ``0 .. n_seeds - 1`` (the teacher is deterministic) and scored once on the
   test half. Reported: mean, standard deviation, range, the per-seed paired
   difference (with a paired t-test), and model sizes (``model_size_bytes_``; for
   the SVC, its support vectors, dual coefficients and the calibration parameters at 4 bytes each).

Run ``python benchmarks/bench_distillation.py`` (a few minutes on 2 cores) or
``--quick`` for a smoke run (fewer seeds, a smaller grid).
"""

import argparse
import statistics
import time
import warnings

from scipy.stats import ttest_rel
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.distillation import DistilledClassifier

HIDDEN_SIZE = 8
TEACHER_C = [1.0, 10.0, 100.0]
TEMPERATURES = [1.0, 2.0, 4.0, 8.0]
ALPHAS = [0.25, 0.5, 0.75]


def flatten(X):
    """(n, 8, 8) sequences to (n, 64) pixel rows, for the tabular teacher."""
    return X.reshape(len(X), -1)


def make_teacher(C, calibrated=False):
    svc = SVC(C=C)
    if calibrated:
        svc = CalibratedClassifierCV(svc, ensemble=False)
    return make_pipeline(FunctionTransformer(flatten), svc)


def teacher_output(teacher):
    calibrated = isinstance(teacher[-1], CalibratedClassifierCV)
    return "calibrated probabilities" if calibrated else "decision_function"


def svc_size_bytes(teacher):
    """Support vectors, dual coefficients, intercepts (and calibration), 4 bytes each."""
    model, n_values = teacher[-1], 0
    if isinstance(model, CalibratedClassifierCV):
        calibrated = model.calibrated_classifiers_[0]
        model = calibrated.estimator
        n_values += 2 * len(calibrated.calibrators)  # sigmoid calibration: a, b per class
    n_values += model.support_vectors_.size + model.dual_coef_.size + model.intercept_.size
    return 4 * n_values


def spread(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f} ({min(values):.4f} to {max(values):.4f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="student seeds (>= 5)")
    parser.add_argument("--n-jobs", type=int, default=1, help="GridSearchCV workers")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    n_seeds = 2 if args.quick else args.seeds
    temperatures = TEMPERATURES[1:3] if args.quick else TEMPERATURES
    alphas = ALPHAS[1:2] if args.quick else ALPHAS
    n_repeats = 1 if args.quick else 2
    warnings.simplefilter("ignore", ConvergenceWarning)

    X, y = load_digits_sequences()
    X_train, X_test, y_train, y_test = split_halves(X, y)
    print(f"digits as sequences: train {X_train.shape}, test {X_test.shape}")

    # 1. the teacher's C, by 5-fold CV of its own accuracy on the training half
    start = time.perf_counter()
    teacher_search = GridSearchCV(
        make_teacher(1.0), {"svc__C": TEACHER_C},
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
    ).fit(X_train, y_train)
    best_C = teacher_search.best_params_["svc__C"]
    print(
        f"teacher SVC(C={best_C:g}) chosen by 5-fold CV (CV accuracy "
        f"{teacher_search.best_score_:.4f}), {time.perf_counter() - start:.1f} s"
    )

    # 3. teacher output, temperature and alpha, by the distilled student's CV accuracy
    start = time.perf_counter()
    grid = [
        {"alpha": [0.0]},  # the labels alone: the teacher is fitted but unused
        {
            "teacher": [make_teacher(best_C), make_teacher(best_C, calibrated=True)],
            "temperature": temperatures,
            "alpha": alphas,
        },
    ]
    cv = RepeatedStratifiedKFold(n_splits=3, n_repeats=n_repeats, random_state=0)
    search = GridSearchCV(
        DistilledClassifier(make_teacher(best_C), FastGRNNClassifier(HIDDEN_SIZE, random_state=0)),
        grid, cv=cv, n_jobs=args.n_jobs,
    ).fit(X_train, y_train)
    best = search.best_params_
    teacher = best.get("teacher", make_teacher(best_C))
    print(
        f"grid search over {len(search.cv_results_['params'])} settings, "
        f"{cv.get_n_splits()} folds: {time.perf_counter() - start:.1f} s"
    )
    print("CV accuracy on the training half (mean ± std over folds):")
    results = search.cv_results_
    for params, mean, std in zip(
        results["params"], results["mean_test_score"], results["std_test_score"]
    ):
        if params["alpha"] == 0:
            label = "labels alone (alpha=0)"
        else:
            label = (
                f"{teacher_output(params['teacher']):<24} T={params['temperature']:<3g} "
                f"alpha={params['alpha']:g}"
            )
        marker = "  <- chosen" if params == best else ""
        print(f"  {label:<52} {mean:.4f} ± {std:.4f}{marker}")

    # 4. student alone vs distilled student over seeds, scored once on the test half
    start = time.perf_counter()
    teacher_fitted = clone(teacher).fit(X_train, y_train)
    alone, distilled = [], []
    for seed in range(n_seeds):
        plain = FastGRNNClassifier(HIDDEN_SIZE, random_state=seed).fit(X_train, y_train)
        model = clone(search.best_estimator_).set_params(
            student=FastGRNNClassifier(HIDDEN_SIZE, random_state=seed)
        ).fit(X_train, y_train)
        alone.append(plain.score(X_test, y_test))
        distilled.append(model.score(X_test, y_test))
        print(f"  seed {seed}: alone {alone[-1]:.4f}, distilled {distilled[-1]:.4f}")
    print(f"{n_seeds} seeds: {time.perf_counter() - start:.1f} s")

    differences = [d - a for d, a in zip(distilled, alone)]
    wins = sum(d > 0 for d in differences)
    student_bytes = plain.model_size_bytes_
    chosen = (
        "alpha=0: no distillation"
        if best["alpha"] == 0
        else f"{teacher_output(teacher)}, T={best['temperature']:g}, alpha={best['alpha']:g}"
    )
    print()
    print(f"| model | test accuracy, mean ± std (min to max), {n_seeds} seeds | size |")
    print("|---|---|---|")
    print(
        f"| teacher: RBF SVC(C={best_C:g}) on 64 pixels, {teacher_output(teacher)} | "
        f"{teacher_fitted.score(X_test, y_test):.4f} (deterministic) | "
        f"{svc_size_bytes(teacher_fitted) / 1024:.1f} KB |"
    )
    print(
        f"| student alone: FastGRNN hidden_size={HIDDEN_SIZE} | {spread(alone)} | "
        f"{student_bytes} B ({student_bytes / 1024:.2f} KB) |"
    )
    print(
        f"| distilled student ({chosen}) | {spread(distilled)} | "
        f"{model.student_.model_size_bytes_} B "
        f"({model.student_.model_size_bytes_ / 1024:.2f} KB) |"
    )
    p_value = ttest_rel(distilled, alone).pvalue if n_seeds > 1 else float("nan")
    print(
        f"\npaired difference distilled - alone: {spread(differences)}; "
        f"distilled better for {wins} of {n_seeds} seeds; paired t-test p = {p_value:.3g}"
    )


if __name__ == "__main__":
    main()
