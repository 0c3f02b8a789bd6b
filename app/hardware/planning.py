"""Pure memory decisions: does a model fit, what to evict first, which quantization would make it fit.

No I/O: callers pass the numbers from detect.py and estimate.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Least aggressive first: the first of these that fits is the one to suggest.
QUANTIZATION_ORDER: tuple[str | None, ...] = (None, "8bit", "4bit")

_HINTS = {
    "8bit": "8-bit quantization (quantize=q8_0 / --load-in-8bit)",
    "4bit": "4-bit quantization (quantize=q4_0 / --load-in-4bit)",
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fits(need: int, free: int) -> bool:
    return need <= free


def available_bytes(device_free: int, budget_bytes: int = 0, resident_bytes: int = 0) -> int:
    """Room for a new load: the device's free memory, capped by HUGLLAMA_MEMORY_BUDGET_BYTES (when set) minus
    what resident models already hold (the device figure already excludes them)."""
    if budget_bytes <= 0:
        return max(0, device_free)
    return max(0, min(device_free, budget_bytes - resident_bytes))


@dataclass(frozen=True, slots=True)
class FitReport:
    """Whether one model fits a memory pool, for `hugllama list` and /api/tags filtering.

    `suggestion` is the least aggressive quantization that fits when the requested one does not (None if
    the model fits as requested, or if nothing fits).
    """

    name: str
    need_bytes: int
    free_bytes: int
    fits: bool
    quantization: str | None = None
    suggestion: str | None = None

    @property
    def headroom_bytes(self) -> int:
        return self.free_bytes - self.need_bytes

    def message(self) -> str:
        if self.fits:
            return f"model '{self.name}' needs {human_bytes(self.need_bytes)}; {human_bytes(self.free_bytes)} is free"
        return insufficient_memory_message(self.name, self.need_bytes, self.free_bytes, self.suggestion)


def fit_report(
    name: str, estimates: Mapping[str | None, int], free: int, *, quantization: str | None = None
) -> FitReport:
    """FitReport for `name` loaded with `quantization`, given its estimated bytes per quantization."""
    need = estimates[quantization]
    ok = fits(need, free)
    suggestion = None
    if not ok:
        start = QUANTIZATION_ORDER.index(quantization) + 1 if quantization in QUANTIZATION_ORDER else 0
        more = {q: estimates[q] for q in QUANTIZATION_ORDER[start:] if q in estimates}
        suggestion = suggest_quantization(more, free)
    return FitReport(name, need, free, ok, quantization, suggestion)


def plan_load(need_bytes: int, free_bytes: int, idle: Sequence[tuple[str, int, float]]) -> tuple[list[str], bool]:
    """Which idle resident models (key, bytes, last_used) to unload, least recently used first, to fit a load.

    Returns ([], True) when it already fits, (keys, True) for the shortest LRU prefix that makes room, and
    ([], False) when even unloading every idle model would not be enough (evicting them would only hurt).
    """
    if fits(need_bytes, free_bytes):
        return [], True
    freed = free_bytes
    evict: list[str] = []
    for key, size, _ in sorted(idle, key=lambda item: (item[2], item[0])):
        evict.append(key)
        freed += size
        if fits(need_bytes, freed):
            return evict, True
    return [], False


def suggest_quantization(estimates: Mapping[str | None, int], free: int) -> str | None:
    """The least aggressive of None, "8bit", "4bit" whose estimate fits; None also when nothing fits.

    Check `fits(estimates[None], free)` first when the two None meanings must be told apart.
    """
    for q in QUANTIZATION_ORDER:
        if q in estimates and fits(estimates[q], free):
            return q
    return None


def insufficient_memory_message(name: str, need: int, free: int, suggestion: str | None) -> str:
    """The InsufficientMemory text: what is needed, what is free, and the quantization that would fit."""
    text = f"model '{name}' needs {human_bytes(need)} but {human_bytes(free)} is free"
    if suggestion in _HINTS:
        return f"{text}; it would fit with {_HINTS[suggestion]}"
    return f"{text}; unload other models or choose a smaller one"


def human_bytes(n: int | float) -> str:
    """Binary units, one decimal below 10 ("1.2 GiB", "512 MiB", "0 B")."""
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    if value < 10:
        text = f"{value:.1f}"
        if float(text) >= 10:  # 9.96 rounds to "10.0"
            text = f"{value:.0f}"
        return f"{sign}{text} {_UNITS[unit]}"
    if round(value) >= 1024 and unit < len(_UNITS) - 1:
        return f"{sign}1.0 {_UNITS[unit + 1]}"
    return f"{sign}{value:.0f} {_UNITS[unit]}"


# Batch slots when HUGLLAMA_NUM_PARALLEL is unset. Past ~64 rows a CPU step is compute-bound (no more tokens per
# second, only longer steps); on a GPU the KV share below is what binds first.
AUTO_SLOTS_MAX = 64
AUTO_KV_SHARE = 0.5


def batch_slots(requested: int | None, free_bytes: int, kv_bytes_per_token: int, num_ctx: int) -> int:
    """Sequences one model decodes together: `requested` when set, else as many full-context rows as half of the
    memory free after loading holds (a row only takes what its tokens use, so this is the worst case), between 1
    and AUTO_SLOTS_MAX. The KV budget (HUGLLAMA_KV_CACHE_BYTES) still bounds admissions under load."""
    if requested:
        return requested
    per_row = max(1, kv_bytes_per_token) * max(1, num_ctx)
    return max(1, min(AUTO_SLOTS_MAX, int(free_bytes * AUTO_KV_SHARE) // per_row))
