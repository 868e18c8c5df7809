"""Bookkeeping for one StreamPredict call: wire ids, results in input order, time owed."""

from __future__ import annotations

import threading
import time

from imdb_sentiment_client.errors import ProtocolError
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2
from imdb_sentiment_client.types import StreamResult, stream_result_from_proto


class StreamLedger:
    """Numbers outgoing reviews and hands results back in the order the reviews went out.

    The wire id is the review's sequence number, so callers' ids need not be
    unique, or present at all. The server answers in arrival order, but a result
    that comes early is held until every earlier review has been answered: the
    caller's order never depends on the server keeping its promise. Sending runs
    on gRPC's request thread in the sync client, hence the lock around the state
    both sides touch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owed: dict[str, tuple[int, str | None]] = {}  # wire id -> (seq, caller id)
        self._held: dict[int, StreamResult] = {}  # answered, waiting for an earlier seq
        self._next_seq = 0
        self._next_out = 0
        self._owed_since: float | None = None  # when the oldest wait for an answer began

    def sent(self, caller_id: str | None) -> str:
        """Records a review about to be sent; returns its wire id."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            wire_id = str(seq)
            self._owed[wire_id] = (seq, caller_id)
            if self._owed_since is None:
                self._owed_since = time.monotonic()
        return wire_id

    def received(self, response: sentiment_pb2.StreamPredictResponse) -> list[StreamResult]:
        """Records one response; returns the results now ready, in input order."""
        with self._lock:
            entry = self._owed.pop(response.id, None)
            if entry is not None:
                # Each answer restarts the clock: a steady stream of results is progress.
                self._owed_since = time.monotonic() if self._owed else None
        if entry is None:
            raise ProtocolError(f"stream response for unknown or repeated id {response.id!r}")
        seq, caller_id = entry
        self._held[seq] = stream_result_from_proto(response, caller_id)
        ready = []
        while self._next_out in self._held:
            ready.append(self._held.pop(self._next_out))
            self._next_out += 1
        return ready

    @property
    def unanswered(self) -> int:
        """Reviews sent that have no response yet."""
        with self._lock:
            return len(self._owed)

    def overdue_s(self, waiting_since: float, now: float) -> float:
        """How long the server has owed an answer while the caller was waiting (0 if none owed).

        Only time the caller spends waiting counts: a caller slow to consume its
        results is not the server's fault.
        """
        with self._lock:
            if self._owed_since is None:
                return 0.0
            return max(0.0, now - max(self._owed_since, waiting_since))
