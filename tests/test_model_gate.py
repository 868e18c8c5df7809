"""The model gate: Predict's batches go first; an explanation waits while a batch runs or waits."""

from __future__ import annotations

import threading
import time

from server.batching.model_gate import ModelGate
from tests.helpers import wait_until


def test_work_behind_waits_for_work_that_goes_first_and_never_overlaps_it():
    gate = ModelGate(quiet_s=0.0)
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def batch(name: str) -> str:
        order.append(f"{name} in")
        inside.set()
        release.wait(5)
        order.append(f"{name} out")
        return name

    def explanation() -> None:
        with gate.behind():
            order.append("explain")

    first = threading.Thread(target=gate.first(batch), args=("batch 1",))
    first.start()
    wait_until(inside.is_set, "the first batch holds the gate")
    behind = threading.Thread(target=explanation)
    behind.start()
    time.sleep(0.05)
    second = threading.Thread(target=gate.first(batch), args=("batch 2",))
    second.start()  # arrives after the explanation, yet goes before it
    time.sleep(0.05)
    assert order == ["batch 1 in"]
    release.set()
    for thread in (first, second, behind):
        thread.join(5)
    assert order == ["batch 1 in", "batch 1 out", "batch 2 in", "batch 2 out", "explain"]


def test_a_batch_waits_for_an_explanation_already_under_way():
    gate = ModelGate(quiet_s=0.0)
    order: list[str] = []
    started = threading.Event()

    def explanation() -> None:
        with gate.behind():
            started.set()
            time.sleep(0.1)
            order.append("explain done")

    behind = threading.Thread(target=explanation)
    behind.start()
    wait_until(started.is_set, "the explanation holds the gate")
    assert gate.first(lambda name: order.append(name) or name)("batch") == "batch"
    behind.join(5)
    assert order == ["explain done", "batch"]


def test_an_explanation_waits_until_the_model_has_been_idle_for_the_quiet_period():
    gate = ModelGate(quiet_s=0.2)
    gate.first(lambda _: None)(None)
    started_s = time.monotonic()
    with gate.behind():
        waited_s = time.monotonic() - started_s
    assert 0.15 <= waited_s < 2
    started_s = time.monotonic()
    with gate.behind():  # no batch since: no wait
        assert time.monotonic() - started_s < 0.1


def test_an_explanation_waits_while_reviews_are_queued_for_the_next_batch():
    queued = threading.Event()
    queued.set()
    gate = ModelGate(quiet_s=0.05, pending=queued.is_set)
    entered = threading.Event()

    def explanation() -> None:
        with gate.behind():
            entered.set()

    behind = threading.Thread(target=explanation)
    behind.start()
    time.sleep(0.2)
    assert not entered.is_set()  # the batcher holds reviews: the model is not idle
    queued.clear()
    started_s = time.monotonic()
    wait_until(entered.is_set, "the explanation has the gate")
    assert time.monotonic() - started_s >= 0.04  # and only after the quiet period
    behind.join(5)
