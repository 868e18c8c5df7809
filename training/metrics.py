"""Scoring texts with a model, and the classification metrics every report uses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from training.batches import sorted_batches


def score_texts(
    model,
    texts: list[str],
    batch_size: int = 256,
    on_scored: Callable[[int], None] | None = None,
) -> np.ndarray:
    """P(positive) for each text, batched in length order to spare padding; `on_scored(n)`
    after each batch of n."""
    import tensorflow as tf

    batches, _ = sorted_batches(texts, batch_size)
    scores = np.empty(len(texts), dtype=np.float32)
    for batch in batches:
        inputs = tf.constant([texts[i] for i in batch])
        scores[batch] = np.asarray(model(inputs, training=False)).reshape(-1)
        if on_scored is not None:
            on_scored(len(batch))
    return scores


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if len(set(labels)) > 1 else None,
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "threshold": threshold,
        "examples": int(len(labels)),
    }
