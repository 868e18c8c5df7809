"""The docs' examples run: every marked block of README.md and docs/*.md, against a live server.

A block is marked by a line `<!-- run -->` just before its fence. The server is real (the
tiny model, gRPC, HTTP and metrics on free ports); `localhost:50051`, `localhost:8080` and
`localhost:9090` (or 127.0.0.1) in a block become its addresses, and so does the CLI's
default target (through SENTIMENT_TARGET). Shell blocks run under `bash -euo pipefail` from
the repository's root, with curl failing on an HTTP error status; Python blocks run with
this venv's Python. A block passes when it exits 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_http import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MARKER = re.compile(r"^<!-- run -->[ \t]*$")
FENCE = re.compile(r"^(?P<fence>`{3,})\s*(?P<language>[\w-]*)")
LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python"}
# A renamed JSON field must fail the block, not print an error body and exit 0.
SHELL_PRELUDE = 'curl() { command curl --fail-with-body --silent --show-error "$@"; }\n'
NODE_EXAMPLE = ROOT / "examples" / "node"
# The addresses the docs use for make serve's gRPC, HTTP and metrics ports.
DOCS_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):(?P<port>50051|8080|9090)\b")


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def sources() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def marked_examples(path: Path) -> list[Example]:
    """The blocks of one page that follow a `<!-- run -->` line (blank lines between allowed)."""
    lines = path.read_text().splitlines()
    page = str(path.relative_to(ROOT))
    found = []
    for number, line in enumerate(lines):
        if not MARKER.match(line):
            continue
        start = number + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        fence = FENCE.match(lines[start]) if start < len(lines) else None
        if fence is None:
            raise AssertionError(f"{page}:{number + 1}: `<!-- run -->` is not followed by a fence")
        language = LANGUAGES.get(fence["language"])
        if language is None:
            raise AssertionError(
                f"{page}:{start + 1}: a marked block must be one of {sorted(LANGUAGES)}, "
                f"not {fence['language']!r}"
            )
        end = start + 1
        while end < len(lines) and not lines[end].startswith(fence["fence"]):
            end += 1
        found.append(Example(page, start + 1, language, "\n".join(lines[start + 1 : end]) + "\n"))
    return found


EXAMPLES = [example for path in sources() for example in marked_examples(path)]


def test_the_docs_mark_examples_for_every_door():
    readme = [e for e in EXAMPLES if e.page == "README.md"]
    text = "".join(e.code for e in readme)
    for door in ("sentiment-client", "SentimentClient", "grpcurl", "curl "):
        assert door in text, f"README.md has no marked example using {door}"
    assert len(EXAMPLES) >= 20, f"only {len(EXAMPLES)} marked examples in the docs"
    assert {e.language for e in EXAMPLES} == {"shell", "python"}


@pytest.fixture(scope="module")
def live_server(start_server):
    """A real server with every door open: the docs' port -> the live server's address."""
    http_port, metrics_port = free_port(), free_port()
    with start_server(http_port=http_port, metrics_port=metrics_port) as running:
        yield {
            "50051": running.target,
            "8080": f"127.0.0.1:{running.server.http_api.port}",
            "9090": f"127.0.0.1:{running.server.metrics.port}",
        }


def _environment(grpc_target: str) -> dict[str, str]:
    # The reader's own SENTIMENT_* settings must not change what the examples do; the
    # CLI's and the Node.js example's default target (localhost:50051) is the live server.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    environ["PATH"] = f"{VENV_BIN}{os.pathsep}{environ.get('PATH', '')}"
    environ["SENTIMENT_TARGET"] = grpc_target
    return environ


def _needs_node(example: Example) -> None:
    if "node " not in example.code:
        return
    if shutil.which("node") is None or not (NODE_EXAMPLE / "node_modules").is_dir():
        message = "node or examples/node/node_modules is missing (make test runs npm ci there)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both; a skip there would hide the example
        pytest.skip(message)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_the_example_runs(example: Example, live_server, tmp_path):
    _needs_node(example)
    code = example.code.replace(".venv/bin/", f"{VENV_BIN}/")
    code = DOCS_ADDRESS.sub(lambda m: live_server[m["port"]], code)
    if example.language == "shell":
        command = ["bash", "-euo", "pipefail", "-c", SHELL_PRELUDE + code]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=_environment(live_server["50051"]),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (
        f"{example.id}: the example failed (exit {done.returncode})\n--- code\n{code}"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
