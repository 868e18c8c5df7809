"""Model versions: which folders are complete, which one serves, and swapping in newer ones.

The model directory holds integer-named version folders, each complete once
its metadata.json exists (written last). The ModelManager serves the highest
version that loads, polls for newer ones, loads and warms them on a worker
thread and swaps them in with one reference assignment, so no request waits
for a load. TensorFlow-free: loading a version is an injected callable
(server.main passes `server.scoring.model.load_and_warm`), so this module never
imports the model; the model imports this one for the version folders.
"""

from __future__ import annotations

import asyncio
import logging
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import ModelLoadError
from server.observability import heap

# Named as before the subpackages, so that log filters still match.
logger = logging.getLogger("server.versions")

_VERSION_NAME = re.compile(r"\d+")
# What the manager tells of the current model: ServingModel's description.
_DESCRIBED = frozenset(
    ("name", "version", "maxlen", "vocabulary_size", "decision_threshold", "metrics", "preset")
    + ("path", "device", "describe")
)
# What a failed version looked like: (file name, size, mtime) of its files. A folder
# still being copied fails to load; once its files change it is worth one more try.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ModelVersion:
    """One complete version folder: `<model_dir>/<version>/{model.keras,metadata.json}`."""

    version: int
    path: Path


class VersionedModel(Protocol):
    """What the manager needs of a loaded version (ServingModel has it all)."""

    name: str
    version: int
    decision_threshold: float

    def predict(self, reviews: list[str]) -> Sequence[object]: ...


class VersionedScore(float):
    """A score that remembers which model version made it, and that version's threshold."""

    model_version: int
    decision_threshold: float

    def __new__(cls, score: float, model_version: int, decision_threshold: float):
        self = super().__new__(cls, score)
        self.model_version = model_version
        self.decision_threshold = decision_threshold
        return self

    @property
    def is_positive(self) -> bool:
        return self >= self.decision_threshold


def complete_versions(model_dir: Path) -> list[ModelVersion]:
    """Every integer-named folder holding metadata.json, highest first; ModelLoadError if none."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} is not a directory")
    complete = [
        ModelVersion(int(child.name), child)
        for child in model_dir.iterdir()
        if child.is_dir() and _VERSION_NAME.fullmatch(child.name)
        if (child / "metadata.json").is_file()
    ]
    if not complete:
        hint = ""
        if (model_dir / "model.keras").exists():
            hint = f"; it holds a model.keras itself, so point at its parent, {model_dir.parent}"
        raise ModelLoadError(
            f"no complete model version in {model_dir}: expected folders named by an "
            f"integer version, each holding model.keras and metadata.json{hint}"
        )
    return sorted(complete, key=lambda v: v.version, reverse=True)


def fingerprint(path: Path) -> Fingerprint:
    try:
        files = [child for child in path.iterdir() if child.is_file()]
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    except OSError:
        return ()


class ModelManager:
    """The serving model, swapped for newer versions without dropping a request.

    `predict` is the batcher's callable: it resolves the current model once per
    batch, so a batch that started on one version finishes on it, and tags each
    score with that version. Only `poll_once` (one task at a time) swaps models.
    """

    def __init__(
        self,
        model: VersionedModel,
        *,
        model_dir: Path | None = None,
        load: Callable[[ModelVersion], VersionedModel] | None = None,
        failed: dict[int, Fingerprint] | None = None,
    ):
        if (model_dir is None) != (load is None):
            raise ValueError("model_dir and load go together: give both to poll, neither to pin")
        self._current = model
        self.model_dir = model_dir
        self._load = load
        self._failed: dict[int, Fingerprint] = dict(failed or {})
        self.versions_loaded = 1
        self.versions_failed = len(self._failed)

    @classmethod
    def from_directory(
        cls, model_dir: Path, load: Callable[[ModelVersion], VersionedModel]
    ) -> ModelManager:
        """Loads the highest version that loads; ModelLoadError if there is none."""
        failed: dict[int, Fingerprint] = {}
        problems = []
        versions = complete_versions(model_dir)
        for position, version in enumerate(versions):
            try:
                model = load(version)
            except Exception as exc:
                # The last failure is not logged here: the ModelLoadError names every one,
                # so a lone broken version gives one error line, not two.
                if position + 1 < len(versions):
                    logger.error(
                        "model version %d failed to load; trying older ones: %s",
                        version.version,
                        exc,
                    )
                failed[version.version] = fingerprint(version.path)
                problems.append(f"version {version.version}: {exc}")
                continue
            return cls(model, model_dir=model_dir, load=load, failed=failed)
        raise ModelLoadError(f"no model version in {model_dir} loads ({'; '.join(problems)})")

    @property
    def current(self) -> VersionedModel:
        return self._current

    def __getattr__(self, name: str):
        # The manager stands in for "the model" wherever one is described (GetModelInfo,
        # start-up logs), always describing the version serving now.
        if name in _DESCRIBED:
            return getattr(self._current, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def polls(self) -> bool:
        """Whether this manager watches a directory (a model given directly is pinned)."""
        return self.model_dir is not None

    def predict(self, reviews: list[str]) -> list[object]:
        """The current model's results, each score tagged with the version that made it."""
        model = self._current  # once per batch: a swap during the batch does not split it
        results = model.predict(reviews)
        return [
            VersionedScore(r, model.version, model.decision_threshold)
            if isinstance(r, numbers.Real) and not isinstance(r, bool)
            else r  # an error (or garbage) is for the batcher to turn into that review's error
            for r in results
        ]

    async def poll_once(self) -> bool:
        """Swaps in the highest newer version that loads; True if it swapped.

        Scanning and loading run on worker threads, so serving goes on meanwhile.
        A version that fails is logged and remembered, and is tried again only
        if its files change.
        """
        if self.model_dir is None or self._load is None:
            return False
        try:
            versions = await asyncio.to_thread(complete_versions, self.model_dir)
        except ModelLoadError as exc:
            logger.warning(
                "cannot scan for new model versions; still serving the loaded one: %s", exc
            )
            return False
        serving = self._current.version
        for version in versions:
            if version.version <= serving:
                break
            seen = fingerprint(version.path)
            if self._failed.get(version.version) == seen:
                continue
            try:
                model = await asyncio.to_thread(self._load, version)
            except Exception as exc:
                self._failed[version.version] = seen
                self.versions_failed += 1
                logger.error(
                    "model version %d failed to load; still serving version %d: %s",
                    version.version,
                    serving,
                    exc,
                )
                continue
            self._current = model  # the swap: batches resolve the model per batch
            self.versions_loaded += 1
            logger.info("now serving model version %d (was %d)", model.version, serving)
            return True
        return False

    async def poll_forever(self, poll_s: float) -> None:
        """Polls every `poll_s` seconds until cancelled; a failed poll never ends the loop."""
        refreeze = False
        while True:
            await asyncio.sleep(poll_s)
            if refreeze:  # a poll after the swap: the old version's last batch is done
                heap.freeze()
                refreeze = False
            try:
                if await self.poll_once():
                    # A frozen old version would never be collected: its layers hold cycles.
                    refreeze = heap.thaw()
            except Exception:
                logger.exception("polling for model versions failed; will try again")
