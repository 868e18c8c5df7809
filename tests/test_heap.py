"""The long-lived heap is frozen while serving, thawed on stop and across a model swap."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from server.observability import heap
from server.scoring.versions import ModelManager
from tests.test_versions import FakeVersion, Loader, make_version_dirs


class Cyclic:
    """An object only the cycle collector can free (it refers to itself), as a Keras model."""

    def __init__(self):
        self.me = self


@pytest.fixture
def thawed():
    """Each test starts and ends with nothing frozen, whatever servers other tests left up."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_cycles_are_skipped_until_thawed(thawed):
    garbage = Cyclic()
    alive = weakref.ref(garbage)
    heap.freeze()
    assert gc.get_freeze_count() > 0
    del garbage
    gc.collect()
    assert alive() is not None  # frozen: the full pass did not walk it
    assert heap.thaw() is True
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None
    assert heap.thaw() is False  # nothing was frozen


def test_objects_made_after_the_freeze_are_collected_as_before(thawed):
    heap.freeze()
    garbage = Cyclic()
    alive = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert alive() is None


def test_a_swapped_out_version_is_collected_and_the_heap_frozen_again(tmp_path, thawed):
    make_version_dirs(tmp_path, 1, 2)
    old = FakeVersion(1)
    old.me = old  # a cycle, as a loaded Keras model has
    gone = weakref.ref(old)
    manager = ModelManager(old, model_dir=tmp_path, load=Loader())
    del old
    heap.freeze()

    async def poll_until_refrozen() -> None:
        poller = asyncio.create_task(manager.poll_forever(0.01))
        try:
            for _ in range(500):
                await asyncio.sleep(0.01)
                if manager.current.version == 2 and gc.get_freeze_count() > 0 and gone() is None:
                    return
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    asyncio.run(poll_until_refrozen())
    assert manager.current.version == 2
    assert gone() is None  # thawed at the swap, collected before the next freeze
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("freeze", [True, False])
def test_the_server_freezes_while_serving_and_thaws_on_stop(start_server, thawed, freeze):
    running = start_server(gc_freeze=freeze)
    with running:
        assert (gc.get_freeze_count() > 0) is freeze
    assert gc.get_freeze_count() == 0


def test_collection_pauses_are_timed_by_generation_while_started():
    timer = heap.CollectionTimer()
    timer.start()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        timer.stop()
    gc.collect()  # stopped: not counted
    assert timer.count[2] == 1 and timer.count[0] >= 1
    assert 0 < timer.longest_s[2] <= timer.seconds[2]


def test_metrics_export_the_pauses():
    from prometheus_client import generate_latest

    from server.observability.metrics import ServerMetrics

    metrics = ServerMetrics(max_batch_size=8)
    metrics.collections.start()
    try:
        gc.collect()
    finally:
        metrics.collections.stop()
    text = generate_latest(metrics.registry).decode()
    assert 'python_gc_pause_seconds_count{generation="2"} 1.0' in text
    assert 'python_gc_pause_longest_seconds{generation="2"}' in text
