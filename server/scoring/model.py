"""The serving model: finds and loads the newest version, picks the device, scores batches.

The only server module that imports TensorFlow. A saved model maps raw text
[batch] -> P(positive) [batch, 1] through three layers: "vectorize" (pads to
the batch's longest review), "keep_last_tokens" (caps at maxlen) and
"classifier" (Embedding with mask_zero, then LSTM). Serving splits them into
two tf.functions so that a review with no tokens never reaches the LSTM (a
fully masked row breaks cuDNN) and nothing retraces as batch shapes change.

Which path scores: on a GPU the Keras classifier itself (cuDNN LSTM kernels: ids
right-padded and masked, no all-padding row); on the CPU the XLA fast path
(server/scoring/fast_path.py), the same scores from the same weights, unless the layer
graph is one it does not know; `--device cpu-keras` keeps the Keras path on CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import training.layers  # noqa: F401  registers the custom objects safe mode rebuilds by name
from server.batching.length_groups import DEFAULT_COST, GroupingCost, fit_cost, group_by_length
from server.errors import (
    NO_WORDS,
    ExplainUnavailableError,
    InferenceError,
    InvalidReviewError,
    ModelLoadError,
    StartupError,
)
from server.explanations.word_spans import NEGATION, PLAIN
from server.scoring.fast_gradients import FastPresenceGradients
from server.scoring.fast_path import FastScorer, UnsupportedGraph
from server.scoring.integrated_gradients import PresenceGradients
from server.scoring.versions import ModelVersion, complete_versions
from training.token_ids import OOV_ID

# Named as before the subpackages, so that log filters still match.
logger = logging.getLogger("server.model")

# "cpu-keras": the CPU with the plain Keras path, the fast path's reference and fallback.
DEVICES = ("auto", "cpu", "cpu-keras", "gpu")
SCORING_PATHS = ("fast", "keras")
REQUIRED_LAYERS = ("vectorize", "keep_last_tokens", "classifier")
REQUIRED_METADATA = {"name": str, "version": int, "maxlen": int, "vocabulary_size": int}
# Shapes timed to fit a model's grouping cost: rows x time steps (capped at maxlen).
_CALIBRATION_ROWS = 128  # as many as a default batch: the regime where grouping pays
_CALIBRATION_STEPS = 200
_CALIBRATION_REPEATS = 3
# The registered standardisers (training/layers.py) that server/explanations/word_spans.py mirrors.
STANDARDIZERS = {
    f"{training.layers.PACKAGE}>standardize_review": PLAIN,
    f"{training.layers.PACKAGE}>standardize_review_negation": NEGATION,
}
# A batch is tokenised in parts on the fast path's lanes, parts of about this many rows or more.
TOKENIZE_PART_ROWS = 16


def default_fast_path_lanes() -> int:
    """Chunks of a batch the fast path runs at once: one per core this process may use, up to
    4 (each XLA program runs on one core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def find_latest_version(model_dir: Path) -> ModelVersion:
    """The highest integer-named folder holding metadata.json (written last, so: complete)."""
    return complete_versions(model_dir)[0]


def read_metadata(version: ModelVersion) -> dict:
    path = version.path / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{path} holds a {type(metadata).__name__}, not a JSON object")
    for key, kind in REQUIRED_METADATA.items():
        if not isinstance(metadata.get(key), kind):
            raise ModelLoadError(
                f"{path} lacks {key!r} as {kind.__name__} (got {metadata.get(key)!r})"
            )
    if metadata["version"] != version.version:
        raise ModelLoadError(
            f"{path} says version {metadata['version']} but sits in folder {version.version}"
        )
    threshold = metadata.get("decision_threshold", 0.5)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ModelLoadError(f"{path} has decision_threshold {threshold!r}, not a number in [0, 1]")
    return metadata


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"test": {"accuracy": 0.9}} -> {"test.accuracy": 0.9}; non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def resolve_device(requested: str) -> str:
    """ "auto" | "cpu" | "cpu-keras" | "gpu" -> a TensorFlow device name; "gpu" with no GPU is a
    StartupError."""
    if requested not in DEVICES:
        raise StartupError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise StartupError(
            "--device gpu was asked for but TensorFlow sees no GPU "
            "(check the driver, CUDA libraries and CUDA_VISIBLE_DEVICES), or use --device auto"
        )
    if requested in ("cpu", "cpu-keras") or not gpus:
        return "/CPU:0"
    for gpu in gpus:
        try:
            # Take GPU memory as needed rather than all of it, so the GPU can be shared.
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised (e.g. in tests); the setting cannot change now
    return "/GPU:0"


