"""The validation split: whole blocks of neighbouring review ids held out, per label."""

from __future__ import annotations

import numpy as np

from training import data as imdb

# Reviews of one movie have consecutive ids within a label folder (adjacent
# ids share 7x more capitalised words than random pairs), and the test set
# holds other movies. Splitting single reviews puts the same movies on both
# sides and overstated test accuracy by 2.3 points; splitting shuffled blocks
# of consecutive ids keeps most movies on one side, as the test set does.
ID_BLOCK = 100


def id_blocks(split: imdb.Split) -> np.ndarray:
    """Per review, a key shared by the reviews in its block of consecutive ids within its
    label: reviews of one movie share a key, and no key spans two labels."""
    ids = split.ids if split.ids is not None else np.arange(len(split))
    labels = np.unique(split.labels)
    keys = np.empty(len(split), dtype=np.int64)
    for index, label in enumerate(labels):
        members = np.flatnonzero(split.labels == label)
        # At least 50 blocks per label, so small data sets still split near a fraction.
        blocks = ids[members] // min(ID_BLOCK, max(1, len(members) // 50))
        keys[members] = blocks * len(labels) + index
    return keys


def split_train_validation(
    split: imdb.Split, fraction: float, seed: int
) -> tuple[imdb.Split, imdb.Split]:
    """Per label, shuffles blocks of consecutive ids with `seed` and holds out `fraction`.

    The archive lists all negatives before all positives, so the split must
    never be positional (Keras' validation_split takes the last 20%).
    """
    keys = id_blocks(split)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(split), dtype=bool)
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        blocks = keys[members]
        order = rng.permutation(np.unique(blocks))
        target, count = round(len(members) * fraction), 0
        for block in order:
            if count >= target:
                break
            in_block = members[blocks == block]
            is_val[in_block] = True
            count += len(in_block)
    # Shuffle within each side too, so nothing downstream sees label order.
    fit_idx = rng.permutation(np.flatnonzero(~is_val))
    val_idx = rng.permutation(np.flatnonzero(is_val))
    return _subset(split, fit_idx), _subset(split, val_idx)


def _subset(split: imdb.Split, idx: np.ndarray) -> imdb.Split:
    ids = split.ids[idx] if split.ids is not None else None
    return imdb.Split([split.texts[i] for i in idx], split.labels[idx], ids)


def limit_split(split: imdb.Split, limit: int | None, seed: int) -> imdb.Split:
    if not limit or limit >= len(split):
        return split
    return _subset(split, np.random.default_rng(seed).permutation(len(split))[:limit])
