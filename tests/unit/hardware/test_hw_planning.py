from __future__ import annotations

import pytest

from app.hardware.planning import (
    FitReport,
    available_bytes,
    fit_report,
    fits,
    human_bytes,
    insufficient_memory_message,
    plan_load,
    suggest_quantization,
)

GIB = 1 << 30
MIB = 1 << 20


@pytest.mark.parametrize(("need", "free", "ok"), [(0, 0, True), (10, 10, True), (11, 10, False), (1, 0, False)])
def test_fits(need: int, free: int, ok: bool) -> None:
    assert fits(need, free) is ok


@pytest.mark.parametrize(
    ("free", "budget", "resident", "expected"),
    [(100, 0, 50, 100), (100, 120, 50, 70), (100, 500, 50, 100), (100, 40, 50, 0), (-5, 0, 0, 0)],
)
def test_available_bytes(free: int, budget: int, resident: int, expected: int) -> None:
    assert available_bytes(free, budget, resident) == expected


IDLE = [("a", 300, 30.0), ("b", 200, 10.0), ("c", 500, 20.0)]  # LRU order: b, c, a


@pytest.mark.parametrize(
    ("need", "free", "idle", "expected"),
    [
        (100, 100, IDLE, ([], True)),  # already fits: evict nothing
        (250, 100, IDLE, (["b"], True)),
        (400, 100, IDLE, (["b", "c"], True)),  # LRU prefix, not the best-fitting single model
        (1100, 100, IDLE, (["b", "c", "a"], True)),
        (1101, 100, IDLE, ([], False)),  # even evicting everything is not enough
        (100, 0, [], ([], False)),
        (5, 0, [("x", 5, 1.0), ("y", 5, 1.0)], (["x"], True)),  # ties broken by key, deterministically
    ],
)
def test_plan_load(need: int, free: int, idle: list[tuple[str, int, float]], expected: tuple[list[str], bool]) -> None:
    assert plan_load(need, free, idle) == expected


EST: dict[str | None, int] = {None: 1000, "8bit": 500, "4bit": 300}


@pytest.mark.parametrize(
    ("free", "expected"),
    [(2000, None), (1000, None), (999, "8bit"), (500, "8bit"), (499, "4bit"), (300, "4bit"), (299, None)],
)
def test_suggest_quantization(free: int, expected: str | None) -> None:
    assert suggest_quantization(EST, free) == expected


def test_suggest_skips_missing_estimates() -> None:
    assert suggest_quantization({None: 1000, "4bit": 300}, 600) == "4bit"


def test_fit_report() -> None:
    ok = fit_report("m", EST, 2000)
    assert ok == FitReport("m", 1000, 2000, True, None, None)
    assert ok.headroom_bytes == 1000
    tight = fit_report("m", EST, 400)
    assert (tight.fits, tight.suggestion) == (False, "4bit")
    assert "4-bit" in tight.message()
    # Already 8-bit and still too big: only more aggressive options are suggested.
    assert fit_report("m", EST, 400, quantization="8bit").suggestion == "4bit"
    assert fit_report("m", EST, 100, quantization="8bit").suggestion is None


@pytest.mark.parametrize(
    ("suggestion", "fragment"),
    [
        ("4bit", "it would fit with 4-bit quantization (quantize=q4_0 / --load-in-4bit)"),
        ("8bit", "it would fit with 8-bit quantization (quantize=q8_0 / --load-in-8bit)"),
        (None, "unload other models or choose a smaller one"),
    ],
)
def test_insufficient_memory_message(suggestion: str | None, fragment: str) -> None:
    msg = insufficient_memory_message("x", int(1.2 * GIB), GIB // 2, suggestion)
    assert msg.startswith("model 'x' needs 1.2 GiB but 512 MiB is free; ")
    assert msg.endswith(fragment)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (512 * MIB, "512 MiB"),
        (int(1.2 * GIB), "1.2 GiB"),
        (int(9.99 * GIB), "10 GiB"),
        (1023.9 * MIB, "1.0 GiB"),
        (24 * GIB, "24 GiB"),
        (3 * (1 << 40), "3.0 TiB"),
        (-2 * MIB, "-2.0 MiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
