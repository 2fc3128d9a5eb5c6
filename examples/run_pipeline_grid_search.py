"""Tune a scaled FastGRNN pipeline with GridSearchCV
=================================================

Pipelines and ``GridSearchCV`` pass 2D arrays. A digit is stored here as one 2D
row of 64 pixels on their raw 0-16 scale, read by the model as 8 time-major
steps (image rows) of 8 channels: ``n_timesteps=8``. ``make_fastgrnn_pipeline``
builds the scaler and classifier; parameters of the classifier are tuned as
``fastgrnnclassifier__<name>``. The same search runs with each scaler choice:
``SequenceScaler`` (one mean and scale per channel), ``StandardScaler`` (one per
column, i.e. per (row, pixel)) and no scaling.
"""

import time

import numpy as np
from sklearn.model_selection import GridSearchCV, ParameterGrid

from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.preprocessing import make_fastgrnn_pipeline

PARAM_GRID = {
    "fastgrnnclassifier__hidden_size": [16, 32],
    "fastgrnnclassifier__learning_rate_init": [0.01, 0.03],
}


def main():
    X, y = load_digits_sequences()
    X2d = (X * 16.0).reshape(len(X), -1)  # (1797, 64): 8 steps of 8 channels each
    X_train, X_test, y_train, y_test = split_halves(X2d, y)
    print(f"train {X_train.shape}, test {X_test.shape}; grid of "
          f"{len(ParameterGrid(PARAM_GRID))} candidates, 3-fold CV")
    print(f"{'scaler':<10} {'best parameters':<42} {'CV':>6} {'test':>6} {'seconds':>8}")
    searches = {}
    for scaler in ["sequence", "standard", None]:
        pipeline = make_fastgrnn_pipeline(
            scaler, n_timesteps=8, batch_size=64, early_stopping=True, n_iter_no_change=5,
            random_state=0,
        )
        search = searches[scaler] = GridSearchCV(pipeline, PARAM_GRID, cv=3)
        tic = time.perf_counter()
        search.fit(X_train, y_train)
        seconds = time.perf_counter() - tic
        best = {k.split("__")[1]: v for k, v in search.best_params_.items()}
        print(f"{str(scaler):<10} {str(best):<42} {search.best_score_:6.3f} "
              f"{search.score(X_test, y_test):6.3f} {seconds:8.1f}")
    for scaler, search in searches.items():
        print(f"steps with scaler={scaler!r}: {list(search.best_estimator_.named_steps)}")
    sequence_scaler = searches["sequence"].best_estimator_.named_steps["sequencescaler"]
    print(f"SequenceScaler mean_ per channel: {np.round(sequence_scaler.mean_, 1)}")

if __name__ == "__main__":
    main()
