"""The gRPC reference from a .proto file's own comments, read through protoc's descriptors.

protoc (grpc_tools, which `make proto` runs too) parses the file and keeps every comment
with the element it belongs to (--include_source_info), so nothing here parses proto text.
"""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
# Field numbers of FileDescriptorProto and its children, as SourceCodeInfo paths use them.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _ONEOF = 2, 3, 4, 8
_VALUE, _METHOD = 2, 2
_TYPE_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}


@dataclass
class Element:
    """One documented thing of the file: a service, RPC, message, field, enum or value."""

    kind: str
    name: str  # full name, e.g. sentiment.v1.Prediction.score
    comment: str
    children: list[Element] = field(default_factory=list)
    detail: dict = field(default_factory=dict)


def descriptor(proto: Path, root: Path = PROTOS) -> descriptor_pb2.FileDescriptorProto:
    """The file's descriptor with comments, from protoc; `proto` is under `root`, the import
    root (protos/)."""
    includes = str(importlib.resources.files("grpc_tools") / "_proto")
    relative = proto.resolve().relative_to(root.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "descriptors.pb")
        # In a process of its own: grpc_tools' protoc run in a process that has loaded other
        # protobuf descriptors (the test suite's) crashed it with a segmentation fault.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{includes}",
                f"--descriptor_set_out={out}",
                "--include_source_info",
                str(relative),
            ],
            capture_output=True,
            text=True,
        )
        status = done.returncode
        if status != 0:
            raise RuntimeError(f"protoc could not read {proto} (exit {status}): {done.stderr}")
        files = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes()).file
    return next(f for f in files if f.name == str(relative))


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    comments = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        comments[tuple(location.path)] = " ".join(text.split())
    return comments


def elements(proto: Path, root: Path = PROTOS) -> list[Element]:
    """Every service, message and enum of the file, with their comments, in file order."""
    return _elements(descriptor(proto, root))


def _elements(file: descriptor_pb2.FileDescriptorProto) -> list[Element]:
    comments = _comments(file)
    package = file.package
    found: list[Element] = []
    for s, service in enumerate(file.service):
        path = (_SERVICE, s)
        methods = [
            Element(
                "rpc",
                f"{package}.{service.name}.{method.name}",
                comments.get((*path, _METHOD, m), ""),
                detail={
                    "input": method.input_type.lstrip("."),
                    "output": method.output_type.lstrip("."),
                    "client_streaming": method.client_streaming,
                    "server_streaming": method.server_streaming,
                },
            )
            for m, method in enumerate(service.method)
        ]
        found.append(
            Element("service", f"{package}.{service.name}", comments.get(path, ""), methods)
        )
    for m, message in enumerate(file.message_type):
        found.extend(_message(message, (_MESSAGE, m), package, comments))
    for e, enum in enumerate(file.enum_type):
        found.append(_enum(enum, (_ENUM, e), package, comments))
    return found


def _message(message, path, scope, comments) -> list[Element]:
    if message.options.map_entry:
        return []
    name = f"{scope}.{message.name}"
    oneofs = [oneof.name for oneof in message.oneof_decl]
    fields = []
    for f, fld in enumerate(message.field):
        oneof = None
        if fld.HasField("oneof_index") and not fld.proto3_optional:
            oneof = oneofs[fld.oneof_index]
        fields.append(
            Element(
                "field",
                f"{name}.{fld.name}",
                comments.get((*path, _FIELD, f), ""),
                detail={
                    "number": fld.number,
                    "type": _field_type(fld, message),
                    "oneof": oneof,
                    "oneof_comment": comments.get((*path, _ONEOF, fld.oneof_index), "")
                    if oneof
                    else "",
                },
            )
        )
    found = [Element("message", name, comments.get(path, ""), fields)]
    for n, nested in enumerate(message.nested_type):
        found.extend(_message(nested, (*path, _NESTED, n), name, comments))
    for e, enum in enumerate(message.enum_type):
        found.append(_enum(enum, (*path, _NESTED_ENUM, e), name, comments))
    return found


