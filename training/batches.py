"""Training batches of raw review text, grouped by length so little time goes on padding."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Batches are formed inside pools of this many batches' worth of reviews: big
# enough that neighbours have similar lengths, small enough to keep epochs random.
POOL_BATCHES = 32


def approximate_lengths(texts: list[str]) -> np.ndarray:
    return np.fromiter((text.count(" ") + 1 for text in texts), dtype=np.int64, count=len(texts))


def length_grouped_batches(
    texts: list[str], labels: np.ndarray, batch_size: int, seed: int
) -> tf.data.Dataset:
    """A dataset of (texts [batch], labels [batch]) reshuffled on every pass.

    The model pads each batch only to its own longest review, so batching
    reviews of similar length cuts the LSTM's steps on CPU and GPU alike.
    """
    texts_array = np.array(texts, dtype=object)
    labels = np.asarray(labels, dtype=np.float32)
    lengths = approximate_lengths(texts)
    rng = np.random.default_rng(seed)
    pool = batch_size * POOL_BATCHES

    def generate():
        order = rng.permutation(len(texts_array))
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        for index in rng.permutation(len(batches)):
            batch = batches[index]
            yield texts_array[batch].astype(str), labels[batch]

    signature = (
        tf.TensorSpec(shape=(None,), dtype=tf.string),
        tf.TensorSpec(shape=(None,), dtype=tf.float32),
    )
    n_batches = sum(
        -(-min(pool, len(texts) - start) // batch_size) for start in range(0, len(texts), pool)
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    # Known cardinality lets Keras show progress and reuse the dataset each epoch.
    return dataset.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


def sorted_batches(texts: list[str], batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Index batches in length order for fast inference; returns (batches, order)."""
    order = np.argsort(approximate_lengths(texts), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], order
