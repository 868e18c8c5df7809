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
