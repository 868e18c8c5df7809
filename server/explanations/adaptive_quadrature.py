"""Adaptive composite Gauss-Legendre quadrature for integrated gradients along a path [0, 1].

The integrand is a vector (d score / d p_t for every token t at presence a) whose
sum over tokens has a known exact integral on every segment [a, b]: score(b) -
score(a), two forward passes. So each segment carries its own error, sum of its
attributions - (score(b) - score(a)), and the segments that carry the most are
the ones to redo. With a confident BiLSTM the score can jump within a
thousandth of the path (README, "Version 3 breaks completeness"), which a fixed
rule of 64 nodes misses. Here forward-only scans of the score (a fraction of a
gradient pass's cost) find where it moves, the path is cut there into segments
of 2 Gauss-Legendre nodes each, and the segments still off are scanned again,
narrower, and redone.

Some jumps are steps between neighbouring float32 presences (the BiLSTM
amplifies a change in the last bit of its input over hundreds of time steps):
no node can see them, so such a segment is not split again and its error stays
in the convergence delta. Attributions are never rescaled.

Latency, not rows, is the cost on a CPU (an LSTM pays per time step; a call of
30 rows costs little more than one of 10), so every scan and every gradient
round evaluates all of its presences in one batched call. Numpy only: the model
is reached through two callables, so tests integrate plain functions.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (presences [k]) -> scores [k]: forward passes only.
ScoresAt = Callable[[np.ndarray], np.ndarray]
# (presences [k]) -> (d score / d p_t at each presence [k, n], scores [k]).
GradientsAt = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# A smooth path is done in one gradient call of 10 rows: both ends and 8 nodes over [0, 1].
FIRST_TRY_NODES = 8
# Presences 0, 1/64, ..., 1; the first forward-only call scores the 63 inside (the first try
# scored both ends), which fits a compiled batch of 64.
FIRST_SCAN_POINTS = 65
ZOOM_POINTS = 31  # interior presences scanned in an interval: it narrows 32-fold
MAX_ZOOMS = 4  # intervals scanned per forward-only call
JUMP_RATIO = 3.0  # a jump moves the score this many times more than its neighbours do
MAX_SCANS_PER_ROUND = 4  # forward-only calls before a gradient call: 32^4 narrows 1e6-fold
MIN_SPLIT_ULPS = 8  # a segment this many float32 steps wide is not split again
NODES_PER_SEGMENT = 2  # exact for cubics: a segment holding no jump needs no more
# New segments per gradient call, about: 48 rows cost little more than 10, and with 16 the
# 230-word reviews needed 46 gradient calls and 107 scans where 24 needed 39 and 94.
MAX_SEGMENTS_PER_ROUND = 24
MAX_ROUNDS = 4  # gradient calls at most


@dataclass(frozen=True)
class Segment:
    """A piece [start, end] of the path, its scores at both ends, and its attributions."""

    start: float
    end: float
    start_score: float
    end_score: float
    attributions: np.ndarray  # [n]: the Gauss-Legendre sum over this segment's nodes
    nodes: int

    @property
    def error(self) -> float:
        """Sum of attributions minus the exact integral of their sum, score(end) - score(start)."""
        return math.fsum(self.attributions) - (self.end_score - self.start_score)


@dataclass(frozen=True)
class PathIntegral:
    """Attributions [n] from the segments [0, 1] was cut into, and what they cost."""

    attributions: np.ndarray
    score: float  # at presence 1: the review
    baseline_score: float  # at presence 0
    segments: tuple[Segment, ...]
    gradient_calls: int
    scan_calls: int

    @property
    def nodes(self) -> int:
        return sum(segment.nodes for segment in self.segments)

    @property
    def convergence_delta(self) -> float:
        return math.fsum(self.attributions) - (self.score - self.baseline_score)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`steps` nodes in (0, 1) and their weights (summing to 1) for integrating over [0, 1]."""
    if type(steps) is not int or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


