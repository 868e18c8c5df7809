"""MkDocs hooks (mkdocs.yml `hooks:`): fill the pages' generated parts and bring in the images.

A line `<!-- gen: NAME [ARGUMENT] -->` in a page is replaced by what the generator NAME
makes from the code or the shipped model; `{{ model.FIELD }}` inline is one of the shipped
model's figures. Images the code already makes (the benchmark's plots, the soak's memory
curve, the shipped model's report, the demo page's screenshots) are added to the site from
where they are, not copied into docs/.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `docs.gen` and the project's packages, from any directory
    sys.path.insert(0, str(ROOT))

from mkdocs.exceptions import PluginError  # noqa: E402
from mkdocs.structure.files import File  # noqa: E402

from docs.gen import (  # noqa: E402
    assets,
    cli_ref,
    metrics_ref,
    model_ref,
    openapi_ref,
    proto_ref,
    reports_ref,
    settings_ref,
)

log = logging.getLogger("mkdocs.hooks.gen")
MARKER = re.compile(r"^<!-- gen: (?P<name>[\w-]+)(?: (?P<argument>.*?))? -->[ \t]*$", re.M)
INLINE = re.compile(r"\{\{ model\.(?P<field>\w+) \}\}")


def _include(argument: str) -> str:
    """A markdown file of the repository (e.g. a committed report), its headings moved
    three levels down so they sit under the page's own."""
    text = (ROOT / argument).read_text()
    return re.sub(r"^(#{1,3}) ", lambda m: "#" * (len(m.group(1)) + 3) + " ", text, flags=re.M)


GENERATORS = {
    "server-settings": lambda _: settings_ref.render(),
    "cli-reference": lambda _: cli_ref.render(),
    "grpc-reference": lambda argument: proto_ref.render(ROOT / argument),
    "http-reference": lambda argument: openapi_ref.render(selection=argument),
    "model-summary": lambda _: model_ref.render_summary(),
    "model-every-set": lambda _: model_ref.render_every_set(),
    "model-test-metrics": lambda _: model_ref.render_test_metrics(),
    "model-validation": lambda _: model_ref.render_validation(),
    "model-failures": lambda _: model_ref.render_failures(),
    "metrics-reference": lambda _: metrics_ref.render(),
    "explain-figures": lambda _: reports_ref.render_explain(),
    "image": lambda argument: assets.image_markdown(argument),
    "include": _include,
}


def on_files(files, config):
    for src_uri, source in assets.images().items():
        files.append(File.generated(config, src_uri, abs_src_path=str(source)))
    return files


def on_page_markdown(markdown, page, config, files):
    def generate(match: re.Match) -> str:
        name, argument = match["name"], (match["argument"] or "").strip()
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: no generator {name!r} (docs/gen/hooks.py)")
        try:
            return GENERATORS[name](argument)
        except Exception as exc:
            raise PluginError(f"{page.file.src_uri}: generator {name!r} failed: {exc}") from exc

    figures = model_ref.values() if INLINE.search(markdown) else {}

    def figure(match: re.Match) -> str:
        if match["field"] not in figures:
            raise PluginError(f"{page.file.src_uri}: no model figure {match['field']!r}")
        return figures[match["field"]]

    return INLINE.sub(figure, MARKER.sub(generate, markdown))
