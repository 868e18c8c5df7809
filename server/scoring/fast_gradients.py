"""Explain's path gradients on the CPU fast path: the LSTM's backward pass by hand, under XLA.

The same numbers as server/scoring/integrated_gradients.py (scores and d score / d p_t
along one review's path from every word `[UNK]` to the review), for classifiers
whose only reader of the token ids is one LSTM or Bidirectional(LSTM) fed by
an Embedding (the `reader` preset's shipped model, the seed's): Keras'
gradient of its while loop dispatches a dozen ops per step and stacks every
step's tensors on lists, so a call of 48 rows over 230 words took 110-130 ms
on the quiet machine, against 39 ms here.

The relaxation is linear in the input projection: the fast path's table row
for a token is `e W + b`, so at presence p it is `u + p (z - u)`, u the row of
`[UNK]` and z the token's. The forward loop keeps each step's states (h, c);
a loop back over the same steps recomputes each step's gates from the states
before it, carries d score / d (h, c) and gives each step's d score / d (input
projection) dz, and d score / d p_t is
dz . (z_t - u), summed over both directions (the backward one reads position
t at its step n - 1 - t). What comes after the LSTM (pooling, dense layers)
is differentiated by TensorFlow as usual. Rows are one review with no padding,
so no step is masked.

A linear bag beside the LSTM (layers.HashedBigramBag, model 6's) is relaxed as
integrated_gradients.py relaxes any other reader of the ids: its value moves
from the review's towards the review's without token t in proportion to 1 - p_t,
so along the path (every p_t = a) it is full - (1 - a) sum_t delta_t, with delta_t
= full - bag(review without t), and its share of d score / d p_t is d score /
d bag x delta_t. The n rows without one token each are one call of the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from server.scoring.fast_path import (
    GraphReader,
    UnsupportedGraph,
    lstm_gates,
    reverse_within_length,
    tanh,
)
from server.scoring.integrated_gradients import rows_without_each_token
from training.token_ids import OOV_ID

# Rows (presences) per compiled call: a call is padded up to one of these, or cut into the
# largest, so that XLA compiles a few shapes at warm-up (about 1.3 s each) and none while
# serving. Explain's calls: 10 rows, then scans of 63 and of 31 per interval, and gradient
# rounds of 2 per segment, about 48. Over 230 words, quiet: gradients 18 / 30 / 39 ms for
# 16 / 32 / 48 rows but 80 for 64; scores 11 / 18 ms for 32 / 64.
GRADIENT_BUCKETS = (16, 32, 48)
SCORE_BUCKETS = (32, 64)


class FastPresenceGradients:
    """The interface of integrated_gradients.PresenceGradients: `scores(ids [n], presences
    [k]) -> [k]` and `(ids, presences) -> (d score / d p_t [k, n], scores [k])`, n <= maxlen.

    `graph` is the fast path's reading of the classifier (FastScorer.graph: its input tables
    are shared, not copied). Raises UnsupportedGraph for a classifier with any other reader of
    the ids than the LSTM and linear bags (the embedding mean of the `default` preset).
    """

    def __init__(
        self,
        graph: GraphReader,
        maxlen: int,
        gradient_buckets: tuple[int, ...] = GRADIENT_BUCKETS,
        score_buckets: tuple[int, ...] = SCORE_BUCKETS,
    ):
        self.maxlen = int(maxlen)
        self.gradient_buckets = tuple(sorted(gradient_buckets))
        self.score_buckets = tuple(sorted(score_buckets))
        if len(graph.recurrences) != 1:
            raise UnsupportedGraph(f"{len(graph.recurrences)} recurrent layers, not one")
        ((name, recurrence),) = graph.recurrences.items()
        head = graph.forward
        bags = dict(graph.bags)
        width = recurrence.units * len(recurrence.directions)
        # What follows the LSTM and the bags, alone: anything else reading the ids is refused.
        head(_LstmOutputOnly({name: tf.zeros([1, width]), **{b: tf.zeros([1, 1]) for b in bags}}))

        def score_from(pooled: tf.Tensor, bag_values: dict) -> tf.Tensor:
            return tf.reshape(head(_LstmOutputOnly({name: pooled, **bag_values})), [-1])

        def relaxed_bags(ids, n, presences) -> tuple[dict, dict]:
            """(each bag's value at each presence [k, 1], its delta_t [maxlen], 0 past n)."""
            values, deltas = {}, {}
            for bag_name, layer in bags.items():
                full, delta = _bag_deltas(layer, ids, n)
                values[bag_name] = full - (1.0 - presences[:, None]) * tf.reduce_sum(delta)
                deltas[bag_name] = delta
            return values, deltas

        # No input signature: one trace per row bucket, so every shape is static in the
        # program (the step lists below need their element shapes).
        @tf.function(jit_compile=True)
        def scores(ids, n, presences):
            inputs = _path_inputs(recurrence, ids, n)
            pooled, _ = _relaxed_forward(recurrence, inputs, n, presences, keep_states=False)
            return score_from(pooled, relaxed_bags(ids, n, presences)[0])

        @tf.function(jit_compile=True)
        def gradients(ids, n, presences):
            inputs = _path_inputs(recurrence, ids, n)
            pooled, kept = _relaxed_forward(recurrence, inputs, n, presences, keep_states=True)
            bag_values, bag_deltas = relaxed_bags(ids, n, presences)
            with tf.GradientTape() as tape:
                tape.watch([pooled, bag_values])
                scored = score_from(pooled, bag_values)
            d_pooled, d_bags = tape.gradient(scored, [pooled, bag_values])
            attributed = _presence_gradients(recurrence, inputs, n, presences, d_pooled, kept)
            for bag_name, delta in bag_deltas.items():  # [k, 1] x [1, maxlen]
                attributed += d_bags[bag_name] * delta[None, :]
            return attributed, scored

        self._scores = scores
        self._gradients = gradients

    def scores(self, ids: np.ndarray, presences: np.ndarray) -> np.ndarray:
        (scores,) = self._in_buckets(
            ids, presences, self.score_buckets, lambda *args: (self._scores(*args),)
        ) or (np.zeros(0),)
        return scores

    def __call__(self, ids: np.ndarray, presences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gradients, scores = self._in_buckets(
            ids, presences, self.gradient_buckets, self._gradients
        ) or (np.zeros((0, self.maxlen)), np.zeros(0))
        return gradients[:, : len(ids)], scores

    def compile_all(self) -> None:
        """Compiles both functions at each of their buckets now."""
        for bucket in self.score_buckets:
            self.scores(np.array([2, 3]), np.linspace(0.0, 1.0, bucket))
        for bucket in self.gradient_buckets:
            self(np.array([2, 3]), np.linspace(0.0, 1.0, bucket))

    def _in_buckets(self, ids, presences, buckets, call) -> tuple[np.ndarray, ...]:
        """`call`'s results for every presence, in calls of `buckets` rows; () for none."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not 0 < len(ids) <= self.maxlen:
            raise ValueError(f"ids must be [1 to {self.maxlen}], got shape {ids.shape}")
        padded_ids = np.zeros(self.maxlen, np.int32)
        padded_ids[: len(ids)] = ids
        args = (tf.constant(padded_ids), tf.constant(len(ids), tf.int32))
        presences = np.asarray(presences, np.float32)
        parts = []
        for start in range(0, len(presences), buckets[-1]):
            chunk = presences[start : start + buckets[-1]]
            bucket = min(b for b in buckets if b >= len(chunk))
            padded = np.ones(bucket, np.float32)
            padded[: len(chunk)] = chunk
            with tf.device("/CPU:0"):
                results = call(*args, tf.constant(padded))
            parts.append([r.numpy()[: len(chunk)].astype(np.float64) for r in results])
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def _bag_deltas(layer, ids, n) -> tuple[tf.Tensor, tf.Tensor]:
    """(the bag's value for ids [maxlen] right-padded, n real: [1, 1]; delta_t = that minus its
    value without token t, [maxlen], 0 past n). Row t of one call deletes token t, the rest
    shifted left and the row padded on the right, as integrated_gradients.py does."""
    full = layer(ids[None, :], training=False)  # [1, 1]
    without = tf.reshape(layer(rows_without_each_token(ids), training=False), [-1])  # [maxlen]
    delta = tf.where(tf.range(ids.shape[0]) < n, full[0, 0] - without, 0.0)
    return full, delta


class _LstmOutputOnly(dict):
    """A run of the fast path's graph that holds the LSTM's output and nothing else: a layer
    that reads the ids (or anything else) raises UnsupportedGraph when the head is traced."""

    def __missing__(self, key):
        raise UnsupportedGraph(
            f"the ids are read by more than the LSTM (the head asks for {key!r})"
        )


@dataclass(frozen=True)
class _Inputs:
    """One direction's input projections along the path: at presence p, step t's input is
    `unknown + p * deltas[t]` (its reading order; rows past n are never read)."""

    unknown: tf.Tensor  # [4 x units]: the table row of [UNK]
    deltas: tf.Tensor  # [maxlen, 4 x units]: each token's row minus unknown


def _path_inputs(recurrence, ids, n) -> list[_Inputs]:
    """Each direction's inputs for one review: ids [maxlen] right-padded, n real."""
    readings = [ids, reverse_within_length(ids[None, :], n[None])[0]]
    inputs = []
    for direction in recurrence.directions:
        unknown = direction.table[OOV_ID]  # the baseline's every token
        reading = readings[int(direction.reverse)]
        inputs.append(_Inputs(unknown, tf.gather(direction.table, reading) - unknown))
    return inputs


def _step_list(maxlen: int, shape: list[int]) -> tf.TensorArray:
    """One tensor of `shape` per time step, each read more than once."""
    return tf.TensorArray(tf.float32, size=maxlen, element_shape=shape, clear_after_read=False)


def _relaxed_forward(recurrence, inputs, n, presences, keep_states: bool):
    """The recurrence over one review's first n steps at k presences: (pooled output [k, units
    x directions], per direction the states after each step (h, c) as step lists of [k, units],
    if kept)."""
    k, units = presences.shape[0], recurrence.units
    maxlen = inputs[0].deltas.shape[0]
    presence = presences[:, None]

    def step(t, states, kept):
        new_states, new_kept = [], []
        for direction, given, (h, c, total), kept_here in zip(
            recurrence.directions, inputs, states, kept or [None] * len(states), strict=True
        ):
            z = given.unknown + presence * given.deltas[t] + tf.matmul(h, direction.recurrent)
            i, f, g, o = lstm_gates(z, units)
            c = f * c + i * g
            h = o * tanh(c)
            new_states.append((h, c, total + h))
            if keep_states:  # the states only: keeping the gates cost more than recomputing them
                new_kept.append((kept_here[0].write(t, h), kept_here[1].write(t, c)))
        return t + 1, new_states, new_kept

    zeros = tf.zeros([k, units])
    states = [(zeros, zeros, zeros) for _ in recurrence.directions]
    kept = [  # per direction, its own two lists (h, c): written in the same step
        (_step_list(maxlen, [k, units]), _step_list(maxlen, [k, units]))
        for _ in recurrence.directions
        if keep_states
    ]
    _, states, kept = tf.while_loop(
        lambda t, *_: t < n, step, (tf.constant(0), states, kept), maximum_iterations=maxlen
    )
    count = tf.cast(n, tf.float32)
    pooled = tf.concat(
        [total / count if recurrence.pooling == "mean" else h for h, _, total in states], axis=1
    )
    return pooled, kept


def _presence_gradients(recurrence, inputs, n, presences, d_pooled, kept) -> tf.Tensor:
    """d score / d p_t [k, maxlen] (zero past n) from d score / d pooled output [k, ...]."""
    k, units = presences.shape[0], recurrence.units
    maxlen = inputs[0].deltas.shape[0]
    presence = presences[:, None]
    count = tf.cast(n, tf.float32)
    d_outputs = tf.split(d_pooled, len(recurrence.directions), axis=1)

    def step(s, carried, per_step):
        # s runs n - 1, ..., 0 over each direction's own reading order.
        new_carried, new_per_step = [], []
        for index, (direction, given) in enumerate(zip(recurrence.directions, inputs, strict=True)):
            hidden_kept, cells_kept = kept[index]
            d_h, d_c = carried[index]
            if recurrence.pooling == "mean":
                d_h += d_outputs[index] / count
            else:  # the last state: only the last step's h is read
                d_h += tf.where(s == n - 1, d_outputs[index], 0.0)
            # Step s again, from the states before it: its gates and cell state.
            before = tf.maximum(s - 1, 0)
            h_before = tf.where(s > 0, hidden_kept.read(before), 0.0)
            c_before = tf.where(s > 0, cells_kept.read(before), 0.0)
            z = (
                given.unknown
                + presence * given.deltas[s]
                + tf.matmul(h_before, direction.recurrent)
            )
            i, f, g, o = lstm_gates(z, units)
            c = f * c_before + i * g
            tanh_c = tanh(c)
            d_c += d_h * o * (1.0 - tanh_c * tanh_c)
            d_z = tf.concat(
                [
                    d_c * g * i * (1.0 - i),
                    d_c * c_before * f * (1.0 - f),
                    d_c * i * (1.0 - g * g),
                    d_h * tanh_c * o * (1.0 - o),
                ],
                axis=1,
            )
            new_carried.append((tf.matmul(d_z, direction.recurrent, transpose_b=True), d_c * f))
            d_presence = tf.reduce_sum(d_z * given.deltas[s], axis=1)  # [k]
            new_per_step.append(per_step[index].write(s, d_presence))
        return s - 1, new_carried, new_per_step

    zeros = tf.zeros([k, units])
    carried = [(zeros, zeros) for _ in recurrence.directions]
    per_step = [_step_list(maxlen, [k]) for _ in recurrence.directions]
    _, _, per_step = tf.while_loop(
        lambda s, *_: s >= 0, step, (n - 1, carried, per_step), maximum_iterations=maxlen
    )
    positions = tf.range(maxlen)
    result = tf.zeros([maxlen, k])
    for index, direction in enumerate(recurrence.directions):
        by_step = per_step[index].stack()  # [maxlen, k]; steps n.. never written: 0
        if direction.reverse:  # step s read position n - 1 - s
            source = tf.maximum(n - 1 - positions, 0)
            by_step = tf.where((positions < n)[:, None], tf.gather(by_step, source), 0.0)
        result += by_step
    return tf.transpose(result)