class ServingModel:
    """A loaded model version: `predict(reviews)` -> per review a score or an InvalidReviewError."""

    def __init__(
        self,
        keras_model,
        metadata: dict,
        version: ModelVersion,
        device: str,
        scoring_path: str = "fast",
        fast_path_lanes: int | None = None,
    ):
        self.metadata = metadata
        self.version = version.version
        self.path = version.path
        self.device = device
        self.name: str = metadata["name"]
        self.maxlen: int = metadata["maxlen"]
        self.vocabulary_size: int = metadata["vocabulary_size"]
        self.decision_threshold = float(metadata.get("decision_threshold", 0.5))
        self.preset: str = str(metadata.get("preset", ""))
        self.metrics = flatten_metrics(metadata.get("metrics") or {})
        # How batches are split by length; warm_up() measures this model's own.
        self.grouping_cost: GroupingCost = DEFAULT_COST
        vectorize, keep_last_tokens, classifier = (
            keras_model.get_layer(name) for name in REQUIRED_LAYERS
        )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(reviews):
            # String ops exist only on the CPU. -> int64 ids [batch, <= maxlen], 0-padded right.
            with tf.device("/CPU:0"):
                return keep_last_tokens(vectorize(reviews))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)])
        def score(ids):
            # ids [batch, time] with no all-padding row -> P(positive) [batch, 1].
            with tf.device(device):
                return classifier(ids, training=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def token_ids(reviews):
            # Every token, before keep_last_tokens: Explain marks those the model never sees.
            with tf.device("/CPU:0"):
                return vectorize(reviews)

        self._tokenize = tokenize
        self._score = score
        self._token_ids = token_ids
        # Explaining (server/explanations/explain.py) needs the Python mirror of the standardiser
        # and a classifier graph it can relax; warm_up() finds out whether it has both.
        self.standardizer = STANDARDIZERS.get(_registered_name(vectorize.get_config()))
        self.explain_unavailable: str | None = None
        if self.standardizer is None:
            self.explain_unavailable = "its text standardiser has no Python mirror for word spans"
        self._vocabulary = {str(t): i for i, t in enumerate(vectorize.get_vocabulary())}
        self._presence_gradients: PresenceGradients | FastPresenceGradients | None = None
        self.explain_path = "keras"  # "fast": the fast path's own backward pass
        self._keras_gradients: PresenceGradients | None = None  # kept while explain_path is fast
        try:
            self._presence_gradients = PresenceGradients(classifier, device)
        except ModelLoadError as exc:  # Predict does not need it
            self.explain_unavailable = str(exc)
        # The fast path is for the CPU only: on a GPU the Keras classifier runs cuDNN's kernels.
        self._fast: FastScorer | None = None
        self.scoring_path = "keras"
        self.fallback_reason = ""
        if scoring_path not in SCORING_PATHS:
            raise ValueError(f"scoring_path must be one of {SCORING_PATHS}, not {scoring_path!r}")
        if scoring_path == "fast" and device == "/CPU:0":
            try:
                self._fast = FastScorer(
                    classifier, self.maxlen, lanes=fast_path_lanes or default_fast_path_lanes()
                )
                self.scoring_path = "fast"
                self._explain_on_fast_path()
            except UnsupportedGraph as exc:
                self.fallback_reason = str(exc)
                logger.warning(
                    "model %s keeps the plain Keras path on the CPU: the fast path does not "
                    "know this layer graph (%s)",
                    version.path,
                    exc,
                )

    def _explain_on_fast_path(self) -> None:
        """Explain's gradients from the fast path's own backward pass, where the graph allows."""
        if self._presence_gradients is None or self._fast is None:
            return
        try:
            fast = FastPresenceGradients(self._fast.graph, self.maxlen)
        except Exception as exc:  # UnsupportedGraph, or a fault: Keras' gradients still work
            logger.info("Explain keeps Keras' gradients for %s: %s", self.path, exc)
            return
        self._keras_gradients = self._presence_gradients  # the fallback if fast fails to compile
        self._presence_gradients, self.explain_path = fast, "fast"

    @classmethod
    def load_latest(cls, model_dir: Path, device: str = "auto") -> ServingModel:
        """Loads the highest complete version under `model_dir` onto `device` (auto/cpu/gpu)."""
        return cls.load_version(find_latest_version(Path(model_dir)), device)

    @classmethod
    def load_version(
        cls, version: ModelVersion, device: str = "auto", fast_path_lanes: int | None = None
    ) -> ServingModel:
        """Loads one version folder onto `device` (auto/cpu/cpu-keras/gpu)."""
        metadata = read_metadata(version)
        tf_device = resolve_device(device)
        return cls(
            load_keras_model(version.path / "model.keras", tf_device),
            metadata,
            version,
            tf_device,
            scoring_path="keras" if device == "cpu-keras" else "fast",
            fast_path_lanes=fast_path_lanes,
        )

    def predict(self, reviews: list[str]) -> list[float | Exception]:
        """Scores a batch; equal to scoring each review alone (padding is masked)."""
        ids = self.tokenize(reviews)
        lengths = np.count_nonzero(ids, axis=1)
        has_words = np.flatnonzero(lengths)
        results: list[float | Exception] = [InvalidReviewError(NO_WORDS) for _ in reviews]
        if has_words.size:
            # Drop wordless rows (a fully masked row breaks cuDNN); score rows of similar
            # length together, each group padded only to its own longest review.
            kept, kept_lengths = ids[has_words], lengths[has_words]
            if self._fast is not None:
                # The fast path sorts by length and loops each chunk to its own longest
                # review: grouping at the granularity of its compiled batch sizes.
                scores = self.score(kept).astype(np.float64)
            else:
                scores = np.empty(len(kept), dtype=np.float64)
                cost = self.grouping_cost
                groups = group_by_length(
                    kept_lengths, cost.step_overhead_rows, cost.call_overhead_row_steps
                )
                for rows in groups:
                    scores[rows] = self.score(kept[rows, : int(kept_lengths[rows].max())])
            for index, value in zip(has_words.tolist(), scores.tolist(), strict=True):
                results[index] = (
                    value if math.isfinite(value) else InferenceError(f"the model scored {value}")
                )
        return results

    @property
    def fast_path_lanes(self) -> int:
        """Chunks the fast path runs at once (0: the Keras path scores)."""
        return self._fast.lanes if self._fast is not None else 0

    def with_fast_path_lanes(self, lanes: int) -> ServingModel:
        """This model with its fast path's chunks on `lanes` threads, sharing the compiled
        programs (a side-by-side measurement's variant)."""
        if self._fast is None:
            raise ValueError(f"{self.describe()} has no fast path")
        other = copy.copy(self)
        other._fast = self._fast.with_lanes(lanes)
        return other

    def close(self) -> None:
        """Lets the fast path's threads go (the model still scores, one chunk at a time)."""
        if self._fast is not None:
            self._fast.close()

    def tokenize(self, reviews: list[str]) -> np.ndarray:
        """Token ids as the classifier sees them: int64 [batch, <= maxlen], right-padded with 0.

        On the fast path a large batch is tokenised in parts on its lanes' threads (the string
        ops run on one core per call): at batch 128, 5% more reviews/s in all."""

        def tokenize(texts: list[str]) -> np.ndarray:
            return self._tokenize(tf.constant(texts, dtype=tf.string)).numpy()

        count = min(self.fast_path_lanes, len(reviews) // TOKENIZE_PART_ROWS)
        if count < 2:
            return tokenize(reviews)
        size = -(-len(reviews) // count)
        starts = list(range(0, len(reviews), size))
        parts = self._fast.on_lanes(lambda start: tokenize(reviews[start : start + size]), starts)
        ids = np.zeros((len(reviews), max(part.shape[1] for part in parts)), dtype=np.int64)
        for start, part in zip(starts, parts, strict=True):
            ids[start : start + len(part), : part.shape[1]] = part
        return ids

    def score(self, ids: np.ndarray) -> np.ndarray:
        """P(positive) [batch] for token ids [batch, time] with no all-padding row."""
        if self._fast is not None:
            return self._fast(ids)
        return self.score_keras(ids)

    def score_keras(self, ids: np.ndarray) -> np.ndarray:
        """As score(), by the Keras classifier itself: the fast path's reference."""
        return self._score(tf.constant(ids, dtype=tf.int64)).numpy()[:, 0]

    def token_ids(self, review: str) -> list[int]:
        """Every token id of one review, in order, before keep_last_tokens keeps the last maxlen."""
        ids = self._token_ids(tf.constant([review], dtype=tf.string)).numpy()[0]
        return ids[ids != 0].tolist()

    def vocabulary_ids(self, tokens: list[str]) -> list[int]:
        """The ids the vectoriser gives these standardised tokens (1 for out of vocabulary)."""
        return [self._vocabulary.get(token, OOV_ID) for token in tokens]

    def presence_scores(self, ids: Sequence[int], presences: np.ndarray) -> np.ndarray:
        """Scores [k] along one review's path from the baseline (presence 0) to the review
        (presence 1), at `presences`; `ids` are those the classifier sees (at most maxlen,
        none 0). Forward passes only."""
        return self._explainable().scores(np.asarray(ids, dtype=np.int64), presences)

    def presence_gradients(
        self, ids: Sequence[int], presences: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d score / d presence of each token [k, n], scores [k]) at `presences` along the
        same path."""
        return self._explainable()(np.asarray(ids, dtype=np.int64), presences)

    def _explainable(self) -> PresenceGradients | FastPresenceGradients:
        if self.explain_unavailable is not None or self._presence_gradients is None:
            raise ExplainUnavailableError(
                f"model version {self.version} cannot be explained: {self.explain_unavailable}"
            )
        return self._presence_gradients

    def warm_up(self) -> float:
        """Traces both functions and touches the device once; returns the seconds it took."""
        started_s = time.monotonic()
        if self._fast is not None:
            self._fast.compile_all()
        reviews = ["a fine film", " ".join(["a long and winding review"] * self.maxlen), "!!!"]
        results = self.predict(reviews)
        if not all(isinstance(r, float) for r in results[:2]) or not isinstance(
            results[2], InvalidReviewError
        ):
            raise ModelLoadError(f"warm-up of {self.path} gave unexpected results: {results!r}")
        if self._fast is None:
            self.grouping_cost = self.calibrate_grouping()
        self._warm_up_explain()
        return time.monotonic() - started_s

    def _warm_up_explain(self) -> None:
        """Traces the attribution functions, or records why this version cannot explain."""
        if self.explain_unavailable is not None:
            logger.warning("Explain is off for %s: %s", self.describe(), self.explain_unavailable)
            return
        if self.explain_path == "fast":
            try:
                self._explainable().compile_all()
                return
            except Exception as exc:  # an XLA compile fault: Keras' gradients still work
                logger.warning("Explain's fast gradients failed for %s (%s)", self.describe(), exc)
                self._presence_gradients, self.explain_path = self._keras_gradients, "keras"
        try:
            self._explainable().compile_all()
        except Exception as exc:  # a layer the relaxation cannot handle; Predict is unaffected
            self.explain_unavailable = f"its classifier cannot be relaxed ({exc})"
            logger.warning("Explain is off for %s: %s", self.describe(), self.explain_unavailable)

    def calibrate_grouping(self) -> GroupingCost:
        """Times the classifier on three shapes to fit how this model, on this device, trades
        padding against extra calls (server/batching/length_groups.py); best of a few tries each."""
        long_steps = max(2, min(self.maxlen, _CALIBRATION_STEPS))
        short_steps = max(1, long_steps // 4)

        def fastest_s(rows: int, steps: int) -> float:
            ids = np.ones((rows, steps), dtype=np.int64)  # token 1 (out of vocabulary) is real
            times_s = []
            for _ in range(_CALIBRATION_REPEATS):
                started_s = time.perf_counter()
                self.score(ids)
                times_s.append(time.perf_counter() - started_s)
            return min(times_s)

        return fit_cost(
            fastest_s(1, short_steps),
            fastest_s(1, long_steps),
            fastest_s(_CALIBRATION_ROWS, long_steps),
            short_steps,
            long_steps,
            _CALIBRATION_ROWS,
        )

    def describe(self) -> str:
        return (
            f"{self.name} version {self.version} (preset {self.preset or '?'}, "
            f"{self.scoring_path} path)"
        )


def load_and_warm(device: str) -> Callable[[ModelVersion], ServingModel]:
    """The real loader: a ServingModel on `device`, warmed up (traced) before it serves."""

    def load(version: ModelVersion) -> ServingModel:
        model = ServingModel.load_version(version, device)
        warm_up_s = model.warm_up()
        logger.info(
            "loaded model %s from %s; it runs on %s (--device %s); warm-up took %.2f s",
            model.describe(),
            model.path,
            model.device,
            device,
            warm_up_s,
        )
        return model

    return load


def _registered_name(vectorize_config: dict) -> str:
    """The registered name of a TextVectorization config's standardiser ("" if none)."""
    standardize = vectorize_config.get("standardize")
    if callable(standardize):
        return keras.saving.get_registered_name(standardize)
    if isinstance(standardize, dict):  # a serialised reference
        return str(standardize.get("registered_name") or standardize.get("config") or "")
    return str(standardize or "")


def load_keras_model(path: Path, device: str) -> keras.Model:
    """Loads a .keras file in safe mode, its variables placed on `device`."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    # Keras says "File not found" for a file that is there but truncated; say what it is.
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"model file {path} is not a .keras archive (a zip file): truncated or corrupt?"
        )
    try:
        with tf.device(device):
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path} as a Keras model: {exc}") from exc
    missing = [name for name in REQUIRED_LAYERS if name not in {x.name for x in model.layers}]
    if missing:
        raise ModelLoadError(
            f"{path} lacks the layer(s) {', '.join(missing)}; a serving model needs "
            f"{', '.join(REQUIRED_LAYERS)}"
        )
    return model
