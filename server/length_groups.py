"""Splits a batch into groups of similar length, so short reviews are not padded to long ones.

Standard library and NumPy only. On the CPU an LSTM step costs a fixed part
(the while loop's op dispatch, about as much as `step_overhead_rows` rows)
plus a part per row, and each model call a fixed part too. A batch padded
to its longest review pays for every row at every step; sorted by length and
cut into groups, each group runs only to its own longest review. The cuts
minimise, over the groups,

    call_overhead_row_steps + longest_length x (step_overhead_rows + rows)

by dynamic programming over the sorted lengths: one group when the lengths
are alike or the batch is small, several when a few long reviews would make
many short ones wait through padding. Padding is masked, so the scores do
not depend on the grouping.
"""

from __future__ import annotations

import math

import numpy as np

# Cut points the search considers; a bigger batch is cut only at multiples of n / this.
MAX_CUT_POINTS = 64


def group_by_length(
    lengths: np.ndarray, step_overhead_rows: float, call_overhead_row_steps: float
) -> list[np.ndarray]:
    """Row indices of `lengths` [batch] in groups of similar length, every row in exactly one."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {lengths.shape}")
    count = len(lengths)
    if count == 0:
        return []
    order = np.argsort(lengths, kind="stable")
    ascending = lengths[order].astype(np.float64)
    stride = math.ceil(count / MAX_CUT_POINTS)
    cuts = np.array(sorted({*range(0, count, stride), count}))
    # best[j]: least cost of rows ascending[:cuts[j]]; start[j]: where its last group starts.
    best = np.zeros(len(cuts))
    start = np.zeros(len(cuts), dtype=np.int64)
    for j in range(1, len(cuts)):
        longest = ascending[cuts[j] - 1]
        rows = cuts[j] - cuts[:j]
        costs = best[:j] + call_overhead_row_steps + longest * (step_overhead_rows + rows)
        start[j] = int(np.argmin(costs))
        best[j] = costs[start[j]]
    groups = []
    j = len(cuts) - 1
    while j > 0:
        groups.append(order[cuts[start[j]] : cuts[j]])
        j = start[j]
    return groups[::-1]
