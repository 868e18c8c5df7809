"""tritonclient.grpc in a child process, driven by JSON lines: `TritonGrpc(target)` in a test.

    python -m tests.triton_grpc_driver 127.0.0.1:50051 [--root-certificates ca.pem]

Why a child: tritonclient.grpc registers its own `inference.*` protobuf messages,
and the server's stubs (server/api/inference/) register KServe's under the same
names; protobuf refuses the second in one process, and the test process imports
the server. Each request line is {"method": ..., "args": [...], "kwargs": {...}}
for InferenceServerClient (metadata as JSON), or {"infer": {...}} for a
ModelInfer built from plain values; each answer line is {"ok": value} or
{"error": {"status": "StatusCode.X", "message": ...}}.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


class TritonGrpc:
    """The parent's side: one child process, one call at a time."""

    def __init__(self, target: str, root_certificates: str | None = None):
        command = [sys.executable, "-m", "tests.triton_grpc_driver", target]
        if root_certificates:
            command += ["--root-certificates", root_certificates]
        self._process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def call(self, method: str, *args: Any, **kwargs: Any) -> dict:
        return self._send({"method": method, "args": list(args), "kwargs": kwargs})

    def infer(
        self,
        reviews: list[bytes | str] | None = None,
        *,
        shape: list[int] | None = None,
        datatype: str = "BYTES",
        name: str = "review",
        model: str = "imdb-lstm",
        version: str = "",
        outputs: list[str] | None = None,
        request_id: str = "",
        headers: dict[str, str] | None = None,
        client_timeout: float | None = None,
        values: list[float] | None = None,
    ) -> dict:
        """ModelInfer with one input of `reviews` (or FP32 `values`), declared as `shape`
        (default [len]); the answer's outputs hold lists (labels as text)."""
        elements = [r.encode() if isinstance(r, str) else r for r in reviews or []]
        spec = {
            "name": name,
            "datatype": datatype,
            "shape": shape,
            "bytes": [base64.b64encode(e).decode() for e in elements],
            "values": values,
        }
        return self._send(
            {
                "infer": {
                    "model": model,
                    "version": version,
                    "input": spec,
                    "outputs": outputs,
                    "request_id": request_id,
                    "headers": headers,
                    "client_timeout": client_timeout,
                }
            }
        )

    def _send(self, request: dict) -> dict:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the tritonclient driver exited ({self._process.wait(10)})")
        return json.loads(line)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(30)

    def __enter__(self) -> TritonGrpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the child ------------------------------------------------------------------------------


def _infer(client, spec: dict) -> dict:
    import numpy as np
    import tritonclient.grpc as triton

    tensor = spec["input"]
    if tensor["values"] is not None:
        data = np.array(tensor["values"], dtype=np.float32)
    else:
        data = np.array([base64.b64decode(b) for b in tensor["bytes"]], dtype=np.object_)
    shape = tensor["shape"] if tensor["shape"] is not None else list(data.shape)
    if len(shape) == 2 and int(np.prod(shape)) == data.size:
        data = data.reshape(shape)
    infer_input = triton.InferInput(tensor["name"], list(data.shape), tensor["datatype"])
    infer_input.set_data_from_numpy(data)
    infer_input.set_shape(shape)  # may disagree with the data, on purpose
    outputs = None
    if spec["outputs"] is not None:
        outputs = [triton.InferRequestedOutput(name) for name in spec["outputs"]]
    result = client.infer(
        spec["model"],
        [infer_input],
        model_version=spec["version"],
        outputs=outputs,
        request_id=spec["request_id"],
        headers=spec["headers"],
        client_timeout=spec["client_timeout"],
    )
    response = result.get_response()
    answer: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "raw": len(response.raw_output_contents) > 0,
        "outputs": {},
    }
    for output in response.outputs:
        array = result.as_numpy(output.name)
        values = [
            v.decode() if isinstance(v, bytes) else float(v) for v in array.reshape(-1).tolist()
        ]
        answer["outputs"][output.name] = {
            "datatype": output.datatype,
            "shape": list(output.shape),
            "numpy_shape": list(array.shape),
            "data": values,
        }
    return answer


def _serve(target: str, root_certificates: str | None) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    options = {"ssl": True, "root_certificates": root_certificates} if root_certificates else {}
    client = triton.InferenceServerClient(target, **options)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "infer" in request:
                answer: Any = _infer(client, request["infer"])
            else:
                method = getattr(client, request["method"])
                answer = method(*request["args"], **request["kwargs"])
            reply = {"ok": answer}
        except InferenceServerException as error:
            reply = {"error": {"status": error.status(), "message": error.message()}}
        print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--root-certificates")
    args = parser.parse_args()
    _serve(args.target, args.root_certificates)


if __name__ == "__main__":
    main()