def _field_type(fld, message) -> str:
    label = descriptor_pb2.FieldDescriptorProto
    if fld.type == label.TYPE_MESSAGE:
        entry = next(
            (n for n in message.nested_type if n.name == fld.type_name.rsplit(".", 1)[-1]), None
        )
        if entry is not None and entry.options.map_entry:
            key, value = entry.field
            return f"map<{_plain_type(key)}, {_plain_type(value)}>"
    kind = _plain_type(fld)
    if fld.label == label.LABEL_REPEATED:
        return f"repeated {kind}"
    return f"optional {kind}" if fld.proto3_optional else kind


def _plain_type(fld) -> str:
    if fld.type_name:
        return fld.type_name.lstrip(".")
    return _TYPE_NAMES[fld.type]


def _enum(enum, path, scope, comments) -> Element:
    name = f"{scope}.{enum.name}"
    values = [
        Element(
            "value",
            f"{name}.{value.name}",
            comments.get((*path, _VALUE, v), ""),
            detail={"number": value.number},
        )
        for v, value in enumerate(enum.value)
    ]
    return Element("enum", name, comments.get(path, ""), values)


def undocumented(proto: Path, root: Path = PROTOS) -> list[str]:
    """Every element of the file without a comment of its own, as 'kind name'."""
    missing = []
    for element in elements(proto, root):
        for item in (element, *element.children):
            if not item.comment:
                missing.append(f"{item.kind} {item.name}")
    return missing


def _anchor(full_name: str) -> str:
    return full_name.replace(".", "-").lower()


def _type_link(type_name: str, local: set[str]) -> str:
    base = type_name.split(" ")[-1]
    if base in local:
        short = base.rsplit(".", 1)[-1]
        return type_name.replace(base, f"[`{short}`](#{_anchor(base)})")
    return f"`{type_name}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "–"


def render(proto: Path) -> str:
    """Markdown: the services with their RPCs, then every message and enum, from the file."""
    file = descriptor(proto)
    found, package = _elements(file), file.package
    local = {e.name for e in found if e.kind in ("message", "enum")}
    lines = [
        f"Generated from `{proto.resolve().relative_to(ROOT)}` at build time: every "
        "description below is the comment above that element in the file.",
        "",
    ]
    for service in (e for e in found if e.kind == "service"):
        lines += [f"### Service `{service.name}` {{ #{_anchor(service.name)} }}", ""]
        lines += [service.comment, "", "| RPC | request | response | what it does |"]
        lines.append("|---|---|---|---|")
        for rpc in service.children:
            d = rpc.detail
            request = ("stream " if d["client_streaming"] else "") + _type_link(d["input"], local)
            response = ("stream " if d["server_streaming"] else "") + _type_link(d["output"], local)
            short = rpc.name.rsplit(".", 1)[-1]
            lines.append(f"| `{short}` | {request} | {response} | {_cell(rpc.comment)} |")
        lines.append("")
    lines += ["### Messages", ""]
    for message in (e for e in found if e.kind == "message"):
        short = message.name.removeprefix(f"{package}.")
        lines += [f"#### `{short}` {{ #{_anchor(message.name)} }}", "", message.comment or "", ""]
        if not message.children:
            lines += ["No fields.", ""]
            continue
        lines += ["| field | type | number | description |", "|---|---|---|---|"]
        for fld in message.children:
            d = fld.detail
            note = f" One of `{d['oneof']}`: {d['oneof_comment']}" if d["oneof"] else ""
            lines.append(
                f"| `{fld.name.rsplit('.', 1)[-1]}` | {_type_link(d['type'], local)} "
                f"| {d['number']} | {_cell(fld.comment + note)} |"
            )
        lines.append("")
    lines += ["### Enums", ""]
    for enum in (e for e in found if e.kind == "enum"):
        short = enum.name.removeprefix(f"{package}.")
        lines += [f"#### `{short}` {{ #{_anchor(enum.name)} }}", "", enum.comment or "", ""]
        lines += ["| value | number | description |", "|---|---|---|"]
        for value in enum.children:
            name = value.name.rsplit(".", 1)[-1]
            lines.append(f"| `{name}` | {value.detail['number']} | {_cell(value.comment)} |")
        lines.append("")
    return "\n".join(lines)
