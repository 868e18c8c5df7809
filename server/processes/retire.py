"""A front process handing its clients over to the others before it stops (recycling).

grpcio's server cannot stop without failing calls: `stop(grace)` ends, with `CANCELLED`,
every call the transport has read but the application has not yet picked up — under load
there always are some (grpc/grpc#41785, open). So a retiring front stops in three steps:

1. it stops listening (the kernel sends new connections to the other fronts on the port);
2. it keeps serving while gRPC's connection age closes each of its connections gracefully
   (HTTP/2 GOAWAY, the client moves its next calls to a new connection, on another front),
   and answers each HTTP request with `Connection: close`, so HTTP clients move too;
3. only then, with no caller left sending to it, it drains and exits as on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import socket

# Connection age given to fronts when they are recycled and --max-connection-age-s is unset:
# a retiring front waits about this long for its clients to move.
RECYCLE_CONNECTION_AGE_S = 5.0
# gRPC spreads each connection's age by +-10% so that clients do not all reconnect at once.
AGE_JITTER = 0.1
# For the final GOAWAY to reach the client after the PING that follows the first.
GOAWAY_ROUND_TRIP_S = 0.5


def handover_window_s(connection_age_s: float) -> float:
    """How long after it stopped listening a front may still get calls on a connection."""
    return connection_age_s * (1 + AGE_JITTER) + GOAWAY_ROUND_TRIP_S


def close_listeners(port: int) -> int:
    """Stops this process's listening TCP sockets on `port` from accepting; returns how many.

    gRPC owns its listening socket and offers no call to close it alone; shutting the
    socket down makes the kernel drop it from the port's SO_REUSEPORT group (and
    refuse what waited in its queue), while its file descriptor stays gRPC's to close.
    gRPC then logs one "Closing acceptor. Failed accept4: Invalid argument" line.
    """
    closed = 0
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
            with contextlib.suppress(OSError):
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                if listening and sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == port:
                    sock.shutdown(socket.SHUT_RD)
                    closed += 1
    return closed
