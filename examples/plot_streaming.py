"""
Streaming: probabilities as a sequence arrives, and early decisions
===================================================================

A device that reads a sensor sample by sample wants the class as soon as it
is sure, not at the end of a window. Every FastGRNN model can be read after
each timestep:

- :meth:`~sklearn_fastgrnn.FastGRNNClassifier.staged_predict_proba` gives the
  probabilities after every timestep of whole sequences;
- :meth:`~sklearn_fastgrnn.FastGRNNClassifier.streamer` keeps the state of
  many streams and is fed one timestep at a time;
- :meth:`~sklearn_fastgrnn.FastGRNNClassifier.predict_early` decides at the
  first timestep whose probability reaches a threshold;
- ``compile_predictor(model).streamer()`` does the same in the exported C code
  (its ``name_step`` function), and ``quantize(model).streamer()`` in the int8
  arithmetic of a microcontroller.

The sequences here are generated: noise, in which an event appears at a random
time between steps 10 and 35 (a rise, a dip, or a short oscillation: the
class). Nothing before the event tells the classes apart.
"""

import matplotlib.pyplot as plt
import numpy as np

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.compression import quantize

T, EVENT = 60, 8  # sequence length, event length


def make_events(n, seed):
    """Noisy sequences with an event of class 0 (rise), 1 (dip) or 2 (oscillation)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    start = rng.integers(10, 36, n)
    X = 0.3 * rng.standard_normal((n, T, 1))
    shapes = [np.hanning(EVENT), -np.hanning(EVENT), np.sin(np.linspace(0, 4 * np.pi, EVENT))]
    for i in range(n):
        X[i, start[i] : start[i] + EVENT, 0] += 1.5 * shapes[y[i]]
    return X, y, start


X_train, y_train, _ = make_events(600, seed=0)
X_test, y_test, start_test = make_events(300, seed=1)

# %%
# A mean readout reads every state, so a prefix before the event averages
# states that say nothing; that keeps the early probabilities honest (with the
# default ``readout="last"`` a prefix is read as if it were a whole sequence).
clf = FastGRNNClassifier(16, readout="mean", random_state=0).fit(X_train, y_train)
print(f"test accuracy on whole sequences: {clf.score(X_test, y_test):.3f}")

staged = clf.staged_predict_proba(X_test)  # (n, T, n_classes)

# %%
# The probability of the true class after every timestep, for four sequences;
# the shaded span is the event, the dot the decision of ``predict_early`` at 0.95.
y_early, steps = clf.predict_early(X_test, threshold=0.95)
fig, axes = plt.subplots(2, 2, figsize=(9, 5), sharex=True, sharey=True)
names = ["rise", "dip", "oscillation"]
articles = ["a", "a", "an"]
for ax, i in zip(axes.ravel(), [0, 1, 2, 5]):
    ax.axvspan(start_test[i], start_test[i] + EVENT, color="0.9")
    ax.plot(np.arange(1, T + 1), staged[i, :, y_test[i]], label="true class")
    ax.plot(np.arange(1, T + 1), X_test[i, :, 0] / 6 + 0.5, color="0.6", lw=0.8,
            label="input (scaled)")
    ax.plot(steps[i], staged[i, steps[i] - 1, y_early[i]], "o", color="C3",
            label=f"decided: {names[y_early[i]]}")
    ax.set_title(f"{articles[y_test[i]]} {names[y_test[i]]} at step {start_test[i]}")
    ax.legend(loc="lower right", fontsize=7)
for ax in axes[1]:
    ax.set_xlabel("timestep")
for ax in axes[:, 0]:
    ax.set_ylabel("probability")
fig.tight_layout()

# %%
# Accuracy against earliness: each threshold decides some timesteps into the
# sequence (earliness = decision step / length).
thresholds = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]
for threshold in thresholds:
    y_early, steps = clf.predict_early(X_test, threshold)
    print(f"threshold {threshold:<6} accuracy {np.mean(y_early == y_test):.3f}, "
          f"mean earliness {np.mean(steps / T):.2f} (the events end at "
          f"{np.mean((start_test + EVENT) / T):.2f} on average)")

# %%
# A streamer holds the state of several streams and gives, after each update,
# what ``predict_proba`` gives for each sequence so far. Here three streams are
# fed together, one timestep of each per call. Its state is one row per stream
# (``stream.state``), to save or move; a row of NaN leaves a stream as it was.
stream = clf.streamer(n_streams=3)
for t in range(T):
    proba = stream.update(X_test[:3, t])
print("streamed equals staged:", np.allclose(proba, staged[:3, -1]))

# The int8 model streams with its integer arithmetic, which the exported C
# code's ``name_step`` reproduces bit for bit.
int8 = quantize(clf, X_train)
int8_stream = int8.streamer(n_streams=3)
for t in range(T):
    int8_proba = int8_stream.update(X_test[:3, t])
same = (int8_proba.argmax(axis=1) == proba.argmax(axis=1)).all()
print("int8 stream: the same decisions:", same)

# With a C compiler, ``compile_predictor(clf).streamer(3)`` is the same
# streamer with its state held in C (a few microseconds an update):
#
#     from sklearn_fastgrnn.export import compile_predictor
#     fast = compile_predictor(clf).streamer(n_streams=3)
#     fast.update(X_test[:3, 0])
plt.show()
