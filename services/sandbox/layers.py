"""The isolation layers a sandbox server can have, and the report of which ones are active.

The zygote finds out by trying each layer at start-up (in a child, exactly as a program would run), so the
report describes what programs actually get, not what was configured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import ConfigError

# In the order they are applied to a program's process.
LAYER_NAMES = ("process", "filesystem", "proc", "network", "rlimits", "uid", "environment", "landlock", "seccomp")


@dataclass(frozen=True)
class Layer:
    name: str
    active: bool
    detail: str


@dataclass(frozen=True)
class IsolationReport:
    layers: tuple[Layer, ...]

    def is_active(self, name: str) -> bool:
        return any(layer.name == name and layer.active for layer in self.layers)

    @property
    def active(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.active]

    @property
    def inactive(self) -> list[Layer]:
        return [layer for layer in self.layers if not layer.active]

    def summary(self) -> str:
        return "\n".join(
            f"{'active' if layer.active else 'INACTIVE':8} {layer.name:12} {layer.detail}" for layer in self.layers
        )

    def to_json(self) -> str:
        return json.dumps([vars(layer) for layer in self.layers])

    @classmethod
    def from_json(cls, text: str) -> IsolationReport:
        return cls(tuple(Layer(**item) for item in json.loads(text)))


def require_layers(report: IsolationReport, required: Iterable[str]) -> None:
    """Refuse to serve with less isolation than the operator asked for (THINKMESH_SANDBOX_REQUIRED_LAYERS)."""
    missing = [layer for layer in report.inactive if layer.name in set(required)]
    if missing:
        names = "; ".join(f"{layer.name} ({layer.detail})" for layer in missing)
        raise ConfigError(f"THINKMESH_SANDBOX_REQUIRED_LAYERS: not available here: {names}")
