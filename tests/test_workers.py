"""`sentiment-server --workers 2`: front processes over one model process, as the installed
command runs them; what holds for one process holds here, and the faults it adds."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imdb_sentiment_client import AsyncSentimentClient
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.processes.supervisor import PARENT_ENV
from tests.conftest import build_tiny_model_version
from tests.drain_load import assert_drained, load_then_signal
from tests.server_subprocess import ServerSubprocess

PIDS = re.compile(r"front processes \(pids ([\d, ]+)\) and a model process \(pid (\d+)\)")
REVIEWS = ["a wonderful superb film", "boring awful waste", "the plot was dull", "loved it"]


def flags(model_dir, *extra: str) -> list[str]:
    return [
        "--workers", "2", "--host", "127.0.0.1", "--port", "0", "--model-dir", str(model_dir),
        "--device", "cpu", "--stats-interval-s", "0", "--grace-s", "20", *extra,
    ]  # fmt: skip


def pids(server: ServerSubprocess) -> tuple[list[int], int]:
    match = server.wait_for_line(PIDS)
    return [int(p) for p in match.group(1).split(", ")], int(match.group(2))


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def predict(target: str, reviews, timeout_s: float = 10):
    with grpc.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        return stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=timeout_s)


def wait_until(condition, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_door_answers_as_one_process_does(tiny_model_dir):
    http_port = free_port()
    with ServerSubprocess(*flags(tiny_model_dir, "--http-port", str(http_port))) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        assert health(target) == health_pb2.HealthCheckResponse.SERVING
        response = predict(target, REVIEWS)
        scores = [p.score for p in response.predictions]
        assert len(scores) == 4 and scores[0] > scores[1]

        async def client_calls():
            async with AsyncSentimentClient(target) as client:
                info = await client.model_info()
                explanation = await client.explain(REVIEWS[0])
                streamed = [r async for r in client.stream(REVIEWS * 25)]
                return info, explanation, streamed

        info, explanation, streamed = asyncio.run(client_calls())
        assert info.version == 1
        assert abs(explanation.prediction.score - scores[0]) < 1e-5
        # StreamPredict answers in order: 100 reviews, each the score Predict gave it.
        assert [round(r.unwrap().score, 5) for r in streamed] == [round(s, 5) for s in scores] * 25

        body = json.dumps({"review": REVIEWS[1]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert abs(json.load(answer)["score"] - scores[1]) < 1e-5


def test_a_front_killed_mid_load_is_replaced_and_retries_cover_its_calls(tiny_model_dir):
    with ServerSubprocess(*flags(tiny_model_dir)) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        fronts, _ = pids(server)

        async def load():
            outcomes = []
            async with AsyncSentimentClient(target, timeout_s=20) as client:

                async def one(i):
                    try:
                        await client.predict([REVIEWS[i % 4]])
                        outcomes.append("ok")
                    except Exception as error:  # counted: the assertion names them
                        outcomes.append(repr(error))

                tasks = []
                for i in range(600):
                    tasks.append(asyncio.create_task(one(i)))
                    if i == 200:
                        os.kill(fronts[0], signal.SIGKILL)
                    await asyncio.sleep(0.003)
                await asyncio.gather(*tasks)
            return outcomes

        outcomes = asyncio.run(load())
        failures = [o for o in outcomes if o != "ok"]
        assert failures == [], failures[:5]
        server.wait_for_line(re.compile(r"started front-3 \(pid \d+\) in its place"))
        assert f"front-1 process (pid {fronts[0]}) exited with -9" in server.log
        os.kill(fronts[1], 0)  # the other front was left alone


def readyz(http_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_killed_model_process_fails_calls_at_once_then_comes_back(tiny_model_dir):
    http_port = free_port()
    with ServerSubprocess(*flags(tiny_model_dir, "--http-port", str(http_port))) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        fronts, model = pids(server)
        predict(target, REVIEWS)
        os.kill(model, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            predict(target, REVIEWS, timeout_s=20)
        # UNAVAILABLE at once, not DEADLINE_EXCEEDED after 20 s.
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2.0
        assert health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert readyz(http_port) == 503
        wait_until(
            lambda: health(target) == health_pb2.HealthCheckResponse.SERVING,
            timeout_s=120,
            what="SERVING again after the model process restarted",
        )
        assert len(predict(target, REVIEWS).predictions) == 4
        assert readyz(http_port) == 200
        for pid in fronts:
            os.kill(pid, 0)  # the fronts were not restarted


def test_fronts_are_recycled_after_their_call_budget_and_the_client_library_s_calls_succeed(
    tiny_model_dir,
):
    extra = ("--max-calls-per-worker", "150")
    with ServerSubprocess(*flags(tiny_model_dir, *extra)) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"

        async def load():
            async with AsyncSentimentClient(target, timeout_s=20) as client:
                results = await asyncio.gather(
                    *(client.predict([REVIEWS[i % 4]]) for i in range(800)),
                    return_exceptions=True,
                )
            return [r for r in results if isinstance(r, BaseException)]

        failures = asyncio.run(load())
        assert failures == [], failures[:5]
        server.wait_for_line(re.compile(r"front-\d replaced by front-\d after its call budget"))


def test_a_recycled_front_hands_its_clients_over_and_no_call_fails_without_a_retry_policy(
    tiny_model_dir,
):
    # gRPC's own stop() would end the calls it has read but not yet started with CANCELLED
    # (grpc/grpc#41785); a retiring front stops listening, lets its connections age out
    # (GOAWAY) and closes its HTTP connections after an answer, so callers without a retry
    # policy see no failure: default channels, and one HTTP keep-alive session. (Stopping at
    # once, as before, failed this test twice in two runs with CANCELLED.) A default channel
    # keeps gRPC's transparent retries, which re-send a call a GOAWAY turned away unread;
    # with grpc.enable_retries=0 a few such calls fail UNAVAILABLE (bench/connection_age.py).
    http_port = free_port()
    extra = ("--max-calls-per-worker", "1000", "--http-port", str(http_port))
    with ServerSubprocess(*flags(tiny_model_dir, *extra)) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"

        async def grpc_load():
            channels = [grpc.aio.insecure_channel(target) for _ in range(8)]
            stubs = [sentiment_pb2_grpc.SentimentServiceStub(c) for c in channels]
            in_flight = asyncio.Semaphore(64)

            async def one(i):
                async with in_flight:
                    request = sentiment_pb2.PredictRequest(reviews=[REVIEWS[i % 4]])
                    try:
                        await stubs[i % 8].Predict(request, timeout=20)
                        return "ok"
                    except grpc.RpcError as error:
                        return f"{error.code().name}: {error.details()}"

            outcomes = await asyncio.gather(*(one(i) for i in range(8000)))
            for channel in channels:
                await channel.close()
            return outcomes

        async def http_load():
            import aiohttp

            outcomes = []
            async with aiohttp.ClientSession() as session:
                for i in range(150):
                    url = f"http://127.0.0.1:{http_port}/predict"
                    async with session.post(url, json={"review": REVIEWS[i % 4]}) as response:
                        outcomes.append("ok" if response.status == 200 else response.status)
            return outcomes

        async def both():
            return await asyncio.gather(grpc_load(), http_load())

        grpc_outcomes, http_outcomes = asyncio.run(both())
        assert [o for o in grpc_outcomes if o != "ok"] == []
        assert [o for o in http_outcomes if o != "ok"] == []
        server.wait_for_line(re.compile(r"retiring: closed 1 gRPC listener"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_metrics_view_counts_every_front_s_calls(tiny_model_dir):
    unused_port = free_port()
    with ServerSubprocess(*flags(tiny_model_dir, "--metrics-port", str(unused_port))) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        for _ in range(40):  # new channels: the kernel spreads them over both fronts
            predict(target, REVIEWS[:1])
        url = f"http://127.0.0.1:{unused_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    handled = re.findall(
        r'grpc_server_handled_total\{[^}]*grpc_code="OK",grpc_method="Predict"[^}]*\} (\S+)', text
    )
    assert sum(float(v) for v in handled) == 40
    assert re.search(r"sentiment_batch_size_count \S+", text)


def test_a_new_version_reaches_every_front(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "imdb-lstm"
    shutil.copytree(tiny_model_dir / "1", model_dir / "1")
    with ServerSubprocess(*flags(model_dir, "--poll-s", "0.2")) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        build_tiny_model_version(model_dir / "2", version=2)

        def every_front_on_2() -> bool:
            versions = {
                p.model_version for _ in range(10) for p in predict(target, REVIEWS).predictions
            }
            return versions == {2}

        wait_until(every_front_on_2, timeout_s=120, what="version 2 on every front")


def test_sigterm_drains_every_process_then_exits_0(tiny_model_dir):
    with ServerSubprocess(*flags(tiny_model_dir, "--poll-s", "0")) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        fronts, model = pids(server)
        load = load_then_signal(target, lambda: server.process.send_signal(signal.SIGTERM))
        seen = asyncio.run(asyncio.wait_for(load, 120))
        status = server.wait(timeout_s=90)
    assert_drained(seen, status, server.log, grace_s=20)
    for pid in (*fronts, model):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(("cpu_max", "expected"), [("max 100000", None), ("150000 100000", 2)])
def test_default_workers_follow_the_cores_and_the_container_s_cpu_limit(
    tmp_path, cpu_max, expected
):
    from server.processes.supervisor import default_workers

    cores = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max + "\n")
    assert default_workers(str(limit)) == (cores if expected is None else min(cores, expected))
    assert default_workers(str(tmp_path / "absent")) == cores


def test_a_stop_before_every_process_serves_exits_130_at_once(tiny_model_dir):
    with ServerSubprocess(*flags(tiny_model_dir)) as server:
        server.wait_for_line(re.compile(r"settings: "))
        server.process.send_signal(signal.SIGTERM)
        status = server.wait(timeout_s=60)
    assert status == 130, server.log
    assert "interrupted during start-up" in server.log and "serving on" not in server.log
    assert "never retrieved" not in server.log


def test_a_killed_supervisor_takes_its_children_with_it(tiny_model_dir):
    """SIGKILL (or the OOM killer) gives the supervisor no time to stop its children: each was
    told by the kernel to stop with it, and none goes on holding the ports and the model."""
    with ServerSubprocess(*flags(tiny_model_dir)) as server:
        port = server.wait_until_serving()
        fronts, model = pids(server)
        assert predict(f"127.0.0.1:{port}", REVIEWS).predictions
        server.process.kill()
        server.process.wait(30)

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # A zombie has ended; only its parent (now init) has yet to reap it.
            return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z"

        wait_until(lambda: all(gone(pid) for pid in (*fronts, model)), 30, "children to exit")
        # Before the harness's own clean-up (a SIGKILL to the process group) could free it.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("parent_alive", [True, False])
def test_a_child_whose_supervisor_died_before_it_started_exits(parent_alive):
    code = "from server.processes.supervisor import stop_with_supervisor; stop_with_supervisor()"
    parent = os.getpid() if parent_alive else 2**22 + 1  # above Linux's largest pid
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, PARENT_ENV: str(parent)}, timeout=60
    )
    assert done.returncode == (0 if parent_alive else 1)
