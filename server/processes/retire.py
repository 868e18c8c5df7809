"""A front process handing its clients over to the others before it stops (recycling).

grpcio's server cannot stop without failing calls: `stop(grace)` ends, with `CANCELLED`,
every call the transport has read but the application has not yet picked up — under load
there always are some (grpc/grpc#41785, open). So a retiring front stops in three steps:

1. it stops listening (the kernel sends new connections to the other fronts on the port);
2. it keeps serving while gRPC's connection age closes each of its connections gracefully
   (HTTP/2 GOAWAY, the client moves its next calls to a new connection, on another front),
   and answers each HTTP request with `Connection: close`, so HTTP clients move too;
3. only once it has no connection left (or a limit has passed: a client slow to answer the
   GOAWAY's PING under load), with no caller left sending to it, it drains and exits as on
   SIGTERM. Draining with a connection still open would reset it, failing the calls on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator

# Connection age given to fronts when they are recycled and --max-connection-age-s is unset:
# a retiring front waits about this long for its clients to move.
RECYCLE_CONNECTION_AGE_S = 5.0
# gRPC spreads each connection's age by +-10% so that clients do not all reconnect at once.
AGE_JITTER = 0.1
# For the final GOAWAY to reach the client after the PING that follows the first.
GOAWAY_ROUND_TRIP_S = 0.5


# How often a retiring front counts the connections it has left.
POLL_S = 0.1


def handover_window_s(connection_age_s: float) -> float:
    """How long after it stopped listening a front may still get calls on a connection."""
    return connection_age_s * (1 + AGE_JITTER) + GOAWAY_ROUND_TRIP_S


def handover_limit_s(connection_age_s: float) -> float:
    """How long a retiring front waits for its last connection to close before draining
    anyway: twice the window, for clients slow to answer under load."""
    return 2 * handover_window_s(connection_age_s)


async def connections_moved(port: int, limit_s: float, stop_requested: asyncio.Event) -> int:
    """Waits until this process has no connection open on `port`, `limit_s` has passed or a
    stop is requested; returns how many connections are still open."""
    deadline_s = time.monotonic() + limit_s
    while (left := open_connections(port)) and time.monotonic() < deadline_s:
        if stop_requested.is_set():
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop_requested.wait(), POLL_S)
    return left


def _tcp_sockets_on(port: int) -> Iterator[tuple[socket.socket, bool]]:
    """This process's TCP sockets whose local port is `port`, each with whether it listens.
    Each is a duplicate of gRPC's (or aiohttp's) file descriptor, closed after its turn."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:  # gone since listdir
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        with sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.getsockname()[1] != port:
                    continue
                listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            except (OSError, IndexError, TypeError):  # not an inet socket, or closed meanwhile
                continue
            yield sock, listening


def close_listeners(port: int) -> int:
    """Stops this process's listening TCP sockets on `port` from accepting; returns how many.

    gRPC owns its listening socket and offers no call to close it alone; shutting the
    socket down makes the kernel drop it from the port's SO_REUSEPORT group (and
    refuse what waited in its queue), while its file descriptor stays gRPC's to close.
    gRPC then logs one "Closing acceptor. Failed accept4: Invalid argument" line.
    """
    closed = 0
    for sock, listening in _tcp_sockets_on(port):
        if listening:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
                closed += 1
    return closed


def open_connections(port: int) -> int:
    """Connections this process has accepted on `port` that are still open: a retiring front
    has handed every client over when this is 0."""
    return sum(1 for _, listening in _tcp_sockets_on(port) if not listening)
