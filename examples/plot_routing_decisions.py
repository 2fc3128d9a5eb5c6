"""
Routing decisions: calibrated probabilities and a threshold tuned for cost
==========================================================================

A router sends each request to a cheap model or an expensive one. The system
this package descends from uses a fixed rule: the cheap model when the
router's score reaches 0.85. A score is not a probability, and 0.85 is not
chosen for anyone's costs. scikit-learn has the two tools that make the
decision principled, and they work on a FastGRNN router as on any classifier:

- :class:`~sklearn.calibration.CalibratedClassifierCV` turns the score into a
  probability that the cheap model is good enough;
- :class:`~sklearn.model_selection.TunedThresholdClassifierCV` picks the
  threshold that minimises the expected cost, and
  :class:`~sklearn.model_selection.FixedThresholdClassifier` sets one for a
  target rate (here: at most a given share of requests to the expensive model).

Nothing in this example is specific to the package but the router itself; the
costs are made up: the cheap model costs 1, the expensive one 10, and a bad
cheap answer costs 30 (the expensive model is taken to be always good).
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import make_scorer
from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV

from sklearn_fastgrnn import FastGRNNClassifier

warnings.filterwarnings("ignore", category=ConvergenceWarning)
CHEAP, EXPENSIVE, BAD_CHEAP_ANSWER = 1.0, 10.0, 30.0


def make_requests(n_clients, n_recent=8, seed=0):
    """Each client's last requests (length, share of code, outcome of the previous
    one) and whether the cheap model is good enough for the newest."""
    rng = np.random.default_rng(seed)
    client = rng.normal(0.0, 1.2, size=(n_clients, 1))
    length = rng.normal(5.0, 1.0, size=(n_clients, n_recent))
    code = rng.beta(1.0, 3.0, size=(n_clients, n_recent))
    difficulty = client + 0.8 * (length - 5) + 2.0 * (code - 0.25)
    cheap_ok = rng.random((n_clients, n_recent)) < expit(1.0 - 1.5 * difficulty)
    previous_ok = np.zeros((n_clients, n_recent))
    previous_ok[:, 1:] = cheap_ok[:, :-1]
    return np.stack([length, code, previous_ok], axis=2), cheap_ok[:, -1].astype(int)


def cost(y_true, use_cheap):
    """Mean cost per request of sending the predicted-good ones to the cheap model."""
    use_cheap = np.asarray(use_cheap) == 1
    return np.mean(np.where(use_cheap, CHEAP + BAD_CHEAP_ANSWER * (y_true == 0), EXPENSIVE))


X_train, y_train = make_requests(3000, seed=0)
X_test, y_test = make_requests(3000, seed=1)
router = FastGRNNClassifier(hidden_size=16, random_state=0)

# %%
# The fixed rule and a calibrated router
# --------------------------------------
# The fixed rule reads the router's probability as it is. Calibration fits the
# router on parts of the training data and maps its scores to probabilities on
# the rest (isotonic regression here).

fixed_rule = FixedThresholdClassifier(router, threshold=0.85).fit(X_train, y_train)
calibrated = CalibratedClassifierCV(router, method="isotonic", cv=3).fit(X_train, y_train)

fig, ax = plt.subplots(figsize=(5.2, 4.4))
for model, label in [(fixed_rule.estimator_, "router as trained"),
                     (calibrated, "calibrated (isotonic, 3 folds)")]:
    proba = model.predict_proba(X_test)[:, 1]
    observed, predicted = calibration_curve(y_test, proba, n_bins=10)
    ax.plot(predicted, observed, "o-", label=label)
ax.plot([0, 1], [0, 1], ":", color="0.5", label="perfectly calibrated")
ax.set_xlabel("predicted probability that the cheap model is good enough")
ax.set_ylabel("observed share good enough")
ax.legend(loc="upper left", fontsize="small")
fig.tight_layout()

# %%
# A threshold tuned for the costs, and one for a target rate
# ----------------------------------------------------------
# :class:`~sklearn.model_selection.TunedThresholdClassifierCV` tries
# thresholds on held-out folds and keeps the one of the lowest cost. For a
# budget of the expensive model instead (at most 40% of the requests), the
# threshold is a quantile of the calibrated probabilities on the training data.

tuned = TunedThresholdClassifierCV(
    calibrated, scoring=make_scorer(cost, greater_is_better=False), cv=3
).fit(X_train, y_train)
train_proba = calibrated.predict_proba(X_train)[:, 1]
budget = FixedThresholdClassifier(calibrated, threshold=np.quantile(train_proba, 0.4))
budget.fit(X_train, y_train)

always_expensive = EXPENSIVE
print(f"{'rule':44s} {'cost/request':>12s} {'saved':>7s} {'to expensive':>12s}")
for name, model in [("fixed: router score >= 0.85", fixed_rule),
                    (f"tuned for cost (threshold {tuned.best_threshold_:.2f})", tuned),
                    ("budget: at most 40% to the expensive model", budget)]:
    use_cheap = model.predict(X_test)
    spent = cost(y_test, use_cheap)
    print(f"{name:44s} {spent:12.2f} {1 - spent / always_expensive:7.1%} "
          f"{np.mean(use_cheap == 0):12.1%}")

# %%
# The same decision, streamed
# ---------------------------
# A router often sees a client's requests one at a time. A
# :meth:`~sklearn_fastgrnn.FastGRNNClassifier.streamer` keeps each client's
# state between requests; after a client's last request its probability is
# exactly the one the router gives the whole sequence, so the calibration and
# the tuned threshold apply to it unchanged.

trained = fixed_rule.estimator_
stream = trained.streamer(n_streams=5)
for t in range(X_test.shape[1]):
    streamed = stream.update(X_test[:5, t])[:, 1]
whole = trained.predict_proba(X_test[:5])[:, 1]
print("streamed  ", np.round(streamed, 4))
print("whole     ", np.round(whole, 4))
print("calibrated", np.round(calibrated.predict_proba(X_test[:5])[:, 1], 4))
