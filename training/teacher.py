"""Soft training targets from the TF-IDF + logistic regression baseline (knowledge distillation).

The LSTM trained on hard 0/1 labels overfits within two epochs. Mixing each
label with a bag-of-ngrams teacher's probability (Hinton et al. 2015) tells the
student how sure a good model is of each review, and carries the phrase cues
the teacher sees. Every training review's teacher score comes from a teacher
fitted on the other folds, so no target is the teacher reciting a review it saw.
The shipped model is still the LSTM alone: the teacher is not part of it.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from training.evaluate import tfidf_classifier

FOLDS = 5


def out_of_fold_scores(texts: list[str], labels: np.ndarray, seed: int) -> np.ndarray:
    """P(positive) for each text from a teacher that never saw it."""
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(
        tfidf_classifier(), texts, labels, cv=folds, method="predict_proba", n_jobs=FOLDS
    )
    return scores[:, 1].astype(np.float32)


def soft_targets(labels: np.ndarray, teacher_scores: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * label + weight * teacher probability.

    The weight is at most 0.5, so every target still leans to its own label
    (training/model.py's metrics count against that side).
    """
    if not 0.0 <= weight <= 0.5:
        raise ValueError(f"distillation weight must be in [0, 0.5], not {weight}")
    return ((1.0 - weight) * np.asarray(labels) + weight * teacher_scores).astype(np.float32)
