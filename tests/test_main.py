"""Server assembly: health and reflection, graceful drain, and the sentiment-server command."""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.main import SERVICE_NAME, main
from tests.fake_models import HeldModel
from tests.helpers import occupy_blocking
from tests.server_subprocess import ServerSubprocess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_is_serving_for_the_server_and_the_service(grpc_server):
    with grpc.insecure_channel(grpc_server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            request = health_pb2.HealthCheckRequest(service=service)
            assert health.Check(request, timeout=10).status == SERVING


def test_reflection_lists_the_services_unless_turned_off(grpc_server, start_server):
    with grpc.insecure_channel(grpc_server) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert SERVICE_NAME in services and "grpc.health.v1.Health" in services
    with (
        start_server(reflection=False) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        with pytest.raises(grpc.RpcError) as raised:
            ProtoReflectionDescriptorDatabase(channel).get_services()
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stop_says_not_serving_refuses_new_calls_and_finishes_in_flight_ones(start_server):
    model = HeldModel()
    with start_server(model=model) as running, grpc.insecure_channel(running.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=30
        )
        assert next(watch).status == SERVING
        in_flight = occupy_blocking(stub, model, "x")
        stopping = asyncio.run_coroutine_threadsafe(running.server.stop(grace_s=20), running._loop)
        assert next(watch).status == NOT_SERVING
        watch.cancel()  # an open Watch would otherwise hold the drain for the whole grace period
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["new"]), timeout=5)
        model.release.set()
        assert in_flight.result().predictions[0].score == pytest.approx(0.75)
        stopping.result(timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert model.calls == [["x"]]


def test_once_the_drain_begins_new_calls_of_every_kind_are_refused_not_queued(start_server):
    # The listener still accepts connections here (as in the instant between health
    # saying NOT_SERVING and gRPC's own stop): the servicer itself must refuse, or a
    # new call would wait behind the held in-flight one until its deadline.
    model = HeldModel()
    with start_server(model=model) as running, grpc.insecure_channel(running.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        in_flight = occupy_blocking(stub, model, "x")
        running.server.servicer.drain()
        with pytest.raises(grpc.RpcError) as predict:
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["new"]), timeout=5)
        with pytest.raises(grpc.RpcError) as stream:
            list(
                stub.StreamPredict(
                    iter([sentiment_pb2.StreamPredictRequest(review="new")]), timeout=5
                )
            )
        model.release.set()
        assert in_flight.result().predictions[0].score == pytest.approx(0.75)
    for refused in (predict, stream):
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in refused.value.details()
    assert model.calls == [["x"]]


def test_main_exits_2_naming_a_bad_setting(capsys):
    assert main(["--port", "not-a-port"]) == 2
    assert "--port='not-a-port' is not an integer" in capsys.readouterr().err


def test_main_exits_1_when_there_is_no_model(tmp_path, caplog):
    assert main(["--model-dir", str(tmp_path), "--port", "0", "--device", "cpu"]) == 1
    assert f"no complete model version in {tmp_path}" in caplog.text


def _installed_command() -> list[str]:
    command = shutil.which("sentiment-server", path=str(Path(sys.executable).parent))
    return [command] if command else [sys.executable, "-m", "server.main"]


def test_installed_command_serves_then_drains_on_sigterm_and_exits_0(tiny_model_dir):
    argv = ["--host", "127.0.0.1", "--port", "0", "--model-dir", str(tiny_model_dir)]
    process = subprocess.Popen(
        _installed_command() + argv + ["--device", "cpu", "--grace-s", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    log = []
    try:
        while not (match := re.search(r"serving on 127\.0\.0\.1:(\d+)", "".join(log))):
            log.append(lines.get(timeout=120))
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            response = stub.Predict(sentiment_pb2.PredictRequest(reviews=["great"]), timeout=30)
        assert response.predictions[0].model_version == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    while not lines.empty():
        log.append(lines.get())
    text = "".join(log)
    assert "runs on /CPU:0 (--device cpu)" in text
    assert "stopped; batcher stats: batches=1 reviews=1" in text


def test_sigterm_while_the_model_loads_ends_the_start_up_like_ctrl_c(tiny_model_dir):
    # The handler matters to a container's PID 1, which ignores a signal that has none
    # (tests/test_image.py stops the container); here it shows as exit 130, not -SIGTERM.
    flags = ["--host", "127.0.0.1", "--port", "0", "--model-dir", str(tiny_model_dir)]
    with ServerSubprocess(*flags, "--device", "cpu") as server:
        server.wait_for_line(re.compile(r"settings: "))  # before TensorFlow is imported
        server.process.send_signal(signal.SIGTERM)
        assert server.wait(timeout_s=60) == 130, server.log
    # Not asserted: that "serving on" never shows. Python runs the handler only between
    # bytecodes, so on a loaded machine a signal sent during the import can be handled just
    # after the listener opened; it still ends the start-up (exit 130), which is the contract.
    assert "interrupted during start-up" in server.log
