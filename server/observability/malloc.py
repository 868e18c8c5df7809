"""glibc's allocator: cap its arenas, and read what it holds in use and free.

glibc gives each thread that meets a locked arena a new one, up to 8 per core,
and each arena keeps the memory freed into it. `--malloc-arena-max` caps them
before gRPC's and TensorFlow's threads start (the usual remedy when RSS grows
with a flat Python heap); the bytes in use and free, on /metrics, tell whether
growth is memory kept free in arenas or memory still held. Measured over
1,000,000 requests (reports/soak/), a cap of 2 did not change the growth, which
is in the bytes held, so the default leaves glibc's own setting. Elsewhere
(musl, macOS) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc's own setting; when set, it wins


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes in the arenas' heaps (main and others)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmap'd chunks (large allocations)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes allocated in the arenas
            "fordblks",  # bytes free in the arenas: kept, not returned to the system
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the symbols already in this process
    if not (hasattr(libc, "mallopt") and hasattr(libc, "mallinfo2")):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    return libc


_LIBC = _glibc()


def cap_arenas(arenas: int) -> str:
    """Caps glibc's malloc arenas (0: leave glibc's default); says what was done, for the log.

    Call before the server's threads start: arenas made before stay.
    """
    if _LIBC is None:
        return "malloc arenas: not glibc, left as they are"
    if ARENA_ENV in os.environ:
        return f"malloc arenas: {ARENA_ENV}={os.environ[ARENA_ENV]} from the environment"
    if arenas <= 0:
        return "malloc arenas: glibc's default (8 per core)"
    if _LIBC.mallopt(M_ARENA_MAX, arenas) != 1:
        return f"malloc arenas: glibc refused a cap of {arenas}"
    return f"malloc arenas: at most {arenas}"


def malloc_bytes() -> dict[str, int] | None:
    """Bytes glibc's malloc holds in use and free (kept for reuse); None if not glibc."""
    if _LIBC is None:
        return None
    info = _LIBC.mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks}
