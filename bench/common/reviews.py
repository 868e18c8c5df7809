"""A seeded random sample of real IMDB test reviews, and the one-per-line file the client reads."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from training import data

# Relative to the repository root, as in the Makefile.
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aclImdb.tar.gz"


def data_path(given: str | None) -> Path:
    """--data, else $IMDB_DATA, else ../shared/data/aclImdb.tar.gz beside the repository."""
    return Path(given or os.environ.get(data.ENV_VAR) or DEFAULT_DATA)


@dataclass(frozen=True)
class Sample:
    reviews: list[str]
    source: Path
    sha256: str  # of the data file, so a report names exactly what it was measured on
    seed: int
    # The whole test split, for the score agreement of the scoring paths.
    test_texts: list[str]
    test_labels: list[int]

    def describe(self) -> dict:
        words = [len(review.split()) for review in self.reviews]
        return {
            "source": str(self.source),
            "sha256": self.sha256,
            "seed": self.seed,
            "reviews": len(self.reviews),
            "mean_words": round(sum(words) / len(words), 1),
            "max_words": max(words),
        }


def sample_test_reviews(path: Path, count: int, seed: int) -> Sample:
    """`count` test reviews drawn without replacement, the same ones for the same seed."""
    dataset = data.load(path)
    texts = dataset.test.texts
    if not 0 < count <= len(texts):
        raise ValueError(f"sample size must be between 1 and {len(texts)}, got {count}")
    picked = random.Random(seed).sample(range(len(texts)), count)
    # One review per line in the --input file: a stray newline would split a review in two.
    reviews = [" ".join(texts[i].split()) for i in picked]
    labels = [int(label) for label in dataset.test.labels]
    return Sample(reviews, dataset.source, dataset.sha256, seed, list(texts), labels)


def write_reviews(reviews: list[str], path: Path) -> Path:
    path.write_text("".join(review + "\n" for review in reviews), encoding="utf-8")
    return path
