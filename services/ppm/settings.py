"""PPMService settings (THINKMESH_PPM_*)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.common.server import ServerSettings
from services.common.settings import require


@dataclass(frozen=True)
class PPMSettings(ServerSettings):
    SERVICE: ClassVar[str] = "ppm"

    port: int = 50053
    # A store version ("v3") to pin, or a model directory; empty = the store's current PPM, hot-reloaded.
    model: str = ""
    device: str = "auto"
    max_items: int = 512
    max_steps_per_item: int = 64
    batch_window_ms: float = 5.0
    max_batch_items: int = 32
    reload_interval_s: float = 5.0

    def validate(self) -> None:
        super().validate()
        require(self.max_items > 0, self, "max_items", "must be positive")
        require(self.max_batch_items > 0, self, "max_batch_items", "must be positive")
