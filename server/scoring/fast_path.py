"""The CPU fast path: the classifier rebuilt from its Keras weights, one XLA program per batch size.

The plain Keras path runs an LSTM as a TensorFlow while loop of a dozen ops per
time step, each dispatched on its own: at batch 1 that dispatch, not the
arithmetic, is the cost. Here the classifier's layer graph is read once and
rebuilt from the same weights, with four changes that give the same scores:

- An LSTM fed by an Embedding does its input projection ahead of time, for the
  whole vocabulary: `embeddings @ kernel + bias` is a table [vocab, 4 x units],
  so each step gathers one row per review instead of a matmul.
- A Bidirectional LSTM runs both directions in one loop: the backward direction
  reads each review reversed within its own length, which keeps it right-padded
  and lets both directions share one mask.
- A masked mean over an LSTM's outputs is summed inside the loop, so the
  sequence of outputs is never stored.
- Reviews that have ended stop costing: a chunk's rows, sorted longest first, run
  in stages of halving row counts, each stage until the rows it drops have ended.

The program is XLA-compiled (`jit_compile`) for a few batch sizes (`BATCH_BUCKETS`),
with ids always padded to maxlen: the loop stops at the longest review of the
chunk, so time needs no buckets, and a batch is cut into bucket-sized chunks of
reviews sorted by length. Layer graphs it does not know raise UnsupportedGraph,
and the caller keeps the plain Keras path (server/scoring/model.py).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

# Batch sizes compiled; a call is cut into chunks of these. Each costs one XLA compile at
# warm-up (about half a second for the default preset on 2 idle cores). Beyond 64 rows a
# chunk gains little per row, and two chunks can run on two cores.
BATCH_BUCKETS = (1, 8, 16, 32, 64)
# The last chunk is padded up to a bucket if at most this share of its rows, or at most
# SMALL_PADDING_ROWS rows, are padding (a few rows more cost little next to another call).
MAX_PADDED_ROWS_SHARE = 0.25
SMALL_PADDING_ROWS = 8
# With several lanes a batch is cut into two chunks per lane if they hold at least this many.
BALANCING_CHUNK_ROWS = 32
# A chunk's rows run in stages of halving counts, down to this many rows (_Recurrence.run). On
# real IMDB lengths, one core: a chunk of 64 spanning all lengths ran about 17% faster per review
# with 4 than with 8, as fast as with 2; on chunks of close lengths the three were alike. One
# stage of the whole chunk (no halving) was 7-36% slower.
MIN_STAGE_ROWS = 4
# Layers that are the identity at inference.
_IDENTITY_LAYERS = (
    "InputLayer",
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "TokenDropout",
)
# Layers whose own call is used as is: on [batch, features] values, masks play no part.
_POINTWISE_LAYERS = ("Dense", "Concatenate", "Add", "Activation")


class UnsupportedGraph(Exception):
    """The classifier holds a layer, or a layer setting, that the fast path does not rebuild."""


@dataclass(frozen=True)
class _Direction:
    table: tf.Variable  # [vocab, 4 x units]: embeddings @ kernel + bias, gates i, f, c, o
    recurrent: tf.Variable  # [units, 4 x units]
    reverse: bool  # reads each review from its last token back to its first


@dataclass(frozen=True)
class _Recurrence:
    """One LSTM or Bidirectional(LSTM) layer fed by an Embedding; outputs [batch, units x dirs]."""

    directions: tuple[_Direction, ...]
    units: int
    pooling: str  # "last": the final state; "mean": the mean of the outputs over real tokens

    def run(self, ids: tf.Tensor) -> tf.Tensor:
        """[rows, time] right-padded ids, rows static -> [rows, units x dirs].

        The rows are sorted longest first and run in stages of halving row counts
        (`stage_rows`): once the rows of the second half have all ended, only the first
        half goes on. So a chunk's short reviews stop costing when they end, not when its
        longest does. A finished row's state is never read again, so the steps carry no
        mask except where the output needs it (the sum of a mean; the last state)."""
        rows = ids.shape[0]
        lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)
        order = tf.argsort(lengths, direction="DESCENDING", stable=True)
        ids, lengths = tf.gather(ids, order), tf.gather(lengths, order)
        real = tf.transpose(ids != 0)  # [time, rows]; the same for both readings
        tokens = [tf.transpose(ids)]  # time-major [time, rows]
        if any(d.reverse for d in self.directions):
            tokens.append(tf.transpose(reverse_within_length(ids, lengths)))
        # Reshaped to their static row count: the stages slice them by it.
        tokens = [tf.reshape(t, [-1, rows]) for t in tokens]
        weights = tf.cast(real, tf.float32)[:, :, None]
        state = [tf.zeros([rows, self.units])] * (3 * len(self.directions))  # h, c, sum of h
        done = []  # per stage, the outputs of the rows that ended in it
        t = tf.constant(0)
        stages = stage_rows(rows)
        for stage, (alive, staying) in enumerate(zip(stages, stages[1:] + [0], strict=True)):
            # Rows from `staying` on are no longer than row `staying`: all ended by its length.
            end = lengths[staying] if staying else lengths[0]
            state = [s[:alive] for s in state]
            t, *state = tf.while_loop(
                lambda t, *_, end=end: t < end,
                functools.partial(self._step, tokens, real, weights, alive),
                (t, *state),
                name=f"stage_{stage}",
            )
            done.append(self._outputs(state, lengths[:alive])[staying:])
        # Back to the callers' row order.
        return tf.gather(tf.concat(done[::-1], axis=0), tf.argsort(order))

    def _step(self, tokens, real, weights, alive: int, t, *state):
        new_state = []
        for index, direction in enumerate(self.directions):
            h, c, total = state[3 * index : 3 * index + 3]
            z = tf.gather(direction.table, tokens[int(direction.reverse)][t, :alive])
            z += tf.matmul(h, direction.recurrent)
            i, f, g, o = lstm_gates(z, self.units)
            c = f * c + i * g
            h_next = o * tanh(c)
            if self.pooling == "mean":
                new_state += [h_next, c, total + weights[t, :alive] * h_next]
            else:  # "last": an ended row keeps its last real state
                new_state += [tf.where(real[t, :alive, None], h_next, h), c, total]
        return (t + 1, *[tf.reshape(s, [alive, self.units]) for s in new_state])

    def _outputs(self, state, lengths: tf.Tensor) -> tf.Tensor:
        count = tf.cast(tf.maximum(lengths, 1), tf.float32)[:, None]
        outputs = [
            state[3 * i + 2] / count if self.pooling == "mean" else state[3 * i]
            for i in range(len(self.directions))
        ]
        return tf.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0]


def stage_rows(rows: int) -> list[int]:
    """Row counts of a chunk's stages: rows, then halves down to MIN_STAGE_ROWS (a smaller
    matmul saves too little to pay for another loop)."""
    stages = [rows]
    while stages[-1] // 2 >= MIN_STAGE_ROWS:
        stages.append(stages[-1] // 2)
    return stages


def sigmoid(x: tf.Tensor) -> tf.Tensor:
    """1 / (1 + exp(-x)): one elementwise exp, which XLA's CPU code runs fastest."""
    return 1.0 / (1.0 + tf.exp(-x))


