"""A retiring front's socket helpers (server/processes/retire.py) on real loopback sockets."""

import asyncio
import socket

from server.processes import retire


def test_connections_are_counted_until_closed_and_the_listener_stops_accepting():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        assert retire.open_connections(port) == 1  # the client's end has another local port
        stop = asyncio.Event()
        assert asyncio.run(retire.connections_moved(port, 0.3, stop)) == 1  # the limit ends it
        accepted.close()
        client.close()
        assert asyncio.run(retire.connections_moved(port, 5.0, stop)) == 0
        assert retire.close_listeners(port) == 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                refused = False
        except OSError:
            refused = True
        assert refused, "a shut-down listener still accepted"


def test_a_stop_request_ends_the_wait_at_once():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), listener.accept()[0]:

            async def wait() -> int:
                stop = asyncio.Event()
                stop.set()
                return await asyncio.wait_for(retire.connections_moved(port, 60.0, stop), 5)

            assert asyncio.run(wait()) == 1
