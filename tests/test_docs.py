"""The docs cannot drift from the code: every setting, option, RPC, field and route has a
description for the generated reference pages, every file a page names exists, and README
is short and quotes the shipped model's figures."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from docs.gen import cli_ref, model_ref, openapi_ref, proto_ref, settings_ref

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
OUR_PROTOS = sorted((ROOT / "protos" / "sentiment").rglob("*.proto"))
# A path of the repository in inline code: `server/api/servicer.py`, `reports/kill/`.
_TOP_FOLDERS = "server|client|training|bench|tests|protos|models|reports|deploy|examples|docs"
REPO_PATH = re.compile(rf"`((?:{_TOP_FOLDERS})/[\w./-]*)`")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_every_server_setting_has_a_description():
    assert settings_ref.undocumented() == []
    assert len(settings_ref.rows()) >= 25, "the settings reference lost its rows"


def test_a_setting_without_help_is_caught(monkeypatch):
    from server import config

    broken = (dataclasses.replace(config.SETTINGS[0], help=""), *config.SETTINGS[1:])
    monkeypatch.setattr(config, "SETTINGS", broken)
    assert settings_ref.undocumented() == ["`--host`"]


@pytest.mark.parametrize("proto", OUR_PROTOS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rpc_message_field_and_enum_value_has_a_comment(proto):
    assert OUR_PROTOS, "no proto files found under protos/sentiment"
    assert proto_ref.undocumented(proto) == []


def test_an_uncommented_field_is_caught(tmp_path):
    proto = tmp_path / "check" / "v1" / "check.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(
        'syntax = "proto3";\npackage check.v1;\n'
        "// A service.\nservice Checked {\n  // An RPC.\n  rpc Get(Thing) returns (Thing);\n}\n"
        "// A message.\nmessage Thing {\n  // Documented.\n  string a = 1;\n  string b = 2;\n}\n"
    )
    assert proto_ref.undocumented(proto, root=tmp_path) == ["field check.v1.Thing.b"]


def test_every_cli_command_and_option_has_help():
    assert cli_ref.undocumented() == []


def test_every_http_operation_has_a_summary_and_every_response_a_description():
    assert openapi_ref.undocumented() == []


def test_readme_is_a_front_page_of_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail to docs/"


def test_readme_quotes_the_shipped_models_figures():
    figures = model_ref.values()
    text = README.read_text()
    for name in ("test_accuracy", "baseline_accuracy"):
        assert figures[name] in text, (
            f"README.md does not say {figures[name]} ({name} of the shipped model, version "
            f"{figures['version']}): update its headline figures from "
            f"{figures['dir']}/report/metrics.json"
        )
    assert f"version {figures['version']}" in text


@pytest.mark.parametrize("page", [*pages(), README], ids=lambda p: p.name)
def test_the_files_a_page_names_exist(page):
    missing = [
        path
        for path in REPO_PATH.findall(page.read_text())
        if not (ROOT / path).exists() and not (ROOT / "client" / "src" / path).exists()
    ]
    assert missing == [], f"{page.name} names files that do not exist: {missing}"


def test_every_generator_a_page_asks_for_exists():
    from docs.gen.hooks import GENERATORS, MARKER

    asked = {m["name"] for page in pages() for m in MARKER.finditer(page.read_text())}
    assert asked, "no page asks for a generated part"
    assert asked - set(GENERATORS) == set()
