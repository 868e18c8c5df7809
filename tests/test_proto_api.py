"""The proto as a public API: buf lint passes, and buf breaking (buf.yaml's PACKAGE rules) fails a
change that breaks old clients and passes one they cannot notice."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"
PROTO = Path("protos/sentiment/v1/sentiment.proto")
# buf's exit status for rule violations (as opposed to 1 for errors such as a bad input).
BUF_VIOLATIONS = 100


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        message = f"{BUF.relative_to(ROOT)} is missing: run `npm ci` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; a skip there would hide the check
        pytest.skip(message)
    return BUF


def run_buf(buf: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(buf), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def changed_workspace(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of buf.yaml and protos/ whose proto has `old` replaced by `new`."""
    workspace = tmp_path / "changed"
    shutil.copytree(ROOT / "protos", workspace / "protos")
    shutil.copy(ROOT / "buf.yaml", workspace / "buf.yaml")
    proto = workspace / PROTO
    text = proto.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {PROTO} exactly once"
    proto.write_text(text.replace(old, new))
    return workspace


def test_buf_lint_passes(buf):
    result = run_buf(buf, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ("string preset = 7;", "string preset = 8;", 'field "7" with name "preset"'),
        ("  string preset = 7;\n", "", 'field "7" with name "preset"'),
        ("float score = 2;", "double score = 2;", 'changed type from "float" to "double"'),
        ("string review = 2;", "string text = 2;", 'changed name from "review" to "text"'),
        ("  POSITIVE = 2;\n", "", 'enum value "2" on enum "Label" was deleted'),
        (
            "  rpc GetModelInfo(GetModelInfoRequest) returns (ModelInfo);\n",
            "",
            'RPC "GetModelInfo" on service "SentimentService" was deleted',
        ),
    ],
    ids=[
        "field-renumbered",
        "field-removed",
        "field-retyped",
        "field-renamed",
        "enum-value-removed",
        "rpc-removed",
    ],
)
def test_buf_breaking_fails_a_change_that_breaks_clients(buf, tmp_path, old, new, complaint):
    workspace = changed_workspace(tmp_path, old, new)
    result = run_buf(buf, "breaking", "--against", str(ROOT), cwd=workspace)
    assert result.returncode == BUF_VIOLATIONS, result.stdout + result.stderr
    assert complaint in result.stdout


def test_buf_breaking_passes_an_added_field_and_rpc(buf, tmp_path):
    workspace = changed_workspace(
        tmp_path,
        "  string preset = 7;\n",
        "  string preset = 7;\n  // Added: old clients skip it.\n  string tokenizer = 8;\n",
    )
    proto = workspace / PROTO
    proto.write_text(
        proto.read_text().replace(
            "  rpc GetModelInfo(GetModelInfoRequest) returns (ModelInfo);\n",
            "  rpc GetModelInfo(GetModelInfoRequest) returns (ModelInfo);\n"
            "  rpc ListModels(ListModelsRequest) returns (ListModelsResponse);\n",
        )
        + "\nmessage ListModelsRequest {}\n\nmessage ListModelsResponse {\n"
        "  repeated ModelInfo models = 1;\n}\n"
    )
    result = run_buf(buf, "breaking", "--against", str(ROOT), cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_moving_the_file_within_its_package_is_not_breaking(buf, tmp_path):
    # The proto used to be protos/sentiment.proto: under PACKAGE rules, moving it is no change.
    old_layout = tmp_path / "old" / "protos"
    old_layout.mkdir(parents=True)
    shutil.copy(ROOT / PROTO, old_layout / "sentiment.proto")
    result = run_buf(buf, "breaking", "--against", str(old_layout))
    assert result.returncode == 0, result.stdout + result.stderr
