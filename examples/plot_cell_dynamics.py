"""
What the cell computes on one sequence
======================================

Trains a small FastGRNN on the digits read as sequences (8 timesteps: the rows
of the image, top to bottom, each 8 pixels), then runs the cell by hand in
NumPy on one test digit, from the fitted ``coefs_``, where ``x_t`` is a row's
8 pixels followed by their absolute changes from the row above (the change
channels, 0 for the first row) and the logarithms of those changes (each plus
the pixel's offset, ``change_offsets_``):

.. math::

    z_t = \\sigma(x_t W + h_{t-1} U + b_z), \\quad
    c_t = \\tanh(x_t W + h_{t-1} U + b_c), \\quad
    h_t = (\\sigma(\\zeta)(1 - z_t) + \\sigma(\\nu))\\, c_t + z_t\\, h_{t-1}

and checks that the final state gives exactly the classifier's
``predict_proba``. The pictures show the input, the gate ``z_t`` (near 1: keep
the old state; near 0: take the candidate), the state ``h_t``, and the class
probabilities the state would give if the sequence stopped at step ``t``.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits_sequences()
X_train, X_test, y_train, y_test = split_halves(X, y)
clf = FastGRNNClassifier(
    hidden_size=16, gate_nonlinearity="sigmoid", update_nonlinearity="tanh",
    max_iter=60, random_state=0,
).fit(X_train, y_train)
print(f"test accuracy {clf.score(X_test, y_test):.3f} (hidden_size=16)")

# %%
# The cell, step by step
# ----------------------
# ``coefs_`` holds the weights with row vectors: ``x_t @ W`` is
# ``(3 * n_channels,) @ (3 * n_channels, hidden_size)``, the channels, their
# changes and the logarithms of the changes plus ``change_offsets_``
# (``change_channels_``). ``zeta`` and ``nu`` are stored raw, before the
# sigmoid.

w = clf.coefs_
x = X_test[0]                                  # (8 timesteps, 8 channels)
changes = np.abs(np.diff(x, axis=0, prepend=x[:1]))  # 0 for the first row
logs = np.log(changes + clf.change_offsets_)
h = np.zeros(clf.hidden_size)
gates, states, probas = [], [], []
for x_t in np.concatenate([x, changes, logs], axis=1):   # (8 timesteps, 24 values)
    pre = x_t @ w["W"] + h @ w["U"]
    z = expit(pre + w["bias_gate"])
    c = np.tanh(pre + w["bias_update"])
    h = (expit(w["zeta"]) * (1 - z) + expit(w["nu"])) * c + z * h
    gates.append(z)
    states.append(h)
    probas.append(softmax(h @ w["V"] + w["bias_out"]))
gates, states, probas = np.array(gates), np.array(states), np.array(probas)

# the model trained in float32 (the default dtype): equal to float32 rounding
np.testing.assert_allclose(probas[-1], clf.predict_proba(x[None])[0], rtol=1e-5, atol=1e-7)
print(f"digit {y_test[0]}: predicted {clf.classes_[probas[-1].argmax()]} with "
      f"probability {probas[-1].max():.3f}; the NumPy cell matches predict_proba")
print(f"sigmoid(zeta) = {expit(w['zeta']):.3f}, sigmoid(nu) = {expit(w['nu']):.4f}")
print("mean gate per step:", np.round(gates.mean(axis=1), 2))

# %%
# Pictures
# --------
# Time runs left to right in every panel.

# A narrow second column holds the colour bars, so the time axes line up.
fig, grid = plt.subplots(4, 2, figsize=(6.4, 9),
                         gridspec_kw={"height_ratios": [1, 2, 2, 1.6], "width_ratios": [40, 1]})
axes, bars = grid[:, 0], grid[:, 1]
steps = np.arange(1, len(x) + 1)


def heatmap(row, values, title, cmap, vmin, vmax):
    image = axes[row].imshow(values.T, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                             extent=(0.5, len(x) + 0.5, values.shape[1] - 0.5, -0.5),
                             interpolation="nearest")
    axes[row].set_title(title, fontsize="medium")
    fig.colorbar(image, cax=bars[row])


heatmap(0, x, f"input x_t: row t of a '{y_test[0]}' (8 pixels)", "gray_r", 0, 1)
axes[0].set_ylabel("pixel")
heatmap(1, gates, "gate z_t (1 keeps the state, 0 takes the candidate)", "viridis", 0, 1)
axes[1].set_ylabel("hidden unit")
limit = max(1.0, float(np.abs(states).max()))  # |h_t| may pass 1 a little
heatmap(2, states, "hidden state h_t", "RdBu_r", -limit, limit)
axes[2].set_ylabel("hidden unit")
for k, label in enumerate(clf.classes_):
    true = label == y_test[0]
    axes[3].plot(steps, probas[:, k], marker=".", lw=2 if true else 1,
                 color="C3" if true else "0.7", label=f"class {label}" if true else None)
axes[3].set_ylim(0, 1)
axes[3].set_ylabel("probability")
axes[3].set_title("softmax(h_t V + b_out): the prediction if the sequence ended at t",
                  fontsize="medium")
axes[3].legend(loc="upper left", fontsize="small")
bars[3].set_axis_off()
for ax in axes:
    ax.set_xlim(0.5, len(x) + 0.5)
    ax.set_xticks(steps)
axes[3].set_xlabel("timestep t")
fig.tight_layout()
