"""bench.native_leaks reads heaptrack_print's leak report: totals and leaking call paths."""

from __future__ import annotations

from bench.native_leaks import format_report, parse_leaks

# Trimmed from a real `heaptrack_print --print-leaks 1` of the server (too-short deadlines).
PRINTED = """\
reading file "heaptrack-short_deadline.zst" - please wait, this might take some time...
finished reading file, now analyzing data:

MEMORY LEAKS
534.39K leaked over 631595 calls from
0x7fb677760893
  in /venv/lib/python3.11/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so
533.60K leaked over 6672 calls from:
    0x7fb677a9b100
      in /venv/lib/python3.11/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so
    task_step_impl
      at Modules/_asynciomodule.c:2690
512B leaked over 625 calls from:
    0x7fb677a9b22e
19.05K leaked over 39 calls from
PyDataMem_UserNEW
  in /venv/lib/python3.11/site-packages/numpy/_core/_multiarray_umath.so
18.96K leaked over 39 calls from:
    PyArray_NewFromDescr_int

total runtime: 243.91s.
total memory leaked: 553.44K
"""


def test_leaking_paths_are_read_with_the_library_that_allocated_them():
    leaks = parse_leaks(PRINTED)
    assert leaks["total_bytes"] == round(553.44 * 1024)
    assert [(s["bytes"], s["allocations"], s["where"]) for s in leaks["sites"]] == [
        (round(533.60 * 1024), 6672, "cygrpc.cpython-311-x86_64-linux-gnu.so"),
        (round(18.96 * 1024), 39, "PyDataMem_UserNEW"),
        (512, 625, "cygrpc.cpython-311-x86_64-linux-gnu.so"),
    ]


def test_the_report_gives_bytes_per_request_and_the_largest_paths():
    sites = parse_leaks(PRINTED)["sites"]
    result = {
        "kind": "short_deadline",
        "requests": 15_000,
        "leaked_bytes": 566_723,
        "leaked_bytes_per_request": 37.8,
        "top_sites": sites,
    }
    table = format_report([result])
    assert "short_deadline" in table and "37.8" in table
    assert "cygrpc.cpython-311-x86_64-linux-gnu.so 533.6 / 6,672" in table
