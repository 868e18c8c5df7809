"""Client-side load balancing: round_robin over three replicas, one of them stopped mid-traffic."""

from __future__ import annotations

import json
import re
import signal
import threading
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from imdb_sentiment_client.config import ClientConfig
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from tests.server_subprocess import ServerSubprocess
from tests.test_logs import TF_NATIVE_LINE
from tests.test_metrics import free_port

REPLICAS = 3
STOPPED_REVIEWS = re.compile(r"stopped; batcher stats: batches=\d+ reviews=(\d+)")


def round_robin_channel(ports: list[int]) -> grpc.Channel:
    """Every address in one `ipv4:` target; round_robin spreads calls over all of them.

    The client library's channel: its retries (UNAVAILABLE, RESOURCE_EXHAUSTED) and its
    load-balancing setting, as code calling the stubs directly would get it.
    """
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    return ClientConfig(target, load_balancing="round_robin").open_channel(grpc)


def predict_calls_ok(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        families = text_string_to_metric_families(reply.read().decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels["grpc_method"] == "Predict"
        and sample.labels["grpc_code"] == "OK"
    )


class Traffic:
    """Threads calling Predict back to back on one channel, counting answers and failures."""

    def __init__(self, channel: grpc.Channel, threads: int = 4):
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        self._lock = threading.Lock()
        self.answered = 0
        self.errors: list[grpc.RpcError] = []
        # A call caught in the instant a replica's drain begins is CANCELLED by gRPC core before
        # the application sees it (never scored: the count check below proves it); the thread
        # calls again, as a retrying client would (tests/drain_load.py does the same).
        self.cancelled = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        request = sentiment_pb2.PredictRequest(reviews=["a fine and moving film"])
        while not self._stop.is_set():
            try:
                self._stub.Predict(request, timeout=20)
            except grpc.RpcError as error:
                with self._lock:
                    if error.code() is grpc.StatusCode.CANCELLED:
                        self.cancelled += 1
                    else:
                        self.errors.append(error)
            else:
                with self._lock:
                    self.answered += 1

    def wait_for_more(self, count: int, timeout_s: float = 120) -> None:
        target = self.answered + count
        waited = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if self.answered >= target:
                return
            waited.wait(0.05)
        raise AssertionError(f"only {self.answered} of {target} calls answered; {self.errors[:3]}")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_round_robin_spreads_calls_and_a_draining_replica_loses_none(tiny_model_dir):
    metrics_ports = [free_port() for _ in range(REPLICAS)]
    common = ["--host", "127.0.0.1", "--port", "0", "--model-dir", str(tiny_model_dir)]
    common += ["--device", "cpu", "--grace-s", "5", "--log-format", "json", "--poll-s", "0"]
    # Started together: each imports TensorFlow for seconds, so they overlap.
    replicas = [ServerSubprocess(*common, "--metrics-port", str(p)) for p in metrics_ports]
    try:
        ports = [replica.wait_until_serving() for replica in replicas]
        with round_robin_channel(ports) as channel, Traffic(channel) as traffic:
            traffic.wait_for_more(60)
            served_by_each = [predict_calls_ok(port) for port in metrics_ports]
            stopped = replicas[0]
            stopped.process.send_signal(signal.SIGTERM)  # graceful: drain, then exit 0
            traffic.wait_for_more(30)
            assert stopped.wait(60) == 0
            answered_while_one_was_gone = traffic.answered
            traffic.wait_for_more(30)
        for replica in replicas[1:]:
            replica.process.send_signal(signal.SIGTERM)
        assert [replica.wait(60) for replica in replicas[1:]] == [0, 0]
    finally:
        for replica in replicas:
            replica.__exit__(None, None, None)

    assert traffic.errors == []
    assert traffic.cancelled <= 4  # at most the threads' calls in flight at the drain's start
    assert all(count > 0 for count in served_by_each), served_by_each
    assert traffic.answered > answered_while_one_was_gone
    # Every answered call was scored exactly once, by one of the replicas.
    scored = [int(STOPPED_REVIEWS.search(replica.log).group(1)) for replica in replicas]
    assert sum(scored) == traffic.answered
    assert all(count > 0 for count in scored[1:])
    for replica in replicas:  # --log-format json: each of the server's lines is one object
        ours = [line for line in replica.log.splitlines() if not TF_NATIVE_LINE.match(line)]
        assert ours and all(json.loads(line)["level"] for line in ours)


def test_connections_older_than_max_age_are_closed_so_clients_reconnect(start_server):
    with start_server(max_connection_age_s=0.5) as running:
        states: list[grpc.ChannelConnectivity] = []
        closed = threading.Event()

        def on_state(state: grpc.ChannelConnectivity) -> None:
            states.append(state)
            if grpc.ChannelConnectivity.READY in states and state in (
                grpc.ChannelConnectivity.IDLE,
                grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            ):
                closed.set()

        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            channel.subscribe(on_state)
            request = sentiment_pb2.PredictRequest(reviews=["fine"])
            assert stub.Predict(request, timeout=10).predictions
            assert closed.wait(20), f"the connection stayed open: {states}"
            assert stub.Predict(request, timeout=10).predictions  # a new connection
            channel.unsubscribe(on_state)
