"""The faithfulness measure (bench/explain_faithfulness.py) on a small sample, tiny model."""

from __future__ import annotations

from bench.explain_faithfulness import measure, summary, without_spans
from tests.conftest import _made_up_reviews


def test_without_spans_keeps_neighbours_apart():
    text = "well-made, but dull!"
    assert without_spans(text, [(5, 9), (15, 19)]) == "well- , but  !"
    assert without_spans(text, []) == text


def test_the_measure_on_a_small_sample(serving_model):
    texts, _ = _made_up_reviews(24)
    texts = [f"{text}. The film, the plot and the scene." for text in texts]  # room for 10%
    results = measure(serving_model, texts, seed=1, say=lambda _: None)
    report = summary(results)
    assert report["reviews"] == 24
    assert report["completeness"]["within_tolerance"] == 1.0
    comprehensiveness = report["comprehensiveness"]
    # The tiny model leans on a few sentiment words: deleting the top ones must matter more.
    assert comprehensiveness["mean_top_moved"] > comprehensiveness["mean_random_moved"]
    assert comprehensiveness["top_beats_random"] >= 0.75
    assert all(r.deleted == max(1, round(0.1 * r.words_seen)) for r in results)
    assert report["explain_ms"]["p50_all"] > 0
