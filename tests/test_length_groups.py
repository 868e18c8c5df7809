"""Tests for server/batching/length_groups.py: every row in one group, cuts that minimise the
cost model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.batching.length_groups import (
    DEFAULT_COST,
    MAX_CUT_POINTS,
    MIN_SAVING,
    fit_cost,
    group_by_length,
)

STEP_ROWS, CALL_ROW_STEPS = 16.0, 150.0


def cost(groups: list[np.ndarray], lengths: np.ndarray) -> float:
    return sum(CALL_ROW_STEPS + lengths[g].max() * (STEP_ROWS + len(g)) for g in groups)


def least_cost_by_brute_force(lengths: np.ndarray) -> float:
    """Tries every way to cut the sorted rows into contiguous groups."""
    order = np.argsort(lengths, kind="stable")
    count = len(lengths)
    least = float("inf")
    for mask in range(1 << (count - 1)):
        bounds = [0] + [i for i in range(1, count) if mask >> (i - 1) & 1] + [count]
        groups = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        least = min(least, cost(groups, lengths))
    return least


@given(st.lists(st.integers(1, 500), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_every_row_lands_in_exactly_one_group_in_length_order(values):
    lengths = np.array(values)
    groups = group_by_length(lengths, STEP_ROWS, CALL_ROW_STEPS)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    for shorter, longer in zip(groups, groups[1:], strict=False):
        assert lengths[shorter].max() <= lengths[longer].min()


@given(st.lists(st.integers(1, 500), min_size=1, max_size=9))
@settings(max_examples=80, deadline=None)
def test_small_batches_get_the_cheapest_cuts_unless_they_save_little(values):
    lengths = np.array(values)
    groups = group_by_length(lengths, STEP_ROWS, CALL_ROW_STEPS)
    least = least_cost_by_brute_force(lengths)
    whole = cost([np.arange(len(lengths))], lengths)
    if least <= (1 - MIN_SAVING) * whole:
        assert cost(groups, lengths) == pytest.approx(least)
    else:
        assert len(groups) == 1


def test_a_few_long_reviews_do_not_pad_many_short_ones():
    lengths = np.array([500, 20, 30, 25, 480, 22] * 8)
    groups = group_by_length(lengths, STEP_ROWS, CALL_ROW_STEPS)
    assert [sorted(set(lengths[g].tolist())) for g in groups] == [[20, 22, 25, 30], [480, 500]]


def test_alike_lengths_stay_one_batch():
    lengths = np.array([200, 210, 190, 205, 199, 201, 220, 180])
    assert [g.tolist() for g in group_by_length(lengths, STEP_ROWS, CALL_ROW_STEPS)] == [
        np.argsort(lengths, kind="stable").tolist()
    ]


def test_big_batches_are_cut_only_at_a_bounded_number_of_points():
    lengths = np.arange(1, 4097)
    groups = group_by_length(lengths, STEP_ROWS, CALL_ROW_STEPS)
    stride = 4096 // MAX_CUT_POINTS
    assert all(len(g) % stride == 0 for g in groups)
    assert sum(len(g) for g in groups) == 4096


def test_empty_and_malformed_input():
    assert group_by_length(np.array([], dtype=np.int64), STEP_ROWS, CALL_ROW_STEPS) == []
    with pytest.raises(ValueError, match="one-dimensional, got shape \\(2, 2\\)"):
        group_by_length(np.ones((2, 2)), STEP_ROWS, CALL_ROW_STEPS)


def test_a_split_batch_scores_each_review_as_if_alone(tiny_model_dir, monkeypatch):
    from server.scoring.model import ServingModel

    # The Keras path groups by length (the fast path sorts and chunks on its own), with the
    # default preset's cost model: the tiny model's own might not split this batch.
    serving_model = ServingModel.load_latest(tiny_model_dir, device="cpu-keras")
    monkeypatch.setattr(serving_model, "grouping_cost", DEFAULT_COST)
    short = ["great fun", "dull plot", "superb", "awful movie", "loved it", "boring"] * 4
    long = [" ".join(["the plot was great and the actor superb"] * 10)] * 3
    reviews = short[:12] + long + short[12:]
    lengths = np.count_nonzero(serving_model.tokenize(reviews), axis=1)
    groups = group_by_length(
        lengths, DEFAULT_COST.step_overhead_rows, DEFAULT_COST.call_overhead_row_steps
    )
    assert len(groups) > 1  # the server splits this batch
    alone = [serving_model.predict([review])[0] for review in reviews]
    assert serving_model.predict(reviews) == pytest.approx(alone, abs=1e-5, rel=0)


def test_the_cost_model_is_recovered_from_exact_timings():
    # 0.5 ms per call, 50 us per step, 2 us per row-step.
    def time_s(rows: int, steps: int) -> float:
        return 0.5e-3 + steps * (50e-6 + rows * 2e-6)

    cost = fit_cost(time_s(1, 50), time_s(1, 200), time_s(32, 200), 50, 200, 32)
    assert cost.step_overhead_rows == pytest.approx(25.0)
    assert cost.call_overhead_row_steps == pytest.approx(250.0)


def test_timings_that_make_no_sense_fall_back_to_the_default_cost():
    # More rows took less time: noise, not a model.
    assert fit_cost(1e-3, 4e-3, 3e-3, 50, 200, 32) == DEFAULT_COST
    assert fit_cost(1e-3, 4e-3, float("nan"), 50, 200, 32) == DEFAULT_COST


def test_warm_up_measures_the_models_own_cost(serving_model):
    cost = serving_model.calibrate_grouping()
    assert 0 <= cost.step_overhead_rows < 1e4
    assert 0 <= cost.call_overhead_row_steps <= 1e7
