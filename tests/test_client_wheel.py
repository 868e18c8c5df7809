"""The client distribution on its own: a wheel built from client/ goes into a fresh virtualenv
without the project, imports with no TensorFlow there, and its CLI and library score reviews
against a real server. Also measures what it costs (the README's figures):

    .venv/bin/pytest -q -s tests/test_client_wheel.py     # prints installed size and import time
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The goals from the issue that split the client out: well under TensorFlow's hundreds of MB.
MAX_INSTALLED_BYTES = 50 * 1024 * 1024
# The goal is 0.3 s; grpc's own import is about 0.17 s of it on this machine. The bound leaves
# room for a busy machine but still fails if anything heavy (NumPy, TensorFlow) creeps in.
MAX_IMPORT_S = 1.0
POSITIVE_REVIEW = "a great wonderful superb film, loved it"
NEGATIVE_REVIEW = "an awful boring terrible waste, hated it"


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    # Not the repository: `python -c` puts the working directory on sys.path.
    kwargs.setdefault("cwd", Path(sys.executable).anchor)
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


class ClientVenv:
    """A virtualenv holding only the client wheel and what pip resolved for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "bin" / "python"
        self.command = root / "bin" / "sentiment-client"
        (self.site_packages,) = root.glob("lib/python*/site-packages")

    def installed_bytes(self) -> int:
        """Everything pip put in site-packages: the client, grpcio, protobuf and their needs."""
        return sum(p.stat().st_size for p in self.site_packages.rglob("*") if p.is_file())

    def distributions(self) -> set[str]:
        return {p.name.split("-")[0].lower() for p in self.site_packages.glob("*.dist-info")}

    def import_s(self, statement: str, runs: int = 5) -> float:
        """Wall time of `statement` in a new interpreter, the best of `runs` (a warm disk cache)."""
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        return min(float(run(self.python, "-c", code).stdout) for _ in range(runs))


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a clean copy: setuptools builds inside the source folder and may reuse what an
    # earlier build left in client/build/.
    source = out / "client"
    leftovers = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "client", source, ignore=leftovers)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, source)
    (wheel,) = out.glob("imdb_sentiment_client-*.whl")
    return wheel


@pytest.fixture(scope="module")
def client_venv(client_wheel, tmp_path_factory) -> ClientVenv:
    root = tmp_path_factory.mktemp("client-venv") / "venv"
    # No pip inside (faster, and nothing in site-packages but what the install adds); this
    # interpreter's pip installs into it, resolving grpcio and protobuf from the pip config.
    run(sys.executable, "-m", "venv", "--without-pip", root)
    venv = ClientVenv(root)
    run(sys.executable, "-m", "pip", "--python", venv.python, "install", "--quiet", client_wheel)
    return venv


def test_the_wheel_holds_only_the_client_and_needs_only_grpcio_and_protobuf(client_wheel):
    with zipfile.ZipFile(client_wheel) as wheel:
        names = wheel.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line.split(":", 1)[1].strip()
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert {name.split("/")[0] for name in names} == {
        "imdb_sentiment_client",
        client_wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert "imdb_sentiment_client/sentiment/v1/sentiment_pb2_grpc.py" in names
    assert "imdb_sentiment_client/sentiment/v1/sentiment_pb2.pyi" in names
    assert sorted(re.match(r"[\w.-]+", r).group() for r in requires) == ["grpcio", "protobuf"]


def test_installs_without_tensorflow_and_is_small_and_quick_to_import(client_venv):
    probe = "import importlib.util as u; print([m for m in {} if u.find_spec(m)])"
    heavy = ["tensorflow", "keras", "numpy", "sklearn", "aiohttp", "server", "training", "client"]
    assert run(client_venv.python, "-c", probe.format(heavy)).stdout.strip() == "[]"
    assert client_venv.distributions() <= {
        "imdb_sentiment_client",
        "grpcio",
        "protobuf",
        "typing_extensions",  # grpcio's one dependency
    }
    size_bytes = client_venv.installed_bytes()
    library_s = client_venv.import_s("from imdb_sentiment_client import SentimentClient")
    cli_s = client_venv.import_s("import imdb_sentiment_client.cli")
    grpc_s = client_venv.import_s("import grpc")
    print(
        f"\nclient installed: {size_bytes / 2**20:.1f} MiB in site-packages; import: "
        f"SentimentClient {library_s:.3f} s, the CLI {cli_s:.3f} s (grpc alone {grpc_s:.3f} s)"
    )
    assert size_bytes < MAX_INSTALLED_BYTES
    assert library_s < MAX_IMPORT_S


def test_the_library_scores_reviews(client_venv, grpc_server):
    script = textwrap.dedent(
        f"""
        import asyncio, json
        from imdb_sentiment_client import AsyncSentimentClient, SentimentClient

        with SentimentClient({grpc_server!r}, timeout_s=30) as client:
            predictions = client.predict([{POSITIVE_REVIEW!r}, {NEGATIVE_REVIEW!r}])
            streamed = list(client.stream([("a", {POSITIVE_REVIEW!r}), ("b", "")]))
            info = client.model_info()

        async def one():
            async with AsyncSentimentClient({grpc_server!r}, timeout_s=30) as client:
                return (await client.predict([{NEGATIVE_REVIEW!r}]))[0]

        print(json.dumps({{
            "labels": [p.label for p in predictions],
            "streamed": [(r.id, r.ok) for r in streamed],
            "model": info.name,
            "async": asyncio.run(one()).label,
        }}))
        """
    )
    result = json.loads(run(client_venv.python, "-c", script).stdout)
    assert result == {
        "labels": ["POSITIVE", "NEGATIVE"],
        "streamed": [["a", True], ["b", False]],
        "model": "imdb-lstm",
        "async": "NEGATIVE",
    }


def test_the_cli_scores_reviews(client_venv, grpc_server):
    result = run(
        client_venv.command, "--target", grpc_server, "predict", POSITIVE_REVIEW, NEGATIVE_REVIEW
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in records] == ["POSITIVE", "NEGATIVE"]
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    streamed = run(
        client_venv.command,
        "--target",
        grpc_server,
        "stream",
        input=f"{POSITIVE_REVIEW}\n{NEGATIVE_REVIEW}\n",
    )
    assert [json.loads(line)["label"] for line in streamed.stdout.splitlines()] == [
        "POSITIVE",
        "NEGATIVE",
    ]
