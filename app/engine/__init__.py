"""Generation: the engine interface, its types, and the transformers implementation (imported lazily)."""

from app.engine.base import Engine
from app.engine.types import Chunk, FinishReason, GenerationRequest, SamplingParams

__all__ = ["Chunk", "Engine", "FinishReason", "GenerationRequest", "SamplingParams"]
