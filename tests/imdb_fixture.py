"""Builds a small aclImdb tree (and its .tar.gz) with reviews whose sentiment is learnable."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving", "fantastic"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "waste", "worst"]
NEUTRAL = ["the", "movie", "film", "plot", "actor", "scene", "story", "and", "was", "it"]


def review(rng: random.Random, positive: bool) -> str:
    cue = POSITIVE if positive else NEGATIVE
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(5, 30))]
    words += [rng.choice(cue) for _ in range(rng.randint(2, 5))]
    rng.shuffle(words)
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(cue).upper() + "!"


def make_aclimdb(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """Writes root/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt; returns root/aclImdb."""
    rng = random.Random(seed)
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = base / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                rating = rng.randint(7, 10) if label == "pos" else rng.randint(1, 4)
                text = review(rng, label == "pos")
                (folder / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")
    return base


def make_archive(root: Path, per_class: int = 60) -> Path:
    base = make_aclimdb(root / "tree", per_class)
    archive = root / "aclImdb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base, arcname="aclImdb")
    return archive
