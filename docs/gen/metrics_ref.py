"""The Prometheus metrics reference from the server's own registry (server/observability/).

A ServerMetrics is built as the server builds it, its collectors fed with zeroed stand-ins
for the batcher, the explainer and the model, and every metric family it would expose is
listed with its type, labels and help text.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from docs.gen.settings_ref import cell

_SUFFIX = {"counter": "_total", "info": "_info"}


def _zeroed(cls):
    """An instance of a stats dataclass with every field 0 (the estimate set, to be shown)."""
    return cls(**{f.name: 0 for f in dataclasses.fields(cls)})


def families() -> list:
    from server.batching.batcher import BatcherStats
    from server.explanations.explain import ExplainerStats
    from server.observability.metrics import ServerMetrics

    metrics = ServerMetrics(128)
    model = SimpleNamespace(
        current=SimpleNamespace(name="imdb-lstm", version=1), versions_loaded=0, versions_failed=0
    )
    metrics.watch(lambda: _zeroed(BatcherStats), model, lambda: _zeroed(ExplainerStats))
    # Histograms and labelled metrics show their labels once they have a sample.
    metrics.call_started("unary", "/sentiment.v1.SentimentService/Predict")
    metrics.call_finished("unary", "/sentiment.v1.SentimentService/Predict", "OK", 0.001)
    return list(metrics.registry.collect())


def render() -> str:
    lines = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for family in sorted(families(), key=lambda f: (not f.name.startswith("sentiment"), f.name)):
        labels = sorted(
            {
                name
                for sample in family.samples
                for name in sample.labels
                if name not in ("le", "quantile")
            }
        )
        name = family.name + _SUFFIX.get(family.type, "")
        lines.append(
            f"| `{name}` | {family.type} | {', '.join(f'`{x}`' for x in labels) or '–'} "
            f"| {cell(family.documentation)} |"
        )
    return "\n".join(lines) + "\n"
