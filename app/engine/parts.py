"""The parts the transformers engine, its embedder and its model admin share, built once per service.

Each part has one owner of its state: the manager (residents, loads), admission (queue places and gauges), the
catalog (names), and `model_configs` (default options of plain models set through PUT /api/v1/models/config;
aliases persist theirs in the catalog). The three objects hold the same parts instead of sharing private state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.engine.admission import Admission
from app.engine.manager import ModelManager
from app.metrics import Metrics
from app.registry.catalog_base import Catalog
from app.settings import Settings


@dataclass
class EngineParts:
    settings: Settings
    catalog: Catalog
    metrics: Metrics
    manager: ModelManager
    admission: Admission
    model_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics) -> EngineParts:
        return cls(settings, catalog, metrics, ModelManager(settings, metrics), Admission(settings.max_queue, metrics))
