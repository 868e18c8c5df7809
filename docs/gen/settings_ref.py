"""The server settings reference from their own definitions (server/config.py) and parser.

Each flag of `sentiment-server --help` is one row: its environment twin, its default and
its meaning, taken from the Setting that defines it; a flag added outside SETTINGS still
gets a row, from its argparse help.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# build_parser appends "[env X] (default: Y)" to each Setting's help.
_ENV_SUFFIX = re.compile(r"\s*\[env (?P<env>[A-Z0-9_]+)\]\s*(\(default: (?P<default>.*)\))?\s*$")


def _parser_actions() -> list[argparse.Action]:
    from server.config import build_parser

    return [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]


def _kind(setting) -> str:
    from server import config

    if setting.choices:
        return " \\| ".join(f"`{choice}`" for choice in setting.choices)
    names = {
        config._integer: "integer",
        config._number: "number",
        config._boolean: "boolean",
        Path: "path",
    }
    return names.get(setting.parse, "text")


def _default(setting) -> str:
    value = setting.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`{value.resolve().relative_to(ROOT)}` (the shipped model)"
        except ValueError:
            return f"`{value}`"
    return f"`{value}`"


def rows() -> list[dict[str, str]]:
    """One row per flag: flag, env, kind, default, meaning."""
    from server.config import SETTINGS

    by_field = {s.field: s for s in SETTINGS}
    found = []
    for action in _parser_actions():
        setting = by_field.get(action.dest)
        flags = " / ".join(f"`{flag}`" for flag in action.option_strings)
        if setting is not None:
            found.append(
                {
                    "flag": flags,
                    "env": f"`{setting.env}`",
                    "kind": _kind(setting),
                    "default": _default(setting),
                    "meaning": setting.help,
                }
            )
            continue
        help_text = action.help or ""
        suffix = _ENV_SUFFIX.search(help_text)
        found.append(
            {
                "flag": flags,
                "env": f"`{suffix['env']}`" if suffix else "–",
                "kind": "",
                "default": f"`{suffix['default']}`" if suffix and suffix["default"] else "–",
                "meaning": help_text[: suffix.start()] if suffix else help_text,
            }
        )
    return found


def undocumented() -> list[str]:
    """Flags whose meaning is empty (or says nothing but its env and default)."""
    return [row["flag"] for row in rows() if len(row["meaning"].split()) < 2]


def cell(text: str) -> str:
    """Text for a table cell: no raw HTML, no column breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def render() -> str:
    lines = ["| flag and environment variable | default | what it sets |", "|---|---|---|"]
    for row in rows():
        kind = f"<br>{row['kind']}" if row["kind"] else ""
        lines.append(
            f"| {row['flag']}<br>{row['env']} | {row['default']}{kind} | {cell(row['meaning'])} |"
        )
    return "\n".join(lines) + "\n"
