"""
Route requests between a cheap and an expensive model
=====================================================

The use case FastGRNN serves here: a service answers each request with a cheap
model or an expensive one (ten times the cost), and a router decides which,
before answering. The router is a FastGRNN that reads each client's last few
requests and outputs the probability that **the cheap model is good enough**
for the newest one. Moving the confidence threshold trades cost for quality; the
plot shows the whole trade-off. The router must be tiny and fast, since it runs
on every request: the script prints its size and its latency per decision.

The data are synthetic. Every client has a hidden difficulty; each request has
a length (log tokens), a share of code, a number of constraints, and, known by
the time of the next request, whether the cheap model was good enough on the
previous one. The cheap model fails more often on long, code-heavy, constrained
requests and on difficult clients, which only the history reveals.
"""

import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline

warnings.filterwarnings("ignore", category=ConvergenceWarning)
EXPENSIVE_COST = 10.0  # the cheap model costs 1


def make_requests(n_clients, n_recent=8, seed=0):
    """Each client's ``n_recent`` last requests, and the label of the newest."""
    rng = np.random.default_rng(seed)
    client = rng.normal(0.0, 1.2, size=(n_clients, 1))         # hidden difficulty
    length = rng.normal(5.0, 1.0, size=(n_clients, n_recent))   # log tokens
    code = rng.beta(1.0, 3.0, size=(n_clients, n_recent))       # share of code
    constraints = rng.poisson(1.5, size=(n_clients, n_recent))
    difficulty = (client + 0.8 * (length - 5) + 2.0 * (code - 0.25)
                  + 0.4 * (constraints - 1.5) + rng.normal(0, 0.5, (n_clients, n_recent)))
    cheap_ok = rng.random((n_clients, n_recent)) < expit(1.0 - 1.5 * difficulty)
    previous_ok = np.zeros((n_clients, n_recent))
    previous_ok[:, 1:] = cheap_ok[:, :-1]                        # known one step later
    X = np.stack([length, code, constraints, previous_ok], axis=2)
    return X, cheap_ok[:, -1].astype(int)


X_train, y_train = make_requests(4000, seed=0)
X_test, y_test = make_requests(2000, seed=1)
print(f"{X_train.shape[0]} clients to train, {X_test.shape[0]} to test; sequences of "
      f"{X_train.shape[1]} requests x {X_train.shape[2]} features")
print(f"the cheap model was good enough for {y_test.mean():.0%} of the test requests")

# %%
# The router
# ----------
# A FastGRNN behind a :class:`~sklearn_fastgrnn.SequenceScaler`. For
# comparison, a logistic regression that sees the newest request only.

router = make_fastgrnn_pipeline(
    "sequence", hidden_size=16, max_iter=30, early_stopping=True, random_state=0
).fit(X_train, y_train)
newest_only = LogisticRegression().fit(X_train[:, -1, :3], y_train)

p_router = router.predict_proba(X_test)[:, 1]
p_newest = newest_only.predict_proba(X_test[:, -1, :3])[:, 1]
print(f"router accuracy {router.score(X_test, y_test):.3f}, newest request only "
      f"{newest_only.score(X_test[:, -1, :3], y_test):.3f}")

# %%
# Size and latency of one decision
# --------------------------------
# A decision is one ``predict_proba`` call on one client's sequence (scaling
# included). The latency is the median over repeats, each timing a run of calls.

fastgrnn: FastGRNNClassifier = router[-1]
print(f"router size: {fastgrnn.model_size_bytes_ / 1024:.2f} KB "
      f"({fastgrnn.n_params_} parameters as float32)")
one = X_test[:1]
calls, repeats = 200, 7
per_call = []
for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
        router.predict_proba(one)
    per_call.append((time.perf_counter() - start) / calls)
print(f"latency per decision: median {np.median(per_call) * 1e6:.0f} us "
      f"({repeats} repeats of {calls} calls; min {min(per_call) * 1e6:.0f} us)")

# %%
# Cost saved against quality kept
# -------------------------------
# A request goes to the cheap model when the predicted probability reaches the
# threshold, else to the expensive one, which is taken to be always good
# enough. *Cost saved* compares with sending everything to the expensive model;
# *quality kept* is the share of requests answered well.


def trade_off(proba, thresholds):
    saved, quality = [], []
    for threshold in thresholds:
        cheap = proba >= threshold
        cost = np.where(cheap, 1.0, EXPENSIVE_COST).sum()
        saved.append(1 - cost / (EXPENSIVE_COST * len(proba)))
        quality.append(np.mean(~cheap | (y_test == 1)))
    return np.array(saved), np.array(quality)


thresholds = np.linspace(0, 1, 201)
fig, ax = plt.subplots(figsize=(6.4, 4.4))
for proba, label in [(p_router, "FastGRNN router (last 8 requests)"),
                     (p_newest, "logistic regression (newest request)")]:
    saved, quality = trade_off(proba, thresholds)
    ax.plot(saved, quality, label=label)
    if proba is p_router:
        for threshold in (0.5, 0.8, 0.95):
            i = np.searchsorted(thresholds, threshold)
            ax.annotate(f"threshold {threshold}", (saved[i], quality[i]), fontsize="small",
                        xytext=(-10, -18), textcoords="offset points", ha="right")
            ax.plot(saved[i], quality[i], "o", color="C0")
            print(f"threshold {threshold:.2f}: cost saved {saved[i]:.1%}, "
                  f"quality kept {quality[i]:.1%}")
saved, quality = trade_off(np.random.default_rng(2).random(len(y_test)), thresholds)
ax.plot(saved, quality, color="0.6", linestyle=":", label="random routing")
ax.set_xlabel("cost saved (vs. always expensive)")
ax.set_ylabel("quality kept (share answered well)")
ax.set_title("Routing requests: moving the confidence threshold")
ax.grid(alpha=0.3)
ax.legend(loc="lower left", fontsize="small")
fig.tight_layout()