class _Scores:
    """Every presence scored so far and its score, sorted by presence."""

    def __init__(self, presences: np.ndarray, scores: np.ndarray):
        self.presences = np.asarray(presences, dtype=np.float64)
        self.scores = np.asarray(scores, dtype=np.float64)

    def add(self, presences: np.ndarray, scores: np.ndarray) -> None:
        merged = np.concatenate([self.presences, presences])
        # Sorted, and a presence scanned twice kept once (a segment of width 0 is no use).
        self.presences, first = np.unique(merged, return_index=True)
        self.scores = np.concatenate([self.scores, np.asarray(scores, dtype=np.float64)])[first]

    def within(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        inside = (self.presences >= start) & (self.presences <= end)
        return self.presences[inside], self.scores[inside]


def integrate(
    scores_at: ScoresAt,
    gradients_at: GradientsAt,
    tolerance: Callable[[float], float],
    should_stop: threading.Event | None = None,
) -> PathIntegral:
    """Integrates the gradients over [0, 1] until the segments' errors add up to at most
    `tolerance(score(1) - score(0))`, MAX_ROUNDS gradient calls are spent, or `should_stop`
    is set. Attributions are never rescaled: what is left is the convergence delta.

    First FIRST_TRY_NODES Gauss-Legendre nodes over the whole path, in the call that also
    scores both ends: where the score moves smoothly that is complete, and the cheapest
    answer. Otherwise that call is set aside and the path is scanned and cut."""
    whole = _whole_path(gradients_at)
    if abs(whole.error) <= tolerance(whole.end_score - whole.start_score) or (
        should_stop is not None and should_stop.is_set()
    ):
        return PathIntegral(whole.attributions, whole.end_score, whole.start_score, (whole,), 1, 0)
    inside = np.linspace(0.0, 1.0, FIRST_SCAN_POINTS)[1:-1]
    baseline_score, score = whole.start_score, whole.end_score
    known = _Scores(
        np.concatenate([[0.0], inside, [1.0]]),
        np.concatenate([[baseline_score], scores_at(inside), [score]]),
    )
    allowed = tolerance(score - baseline_score)
    regions = [(0.0, 1.0)]  # the parts of the path still to be (re)integrated
    kept: list[Segment] = []
    gradient_calls, scan_calls = 0, 1
    while True:
        scan_calls += _zoom_in(scores_at, known, regions, allowed, first=not gradient_calls)
        pieces = max(1, MAX_SEGMENTS_PER_ROUND // len(regions))
        planned = [cut for a, b in regions for cut in _cut(*known.within(a, b), pieces)]
        segments = sorted(kept + _integrated(gradients_at, planned), key=lambda s: s.start)
        gradient_calls += 1
        if (
            math.fsum(abs(segment.error) for segment in segments) <= allowed
            or gradient_calls >= MAX_ROUNDS
            or (should_stop is not None and should_stop.is_set())
        ):
            break
        stuck = math.fsum(abs(segment.error) for segment in segments if not _splittable(segment))
        redo = _worst(segments, allowed)
        if stuck > allowed or not redo:  # steps between neighbouring float32 presences
            break
        kept = [segment for segment in segments if not any(segment is r for r in redo)]
        regions = [(segment.start, segment.end) for segment in redo]
    attributions = np.sum([segment.attributions for segment in segments], axis=0)
    return PathIntegral(
        attributions, score, baseline_score, tuple(segments), 1 + gradient_calls, scan_calls
    )


def _whole_path(gradients_at: GradientsAt) -> Segment:
    """[0, 1] as one segment of FIRST_TRY_NODES nodes, its ends scored in the same call."""
    nodes, weights = gauss_legendre(FIRST_TRY_NODES)
    gradients, scores = gradients_at(np.concatenate([[0.0, 1.0], nodes]))
    gradients = np.asarray(gradients, dtype=np.float64)
    attributions = weights @ gradients[2:]
    return Segment(0.0, 1.0, float(scores[0]), float(scores[1]), attributions, FIRST_TRY_NODES)


def _zoom_in(
    scores_at: ScoresAt, known: _Scores, regions: list, allowed: float, first: bool
) -> int:
    """Scans (forward only, one call each) where the score may jump; returns the calls made.
    In the first round, intervals that look like a jump; later, the regions to redo
    (else they could only be cut as before), then the steepest interval of each, down to
    neighbouring float32 presences: a step is narrow (1e-4 of the path and less)."""
    for zoom in range(MAX_SCANS_PER_ROUND):
        if first:
            scanned = _suspects(known, regions, allowed)
        else:
            scanned = regions if zoom == 0 else _steepest(known, regions, allowed)
        if not scanned:
            return zoom
        presences = np.concatenate([_interior(a, b, ZOOM_POINTS) for a, b in scanned])
        known.add(presences, scores_at(presences))
    return MAX_SCANS_PER_ROUND


def _suspects(known: _Scores, regions: list, allowed: float) -> list[tuple[float, float]]:
    """Scanned intervals inside `regions` where the score looks like it jumps: it moves by
    more than half the allowed error and JUMP_RATIO times as much as in either neighbouring
    interval; the MAX_ZOOMS largest. A smooth rise is left to the gradient round to judge."""
    moved = np.abs(np.diff(known.scores))
    neighbours = np.maximum(np.concatenate([[0.0], moved[:-1]]), np.concatenate([moved[1:], [0.0]]))
    starts, ends = known.presences[:-1], known.presences[1:]
    inside = np.zeros(len(moved), dtype=bool)
    for start, end in regions:
        inside |= (starts >= start) & (ends <= end)
    suspect = (
        inside
        & (moved > allowed / 2)
        & (moved > JUMP_RATIO * neighbours)
        & (ends - starts > MIN_SPLIT_ULPS * np.spacing(ends.astype(np.float32)))
    )
    ranked = sorted(np.flatnonzero(suspect), key=lambda i: moved[i], reverse=True)
    return [(starts[i], ends[i]) for i in ranked[:MAX_ZOOMS]]


def _steepest(known: _Scores, regions: list, allowed: float) -> list[tuple[float, float]]:
    """In each region, the scanned interval where the score moves the most, if by more than
    half the allowed error and it can still be split: zooming in on a region whose gradient
    round failed, down to where the step is."""
    found = []
    for start, end in regions:
        presences, scores = known.within(start, end)
        moved = np.abs(np.diff(scores))
        i = int(np.argmax(moved))
        wide = presences[i + 1] - presences[i] > MIN_SPLIT_ULPS * np.spacing(
            np.float32(presences[i + 1])
        )
        if moved[i] > allowed / 2 and wide:
            found.append((presences[i], presences[i + 1]))
    return found


def _interior(start: float, end: float, count: int) -> np.ndarray:
    return np.linspace(start, end, count + 2)[1:-1]


def _cut(presences: np.ndarray, scores: np.ndarray, pieces: int) -> list[tuple]:
    """[(start, end, start score, end score)]: about `pieces` segments between scanned
    presences, each holding about as much of the score's movement plus as much of the
    width as the others, so a jump gets segments of its own and flat stretches few. An
    interval heavier than a piece is a segment by itself, which can add a few (on 20
    reviews of 230 words, gradient calls held 34 rows at most for 32 planned, with 16 pieces)."""
    if len(presences) <= pieces + 1:
        chosen = np.arange(len(presences))
    else:
        moved = np.abs(np.diff(scores))
        widths = np.diff(presences)
        width = presences[-1] - presences[0]
        weight = moved + (moved.sum() / width if moved.sum() > 0 else 1.0) * widths
        cumulative = np.concatenate([[0.0], np.cumsum(weight)])
        targets = cumulative[-1] * np.arange(1, pieces) / pieces
        after = np.searchsorted(cumulative, targets)  # the target lies in (after - 1, after]
        nearer = np.where(
            targets - cumulative[after - 1] < cumulative[after] - targets, after - 1, after
        )
        heavy = np.flatnonzero(weight > cumulative[-1] / pieces)  # a segment of its own
        ends = [[0], nearer, heavy, heavy + 1, [len(presences) - 1]]
        chosen = np.unique(np.concatenate(ends))
    return [
        (presences[i], presences[j], scores[i], scores[j])
        for i, j in zip(chosen[:-1], chosen[1:], strict=True)
    ]


def _integrated(gradients_at: GradientsAt, planned: list[tuple]) -> list[Segment]:
    """The planned segments, with all of their nodes' gradients from one call."""
    nodes, weights = gauss_legendre(NODES_PER_SEGMENT)
    presences = np.concatenate([a + (b - a) * nodes for a, b, _, _ in planned])
    gradients, _ = gradients_at(presences)
    gradients = np.asarray(gradients, dtype=np.float64).reshape(len(planned), len(nodes), -1)
    return [
        Segment(a, b, sa, sb, (b - a) * (weights @ gradients[i]), len(nodes))
        for i, (a, b, sa, sb) in enumerate(planned)
    ]


def _splittable(segment: Segment) -> bool:
    """Whether float32 presences (what the model is given) can still tell points in the
    segment apart: a score that jumps between neighbouring float32 presences is a step
    that no node can see, and splitting it further only spends calls."""
    spacing = float(np.spacing(np.float32(max(abs(segment.start), abs(segment.end)))))
    return segment.end - segment.start > MIN_SPLIT_ULPS * spacing


def _worst(segments: list[Segment], allowed: float) -> list[Segment]:
    """The segments with the largest errors, until the others' add up to half the allowed
    error (the refined ones get the other half); one round's budget at most."""
    ranked = sorted(
        (segment for segment in segments if _splittable(segment)),
        key=lambda segment: abs(segment.error),
        reverse=True,
    )
    remaining = math.fsum(abs(segment.error) for segment in segments)
    redo = []
    for segment in ranked[:MAX_ZOOMS]:
        if remaining <= allowed / 2:
            break
        redo.append(segment)
        remaining -= abs(segment.error)
    return redo
