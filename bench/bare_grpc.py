"""What grpcio itself costs per unary call on this machine: a `Predict` server with nothing
behind it (no model, no queue, no interceptors; every review gets the same answer), loaded by
h2load exactly as the real server is.

Its CPU per call bounds what any server on grpcio can reach against the in-process limit: at
single-review calls each answer costs the model's CPU per review plus at least this, on the
same cores (bench.acceptance turns it into the ceiling for issue 15's item 3).

    python -m bench.bare_grpc          # serves on a free loopback port and prints it
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bench.common.c_loads import grpc_status, run_h2load


def cpu_s_of(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (h2load, run to completion)."""
    times = os.times()
    return times.children_user + times.children_system


def measure_bare_grpc(body: Path, concurrency: int, duration_s: float) -> dict:
    """h2load against a bare server: calls/s, and CPU per call of server and h2load."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_grpc"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        status = grpc_status(port, body)
        if status != "0":
            raise RuntimeError(f"the bare server answered h2load's body with grpc-status {status}")
        server_s, client_s = cpu_s_of(server.pid), children_cpu_s()
        # No warm-up: every call h2load makes is counted, as its CPU and the server's are.
        run = run_h2load(port, body, concurrency, duration_s, warm_up_s=0)
        server_s, client_s = cpu_s_of(server.pid) - server_s, children_cpu_s() - client_s
        calls = max(1, run["succeeded"])
        return {
            **run,
            "server_cpu_us_per_call": round(1e6 * server_s / calls, 1),
            "client_cpu_us_per_call": round(1e6 * client_s / calls, 1),
            "grpc_status_of_sample": status,
        }
    finally:
        server.terminate()
        server.wait(30)


async def serve() -> None:
    import grpc

    from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

    answer = sentiment_pb2.Prediction(label=sentiment_pb2.POSITIVE, score=0.9)

    class Bare(sentiment_pb2_grpc.SentimentServiceServicer):
        async def Predict(self, request, context):
            return sentiment_pb2.PredictResponse(predictions=[answer] * len(request.reviews))

    server = grpc.aio.server()
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve())
