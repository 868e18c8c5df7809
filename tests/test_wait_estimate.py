"""WaitEstimate: the arithmetic behind deadline-aware admission, with made-up batch times."""

from __future__ import annotations

import math

import pytest

from server.batching.wait_estimate import WaitEstimate


def test_no_estimate_until_a_batch_has_run():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.arrived(100, now_s=0.0)
    assert estimate.wait_s(100) is None
    assert estimate.wait_s(100, running_size=8, running_for_s=5.0) is None


def test_queued_reviews_cost_what_a_review_cost_in_the_recent_batches():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(8, 0.08)
    assert estimate.review_s == pytest.approx(0.01)
    assert estimate.wait_s(0) == 0
    assert estimate.wait_s(1) == pytest.approx(0.01)
    assert estimate.wait_s(8) == pytest.approx(0.08)
    assert estimate.wait_s(20) == pytest.approx(0.2)


def test_small_batches_count_as_an_eighth_of_a_full_one():
    # A batch of 1 that took 8 ms says little of what a review costs in a batch of 64:
    # it is taken as a batch of 8, so a full batch is estimated at 64 ms, not 512 ms.
    estimate = WaitEstimate(max_batch_size=64)
    estimate.observe(1, 0.008)
    assert estimate.wait_s(64) == pytest.approx(0.064)


def test_one_slow_batch_in_four_is_a_stall_and_moves_nothing():
    estimate = WaitEstimate(max_batch_size=8)
    for seconds in (0.08, 0.08, 0.08, 8.0):
        estimate.observe(8, seconds)
    assert estimate.review_s == pytest.approx(0.01)


def test_the_batch_running_now_counts_with_what_it_has_left():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(8, 0.08)
    assert estimate.wait_s(1, running_size=8, running_for_s=0.03) == pytest.approx(0.05 + 0.01)
    assert estimate.wait_s(0, running_size=8, running_for_s=0.03) == pytest.approx(0.05)


def test_a_batch_running_past_its_cost_counts_as_one_more_in_the_median():
    estimate = WaitEstimate(max_batch_size=8)
    for seconds in (0.08, 0.08, 0.4, 0.4):  # the model slowed down 5x two batches ago
        estimate.observe(8, seconds)
    assert estimate.review_s == pytest.approx(0.01)  # of the middle two, the smaller
    # The batch in the model has run 0.4 s and is not done: three of five are slow.
    assert estimate.wait_s(8, running_size=8, running_for_s=0.4) == pytest.approx(0.4)
    # One that has run no longer than a fast batch counts for nothing.
    assert estimate.wait_s(8, running_size=8, running_for_s=0.0) == pytest.approx(0.08 + 0.08)


def test_the_batch_that_carries_a_review_fills_with_the_reviews_arriving_meanwhile():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(8, 0.08)
    alone = estimate.wait_s(1, running_size=8, running_for_s=0.0)
    estimate.arrived(100, now_s=0.0)  # 100 reviews a second: 8 arrive while the batch runs
    filled = estimate.wait_s(1, running_size=8, running_for_s=0.0)
    assert (alone, filled) == (pytest.approx(0.08 + 0.01), pytest.approx(0.08 + 0.08))


def test_the_arrival_rate_decays_over_about_a_second():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.arrived(10, now_s=0.0)
    estimate.arrived(10, now_s=1.0)
    assert estimate.arrivals_per_s == pytest.approx(10 / math.e + 10)


def test_the_estimate_follows_a_tenfold_slowdown_and_back_within_three_batches():
    estimate = WaitEstimate(max_batch_size=8)
    for _ in range(4):
        estimate.observe(8, 0.01)
    for expected in (0.01, 0.01, 0.1):  # slow from the third slow batch on
        estimate.observe(8, 0.1)
        assert estimate.wait_s(8) == pytest.approx(expected)
    estimate.observe(8, 0.1)
    for expected in (0.1, 0.01):  # fast again from the second fast batch on
        estimate.observe(8, 0.01)
        assert estimate.wait_s(8) == pytest.approx(expected)
