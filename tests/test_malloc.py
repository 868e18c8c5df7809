"""glibc's allocator settings and figures (server.observability.malloc): what the server logs
and exports."""

from __future__ import annotations

import pytest

from server.observability import malloc

glibc_only = pytest.mark.skipif(malloc.malloc_bytes() is None, reason="not glibc")


@glibc_only
def test_malloc_bytes_grow_by_what_is_held_and_fall_when_it_is_freed():
    before = malloc.malloc_bytes()
    held = [bytearray(64 * 1024) for _ in range(64)]  # 4 MiB in blocks malloc serves itself
    during = malloc.malloc_bytes()
    del held
    after = malloc.malloc_bytes()
    assert during["in_use"] - before["in_use"] >= 4 * 1024 * 1024
    assert during["in_use"] - after["in_use"] >= 4 * 1024 * 1024
    assert min(before["free"], during["free"], after["free"]) >= 0


@glibc_only
def test_the_arena_cap_is_left_to_glibc_or_the_environment_unless_asked(monkeypatch):
    monkeypatch.delenv(malloc.ARENA_ENV, raising=False)
    assert malloc.cap_arenas(0) == "malloc arenas: glibc's default (8 per core)"
    assert malloc.cap_arenas(4) == "malloc arenas: at most 4"
    monkeypatch.setenv(malloc.ARENA_ENV, "2")
    assert malloc.cap_arenas(4) == "malloc arenas: MALLOC_ARENA_MAX=2 from the environment"
