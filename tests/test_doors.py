"""bench/doors.py's reading of how a port's connections fall on the processes that serve it."""

import shutil
import socket

import pytest

from bench import doors


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
def test_connections_per_process_counts_the_established_connections_of_the_port():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert doors.connections_per_process(port) == []
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            # This process holds the 3 server ends (and the 3 client ends, whose local port
            # is not this one, so they do not count).
            assert doors.connections_per_process(port) == [3]
        finally:
            for s in clients + accepted:
                s.close()


def test_cpu_seconds_sums_a_server_and_the_processes_below_it():
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    # A parent that starts a child burning CPU: both count, the child through descendants().
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"],
    )  # fmt: skip
    try:
        server = SimpleNamespace(process=parent)
        seen = 0.0
        deadline = time.monotonic() + 10
        while parent.poll() is None and time.monotonic() < deadline:
            seen = max(seen, doors.cpu_seconds([server]))
            time.sleep(0.05)
        assert seen >= 0.3  # most of the child's half second, read while it ran
    finally:
        parent.kill()
        parent.wait()
