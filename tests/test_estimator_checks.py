"""scikit-learn's own estimator checks (``parametrize_with_checks``) on every public estimator.

One table, in the style of imbalanced-learn's ``INIT_PARAMS``: for each public
estimator class, the configurations to check, each given only by the parameters
it sets (everything else stays at the estimator's defaults, so the table does
not change when a constructor gains a parameter). A public estimator without an
entry fails :func:`test_every_public_estimator_has_a_configuration`.
"""

import importlib
import inspect
import pkgutil

from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_fastgrnn
from sklearn_fastgrnn import (
    DistilledClassifier,
    FastGRNNClassifier,
    FastGRNNRegressor,
    SequenceScaler,
    SoftTargetTransformer,
)

# a constant rate: an adaptive one divides at plateaus that rounding can move by an
# epoch; no input noise: a repeated sample reads two draws of it where a sample of
# weight 2 reads one
FULL_BATCH = dict(
    batch_size=10_000, dtype="float64", solver="sgd", learning_rate_init=0.02, max_iter=100,
    learning_rate="constant", input_noise=0.0,
)
# The regressor's full-batch configuration reads the 2D X as one step of m
# features: check_regressors_train sets alpha=0.01 and asks for R² > 0.5, which
# 100 full-batch steps over 10 timesteps do not reach
FULL_BATCH_REGRESSION = FULL_BATCH | dict(n_timesteps=1, learning_rate_init=0.05, max_iter=300)
# The distilled student's full-batch run: at 0.02 its standardised input learns
# fast enough for the summation order of a weighted and a repeated sample (1e-16)
# to grow to 2e-7 in 100 epochs; at 0.01 the two fits agree to rounding, and
# 200 epochs fit check_classifiers_train's blobs (read with change channels).
# Its penalty stays 5e-3: with alpha="auto"'s 1e-2 the same growth reached
# 1.4e-8 here and 6.5e-7 under the minimum versions (NumPy 1.26), 1e-9 at 5e-3
FULL_BATCH_STUDENT = FULL_BATCH | dict(learning_rate_init=0.01, max_iter=200, alpha=5e-3)
CONFIGURATIONS = {
    FastGRNNClassifier: [
        # the default: each column of a 2D X is a timestep of a univariate series
        {},
        # one step of m channels (the tabular case) with the integer-friendly cell
        # (the configurations after the default one train on small budgets, so that
        # the checks stay fast: `python -m pytest -m "not slow"` is the dev loop)
        dict(n_timesteps=1, u_rank=4, hidden_size=16,
             gate_nonlinearity="quant_sigmoid", update_nonlinearity="quant_tanh", max_iter=40),
        # SGD with Nesterov momentum, low rank U, step decay of the learning rate
        dict(solver="sgd", learning_rate_init=0.05, u_rank=8, learning_rate="step",
             lr_decay_step=50, lr_decay=0.5, max_iter=60),
        # full-batch float64 SGD: repeating a sample and weighting it give the same
        # fit to rounding (Adam's step divides by the gradient's running scale and
        # so amplifies rounding differences from 1e-16 to about 1e-7 in 100 steps)
        FULL_BATCH,
    ],
    FastGRNNRegressor: [
        {},
        # one step of m features, Poisson deviance
        dict(n_timesteps=1, loss="poisson", hidden_size=16),
        FULL_BATCH_REGRESSION,
    ],
    SequenceScaler: [{}, dict(n_timesteps=1)],
    SoftTargetTransformer: [dict(teacher=DecisionTreeClassifier(max_depth=3, random_state=0))],
    DistilledClassifier: [
        dict(teacher=DecisionTreeClassifier(max_depth=3, random_state=0),
             student=FastGRNNClassifier(random_state=0, **FULL_BATCH_STUDENT)),
        # an unseeded student: random_state seeds it, so fitting is repeatable
        dict(teacher=LogisticRegression(), student=FastGRNNClassifier(max_iter=20),
             random_state=0),
    ],
}

# As scikit-learn does for SGDClassifier (and checks MLPClassifier only with its
# full-batch lbfgs solver): with mini-batches, weighting a sample by 2 and
# repeating it put different samples into each mini-batch, so the two fits differ.
MINI_BATCH_REASON = (
    "mini-batch training: a repeated sample and a weighted one fall into different "
    "mini-batches (and with input noise read different draws of it), so the fits "
    "are not equivalent; the full-batch float64 SGD configuration without noise "
    "runs this check"
)


def _full_batch(estimator):
    params = getattr(estimator, "student", estimator).get_params()
    return any(
        all(params[k] == v for k, v in config.items())
        for config in (FULL_BATCH, FULL_BATCH_REGRESSION, FULL_BATCH_STUDENT)
    )


POISSON_REASON = (
    "check_regressor_multioutput draws its targets from make_regression, negative "
    "values included, which the Poisson deviance cannot fit (the check does not "
    "follow the positive_only tag); the squared-error configurations run it"
)


def expected_failed_checks(estimator):
    """The sample-weight check on mini-batch configurations (see MINI_BATCH_REASON),
    and the multi-output check of the Poisson loss (see POISSON_REASON)."""
    if isinstance(estimator, FastGRNNRegressor) and estimator.loss == "poisson":
        return {"check_regressor_multioutput": POISSON_REASON,
                "check_sample_weight_equivalence_on_dense_data": MINI_BATCH_REASON}
    if not isinstance(
        estimator, (FastGRNNClassifier, FastGRNNRegressor, DistilledClassifier)
    ) or _full_batch(
        estimator
    ):
        return {}
    return {"check_sample_weight_equivalence_on_dense_data": MINI_BATCH_REASON}
def _instances():
    """One fresh estimator per configuration (estimator-valued parameters cloned)."""
    for cls, configurations in CONFIGURATIONS.items():
        for params in configurations:
            yield cls(**{
                name: clone(value) if isinstance(value, BaseEstimator) else value
                for name, value in params.items()
            })


def public_estimators():
    """BaseEstimator subclasses of the package's ``__all__`` and of its public modules.

    A class imported into a public module from a private one (the shared base)
    is not public.
    """
    names = {getattr(sklearn_fastgrnn, name) for name in sklearn_fastgrnn.__all__}
    for info in pkgutil.walk_packages(sklearn_fastgrnn.__path__, "sklearn_fastgrnn."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue  # private modules and __main__
        module = importlib.import_module(info.name)
        names.update(
            obj for name, obj in vars(module).items()
            if not name.startswith("_") and inspect.isclass(obj)
            and obj.__module__.startswith("sklearn_fastgrnn")
            and not any(part.startswith("_") for part in obj.__module__.split(".")[1:])
        )
    return {obj for obj in names if inspect.isclass(obj) and issubclass(obj, BaseEstimator)}


def test_every_public_estimator_has_a_configuration():
    found = public_estimators()
    assert {FastGRNNClassifier, FastGRNNRegressor, SequenceScaler, SoftTargetTransformer,
            DistilledClassifier} <= found
    missing = sorted(cls.__name__ for cls in found - set(CONFIGURATIONS))
    assert not missing, f"add configurations for {missing} to CONFIGURATIONS"
    assert all(CONFIGURATIONS[cls] for cls in found)


@parametrize_with_checks(list(_instances()), expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
