"""The HTTP reference from the OpenAPI document the server serves (server/api/openapi.json)."""

from __future__ import annotations

import json
from pathlib import Path

from docs.gen.settings_ref import cell

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "server" / "api" / "openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")


def document(path: Path = OPENAPI) -> dict:
    return json.loads(path.read_text())


def _resolve(doc: dict, node: dict) -> tuple[str | None, dict]:
    """(the component's name or None, the node) with one $ref followed."""
    ref = node.get("$ref")
    if not ref:
        return None, node
    target = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return ref.rsplit("/", 1)[-1], target


def _anchor(name: str) -> str:
    return f"schema-{name.lower()}"


def _schema_name(doc: dict, schema: dict) -> str:
    """A short type for a table: a link to a component, or the JSON type."""
    name, resolved = _resolve(doc, schema)
    if name:
        return f"[`{name}`](#{_anchor(name)})"
    for combiner, word in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if combiner in resolved:
            return word.join(_schema_name(doc, part) for part in resolved[combiner])
    kind = resolved.get("type", "any")
    if kind == "object" and resolved.get("properties"):
        return "object: " + ", ".join(f"`{name}`" for name in resolved["properties"])
    if kind == "array":
        return f"array of {_schema_name(doc, resolved.get('items', {}))}"
    if "enum" in resolved:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in resolved["enum"])
    return f"`{kind}`" + (" or `null`" if resolved.get("nullable") else "")


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, item[method])
        for path, item in doc["paths"].items()
        for method in METHODS
        if method in item
    ]


def undocumented(doc: dict | None = None) -> list[str]:
    """Operations without a summary, and responses without a description."""
    doc = document() if doc is None else doc
    missing = []
    for method, path, operation in operations(doc):
        if not operation.get("summary", "").strip():
            missing.append(f"{method} {path}: no summary")
        for status, response in operation.get("responses", {}).items():
            _, resolved = _resolve(doc, response)
            if not resolved.get("description", "").strip():
                missing.append(f"{method} {path} {status}: no description")
    return missing


def _body(doc: dict, operation: dict) -> list[str]:
    body = operation.get("requestBody")
    if not body:
        return []
    lines = []
    for media, content in body.get("content", {}).items():
        lines += [f"Request body (`{media}`): {_schema_name(doc, content.get('schema', {}))}", ""]
        for name, example in content.get("examples", {}).items():
            lines += [
                f"Example *{name}*:",
                "",
                "```json",
                json.dumps(example.get("value"), indent=2, ensure_ascii=False),
                "```",
                "",
            ]
    return lines


def _responses(doc: dict, operation: dict) -> list[str]:
    lines = ["| status | body | when |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        _, resolved = _resolve(doc, response)
        kinds = [
            _schema_name(doc, content["schema"])
            for content in resolved.get("content", {}).values()
            if "schema" in content
        ]
        headers = "".join(
            f" Header `{name}`: {cell(header.get('description', ''))}"
            for name, header in resolved.get("headers", {}).items()
        )
        when = cell(resolved.get("description", "")) + headers
        lines.append(f"| {status} | {', '.join(kinds) or '–'} | {when} |")
    return [*lines, ""]


def _schema(doc: dict, name: str, schema: dict) -> list[str]:
    lines = [f"#### `{name}` {{ #{_anchor(name)} }}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    for combiner in ("oneOf", "anyOf"):
        if combiner in schema:
            parts = " or ".join(_schema_name(doc, part) for part in schema[combiner])
            lines += [f"One of: {parts}.", ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, spec in properties.items():
            description = spec.get("description", "")
            limits = [
                f"{word} {spec[key]}"
                for key, word in (
                    ("minimum", "at least"),
                    ("maximum", "at most"),
                    ("minLength", "length at least"),
                    ("minItems", "items at least"),
                )
                if key in spec
            ]
            if limits:
                description = f"{description} ({', '.join(limits)})".strip()
            lines.append(
                f"| `{field}` | {_schema_name(doc, spec)} | {'yes' if field in required else 'no'} "
                f"| {cell(description) or '–'} |"
            )
        lines.append("")
    return lines


def _refs(node) -> set[str]:
    """Names of the components a node refers to, directly."""
    found = set()
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _schemas_used(doc: dict, operations_shown: list[dict]) -> list[str]:
    """The component schemas the shown operations use, directly or through one another."""
    seen: set[str] = set()
    todo = set().union(*(_refs(op) for op in operations_shown)) if operations_shown else set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, target = _resolve(doc, {"$ref": ref})
        todo |= _refs(target)
    schemas = doc.get("components", {}).get("schemas", {})
    return [name for name in schemas if f"#/components/schemas/{name}" in seen]


def _shown(route: str, selection: str) -> bool:
    """`selection`: space-separated path prefixes to show, or to leave out with a leading -."""
    wanted = [p for p in selection.split() if not p.startswith("-")]
    unwanted = [p[1:] for p in selection.split() if p.startswith("-")]
    if any(route.startswith(p) for p in unwanted):
        return False
    return not wanted or any(route.startswith(p) for p in wanted)


def render(path: Path = OPENAPI, selection: str = "") -> str:
    """Markdown for the document's operations (those `selection` picks: see _shown), then
    the schemas they use."""
    doc = document(path)
    lines = [
        f"Generated from `{path.resolve().relative_to(ROOT)}`, which the server also serves at "
        "`GET /openapi.json`, at build time.",
        "",
    ]
    shown = []
    for method, route, operation in operations(doc):
        if not _shown(route, selection):
            continue
        shown.append(operation)
        lines += [f"### `{method} {route}`", "", f"**{operation.get('summary', '')}**", ""]
        if operation.get("description"):
            lines += [operation["description"], ""]
        lines += _body(doc, operation)
        lines += _responses(doc, operation)
    lines += ["### Schemas", ""]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _schemas_used(doc, shown):
        lines += _schema(doc, name, schemas[name])
    return "\n".join(lines)
