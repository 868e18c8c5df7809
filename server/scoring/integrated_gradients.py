"""Integrated gradients over each token's presence: how far each token moves the score.

Sundararajan et al. 2017, over a continuous relaxation of the review: every token
t gets a presence p_t in [0, 1], and the classifier is re-run with its own
layers and weights so that p_t = 1 is the review as served and p = 0 is the
baseline, a review of as many tokens, every one of them an unknown word:

- an Embedding's output vector e_t for t becomes p_t e_t + (1 - p_t) e_unk,
  e_unk the vector of the `[UNK]` id (the baseline: the same length and mask,
  every word one the model cannot read). Word dropout trains the model on
  `[UNK]` in place of words, so the baseline is a review it knows how to read;
  from zero vectors instead (inputs it never saw) the BiLSTM's score jumped
  within a thousandth of the path on about half of the reviews;
- any other layer that reads the token ids directly (the linear word/pair bag
  beside the LSTM in later presets) is a black box: its output moves from its
  value with token t deleted towards its value with t present in proportion to
  p_t, summed over tokens (leave-one-out contributions, one row per token; such
  a layer is cheap next to the LSTM);
- layers that map ids to ids (word dropout, the identity at inference) pass the
  ids on, masks are dropped (one review, no padding: all true), and every other
  layer runs as it does when serving.

attribution_t = integral over a in [0, 1] of d score / d p_t at p = (a, ..., a).
This module gives the path's scores (forward passes only) and gradients at any
presences; server/explanations/adaptive_quadrature.py integrates them, checking completeness
segment by segment: the attributions sum to score(review) - score(baseline), up
to the quadrature's error, which explain.py reports (the convergence delta, as
Captum does). Only the classifier's graph is read, so this works for any
classifier built by training/model.py without knowing its layers.

On the CPU fast path, server/scoring/fast_gradients.py computes the same numbers with the
LSTM's backward pass by hand, for the graphs it knows; this module serves every
other graph, and the GPU. Like the fast path's modules it imports TensorFlow:
the attribution is a computation on the model, kept apart from loading and scoring.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from server.errors import ModelLoadError
from training.token_ids import OOV_ID, PADDING_ID


class PresenceGradients:
    """One review's path from the baseline (presence 0) to the review (presence 1):
    `scores(ids [n], presences [k]) -> score at each presence [k]` (forward passes only), and
    `(ids [n], presences [k]) -> (d score / d p_t at p = (a, ..., a) for each presence a,
    [k, n]; score at each presence, [k])`."""

    def __init__(self, classifier: keras.Model, device: str):
        relaxed = relaxed_classifier(classifier)

        def presence_rows(ids, presences):
            rows = tf.tile(ids[None, :], [tf.shape(presences)[0], 1])
            return rows, tf.tile(presences[:, None], [1, tf.shape(ids)[0]])  # [k, n] each

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)]
        )
        def scores(ids, presences):
            with tf.device(device):
                return relaxed(*presence_rows(ids, presences))

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)]
        )
        def gradients(ids, presences):
            with tf.device(device):
                rows, presence = presence_rows(ids, presences)
                with tf.GradientTape() as tape:
                    tape.watch(presence)
                    scored = relaxed(rows, presence)  # [k]; row k reads presence[k] only
                return tape.gradient(scored, presence), scored  # [k, n], [k]

        self._scores = scores
        self._gradients = gradients

    def compile_all(self) -> None:
        """Traces both functions now (the first Explain would wait for it)."""
        self.scores(np.array([2, 3]), np.array([0.0, 1.0]))
        self(np.array([2, 3]), np.array([0.5]))

    def scores(self, ids: np.ndarray, presences: np.ndarray) -> np.ndarray:
        scored = self._scores(tf.constant(ids, tf.int64), tf.constant(presences, tf.float32))
        return scored.numpy().astype(np.float64)

    def __call__(self, ids: np.ndarray, presences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gradients, scores = self._gradients(
            tf.constant(ids, tf.int64), tf.constant(presences, tf.float32)
        )
        return gradients.numpy().astype(np.float64), scores.numpy().astype(np.float64)


def relaxed_classifier(classifier: keras.Model) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The classifier as `(ids [k, n], every row the same review with no padding, presence
    [k, n]) -> scores [k]`, re-running its own functional graph with relaxed layers.

    Keras offers no public way to re-run a functional graph with some operations
    swapped; `_run_through_graph(inputs, operation_fn)` is what Functional.call
    itself uses, and tests/test_integrated_gradients.py pins the behaviour.
    """
    if len(classifier.inputs) != 1 or len(classifier.outputs) != 1:
        raise ModelLoadError("explaining needs a classifier with one input and one output")
    if not hasattr(classifier, "_run_through_graph"):
        raise ModelLoadError(f"cannot re-run the graph of a {type(classifier).__name__}")

    @tf.autograph.experimental.do_not_convert  # plain Python run at trace time
    def run(ids: tf.Tensor, presence: tf.Tensor) -> tf.Tensor:
        def operation_fn(operation):
            def call(*args, **kwargs):
                if isinstance(operation, keras.layers.Layer):
                    kwargs.setdefault("training", False)  # dropout and word dropout: off
                output = operation(*args, **kwargs)
                reads_ids = bool(args) and _is_discrete(args[0])
                if reads_ids and tf.as_dtype(output.dtype).is_bool:
                    # A mask (ids != 0). Rows here are one review with no padding, so it
                    # is all true: without it the LSTM skips a select per step (about 30%
                    # of the time on a CPU) and no number changes.
                    return None
                if not reads_ids or _is_discrete(output):
                    return output  # reads no ids, or ids -> ids (word dropout)
                if isinstance(operation, keras.layers.Embedding):
                    # [k, n, d]: each token's vector slides from [UNK]'s to its own; mask unchanged.
                    p = tf.cast(presence[:, :, None], output.dtype)
                    unknown = tf.cast(operation.embeddings[OOV_ID], output.dtype)
                    return unknown + p * (output - unknown)
                if not isinstance(operation, keras.layers.Layer) or len(args) > 1:
                    raise ModelLoadError(
                        f"cannot explain {getattr(operation, 'name', operation)!r}: it turns "
                        "token ids into numbers in a way this relaxation does not know"
                    )
                return _leave_one_out_relaxation(operation, args[0][:1], presence)

            return call

        scores = classifier._run_through_graph(ids, operation_fn=operation_fn)
        return tf.reshape(tf.nest.flatten(scores)[0], [-1])

    return run


