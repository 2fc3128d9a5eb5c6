"""scikit-learn's own estimator checks (``parametrize_with_checks``)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_fastgrnn import FastGRNNClassifier

ESTIMATORS = [
    # the default: each column of a 2D X is a timestep of a univariate series
    FastGRNNClassifier(),
    # one step of m channels (the tabular case) with the integer-friendly cell
    FastGRNNClassifier(
        n_timesteps=1, u_rank=4, hidden_size=16,
        gate_nonlinearity="quant_sigmoid", update_nonlinearity="quant_tanh",
    ),
    # SGD with Nesterov momentum, low rank U, step decay of the learning rate
    FastGRNNClassifier(
        solver="sgd", learning_rate_init=0.05, u_rank=8, learning_rate="step",
        lr_decay_step=50, lr_decay=0.5,
    ),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
