"""Requests the real-model tiers share: the question whose greedy answer on the embedded model is known, and one
function tool with its argument schema."""

from __future__ import annotations

from typing import Any

FRANCE: Any = [{"role": "user", "content": "What is the capital of France?"}]
PARIS = "The capital of France is Paris."  # SmolLM2-135M-Instruct's answer at temperature 0
CITY: Any = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": CITY},
}
