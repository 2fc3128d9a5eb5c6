"""
Watch a fit: the training history
=================================

Every fit records one entry per epoch in ``history_`` (training loss,
validation loss and accuracy when ``early_stopping`` holds data out, learning
rate, seconds). :class:`~sklearn_fastgrnn.plotting.TrainingHistoryDisplay`
draws it, with the epoch whose weights the model kept marked. It needs
matplotlib: ``pip install "sklearn-fastgrnn[plot]"``.
"""

import warnings

import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.plotting import TrainingHistoryDisplay
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline

X, y = load_digits_sequences()
X_train, X_test, y_train, y_test = split_halves(X, y)

# %%
# Early stopping
# --------------
# 10% of the training data is held out; training stops once the validation
# loss (the default ``scoring="loss"``) has not improved for
# ``n_iter_no_change`` epochs, and the weights of its best epoch come back.
# The accuracy on the held-out part is drawn too.

clf = FastGRNNClassifier(hidden_size=32, early_stopping=True, random_state=0)
clf.fit(X_train, y_train)
print(f"{clf.n_iter_} epochs, kept epoch {clf.best_epoch_} (lowest validation loss; "
      f"validation accuracy {clf.best_validation_score_:.3f}), test accuracy "
      f"{clf.score(X_test, y_test):.3f}")
display = TrainingHistoryDisplay.from_estimator(clf)

# %%
# A learning-rate schedule, inside a Pipeline
# -------------------------------------------
# ``learning_rate="step"`` divides the rate by 10 every ``lr_decay_step``
# epochs; the loss drops at each step. A Pipeline whose last step is the
# classifier draws the same way, here into a panel of a figure of our own.

pipe = make_fastgrnn_pipeline(
    "sequence", hidden_size=32, learning_rate="step", learning_rate_init=0.03,
    lr_decay_step=10, max_iter=30, n_iter_no_change=30, random_state=0,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # 30 epochs, on purpose
    pipe.fit(X_train, y_train)
print(f"step schedule: test accuracy {pipe.score(X_test, y_test):.3f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
left.imshow(X_test[0], cmap="gray_r")
left.set_title(f"one input: 8 timesteps (rows), predicted {pipe.predict(X_test[:1])[0]}")
left.set_xlabel("channel (pixel)")
left.set_ylabel("timestep")
display = TrainingHistoryDisplay.from_estimator(pipe, ax=right, name="step learning rate")
display.ax_.set_yscale("log")  # the panels are plain Axes: style them as usual
fig.tight_layout()

# %%
# The numbers behind the pictures: ``pandas.DataFrame(clf.history_)`` gives the
# same table.

for record in clf.history_[:: max(1, clf.n_iter_ // 6)]:
    print({key: round(value, 4) if isinstance(value, float) else value
           for key, value in record.items()})
