"""Splits a batch into groups of similar length, so short reviews are not padded to long ones.

Standard library and NumPy only. On the CPU an LSTM step costs a fixed part
(the while loop's op dispatch, about as much as `step_overhead_rows` rows)
plus a part per row, and each model call a fixed part too; `fit_cost` turns
three timings of the model into these two numbers. A batch padded
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
from dataclasses import dataclass

import numpy as np

# Cut points the search considers; a bigger batch is cut only at multiples of n / this.
MAX_CUT_POINTS = 64
# A batch is split only if the cost model says that saves at least this share: the model is
# a line fitted to a few timings, and a split it barely favours may not pay in fact.
MIN_SAVING = 0.1


@dataclass(frozen=True)
class GroupingCost:
    """A model's cost in row-steps (one row through one time step): a step's fixed part as
    rows, and a call's fixed part as row-steps."""

    step_overhead_rows: float
    call_overhead_row_steps: float


# The BiLSTM-64 default preset on 2 CPU cores: about 55 us per step, 3.2 us per row-step
# and 0.5 ms per call. Used until a model is calibrated (ServingModel.warm_up).
DEFAULT_COST = GroupingCost(step_overhead_rows=16.0, call_overhead_row_steps=150.0)
_MAX_STEP_OVERHEAD_ROWS = 4096.0
_MAX_CALL_OVERHEAD_ROW_STEPS = 1e7


def fit_cost(
    short_s: float, long_s: float, wide_s: float, short_steps: int, long_steps: int, rows: int
) -> GroupingCost:
    """The cost model from three timings: one row through `short_steps` and `long_steps`, and
    `rows` rows through `long_steps`. Timings that make no sense give DEFAULT_COST."""
    one_row_per_step_s = (long_s - short_s) / (long_steps - short_steps)
    per_row_step_s = (wide_s - long_s) / ((rows - 1) * long_steps)
    step_overhead_s = one_row_per_step_s - per_row_step_s
    call_s = short_s - short_steps * one_row_per_step_s
    if not (per_row_step_s > 0 and step_overhead_s >= 0 and math.isfinite(wide_s)):
        return DEFAULT_COST
    return GroupingCost(
        step_overhead_rows=min(step_overhead_s / per_row_step_s, _MAX_STEP_OVERHEAD_ROWS),
        call_overhead_row_steps=min(
            max(call_s, 0.0) / per_row_step_s, _MAX_CALL_OVERHEAD_ROW_STEPS
        ),
    )


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
    whole = call_overhead_row_steps + ascending[-1] * (step_overhead_rows + count)
    if best[-1] > (1 - MIN_SAVING) * whole:
        return [order]
    groups = []
    j = len(cuts) - 1
    while j > 0:
        groups.append(order[cuts[start[j]] : cuts[j]])
        j = start[j]
    return groups[::-1]
