"""Adaptive quadrature (server/explanations/adaptive_quadrature.py) on plain numpy paths: a
steep jump that a fixed 64-node Gauss-Legendre rule misses, a smooth path done by the first 8-node
try, and a step no node can see."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from server.explanations.adaptive_quadrature import (
    FIRST_SCAN_POINTS,
    FIRST_TRY_NODES,
    MAX_ROUNDS,
    gauss_legendre,
    integrate,
)

WEIGHTS = np.array([0.3, -0.1, 0.2, 0.05, 0.15])  # each token's share of the jump
SLOPES = np.array([0.02, 0.01, -0.03, 0.0, 0.04])  # and of a smooth rise beside it
JUMP_AT, JUMP_WIDTH = 0.0428, 2e-5  # as on version 3's paths: within 1e-4 of the path


def sigmoid(x):
    return 0.5 * (1 + np.tanh(x / 2))  # no overflow far from the jump


class SteepPath:
    """score(a) = 0.1 + sum_t WEIGHTS_t * sigmoid((a - JUMP_AT) / JUMP_WIDTH) + SLOPES_t * a^2,
    with its exact per-token gradients; counts the calls made."""

    def __init__(self, step: bool = False):
        self.step = step  # a true step: the scores jump, the gradients never see it
        self.scans = self.gradient_calls = 0

    def _jump(self, a):
        return (a >= JUMP_AT).astype(float) if self.step else sigmoid((a - JUMP_AT) / JUMP_WIDTH)

    def scores(self, presences):
        self.scans += 1
        a = np.asarray(presences, dtype=np.float64)
        return 0.1 + WEIGHTS.sum() * self._jump(a) + SLOPES.sum() * a**2

    def gradients(self, presences):
        self.gradient_calls += 1
        a = np.asarray(presences, dtype=np.float64)[:, None]
        if self.step:
            jump = np.zeros_like(a)
        else:
            z = sigmoid((a - JUMP_AT) / JUMP_WIDTH)
            jump = z * (1 - z) / JUMP_WIDTH
        return WEIGHTS * jump + SLOPES * 2 * a, self.scores(presences)

    def exact(self):
        return WEIGHTS * (self._jump(np.array(1.0)) - self._jump(np.array(0.0))) + SLOPES


def tolerance(gap: float) -> float:
    return max(0.05 * abs(gap), 1e-4)


def test_fixed_gauss_legendre_misses_a_steep_jump_that_the_adaptive_rule_finds():
    path = SteepPath()
    nodes, weights = gauss_legendre(64)
    fixed = weights @ path.gradients(nodes)[0]
    gap = path.scores(np.array([1.0]))[0] - path.scores(np.array([0.0]))[0]
    assert abs(fixed.sum() - gap) > 0.5 * abs(gap)  # 64 nodes: most of the jump is lost

    path = SteepPath()
    scanned = []
    result = integrate(lambda p: scanned.append(p) or path.scores(p), path.gradients, tolerance)
    # The first scan leaves out both ends: the 8-node try scored them (63 rows fit a batch of 64).
    assert (
        len(scanned[0]) == FIRST_SCAN_POINTS - 2
        and 0.0 < scanned[0].min() <= scanned[0].max() < 1.0
    )
    assert abs(result.convergence_delta) <= tolerance(result.score - result.baseline_score)
    np.testing.assert_allclose(result.attributions, path.exact(), atol=2e-3)
    # The 8-node try over the whole path misses the jump too; then up to MAX_ROUNDS rounds.
    assert 2 <= result.gradient_calls <= 1 + MAX_ROUNDS
    assert path.gradient_calls == result.gradient_calls
    assert result.nodes == sum(segment.nodes for segment in result.segments)
    covered = [(s.start, s.end) for s in result.segments]
    assert covered[0][0] == 0.0 and covered[-1][1] == 1.0
    assert all(a[1] == b[0] for a, b in zip(covered[:-1], covered[1:], strict=True))


def test_a_smooth_path_takes_one_gradient_call_of_both_ends_and_8_nodes_and_no_scan():
    slopes = SLOPES + 0.1
    rows = []

    def scores(presences):
        return 0.2 + slopes.sum() * np.asarray(presences) ** 3

    def gradients(presences):
        rows.append(len(presences))
        return 3 * slopes * np.asarray(presences)[:, None] ** 2, scores(presences)

    result = integrate(scores, gradients, tolerance)
    assert (result.gradient_calls, result.scan_calls, rows) == (1, 0, [2 + FIRST_TRY_NODES])
    assert result.nodes == FIRST_TRY_NODES
    np.testing.assert_allclose(result.attributions, slopes, atol=1e-9)
    assert result.convergence_delta == pytest.approx(0.0, abs=1e-9)


def test_a_step_no_gradient_sees_is_reported_in_the_delta_not_rescaled_away():
    path = SteepPath(step=True)
    result = integrate(path.scores, path.gradients, tolerance)
    # The attributions hold the smooth rise only; the step is the convergence delta.
    np.testing.assert_allclose(result.attributions, SLOPES, atol=1e-6)
    assert result.convergence_delta == pytest.approx(-WEIGHTS.sum(), abs=1e-6)
    # The whole-path try, then one round: once the step is pinned between neighbouring
    # float32 presences, no more.
    assert result.gradient_calls == 2
    stepped = max(result.segments, key=lambda s: abs(s.error))
    assert stepped.start < JUMP_AT <= stepped.end
    assert stepped.end - stepped.start <= 8 * np.spacing(np.float32(JUMP_AT))


def test_a_set_stop_event_ends_after_the_first_gradient_call():
    path, stop = SteepPath(), threading.Event()
    stop.set()
    result = integrate(path.scores, path.gradients, tolerance, stop)
    assert result.gradient_calls == 1
    assert abs(result.convergence_delta) > tolerance(result.score - result.baseline_score)
