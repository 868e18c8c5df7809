"""Graceful drain of the installed `sentiment-server`: a signal arrives mid-load, health turns
NOT_SERVING, new calls are refused, every accepted request gets its result, and it exits 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.drain_load import assert_drained, load_then_signal
from tests.server_subprocess import ServerSubprocess


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_load_drains_every_accepted_request_then_exits_0(tiny_model_dir, signum):
    flags = ["--host", "127.0.0.1", "--port", "0", "--model-dir", str(tiny_model_dir)]
    flags += ["--device", "cpu", "--grace-s", "30", "--stats-interval-s", "0", "--poll-s", "0"]
    with ServerSubprocess(*flags) as server:
        target = f"127.0.0.1:{server.wait_until_serving()}"
        load = load_then_signal(target, lambda: server.process.send_signal(signum))
        seen = asyncio.run(asyncio.wait_for(load, 120))
        status = server.wait(timeout_s=60)

    assert_drained(seen, status, server.log, grace_s=30)
