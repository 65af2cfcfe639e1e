"""PPMService settings (THINKMESH_PPM_*)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.common.hot_reload import RELOADS, Reload, ReloadMode, resolve_reload
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
    # How a new current version takes over (services/common/hot_reload.py): "swap" loads it beside the live
    # model (no gap), "replace" frees the live model first (NOT_SERVING meanwhile), "off" keeps the version
    # current at start (a Deployment rollout restarts the pods instead); "auto" = swap.
    reload: Reload = "auto"

    @property
    def reload_mode(self) -> ReloadMode:
        return resolve_reload(self.reload, replace_by_default=False)

    def validate(self) -> None:
        super().validate()
        require(self.reload in RELOADS, self, "reload", f"must be one of {', '.join(RELOADS)}")
        require(self.max_items > 0, self, "max_items", "must be positive")
        require(self.max_batch_items > 0, self, "max_batch_items", "must be positive")
