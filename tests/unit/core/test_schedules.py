"""Entropy-coefficient schedules: every kind at the switch boundary, anneal endpoints, validation."""

from __future__ import annotations

import itertools
import math

import pytest

from visent.core.schedules import (
    DEFAULT_COEF_MAX,
    DEFAULT_COEF_MIN,
    DEFAULT_SWITCH,
    SCHEDULES,
    entropy_coef,
    entropy_stage,
    switch_step,
)

CMAX, CMIN = 0.02, 0.005  # distinct magnitudes so a swapped sign or swapped λ is visible


def coef(step, total, kind, switch=0.8):
    return entropy_coef(step, total, kind, CMAX, CMIN, switch)


@pytest.mark.parametrize(
    ("total", "switch", "boundary"),
    [
        (100, 0.8, 80),  # switch · total = 80: step 79 is stage 1 (exploration), step 80 stage 2
        (10, 0.7, 7),  # 0.7 · 10 = 7.000000000000001 in floats; still 7, not 8
        (7, 0.5, 4),  # 3.5 -> ceil 4: steps 0..3 before, 4..6 after
    ],
)
def test_switching_kinds_at_the_boundary(total, switch, boundary):
    assert switch_step(total, switch) == boundary
    b = boundary
    # two_stage: +λ_max strictly before switch · total, -λ_min from it on
    assert coef(b - 1, total, "two_stage", switch) == CMAX
    assert coef(b, total, "two_stage", switch) == -CMIN
    assert (
        coef(0, total, "two_stage", switch) == CMAX and coef(total - 1, total, "two_stage", switch) == -CMIN
    )
    # the reverse order mirrors it
    assert coef(b - 1, total, "min_then_max", switch) == -CMIN
    assert coef(b, total, "min_then_max", switch) == CMAX
    for kind in ("two_stage", "min_then_max"):
        assert entropy_stage(b - 1, total, kind, switch) == 0
        assert entropy_stage(b, total, kind, switch) == 1


@pytest.mark.parametrize("step", [0, 79, 80, 99, 150])
def test_constant_kinds_everywhere(step):
    assert coef(step, 100, "none") == 0.0
    assert coef(step, 100, "max") == CMAX
    assert coef(step, 100, "min") == -CMIN
    for kind in ("none", "max", "min", "linear", "cosine"):
        assert entropy_stage(step, 100, kind) == 0


def test_linear_and_cosine_hand_computed():
    # total 11 -> progress p = step / 10
    # linear: λ = .02 + (-.005 - .02) p -> p=0: .02, p=.5: .0075, p=.8: 0, p=1: -.005
    assert coef(0, 11, "linear") == pytest.approx(0.02)
    assert coef(5, 11, "linear") == pytest.approx(0.0075)
    assert coef(8, 11, "linear") == pytest.approx(0.0)
    assert coef(10, 11, "linear") == pytest.approx(-0.005)
    assert coef(20, 11, "linear") == pytest.approx(-0.005)  # past the end: stays at the final value
    # cosine: λ = -.005 + .025 · (1 + cos(π p)) / 2 -> p=0: .02; p=.5: -.005 + .0125 = .0075; p=1: -.005
    #         p=.2: (1 + cos(.2π))/2 = (1 + .809017)/2 = .904508 -> -.005 + .022613 = .017613
    assert coef(0, 11, "cosine") == pytest.approx(0.02)
    assert coef(5, 11, "cosine") == pytest.approx(0.0075)
    assert coef(2, 11, "cosine") == pytest.approx(0.017613, abs=1e-6)
    assert coef(10, 11, "cosine") == pytest.approx(-0.005)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_anneals_are_monotone_between_the_endpoints(kind):
    total = 100
    values = [coef(s, total, kind) for s in range(total)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] == pytest.approx(CMAX) and values[-1] == pytest.approx(-CMIN)


def test_anneals_around_switch_times_total():
    # total 100 -> p = step / 99. At steps 79 and 80 (switch · total - 1, switch · total):
    # linear: .02 - .025 · 79/99 = .0000505 (still raising entropy); .02 - .025 · 80/99 = -.000202
    assert coef(79, 100, "linear") == pytest.approx(5.0505e-5, abs=1e-9)
    assert coef(80, 100, "linear") == pytest.approx(-2.0202e-4, abs=1e-9)
    # cosine: -.005 + .0125 (1 + cos(π p)); cos(79π/99) = -.805270 -> -.0025659; cos(80π/99) = -.823677 -> -.0027960
    assert coef(79, 100, "cosine") == pytest.approx(-0.0025659, abs=1e-7)
    assert coef(80, 100, "cosine") == pytest.approx(-0.0027960, abs=1e-7)


def test_single_step_run():
    # total_steps = 1: step 0 is the only step; switch_step = ceil(.8) = 1 so two_stage never switches
    assert coef(0, 1, "two_stage") == CMAX
    assert coef(0, 1, "linear") == CMAX


def test_defaults_and_sign_convention():
    assert DEFAULT_SWITCH == 0.8
    assert DEFAULT_COEF_MAX > 0 and DEFAULT_COEF_MIN > 0
    # default kind is the paper's two_stage with the default magnitudes
    assert entropy_coef(0, 10) == DEFAULT_COEF_MAX
    assert entropy_coef(9, 10) == -DEFAULT_COEF_MIN


def test_every_kind_returns_a_float_between_the_extremes():
    for kind in SCHEDULES:
        for step in range(30):
            v = coef(step, 30, kind)
            assert isinstance(v, float) and -CMIN - 1e-12 <= v <= CMAX + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "two-stage"}, "valid: none, max, min, two_stage"),
        ({"total_steps": 0}, "total_steps must be an int >= 1"),
        ({"step": -1}, "step must be an int >= 0"),
        ({"switch": 1.0}, r"switch must be a fraction of training in \(0, 1\)"),
        ({"switch": 0.0}, "switch must be"),
        ({"coef_max": -0.1}, "coef_max must be a finite value >= 0"),
        ({"coef_min": math.nan}, "coef_min must be a finite value >= 0"),
    ],
)
def test_validation(kwargs, match):
    args = {
        "step": 0,
        "total_steps": 10,
        "kind": "two_stage",
        "coef_max": 0.01,
        "coef_min": 0.01,
        "switch": 0.8,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        entropy_coef(**args)


def test_stage_validation():
    with pytest.raises(ValueError, match="valid:"):
        entropy_stage(0, 10, "bogus", 0.8)
    with pytest.raises(ValueError, match="switch"):
        entropy_stage(0, 10, "two_stage", 1.5)