def _leave_one_out_relaxation(layer, ids: tf.Tensor, presence: tf.Tensor) -> tf.Tensor:
    """f(ids) - sum_t (1 - p_t) * (f(ids) - f(ids without t)) for a black-box layer f."""
    n = tf.shape(ids)[1]
    deleted = rows_without_each_token(ids[0])
    full = layer(ids, training=False)  # [1, ...]
    without = layer(deleted, training=False)  # [n, ...]: row t lacks token t
    contributions = tf.reshape(full - without, [n, -1])  # [n, m]
    absent = tf.matmul(1.0 - presence, tf.cast(contributions, presence.dtype))  # [k, m]
    relaxed = tf.cast(tf.reshape(full, [1, -1]), presence.dtype) - absent
    return tf.reshape(relaxed, tf.concat([[-1], tf.shape(full)[1:]], 0))  # [k, ...]


def rows_without_each_token(ids: tf.Tensor) -> tf.Tensor:
    """[n, n] from ids [n]: row t is the ids with position t deleted, the rest shifted left and
    the row padded on the right (the fast path's gradients share it)."""
    n = tf.shape(ids)[0]
    positions = tf.range(n)
    source = positions[None, :] + tf.cast(positions[None, :] >= positions[:, None], tf.int32)
    return tf.where(
        source < n, tf.gather(ids, tf.minimum(source, n - 1)), tf.constant(PADDING_ID, ids.dtype)
    )


def _is_discrete(tensor) -> bool:
    """Token ids, or a mask made of them: nothing a gradient can flow through."""
    if not hasattr(tensor, "dtype"):  # a list of inputs (Concatenate, Add)
        return False
    dtype = tf.as_dtype(tensor.dtype)
    return dtype.is_integer or dtype.is_bool
