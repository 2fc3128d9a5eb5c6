"""The model is FastGRNN: predictions recomputed from ``coefs_`` by a literal,
loop-by-loop transcription of docs/design.md, section "The cell", agree to 1e-10
in float64."""

import math

import numpy as np
import pytest

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn._nonlinearities import NONLINEARITIES, evaluate

from .conftest import make_sequences

LITERAL = {
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "tanh": math.tanh,
    "relu": lambda x: max(x, 0.0),
    "quant_sigmoid": lambda x: min(max((x + 1.0) / 2.0, 0.0), 1.0),
    "quant_tanh": lambda x: min(max(x, -1.0), 1.0),
}


def literal_predict_proba(clf, X):
    """docs/design.md, "The cell", one scalar at a time, with trailing NaN steps skipped
    (a model with ``change_channels`` reads each channel, then its absolute change, then
    the logarithm of the change plus the channel's offset)."""
    c = {k: np.asarray(v, dtype=float) for k, v in clf.coefs_.items()}
    W = c["W"] if "W" in c else c["W1"] @ c["W2"]
    U = c["U"] if "U" in c else c["U1"] @ c["U2"]
    d, H = W.shape
    C = c["V"].shape[1]
    gate, update = LITERAL[clf.gate_nonlinearity], LITERAL[clf.update_nonlinearity]
    s_zeta, s_nu = LITERAL["sigmoid"](c["zeta"]), LITERAL["sigmoid"](c["nu"])
    out = np.empty((len(X), C))
    for i, seq in enumerate(X):
        h = [0.0] * H
        previous = seq[0]
        for raw in seq:
            if all(math.isnan(v) for v in raw):
                break  # padding: the state stops at the last real step
            x = list(raw)
            if clf.change_channels_:
                changes = [abs(v - p) for v, p in zip(raw, previous)]
                x += changes + [math.log(c + o) for c, o in zip(changes, clf.change_offsets_)]
            previous = raw
            new_h = []
            for j in range(H):
                pre = sum(x[k] * W[k, j] for k in range(d))
                pre += sum(h[k] * U[k, j] for k in range(H))
                z = gate(pre + c["bias_gate"][j])
                cand = update(pre + c["bias_update"][j])
                new_h.append((s_zeta * (1 - z) + s_nu) * cand + z * h[j])
            h = new_h
        logits = [sum(h[k] * c["V"][k, m] for k in range(H)) + c["bias_out"][m]
                  for m in range(C)]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        out[i] = [e / sum(exps) for e in exps]
    return out


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"change_channels": False},
        {"w_rank": 2, "u_rank": 3},
        {"gate_nonlinearity": "tanh", "update_nonlinearity": "sigmoid"},
        {"gate_nonlinearity": "quant_sigmoid", "update_nonlinearity": "quant_tanh"},
        {"gate_nonlinearity": "relu", "update_nonlinearity": "relu"},
    ],
)
def test_predict_proba_is_the_literal_cell(rng, params):
    X, y = make_sequences(rng)
    clf = FastGRNNClassifier(hidden_size=6, max_iter=5, random_state=0, **params)
    clf.fit(X, y)
    X_test = X[:12].copy()
    X_test[3, 4:] = np.nan  # a padded sequence too
    X_test[7, 1:] = np.nan
    np.testing.assert_allclose(
        clf.predict_proba(X_test), literal_predict_proba(clf, X_test), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("name", sorted(NONLINEARITIES))
def test_every_registered_nonlinearity_is_its_literal_function(name):
    assert set(LITERAL) == set(NONLINEARITIES)
    x = np.concatenate([np.linspace(-6, 6, 97), [-1.0, 0.0, 1.0, -40.0, 40.0]])
    expected = [LITERAL[name](v) for v in x]
    np.testing.assert_allclose(evaluate(name, x), expected, rtol=0, atol=1e-15)
