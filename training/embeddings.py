"""Word vectors from the training reviews alone: PPMI co-occurrence factorised by truncated SVD.

An LSTM trained from random embeddings on 20,000 reviews learns a vector only
for words whose label signal it sees often, and leans on words particular to
the training movies. Vectors from co-occurrence give every vocabulary word a
place near the words it is used like, before any label is seen (Levy and
Goldberg 2014: PPMI + SVD is competitive with word2vec on small corpora).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import sparse
from scipy.sparse.linalg import svds

from training.batches import sorted_batches
from training.token_ids import FIRST_WORD_ID

WINDOW = 5
CONTEXT_SMOOTHING = 0.75  # word2vec's context-distribution smoothing


def token_ids(vectorizer, texts: list[str], batch_size: int = 512) -> list[np.ndarray]:
    """Each text's ids from the model's own vectorizer, padding removed."""
    batches, _ = sorted_batches(texts, batch_size)
    rows: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(texts)
    for batch in batches:
        ids = vectorizer(tf.constant([texts[i] for i in batch])).numpy()
        for i, row in zip(batch, ids, strict=True):
            rows[i] = row[row != 0]
    return rows


def cooccurrence(
    rows: list[np.ndarray], vocab_size: int, window: int = WINDOW
) -> sparse.csr_matrix:
    """Symmetric counts of word pairs at most `window` apart, weighted 1/distance."""
    # `window` zeros between reviews: no pair of real words spans two reviews.
    gap = np.zeros(window, dtype=np.int64)
    ids = np.concatenate([np.concatenate([row, gap]) for row in rows])
    counts = sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float32)
    for distance in range(1, window + 1):
        left, right = ids[:-distance], ids[distance:]
        keep = (left >= FIRST_WORD_ID) & (right >= FIRST_WORD_ID)
        weight = np.full(int(keep.sum()), 1.0 / distance, dtype=np.float32)
        pairs = sparse.coo_matrix((weight, (left[keep], right[keep])), shape=counts.shape)
        counts = counts + pairs.tocsr() + pairs.T.tocsr()
    return counts


def ppmi_svd_vectors(counts: sparse.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """[vocab_size, dim] vectors, scaled like a small random initialisation."""
    counts = counts.tocoo()
    total = counts.sum()
    word_totals = np.asarray(counts.sum(axis=1)).ravel()
    context_totals = np.asarray(counts.sum(axis=0)).ravel() ** CONTEXT_SMOOTHING
    context_totals *= total / context_totals.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts.data * total / (word_totals[counts.row] * context_totals[counts.col]))
    positive = pmi > 0
    ppmi = sparse.csr_matrix(
        (pmi[positive], (counts.row[positive], counts.col[positive])), shape=counts.shape
    )
    rng = np.random.default_rng(seed)
    start = rng.uniform(-1, 1, size=min(ppmi.shape))
    u, s, _ = svds(ppmi, k=dim, v0=start)
    vectors = (u * np.sqrt(s)).astype(np.float32)
    # Match the spread of Keras' default uniform(-0.05, 0.05) embedding init.
    vectors *= 0.05 / (np.abs(vectors).mean() + 1e-12)
    vectors[:FIRST_WORD_ID] = 0.0
    return vectors


def pretrained_vectors(vectorizer, texts: list[str], dim: int, seed: int) -> np.ndarray:
    vocab_size = vectorizer.vocabulary_size()
    counts = cooccurrence(token_ids(vectorizer, texts), vocab_size)
    return ppmi_svd_vectors(counts, dim, seed)
