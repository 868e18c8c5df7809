"""Soft training targets from the TF-IDF + logistic regression baseline (knowledge distillation).

The LSTM trained on hard 0/1 labels overfits within two epochs. Mixing each
label with a bag-of-ngrams teacher's probability (Hinton et al. 2015) tells the
student how sure a good model is of each review, and carries the phrase cues
the teacher sees. Every training review's teacher score comes from a teacher
fitted on the other folds, so no target is the teacher reciting a review it saw.
Folds of single reviews (the shipped model's) still let the teacher see other
reviews of the same movie; given groups (blocks of consecutive ids, as the
validation split holds out), the folds keep each movie on one side. On the
validation split the two gave the same student (see the README). The shipped
model is still the LSTM alone: the teacher is not part of it.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

from training.baselines import tfidf_classifier
from training.model import MAX_DISTILLATION

FOLDS = 5


def out_of_fold_scores(
    texts: list[str], labels: np.ndarray, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """P(positive) for each text from a teacher that saw neither it nor, given `groups`,
    any text of its group."""
    if groups is None:
        folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    else:
        folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(
        tfidf_classifier(),
        texts,
        labels,
        groups=groups,
        cv=folds,
        method="predict_proba",
        n_jobs=min(FOLDS, os.cpu_count() or 1),
    )
    return scores[:, 1].astype(np.float32)


def soft_targets(labels: np.ndarray, teacher_scores: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * label + weight * teacher probability.

    The weight is at most 0.5, so every target still leans to its own label
    (the metrics in training/layers.py count against that side).
    """
    if not 0.0 <= weight <= MAX_DISTILLATION:
        raise ValueError(f"distillation weight must be in [0, {MAX_DISTILLATION}], not {weight}")
    return ((1.0 - weight) * np.asarray(labels) + weight * teacher_scores).astype(np.float32)
