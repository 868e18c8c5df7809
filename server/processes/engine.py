"""The model process's side of the socket: every front's calls into the one batcher.

One `EngineListener` per model process serves a Unix socket. Each front process
holds one connection; every call on it is queued in the model process's
MicroBatcher (so batches form across all fronts' callers, and a device holds one
copy of the model) and answered when its reviews are scored. A front that
cancels a call, or goes away, has that call's reviews dropped before they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from server.errors import ServiceError
from server.observability.logs import request_id
from server.processes import wire

logger = logging.getLogger("server.engine")

# How often the listener checks which model version serves, to tell the fronts.
VERSION_CHECK_S = 0.2


class EngineListener:
    """Serves `submit` and `explain` of the model process to front processes."""

    def __init__(self, batcher, model, explainer=None):
        self._batcher = batcher
        self._model = model  # a ModelManager: describes whichever version serves now
        self._explainer = explainer
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._watcher: asyncio.Task | None = None
        self._described: tuple | None = None

    def description(self) -> dict:
        return {name: getattr(self._model, name) for name in wire.DESCRIBED}

    async def start(self, socket_path: str) -> None:
        self._described = tuple(sorted(self.description().items()))
        self._server = await asyncio.start_unix_server(self._serve, path=socket_path)
        self._watcher = asyncio.create_task(self._watch_version(), name="engine-version-watch")

    async def stop(self) -> None:
        """Stops listening and closes every front's connection (their calls get UNAVAILABLE)."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _watch_version(self) -> None:
        while True:
            await asyncio.sleep(VERSION_CHECK_S)
            described = self.description()
            key = tuple(sorted(described.items()))
            if key != self._described:
                self._described = key
                for connection in list(self._connections):
                    connection.send(("model", described))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        self._connections.add(connection)
        connection.send(("model", self.description()))
        try:
            while True:
                message = await wire.read(reader)
                self._handle(connection, message)
        except wire.ConnectionLost:
            pass
        except Exception:
            logger.exception("a front's connection failed; its calls are dropped")
        finally:
            self._connections.discard(connection)
            connection.close()

    def _handle(self, connection: _Connection, message: tuple) -> None:
        kind = message[0]
        if kind == "predict":
            _, call_id, reviews, deadline_s, caller_id = message
            token = request_id.set(caller_id)
            try:
                futures = self._batcher.submit(reviews, deadline_s)
            except ServiceError as error:
                connection.send(("refused", call_id, wire.encode_error(error)))
                return
            finally:
                request_id.reset(token)
            connection.track(call_id, futures)
        elif kind == "cancel":
            connection.cancel(message[1])
        elif kind == "explain":
            _, call_id, review, deadline_s, caller_id = message
            task = asyncio.create_task(self._explain(connection, call_id, review, deadline_s))
            connection.track(call_id, [task])
        else:
            raise wire.ConnectionLost(f"unknown message {kind!r}")

    async def _explain(self, connection: _Connection, call_id: int, review: str, deadline_s):
        try:
            if self._explainer is None:
                from server.errors import ExplainUnavailableError

                raise ExplainUnavailableError("this server was started without Explain")
            explanation = await self._explainer.explain(review, deadline_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not isinstance(error, ServiceError):
                logger.exception("Explain failed in the model process")
            connection.send(("refused", call_id, wire.encode_error(error)))
        else:
            connection.send(("explanation", call_id, wire.explanation_fields(explanation)))
        finally:
            connection.forget(call_id)


class _Connection:
    """One front's socket: the calls it has in the batcher, answered as they complete."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._calls: dict[int, Sequence[asyncio.Future]] = {}
        self.closed = False

    def send(self, message: tuple) -> None:
        if not self.closed:
            self._writer.write(wire.encode(message))

    def track(self, call_id: int, futures: Sequence[asyncio.Future]) -> None:
        """Answers the call when every one of its futures is done (a task: when it ends)."""
        self._calls[call_id] = futures
        if len(futures) == 1 and not isinstance(futures[0], asyncio.Task):
            futures[0].add_done_callback(self._answer_one(call_id))
            return
        remaining = [len(futures)]

        def done(_: asyncio.Future) -> None:
            remaining[0] -= 1
            if remaining[0] == 0 and self._calls.pop(call_id, None) is not None:
                self._answer(call_id, futures)

        if not isinstance(futures[0], asyncio.Task):
            for future in futures:
                future.add_done_callback(done)

    def _answer_one(self, call_id: int) -> Callable[[asyncio.Future], None]:
        def done(future: asyncio.Future) -> None:
            if self._calls.pop(call_id, None) is not None:
                self._answer(call_id, (future,))

        return done

    def _answer(self, call_id: int, futures: Sequence[asyncio.Future]) -> None:
        if any(f.cancelled() for f in futures):
            return  # cancelled by the front: it answered its caller already
        self.send(("scores", call_id, [wire.encode_outcome(_outcome(f)) for f in futures]))

    def forget(self, call_id: int) -> None:
        self._calls.pop(call_id, None)

    def cancel(self, call_id: int) -> None:
        for future in self._calls.pop(call_id, ()):
            future.cancel()

    def close(self) -> None:
        """The front is gone: its queued reviews are dropped before they run."""
        if self.closed:
            return
        self.closed = True
        calls, self._calls = self._calls, {}
        for futures in calls.values():
            for future in futures:
                future.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()


def _outcome(future: asyncio.Future) -> object:
    error = future.exception()
    return future.result() if error is None else error
