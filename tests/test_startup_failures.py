"""Start-up failures of the installed `sentiment-server`: one clear error line, a non-zero exit,
and never a moment of reporting ready.

The cases run as parallel subprocesses, since each pays for importing TensorFlow.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from tests.server_subprocess import ServerSubprocess


def _copy_version(tiny_model_dir, model_dir):
    shutil.copytree(tiny_model_dir / "1", model_dir / "1")
    return model_dir / "1" / "model.keras"


def _no_versions(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "no-versions"
    (model_dir / "latest").mkdir(parents=True)  # not an integer
    (model_dir / "2").mkdir()  # no metadata.json: incomplete
    (model_dir / "2" / "model.keras").write_bytes(b"")
    return ["--model-dir", str(model_dir)], f"no complete model version in {model_dir}"


def _missing_dir(tmp_path, tiny_model_dir):
    missing = tmp_path / "nowhere"
    return ["--model-dir", str(missing)], f"--model-dir='{missing}' does not exist"


def _truncated_model(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "truncated"
    model_file = _copy_version(tiny_model_dir, model_dir)
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    return ["--model-dir", str(model_dir)], "is not a .keras archive (a zip file): truncated"


def _corrupt_model(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "corrupt"
    model_file = _copy_version(tiny_model_dir, model_dir)
    data = bytearray(model_file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2048] = bytes(2048)  # the zip directory is intact, a member is not
    model_file.write_bytes(bytes(data))
    return ["--model-dir", str(model_dir)], f"cannot load {model_file} as a Keras model"


CASES = {
    "missing-model-dir": (_missing_dir, 2),
    "no-version-folders": (_no_versions, 1),
    "truncated-model-file": (_truncated_model, 1),
    "corrupt-model-file": (_corrupt_model, 1),
}


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory, tiny_model_dir, busy_port):
    """Every case started at once; {case: (server, expected fragment, expected status)}."""
    tmp_path = tmp_path_factory.mktemp("start-up")
    common = ["--host", "127.0.0.1", "--device", "cpu", "--stats-interval-s", "0"]
    started = {}
    try:
        for name, (make_case, status) in CASES.items():
            args, fragment = make_case(tmp_path, tiny_model_dir)
            started[name] = (ServerSubprocess(*common, "--port", "0", *args), fragment, status)
        port_args = ["--port", str(busy_port), "--model-dir", str(tiny_model_dir)]
        started["busy-port"] = (
            ServerSubprocess(*common, *port_args),
            f"cannot listen on 127.0.0.1:{busy_port}",
            1,
        )
        for server, _, _ in started.values():
            server.wait(timeout_s=240)
        yield started
    finally:
        for server, _, _ in started.values():
            server.__exit__()


@pytest.mark.parametrize("case", [*CASES, "busy-port"])
def test_a_start_up_failure_is_one_clear_error_line_and_a_non_zero_exit(failed_starts, case):
    server, fragment, status = failed_starts[case]
    assert server.process.returncode == status, server.log
    errors = server.own_error_lines()
    assert len(errors) == 1, f"expected one error line, got {errors}\n{server.log}"
    assert fragment in errors[0]
    assert "Traceback" not in server.log
    assert "serving on" not in server.log  # it never reported ready