def tanh(x: tf.Tensor) -> tf.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1, the same one exp."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def lstm_gates(z: tf.Tensor, units: int) -> tuple[tf.Tensor, ...]:
    """Gates i, f, c candidate, o from an LSTM step's pre-activations [rows, 4 x units].

    All four in one pass, tanh(x) as 2 sigmoid(2x) - 1 on the candidate's columns: XLA's
    CPU code for one elementwise exp over [rows, 4 x units] is 2.4x faster per step than
    split gates with tf.sigmoid and tf.tanh (scores move by about 2e-7)."""
    is_candidate = tf.constant(np.arange(4 * units) // units == 2)
    gates = sigmoid(tf.where(is_candidate, 2.0 * z, z))
    return tuple(tf.split(tf.where(is_candidate, 2.0 * gates - 1.0, gates), 4, axis=1))


def reverse_within_length(ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """[batch, time] right-padded ids -> each row's real tokens in reverse order, still
    right-padded: what a backward LSTM reads, as Keras' go_backwards does over masked steps."""
    positions = tf.range(tf.shape(ids)[1])[None, :]
    source = tf.maximum(lengths[:, None] - 1 - positions, 0)
    return tf.where(positions < lengths[:, None], tf.gather(ids, source, batch_dims=1), 0)


# -- reading the Keras graph ------------------------------------------------------------------

# What a Keras tensor of the classifier becomes: the ids, an embedding of them (computed only if
# something other than an LSTM reads it), an LSTM's output sequence (read only by a masked
# mean), or a plain value computed by a function of the run.
Run = dict  # per call: "ids", and cached values by name


@dataclass(frozen=True)
class _Value:
    kind: str  # "ids" | "embedded" | "sequence" | "tensor"
    compute: Callable[[Run], tf.Tensor] | None = None
    embedding: keras.layers.Embedding | None = None
    recurrent_layer: keras.layers.Layer | None = None


def _activation_name(function) -> str:
    return getattr(function, "__name__", repr(function))


def _lstm_directions(layer) -> tuple[list, str]:
    """(the LSTM layers of an LSTM or Bidirectional(LSTM), return_sequences), or
    UnsupportedGraph naming what does not fit."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        if layer.merge_mode != "concat":
            raise UnsupportedGraph(f"{layer.name}: merge_mode {layer.merge_mode!r}, not 'concat'")
        lstms = [layer.forward_layer, layer.backward_layer]
    else:
        lstms = [layer]
    for lstm in lstms:
        if type(lstm).__name__ != "LSTM":
            raise UnsupportedGraph(f"{layer.name}: a {type(lstm).__name__}, not an LSTM")
        settings = {
            "stateful": lstm.stateful,
            "return_state": lstm.return_state,
            "activation": _activation_name(lstm.cell.activation),
            "recurrent_activation": _activation_name(lstm.cell.recurrent_activation),
        }
        expected = {
            "stateful": False,
            "return_state": False,
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
        }
        if settings != expected:
            raise UnsupportedGraph(
                f"{layer.name}: settings {settings}, the fast path has {expected}"
            )
    return lstms, lstms[0].return_sequences


def _recurrence(layer, embedding, pooling: str) -> _Recurrence:
    lstms, _ = _lstm_directions(layer)
    vectors = embedding.embeddings.numpy().astype(np.float64)
    directions = []
    for lstm in lstms:
        cell = lstm.cell
        kernel = cell.kernel.numpy().astype(np.float64)
        bias = cell.bias.numpy().astype(np.float64) if cell.use_bias else 0.0
        # Row 0 (padding) is read only on steps after a row's end, whose state nothing uses.
        table = (vectors @ kernel + bias).astype(np.float32)
        directions.append(
            _Direction(
                table=tf.Variable(table, trainable=False, name=f"{lstm.name}_input_table"),
                recurrent=tf.Variable(
                    cell.recurrent_kernel.numpy(), trainable=False, name=f"{lstm.name}_recurrent"
                ),
                reverse=bool(lstm.go_backwards),
            )
        )
    return _Recurrence(tuple(directions), int(lstms[0].units), pooling)


class GraphReader:
    """Turns a functional classifier (ids [batch, time] -> P [batch, 1]) into a function of a
    Run, or raises UnsupportedGraph."""

    def __init__(self, classifier: keras.Model):
        if not isinstance(classifier, keras.Model) or len(classifier.inputs) != 1:
            raise UnsupportedGraph("the classifier is not a one-input functional Keras model")
        self.input = classifier.inputs[0]
        self.producers = {}
        for layer in classifier.layers:
            if len(getattr(layer, "_inbound_nodes", ())) > 1:
                raise UnsupportedGraph(f"{layer.name} is called more than once")
            if isinstance(layer.output, (list, tuple)):
                raise UnsupportedGraph(f"{layer.name} has several outputs")
            self.producers[id(layer.output)] = layer
        self.values: dict[int, _Value] = {}
        self.recurrences: dict[str, _Recurrence] = {}
        self.bags: dict[str, keras.layers.Layer] = {}  # linear bags reading the ids, by name
        output = self.value(classifier.outputs[0])
        if output.kind != "tensor":
            raise UnsupportedGraph(f"the classifier's output is an unpooled {output.kind}")
        self.forward = output.compute

    def value(self, tensor) -> _Value:
        if id(tensor) not in self.values:
            self.values[id(tensor)] = self._read(tensor)
        return self.values[id(tensor)]

    def _read(self, tensor) -> _Value:
        if tensor is self.input:
            return _Value("ids")
        layer = self.producers.get(id(tensor))
        if layer is None:
            raise UnsupportedGraph(f"cannot tell which layer makes {tensor}")
        kind = type(layer).__name__
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        # Keras lists the masks a layer was called with among its inputs; masks are
        # recomputed here from the ids.
        sources = [self.value(t) for t in inputs if t.dtype != "bool"]
        if kind in _IDENTITY_LAYERS:
            return sources[0]
        if kind == "Embedding":
            if sources[0].kind != "ids" or not layer.mask_zero:
                raise UnsupportedGraph(f"{layer.name}: an Embedding must read the ids, mask_zero")
            return _Value("embedded", embedding=layer)
        if kind in ("LSTM", "Bidirectional"):
            return self._lstm(layer, sources[0])
        if kind == "GlobalAveragePooling1D":
            return self._masked_mean(layer, sources[0])
        if kind == "HashedBigramBag" and sources[0].kind == "ids":
            # Kept by name: Explain's gradients put the bag's relaxed value there instead.
            self.bags[layer.name] = layer
            return _Value(
                "tensor", compute=lambda run: _cached(run, layer.name, lambda: layer(run["ids"]))
            )
        if kind in _POINTWISE_LAYERS and all(s.kind == "tensor" for s in sources):
            return _Value("tensor", compute=self._pointwise(layer, sources))
        raise UnsupportedGraph(f"{layer.name}: a {kind} on {[s.kind for s in sources]}")

    def _lstm(self, layer, source: _Value) -> _Value:
        if source.kind != "embedded":
            raise UnsupportedGraph(f"{layer.name}: an LSTM must read an Embedding's output")
        _, return_sequences = _lstm_directions(layer)
        if return_sequences:
            # Computed by the masked mean that reads it (the only reader allowed).
            return _Value("sequence", embedding=source.embedding, recurrent_layer=layer)
        return self._recurrent_value(layer, source.embedding, "last")

    def _recurrent_value(self, layer, embedding, pooling: str) -> _Value:
        recurrence = _recurrence(layer, embedding, pooling)
        name = f"{layer.name}/{pooling}"
        if name in self.recurrences:
            raise UnsupportedGraph(f"{layer.name}'s outputs are read twice")
        self.recurrences[name] = recurrence

        def compute(run):
            return _cached(run, name, lambda: recurrence.run(run["ids"]))

        return _Value("tensor", compute=compute)

    def _masked_mean(self, layer, source: _Value) -> _Value:
        if layer.data_format != "channels_last" or layer.keepdims:
            raise UnsupportedGraph(f"{layer.name}: only channels_last without keepdims")
        if source.kind == "sequence":
            return self._recurrent_value(source.recurrent_layer, source.embedding, "mean")
        if source.kind != "embedded":
            raise UnsupportedGraph(f"{layer.name}: a mean over a {source.kind}")
        vectors = source.embedding.embeddings

        def compute(run):
            real = tf.cast(run["ids"] != 0, tf.float32)[:, :, None]
            summed = tf.reduce_sum(tf.gather(vectors, run["ids"]) * real, axis=1)
            return summed / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)

        return _Value("tensor", compute=compute)

    @staticmethod
    def _pointwise(layer, sources: list[_Value]) -> Callable[[Run], tf.Tensor]:
        def compute(run):
            values = [source.compute(run) for source in sources]
            return layer(values if len(values) > 1 else values[0], training=False)

        return compute


def _cached(run: Run, name: str, make: Callable[[], tf.Tensor]) -> tf.Tensor:
    if name not in run:
        run[name] = make()
    return run[name]


# -- the scorer -------------------------------------------------------------------------------


def chunk_sizes(
    rows: int, buckets: tuple[int, ...] = BATCH_BUCKETS, lanes: int = 1
) -> list[tuple[int, int]]:
    """(rows, compiled batch size) per chunk for a call of `rows`: chunks of the largest bucket
    that fits both the rows left and a fair share of all rows per lane, until the rest fits one
    bucket with little padding (MAX_PADDED_ROWS_SHARE, SMALL_PADDING_ROWS).

    With several lanes the share is half a lane's rows where that still makes chunks of at
    least BALANCING_CHUNK_ROWS: chunks are cut from rows sorted by length, so the first holds
    the longest reviews and runs longest; with two chunks per lane, taken longest first by
    whichever lane is free, the lanes finish closer together (with the stages a row costs about
    3% more in a chunk of 32 than of 64, an idle lane more than that: two interleaved chunks of
    64 for a batch of 128 on two lanes were 4% slower than four sorted chunks of 32)."""
    # Chunks of up to the second bucket cost about as much as one row: never cut smaller.
    floor = buckets[min(1, len(buckets) - 1)]

    def largest_within(share: int) -> int:
        return max([b for b in buckets if b <= share] + [floor])

    largest = largest_within(-(-rows // max(1, lanes)))
    if lanes > 1 and largest_within(-(-rows // (2 * lanes))) >= BALANCING_CHUNK_ROWS:
        largest = largest_within(-(-rows // (2 * lanes)))
    chunks = []
    while rows > 0:
        above = min((b for b in buckets if b >= rows), default=None)
        if above is not None and above <= largest:
            if above - rows <= max(MAX_PADDED_ROWS_SHARE * above, SMALL_PADDING_ROWS):
                chunks.append((rows, above))
                break
        fits = max(b for b in buckets if b <= min(rows, largest)) if rows >= buckets[0] else 0
        chunks.append((fits, fits))
        rows -= fits
    return chunks


class FastScorer:
    """`scorer(ids)` -> P(positive) [batch] for right-padded ids [batch, <= maxlen] with no
    all-padding row; the same scores as the classifier, computed as described above.

    One XLA program runs on one core; with `lanes` > 1 a call's chunks run on that many threads
    at once. Call it from one thread at a time (the server's inference thread does).
    """

    def __init__(self, classifier: keras.Model, maxlen: int, buckets=BATCH_BUCKETS, lanes: int = 1):
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        self.maxlen = int(maxlen)
        self.buckets = tuple(sorted(buckets))
        self.lanes = lanes
        self._pool = ThreadPoolExecutor(lanes, "fast-path") if lanes > 1 else None
        with tf.device("/CPU:0"):
            # Kept: Explain's gradients (server/scoring/fast_gradients.py) share its tables.
            self.graph = GraphReader(classifier)
        forward = self.graph.forward

        def score(ids):
            # ids [bucket, maxlen], right-padded: each row's loop ends at its own length.
            return tf.reshape(forward({"ids": ids}), [-1])

        # One function per bucket: the row count is static in its program (the stages of the
        # recurrence slice by it), and each traces once.
        self.programs = {
            bucket: tf.function(
                score,
                jit_compile=True,
                input_signature=[tf.TensorSpec([bucket, self.maxlen], tf.int32)],
            )
            for bucket in self.buckets
        }

    def _score(self, ids: tf.Tensor) -> tf.Tensor:
        """Scores [bucket, maxlen] ids by that bucket's program."""
        program = self.programs.get(int(ids.shape[0]))
        if program is None:
            raise ValueError(f"{ids.shape[0]} rows: the compiled row counts are {self.buckets}")
        return program(ids)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] > self.maxlen:
            raise ValueError(f"ids must be [batch, <= {self.maxlen}], got shape {ids.shape}")
        lengths = np.count_nonzero(ids, axis=1)
        # Longest first, so the last, padded chunk holds the shortest reviews.
        order = np.argsort(-lengths, kind="stable")
        scores = np.empty(len(ids), dtype=np.float32)
        chunks = []
        start = 0
        for rows, bucket in chunk_sizes(len(ids), self.buckets, self.lanes):
            chunks.append((order[start : start + rows], bucket))
            start += rows

        def run(chunk: tuple[np.ndarray, int]) -> None:
            picked, bucket = chunk
            padded = np.zeros((bucket, self.maxlen), dtype=np.int32)
            padded[: len(picked), : ids.shape[1]] = ids[picked]
            with tf.device("/CPU:0"):
                result = self._score(tf.constant(padded))
            scores[picked] = result.numpy()[: len(picked)]

        self.on_lanes(run, chunks)
        return scores

    def on_lanes(self, function: Callable, items: list) -> list:
        """[function(item) for item in items], the items spread over the lanes' threads (in
        order here with one lane or one item); an item's exception is raised here."""
        pool = self._pool  # read once: close() on another thread sets it to None
        if pool is None or len(items) == 1:
            return [function(item) for item in items]
        return list(pool.map(function, items))

    def with_lanes(self, lanes: int) -> FastScorer:
        """The same compiled programs, run on `lanes` threads (for side-by-side measurements)."""
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        other = copy.copy(self)
        other.lanes = lanes
        other._pool = ThreadPoolExecutor(lanes, "fast-path") if lanes > 1 else None
        return other

    def close(self) -> None:
        """Stops the lane threads; later calls run their chunks one after another."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def compile_all(self) -> None:
        """Compiles every bucket now (a first call at a new bucket would wait for it)."""
        for bucket in self.buckets:
            with tf.device("/CPU:0"):
                self._score(tf.ones((bucket, self.maxlen), tf.int32))
