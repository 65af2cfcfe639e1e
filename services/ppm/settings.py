"""PPMService settings (THINKMESH_PPM_*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from services.common.hot_reload import RELOADS, Reload, ReloadMode, resolve_reload
from services.common.server import ServerSettings
from services.common.settings import require
from services.common.vllm_args import VLLMSettings

# Bounds on a request's text, in characters because they are checked before anything is tokenized: a 10 MB item
# costs the tokenizer seconds, in the one thread every caller's micro-batch waits for. An item is a question and
# the steps of one search path, a few thousand characters; a model's whole context (4,096 tokens by default) is
# well under 32 KiB of text. (Also the defaults of services.ppm.core.PPMCore.)
MAX_ITEM_CHARS = 32 * 1024
MAX_REQUEST_CHARS = 4 * 1024 * 1024
# hf: transformers in this process (services/ppm/scorer.py); vllm: vLLM's pooling runner (services/ppm/vllm_scorer.py).
BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class PPMSettings(ServerSettings):
    SERVICE: ClassVar[str] = "ppm"

    port: int = 50053
    backend: str = "hf"
    # A store version ("v3") to pin, or a model directory; empty = the store's current PPM, hot-reloaded.
    model: str = ""
    device: str = "auto"
    max_items: int = 512
    max_steps_per_item: int = 64
    # Bounds on a request's text (see MAX_ITEM_CHARS): one item (question and steps) and all of a request's items,
    # in characters. An item longer than the model reads but within the bound scores -1 at every step, and one above
    # it is refused: keep the bound above the model's context in characters.
    max_item_chars: int = MAX_ITEM_CHARS
    max_request_chars: int = MAX_REQUEST_CHARS
    batch_window_ms: float = 5.0
    max_batch_items: int = 32
    reload_interval_s: float = 5.0
    # How a new current version takes over (services/common/hot_reload.py): "swap" loads it beside the live
    # model (no gap), "replace" frees the live model first (NOT_SERVING meanwhile), "off" keeps the version
    # current at start (a Deployment rollout restarts the pods instead); "inplace" (the policy's vLLM engine's
    # weight reload) works as replace here; "auto" = swap, and replace on the vllm backend, whose engine reserves
    # its share of the GPU (THINKMESH_PPM_VLLM_GPU_MEMORY_UTILIZATION), so a second one does not fit beside it.
    reload: Reload = "auto"
    # vllm backend: the engine's arguments (THINKMESH_PPM_VLLM_*: a preset, single arguments, any other as JSON;
    # services/common/vllm_args.py, the policy's settings group). Prefix caching is off whatever they say: the
    # pooling runner reads every token's hidden state.
    vllm: VLLMSettings = field(default_factory=VLLMSettings)

    @property
    def reload_mode(self) -> ReloadMode:
        return resolve_reload(self.reload, auto="replace" if self.backend == "vllm" else "swap")

    def validate(self) -> None:
        super().validate()
        require(self.backend in BACKENDS, self, "backend", f"must be one of {', '.join(BACKENDS)}")
        if self.backend == "vllm":
            self.vllm.check(self)
        require(self.reload in RELOADS, self, "reload", f"must be one of {', '.join(RELOADS)}")
        require(self.max_items > 0, self, "max_items", "must be positive")
        require(self.max_item_chars > 0, self, "max_item_chars", "must be positive")
        require(
            self.max_request_chars >= self.max_item_chars, self, "max_request_chars", "must be at least max_item_chars"
        )
        require(self.max_batch_items > 0, self, "max_batch_items", "must be positive")
