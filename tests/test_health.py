"""grpc.health.v1.Health: Check and Watch for the server ("") and the service, start to drain."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2_grpc
from server.main import SERVICE_NAME, create_server
from tests.conftest import server_config_for_tests
from tests.fake_models import HeldModel
from tests.helpers import occupy_blocking

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", SERVICE_NAME)


def check(channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def test_check_says_serving_for_the_server_and_the_service(grpc_server):
    with grpc.insecure_channel(grpc_server) as channel:
        assert [check(channel, service) for service in SERVICES] == [SERVING, SERVING]


def test_check_of_an_unknown_service_is_not_found(grpc_server):
    with grpc.insecure_channel(grpc_server) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            check(channel, "no.such.Service")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_listening_server_is_not_serving_until_started(tiny_model_dir, serving_model):
    # grpc's HealthServicer starts with "" SERVING; ours must say NOT_SERVING until start().
    async def statuses_before_start() -> list[int]:
        config = server_config_for_tests(tiny_model_dir)
        server, port = await create_server(config, serving_model)
        await server.grpc_server.start()  # accepting calls, but start() has not run
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return [
                    (await stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=10)).status
                    for s in SERVICES
                ]
        finally:
            await server.stop(grace_s=0)

    assert asyncio.run(statuses_before_start()) == [NOT_SERVING, NOT_SERVING]


def test_watch_sees_serving_then_not_serving_on_drain_for_both(start_server):
    model = HeldModel()
    with start_server(model=model) as running, grpc.insecure_channel(running.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = {
            service: health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
            for service in SERVICES
        }
        first = {service: next(watch).status for service, watch in watches.items()}
        # An in-flight call keeps the server draining while the watches report.
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        in_flight = occupy_blocking(stub, model, "x")
        stopping = asyncio.run_coroutine_threadsafe(running.server.stop(grace_s=20), running._loop)
        on_drain = {service: next(watch).status for service, watch in watches.items()}
        for watch in watches.values():
            watch.cancel()  # an open Watch would hold the drain for the whole grace period
        model.release.set()
        assert in_flight.result().predictions[0].model_version == 7
        stopping.result(timeout=10)
    assert first == {"": SERVING, SERVICE_NAME: SERVING}
    assert on_drain == {"": NOT_SERVING, SERVICE_NAME: NOT_SERVING}
