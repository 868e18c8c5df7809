"""A linear bag of words and word pairs fitted beside a trained LSTM, weighed on validation.

    make train                                      # the student-bag preset: LSTM, then its bag
    sentiment-fit-bag --base models/imdb-lstm/5     # a trained version + its bag (add_bag.py)

The bag is layers.HashedBigramBag (the reader preset's, model 3's), but not trained
with the LSTM: after the LSTM has trained, its weights are fitted by NBSVM's recipe
(Wang & Manning 2012): each feature scaled by its naive-Bayes log-count ratio, then an
L2 logistic regression without intercept, on the bag's own features (its words and
hashed word pairs, counted, divided by sqrt(real tokens)) of the labelled training mix.
The served logit is the LSTM's logit plus `weight` x the bag's; the regularisation `c`
and `weight` are chosen on the validation sets by the selection score (training/mix.py),
the whole model against the LSTM alone. The LSTM path is left exactly as trained, so the
report's "LSTM path alone" is the LSTM.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from training.extra_data import Labelled
from training.layers import pair_buckets
from training.mix import selection_score
from training.model import Preset, build_models

# Chosen on validation, in this order of preference on a tie of the selection score: the
# higher IMDB validation AUC (a finer measure than 6 sets' accuracies), then less bag.
REGULARISATIONS = (0.3, 1.0, 3.0)
WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def token_ids(model: keras.Model, texts: list[str], batch_size: int = 1024) -> list[np.ndarray]:
    """Each text's ids as the served model's classifier reads them, padding dropped."""
    import tensorflow as tf

    # The layers called as they are, not the graph's node: a model made from another's layers
    # (an LSTM path alone) shares them with it.
    vectorize, keep_last = model.get_layer("vectorize"), model.get_layer("keep_last_tokens")
    rows = []
    for start in range(0, len(texts), batch_size):
        ids = np.asarray(keep_last(vectorize(tf.constant(texts[start : start + batch_size]))))
        rows.extend(row[row > 0] for row in ids)
    return rows


def bag_features(rows: list[np.ndarray], vocab_size: int, buckets: int) -> sparse.csr_matrix:
    """[texts, vocab_size + buckets]: HashedBigramBag's inputs, so that features @ [word
    weights, pair weights] is its logit: counts of real words (ids >= 2), then of their
    hashed adjacent pairs, each divided by sqrt(the text's real tokens)."""
    indices, indptr, values = [], [0], []
    for row in rows:
        row = row.astype(np.int64)
        real = row >= 2
        both = real[:-1] & real[1:]
        pairs = pair_buckets(row[:-1], row[1:], vocab_size, buckets)[both] + vocab_size
        columns, counts = np.unique(np.concatenate([row[real], pairs]), return_counts=True)
        indices.append(columns)
        values.append(counts / np.sqrt(max(int(real.sum()), 1)))
        indptr.append(indptr[-1] + len(columns))
    return sparse.csr_matrix(
        (np.concatenate(values).astype(np.float32), np.concatenate(indices), indptr),
        shape=(len(rows), vocab_size + buckets),
    )


def fit_nbsvm(features: sparse.csr_matrix, labels: np.ndarray, c: float) -> np.ndarray:
    """Weights w (one per feature) so that features @ w is the logit of an L2 logistic
    regression on the features scaled by their naive-Bayes log-count ratios."""
    labels = np.asarray(labels)
    present = (features > 0).astype(np.float32)
    positive = np.asarray(present[labels == 1].sum(axis=0)).ravel() + 1.0
    negative = np.asarray(present[labels == 0].sum(axis=0)).ravel() + 1.0
    ratio = np.log((positive / positive.sum()) / (negative / negative.sum())).astype(np.float32)
    regression = LogisticRegression(C=c, fit_intercept=False, max_iter=3000)
    regression.fit(features @ sparse.diags(ratio), labels)
    return (regression.coef_.ravel() * ratio).astype(np.float32)


def _logit(scores: np.ndarray) -> np.ndarray:
    scores = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(scores / (1 - scores))


@dataclasses.dataclass
class BagChoice:
    c: float
    weight: float
    weights: np.ndarray  # the bag's, weight included: [vocab_size + buckets]
    record: dict


def choose_bag(
    model: keras.Model,
    texts: list[str],
    labels: np.ndarray,
    sets: dict[str, Labelled],
    vocab_size: int,
    buckets: int,
    log=print,
) -> BagChoice:
    """Fits the bag for each c in REGULARISATIONS on `texts`, and returns the (c, weight) whose
    LSTM-plus-bag logit has the best selection score on `sets` (validation only)."""
    from training.metrics import score_texts
    from training.mix import IMDB_VALIDATION

    started = time.monotonic()
    features = bag_features(token_ids(model, texts), vocab_size, buckets)
    set_features = {
        n: bag_features(token_ids(model, s.split.texts), vocab_size, buckets)
        for n, s in sets.items()
    }
    lstm_logits = {n: _logit(score_texts(model, s.split.texts)) for n, s in sets.items()}
    grid, best = [], None
    for c in REGULARISATIONS:
        weights = fit_nbsvm(features, labels, c)
        bag_logits = {n: x @ weights for n, x in set_features.items()}
        for weight in WEIGHTS:
            logits = {n: lstm_logits[n] + weight * bag_logits[n] for n in sets}
            accuracies = {n: float(np.mean((logits[n] >= 0) == sets[n].split.labels)) for n in sets}
            imdb = sets[IMDB_VALIDATION].split
            auc = float(roc_auc_score(imdb.labels, logits[IMDB_VALIDATION]))
            score = selection_score(accuracies)
            grid.append(
                {
                    "c": c,
                    "weight": weight,
                    "selection_score": score,
                    "imdb_validation_auc": auc,
                    "accuracies": accuracies,
                }
            )
            log(
                f"bag c={c} weight={weight}: selection score {score:.4f}, IMDB validation AUC "
                f"{auc:.4f}"
            )
            key = (score, auc, -weight)
            if best is None or key > best[0]:
                best = (key, c, weight, weights * weight)
    _, c, weight, weights = best
    record = {
        "recipe": "NBSVM (naive-Bayes-scaled L2 logistic regression, no intercept) on the bag's "
        "words and hashed word pairs, fitted after the LSTM",
        "fitted_on": f"{len(texts):,} labelled texts of the training mix",
        "c": c,
        "weight": weight,
        "grid": grid,
        "seconds": round(time.monotonic() - started, 1),
    }
    log(f"bag chosen on validation: c={c}, weight={weight}")
    return BagChoice(c, weight, weights, record)


def with_bag(model: keras.Model, preset: Preset, weights: np.ndarray, buckets: int) -> keras.Model:
    """`model` (text -> P, no bag) with the bag beside its LSTM: the same layers and
    weights, the LSTM's score layer now its logit plus the bag's."""
    preset = dataclasses.replace(preset, bag_buckets=buckets)
    whole, _ = build_models(preset, model.get_layer("vectorize"))
    old, new = model.get_layer("classifier"), whole.get_layer("classifier")
    for layer in old.layers:
        if layer.weights and layer.name != "score":
            new.get_layer(layer.name).set_weights(layer.get_weights())
    new.get_layer("lstm_logit").set_weights(old.get_layer("score").get_weights())
    bag = new.get_layer("bag_logit")
    bag.word_weights.assign(weights[: preset.vocab_size])
    bag.pair_weights.assign(weights[preset.vocab_size :])
    return whole


def attach(
    model: keras.Model,
    preset: Preset,
    texts: list[str],
    labels: np.ndarray,
    sets: dict[str, Labelled],
    buckets: int,
    log=print,
) -> tuple[keras.Model, dict]:
    """(`model` with its fitted bag, the choice's record)."""
    choice = choose_bag(model, texts, labels, sets, preset.vocab_size, buckets, log)
    return with_bag(model, preset, choice.weights, buckets), choice.record
