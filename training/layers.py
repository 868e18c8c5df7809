"""Keras objects saved model files name: text standardisation, end-keeping truncation, metrics.

Both the trainer and the server import this module (it depends on TensorFlow and
Keras only) so that `keras.saving.load_model(..., safe_mode=True)` can rebuild
the model by registered name; no code travels inside the model file.
"""

import keras
import tensorflow as tf

PACKAGE = "sentiment"

# `<br />` is the only markup in the IMDB reviews; it becomes a space, not a token.
_HTML_BREAK = r"<br\s*/?>"
# Everything that is neither a word character nor whitespace is punctuation here.
_PUNCTUATION = r"[^\w\s]"


@keras.saving.register_keras_serializable(package=PACKAGE)
def standardize_review(text: tf.Tensor) -> tf.Tensor:
    """Lowercases, turns HTML line breaks into spaces and strips punctuation."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, _HTML_BREAK, " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, " ")


# "don't" -> "do not", "can't" -> "ca not"; SST-2's pre-split "do n't" -> "do  not" alike.
_NOT_CONTRACTION = r"n't\b"


@keras.saving.register_keras_serializable(package=PACKAGE)
def standardize_review_negation(text: tf.Tensor) -> tf.Tensor:
    """As standardize_review, but "n't" becomes the word "not" instead of a stray "t".

    Stripping the apostrophe turned "isn't" into "isn t", a word of its own for
    every verb, so "not" and "n't" never shared what the model learnt about
    negation; SST-2 writes the same contraction pre-split ("is n't").
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, _HTML_BREAK, " ")
    text = tf.strings.regex_replace(text, _NOT_CONTRACTION, " not")
    return tf.strings.regex_replace(text, _PUNCTUATION, " ")


@keras.saving.register_keras_serializable(package=PACKAGE)
class KeepLastTokens(keras.layers.Layer):
    """Keeps each row's last `maxlen` real tokens, left-aligned and right-padded with 0.

    Input: int ids [batch, time], right-padded with 0 (TextVectorization with no
    fixed sequence length pads to the batch's longest review). Output: [batch,
    min(time, maxlen)]. A review's ending carries most of its verdict, so long
    reviews lose their beginning, not their end. Keeping the padding on the
    right is what lets Keras pick the cuDNN LSTM kernel on a GPU.
    """

    def __init__(self, maxlen: int, **kwargs):
        super().__init__(**kwargs)
        self.maxlen = int(maxlen)

    def call(self, ids):
        ids = tf.convert_to_tensor(ids)
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(ids, 0), tf.int32), axis=1)
        width = tf.minimum(tf.shape(ids)[1], self.maxlen)
        start = tf.maximum(lengths - self.maxlen, 0)
        positions = start[:, None] + tf.range(width)[None, :]
        # Positions past a row's end would read padding or wrap; clamp, then zero them.
        safe = tf.minimum(positions, tf.maximum(tf.shape(ids)[1] - 1, 0))
        kept = tf.gather(ids, safe, batch_dims=1)
        valid = positions < lengths[:, None]
        return tf.where(valid, kept, tf.zeros_like(kept))

    def compute_output_shape(self, input_shape):
        time = input_shape[1]
        return (input_shape[0], None if time is None else min(time, self.maxlen))

    def get_config(self):
        return {**super().get_config(), "maxlen": self.maxlen}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenDropout(keras.layers.Layer):
    """While training, replaces each real token id by the OOV id with probability `rate`.

    Word dropout: the model cannot lean on any one word, such as an actor's name
    that only this movie's reviews share. Padding (0) stays padding, so masks are
    unchanged; at inference the layer is the identity.
    """

    def __init__(self, rate: float, oov_id: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.oov_id = int(oov_id)
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=False):
        if not training or self.rate <= 0:
            return ids
        drop = keras.random.uniform(tf.shape(ids), seed=self._generator) < self.rate
        drop = tf.logical_and(drop, tf.not_equal(ids, 0))
        return tf.where(drop, tf.cast(self.oov_id, ids.dtype), ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "oov_id": self.oov_id, "seed": self.seed}


def pair_buckets(left, right, vocab_size: int, buckets: int):
    """The hash bucket of each pair of adjacent ids (int64 tensors or numpy arrays alike):
    Knuth's multiplicative hash of the pair's index in vocab x vocab. The bag's weights are
    also fitted outside TensorFlow (training/fitted_bag.py), so both read this one formula."""
    return (left * vocab_size + right) * 2654435761 % (1 << 31) % buckets


@keras.saving.register_keras_serializable(package=PACKAGE)
class HashedBigramBag(keras.layers.Layer):
    """A linear bag of words and word pairs over token ids: [batch, time] -> logit [batch, 1].

    One learnt weight per vocabulary word and per hash bucket of adjacent word pairs
    (the pair's ids hashed into `buckets`); the logit is their sum over the review
    divided by sqrt(number of real tokens), the scale of an L2-normalised count
    vector (NBSVM's features). It reads the classifier's own ids, so the serving
    contract (ids in, score out) is unchanged. Padding (0) and OOV (1) add nothing;
    a row with no real token scores 0 (no division by zero).
    """

    def __init__(self, vocab_size: int, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.buckets = int(buckets)
        self.word_weights = self.add_weight(
            shape=(self.vocab_size,), initializer="zeros", name="word_weights"
        )
        self.pair_weights = self.add_weight(
            shape=(self.buckets,), initializer="zeros", name="pair_weights"
        )

    def call(self, ids):
        ids = tf.cast(ids, tf.int64)
        real = ids >= 2
        words = tf.where(real, tf.gather(self.word_weights, ids), 0.0)
        buckets = pair_buckets(ids[:, :-1], ids[:, 1:], self.vocab_size, self.buckets)
        pairs = tf.gather(self.pair_weights, buckets)
        pairs = tf.where(real[:, :-1] & real[:, 1:], pairs, 0.0)
        count = tf.reduce_sum(tf.cast(real, "float32"), axis=1, keepdims=True)
        total = tf.reduce_sum(words, axis=1, keepdims=True) + tf.reduce_sum(
            pairs, axis=1, keepdims=True
        )
        return total / tf.sqrt(tf.maximum(count, 1.0))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "buckets": self.buckets}


# Training metrics. They are compiled into checkpoints (never into the shipped,
# uncompiled model file), and registered so those load in safe mode too.
def _leaning_label(y_true):
    # With the teacher's weight at its cap of 0.5, a positive review the teacher puts
    # within float32 rounding of 0 gets a target of exactly 0.5, counted negative here:
    # a miscount of the printed training metric only, and rare.
    return keras.ops.cast(y_true > 0.5, "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelAccuracy(keras.metrics.BinaryAccuracy):
    """Binary accuracy against the label a (possibly soft) target leans to."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_leaning_label(y_true), y_pred, sample_weight)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelAUC(keras.metrics.AUC):
    """ROC AUC against the label a (possibly soft) target leans to."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_leaning_label(y_true), y_pred, sample_weight)
