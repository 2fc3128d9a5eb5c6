"""
Distilling an SVM into a 1 KB FastGRNN
======================================

A small FastGRNN (hidden_size=8, under 1 KB of weights) learns the digits, read
as sequences of 8 pixel rows, once from the labels alone and once from the
softened probabilities of a support vector machine that sees all 64 pixels at
once. ``DistilledClassifier`` does it in one line; the same is then done by
hand, with ``SoftTargetTransformer`` and ``soft_targets`` routed through a
Pipeline. Temperature 2 and alpha 0.5 are what cross-validation on the training
half chose in ``benchmarks/bench_distillation.py``, which also repeats this over
20 seeds: one seed, as here, says little, since the accuracy of so small a
student varies by a few points from seed to seed.
"""

import warnings

from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from sklearn_fastgrnn import FastGRNNClassifier
from sklearn_fastgrnn.datasets import load_digits_sequences, split_halves
from sklearn_fastgrnn.distillation import DistilledClassifier, SoftTargetTransformer

warnings.simplefilter("ignore", ConvergenceWarning)

X, y = load_digits_sequences()  # (1797, 8, 8): 8 timesteps of 8 pixels
X_train, X_test, y_train, y_test = split_halves(X, y)


def flatten(X):
    return X.reshape(len(X), -1)


# The teacher reads the 64 pixels of an image at once; its decision_function
# scores serve as logits. The student reads the 8 rows one after the other.
teacher = make_pipeline(FunctionTransformer(flatten), SVC(C=10))
student = FastGRNNClassifier(hidden_size=8, random_state=0)

alone = clone(student).fit(X_train, y_train)
print(f"teacher (SVC on 64 pixels): {teacher.fit(X_train, y_train).score(X_test, y_test):.3f}")
print(
    f"student alone:              {alone.score(X_test, y_test):.3f}"
    f"  ({alone.model_size_bytes_} bytes)"
)

# %%
# One line: the teacher is fitted on the training data given to ``fit``, its
# soft targets softmax(scores / T) train the student, which alone predicts.
distilled = DistilledClassifier(teacher, student, temperature=2.0, alpha=0.5)
distilled.fit(X_train, y_train)
print(
    f"distilled student:          {distilled.score(X_test, y_test):.3f}"
    f"  ({distilled.student_.model_size_bytes_} bytes)"
)

# %%
# By hand: make the soft targets with a transformer, then pass them to the
# student's ``fit``; in a Pipeline, address them to its step (``clf__``). With
# ``sklearn.set_config(enable_metadata_routing=True)`` you would instead call
# ``student.set_fit_request(soft_targets=True)`` and pass ``soft_targets=``.
soft_targets = SoftTargetTransformer(teacher, temperature=2.0).fit_transform(
    X_train, y_train
)
distilling = clone(student).set_params(distillation_alpha=0.5, distillation_temperature=2.0)
pipeline = Pipeline([("clf", distilling)])
pipeline.fit(X_train, y_train, clf__soft_targets=soft_targets)
print(f"same by hand, in a Pipeline: {pipeline.score(X_test, y_test):.3f}")
