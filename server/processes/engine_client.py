"""A front process's side of the socket: the model process's batcher, model and explainer, as
the servicer knows them.

`EngineClient` stands where the single-process server has its MicroBatcher (`submit`),
its ModelManager (the version's description) and its Explainer (`explain`), so the
servicer and the HTTP edge run unchanged in a front process. It connects to the
model process and reconnects whenever that process comes back; while it is away,
every call in flight fails at once with UNAVAILABLE (ModelUnavailableError) and new
ones are refused the same way: no call waits out its deadline for a model that is
gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence

from server.errors import ShuttingDownError
from server.observability.logs import request_id
from server.processes import wire

logger = logging.getLogger("server.front")

RECONNECT_S = 0.1


class ModelUnavailableError(ShuttingDownError):
    """The model process is not there (killed, restarting): UNAVAILABLE, retry elsewhere."""


class Score(float):
    """A score with the version that made it and that version's threshold (as VersionedScore)."""

    model_version: int
    decision_threshold: float

    def __new__(cls, score: float, model_version: int, decision_threshold: float):
        self = super().__new__(cls, score)
        self.model_version = model_version
        self.decision_threshold = decision_threshold
        return self


class EngineClient:
    """Calls into the model process over its Unix socket; see the module docstring."""

    def __init__(
        self,
        socket_path: str,
        on_connected: Callable[[bool], object] | None = None,
        max_calls: int = 0,
        on_budget_spent: Callable[[], object] | None = None,
    ):
        self._socket_path = socket_path
        self._on_connected = on_connected
        # --max-calls-per-worker: after this many calls, on_budget_spent() once (0: never).
        self._calls_left = max_calls or -1
        self._on_budget_spent = on_budget_spent
        self._writer: asyncio.StreamWriter | None = None
        self._calls: dict[int, list[asyncio.Future]] = {}
        self._ids = itertools.count()
        self._description: dict | None = None
        self._task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._closing = False

    # -- the model's description (servicer.ModelDescription) ----------------------------

    def __getattr__(self, name: str):
        if name in wire.DESCRIBED:
            # Not the last one known: while the model process is away there is no model.
            if not self.connected:
                raise ModelUnavailableError("the model process is not running; retry")
            return self._description[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def polls(self) -> bool:
        return False  # the model process polls for new versions

    @property
    def connected(self) -> bool:
        return self._writer is not None and self._description is not None

    # -- the batcher's side -----------------------------------------------------------

    def submit(self, reviews: Sequence[str], deadline_s: float | None = None):
        """As MicroBatcher.submit: one future per review. Refusals from the model process
        (queue full, too late) arrive as every future's error."""
        if self._closing:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")
        self._require_connection()
        self._count_call()
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        futures = [loop.create_future() for _ in reviews]
        self._calls[call_id] = futures
        self._send(("predict", call_id, list(reviews), deadline_s, request_id.get()))
        watch = self._on_caller_done(call_id)
        for future in futures:
            future.add_done_callback(watch)
        return futures

    def has_waiting(self) -> bool:
        return bool(self._calls)

    async def explain(self, review: str, deadline_s: float):
        from server.explanations.explain import Explanation, WordAttribution

        self._require_connection()
        self._count_call()
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[call_id] = [future]
        self._send(("explain", call_id, review, deadline_s, request_id.get()))
        future.add_done_callback(self._on_caller_done(call_id))
        fields = await future
        fields["words"] = tuple(WordAttribution(*w) for w in fields["words"])
        return Explanation(**fields)

    # -- connection -------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-client")

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    async def close(self, drain_timeout_s: float | None = None) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._lost("the server is shutting down", ShuttingDownError)

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._socket_path)
            except OSError:
                await asyncio.sleep(RECONNECT_S)
                continue
            self._writer = writer
            try:
                while True:
                    self._dispatch(await wire.read(reader))
            except wire.ConnectionLost:
                pass
            finally:
                self._lost("the model process went away; retry", ModelUnavailableError)
                with contextlib.suppress(Exception):
                    writer.close()
            logger.warning("lost the model process; reconnecting")
            await asyncio.sleep(RECONNECT_S)

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "model":
            first = self._description is None or not self._connected.is_set()
            self._description = message[1]
            if first:
                self._connected.set()
                logger.info("model process connected, version %s", message[1]["version"])
                if self._on_connected is not None:
                    self._on_connected(True)
            return
        futures = self._calls.pop(message[1], None)
        if futures is None:
            return  # the caller cancelled: nothing to answer
        if kind == "scores":
            for future, outcome in zip(futures, message[2], strict=True):
                if future.done():
                    continue
                if outcome[0] == "!":
                    future.set_exception(wire.decode_error(outcome[1]))
                else:
                    future.set_result(Score(*outcome))
        elif kind == "refused":
            error = wire.decode_error(message[2])
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        elif kind == "explanation":
            if not futures[0].done():
                futures[0].set_result(message[2])

    def _lost(self, reason: str, error_type: type[ShuttingDownError]) -> None:
        was_connected = self._connected.is_set()
        self._writer = None
        self._connected.clear()
        calls, self._calls = self._calls, {}
        for futures in calls.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error_type(reason))
        if was_connected and self._on_connected is not None:
            self._on_connected(False)

    def _count_call(self) -> None:
        self._calls_left -= 1
        if self._calls_left == 0 and self._on_budget_spent is not None:
            self._on_budget_spent()

    def _require_connection(self) -> None:
        if not self.connected:
            raise ModelUnavailableError("the model process is not running; retry")

    def _send(self, message: tuple) -> None:
        self._writer.write(wire.encode(message))

    def _on_caller_done(self, call_id: int) -> Callable[[asyncio.Future], None]:
        def done(future: asyncio.Future) -> None:
            # A caller that gave up (deadline, client gone): its reviews leave the queue.
            if not future.cancelled():
                return
            futures = self._calls.pop(call_id, None)
            if futures is None:
                return
            for other in futures:
                other.cancel()
            if self._writer is not None:
                self._send(("cancel", call_id))

        return done
