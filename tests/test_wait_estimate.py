"""WaitEstimate: the arithmetic behind deadline-aware admission, with made-up batch times."""

from __future__ import annotations

import pytest

from server.wait_estimate import WaitEstimate


def test_no_estimate_until_a_batch_has_run():
    estimate = WaitEstimate(max_batch_size=8)
    assert estimate.wait_s(100) is None
    assert estimate.wait_s(100, running_size=8, running_for_s=5.0) is None


def test_queued_reviews_run_as_full_batches_of_the_recent_batch_time():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(0.1)
    assert estimate.wait_s(1) == pytest.approx(0.1)
    assert estimate.wait_s(8) == pytest.approx(0.1)
    assert estimate.wait_s(9) == pytest.approx(0.2)
    assert estimate.wait_s(0) == 0


def test_the_batch_running_now_counts_with_what_it_has_left():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(0.1)
    assert estimate.wait_s(8, running_size=8, running_for_s=0.04) == pytest.approx(0.06 + 0.1)
    # Nothing left of it by the estimate, yet still running: it counts as done, not as negative.
    assert estimate.wait_s(3, running_size=8, running_for_s=0.1) == pytest.approx(0.1)


def test_a_batch_running_past_the_estimate_sets_the_time_of_the_batches_after_it():
    estimate = WaitEstimate(max_batch_size=8)
    estimate.observe(0.01)
    # The model slowed down: the batch in it has run 50x the estimate and is not done.
    assert estimate.wait_s(16, running_size=4, running_for_s=0.5) == pytest.approx(2 * 0.5)
    # Smaller batches than the running one are not assumed to take as long.
    assert estimate.wait_s(2, running_size=4, running_for_s=0.5) == pytest.approx(0.01)


def test_the_estimate_follows_a_tenfold_slowdown_and_back_within_a_few_batches():
    estimate = WaitEstimate(max_batch_size=8)
    for _ in range(5):
        estimate.observe(0.01)
    for _ in range(4):
        estimate.observe(0.1)
    assert 0.08 < estimate.batch_s < 0.1
    for _ in range(4):
        estimate.observe(0.01)
    assert 0.01 < estimate.batch_s < 0.02
