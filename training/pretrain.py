"""Language-model pretraining of the classifier's embedding and LSTM, before any label.

For `lm_epochs` passes over the training texts, the LSTM's state after each word
predicts the next word (and, in the backward direction, the state after reading a
word from the end predicts the word before it), as in Dai and Le (2015) and ELMo's
two directions. Only the embedding and the LSTM carry over to the classifier; the
word-prediction head is thrown away, so the shipped model's shape and serving
contract do not change.

The softmax over the vocabulary is sampled (TensorFlow's log-uniform sampler, which
assumes ids ordered by falling frequency: TextVectorization's vocabulary is; it also
draws the padding and OOV ids now and then, which are never targets), so a step costs
about what a classifier step costs.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from training.batches import length_grouped_batches
from training.token_ids import FIRST_WORD_ID, PADDING_ID

# Words drawn as negatives per step for the sampled softmax.
SAMPLED_WORDS = 512


class NextWordHead(keras.layers.Layer):
    """Output weights of the sampled softmax: one vector and bias per vocabulary id."""

    def __init__(self, vocab_size: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.kernel = self.add_weight(
            shape=(self.vocab_size, units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="bias")

    def sampled_loss(self, states: tf.Tensor, targets: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
        """Mean sampled-softmax loss of predicting `targets` [batch, time] from `states`
        [batch, time, units] where `real` holds."""
        states = tf.boolean_mask(states, real)
        targets = tf.cast(tf.boolean_mask(targets, real), tf.int64)[:, None]
        losses = tf.nn.sampled_softmax_loss(
            weights=self.kernel,
            biases=self.bias,
            labels=targets,
            inputs=states,
            num_sampled=min(SAMPLED_WORDS, self.vocab_size - 1),
            num_classes=self.vocab_size,
        )
        # A batch with no word to predict (all one-word texts) adds nothing, not NaN.
        return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), tf.float32))


def language_model_loss(
    head: NextWordHead, states: tf.Tensor, ids: tf.Tensor, units: int, bidirectional: bool
) -> tf.Tensor:
    """The next-word loss of the forward states and, if there are backward ones (the last
    `units` channels of a Bidirectional layer's output), their previous-word loss.

    A state counts only where it read a real token and its target is a word: right
    padding never predicts, and is never predicted.
    """
    read = ids != PADDING_ID
    is_word = ids >= FIRST_WORD_ID
    forward = head.sampled_loss(states[:, :-1, :units], ids[:, 1:], read[:, :-1] & is_word[:, 1:])
    if not bidirectional:
        return forward
    backward = head.sampled_loss(states[:, 1:, units:], ids[:, :-1], read[:, 1:] & is_word[:, :-1])
    return (forward + backward) / 2


def pretrain_language_model(
    model: keras.Model,
    texts: list[str],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> list[float]:
    """Trains `model`'s embedding and LSTM as a language model on `texts` (training data
    only) for `epochs` passes; returns each pass's mean loss."""
    classifier = model.get_layer("classifier")
    layer_names = {layer.name for layer in classifier.layers}
    bidirectional = "bilstm" in layer_names
    lstm = classifier.get_layer("bilstm" if bidirectional else "lstm")
    forward = lstm.forward_layer if bidirectional else lstm
    if not forward.return_sequences:
        raise ValueError("language-model pretraining reads the LSTM's every state, not the last")
    vectorize = model.get_layer("vectorize")
    keep_last = model.get_layer("keep_last_tokens")
    embedding = classifier.get_layer("embedding")
    dropout = (
        classifier.get_layer("embedding_dropout") if "embedding_dropout" in layer_names else None
    )
    units = forward.units
    head = NextWordHead(embedding.input_dim, units, name="next_word")
    variables = embedding.trainable_weights + lstm.trainable_weights + head.trainable_weights
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(batch: tf.Tensor) -> tf.Tensor:
        ids = keep_last(vectorize(batch))
        with tf.GradientTape() as tape:
            x = embedding(ids)
            if dropout is not None:
                x = dropout(x, training=True)
            states = lstm(x, mask=ids != PADDING_ID, training=True)
            loss = language_model_loss(head, states, ids, units, bidirectional)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    batches = length_grouped_batches(texts, np.zeros(len(texts)), batch_size, seed)
    losses = []
    for epoch in range(epochs):
        started, total, count = time.monotonic(), 0.0, 0
        for batch, _ in batches:
            total += float(step(batch))
            count += 1
        losses.append(total / max(count, 1))
        print(
            f"language model epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return losses
