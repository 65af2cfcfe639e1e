"""PolicyService settings (THINKMESH_POLICY_*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from services.common.hot_reload import RELOADS, Reload, ReloadMode, resolve_reload
from services.common.server import ServerSettings
from services.common.settings import require
from services.common.vllm_args import VLLMSettings

BACKENDS = ("hf", "vllm", "openai")

# Bounds on a request's text, in characters because they are checked before anything is tokenized: a 10 MB prompt
# costs the tokenizer seconds, in the one thread every caller's batch waits for. A search prompt is a question and
# the steps of one path, a few thousand characters; a model's whole context (4,096 tokens by default) is well
# under 32 KiB of text. (Also the defaults of services.policy.core.Limits.)
MAX_PROMPT_CHARS = 32 * 1024
MAX_REQUEST_CHARS = 4 * 1024 * 1024
# Far above any useful sampling temperature (the search samples at 0.7-1.0): beyond it the distribution is noise.
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class PolicySettings(ServerSettings):
    SERVICE: ClassVar[str] = "policy"

    port: int = 50052
    backend: str = "hf"
    # A store version ("v3") to pin, or a model directory; empty = the store's current policy, hot-reloaded.
    model: str = ""
    device: str = "auto"
    default_n: int = 4
    max_n: int = 64
    max_prompts: int = 256
    default_max_new_tokens: int = 256
    # The most a request may ask for: the authors' per-step limit for real models (the rstar presets ask for it).
    max_new_tokens: int = 2048
    # Bounds on a request's text (see MAX_PROMPT_CHARS): one prompt (question and steps) and all of a request's
    # prompts, in characters. A prompt longer than the model's context but within the bound is answered as one with
    # no room (empty candidates), and one above it is refused: keep the bound above the context in characters.
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_request_chars: int = MAX_REQUEST_CHARS
    max_temperature: float = MAX_TEMPERATURE
    batch_window_ms: float = 5.0
    max_batch_sequences: int = 64
    # The hf backend keeps the keys and values of prompts it encoded, up to this many MiB, so a search node's
    # children encode only their new step (services/policy/prefix_cache.py); 0 turns it off. vLLM has its own
    # (prefix caching).
    prefix_cache_mb: int = 256
    # The hf backend decodes one-token steps of a Qwen2 model on the CPU without transformers' forward pass
    # (services/policy/lean.py: the same arithmetic, a fraction of the operator calls); false keeps the forward pass.
    lean_decoding: bool = True
    # How often the store's current pointer is checked for a new version.
    reload_interval_s: float = 5.0
    # How a new current version takes over (services/common/hot_reload.py): "swap" loads it beside the live model
    # (no gap; two models in memory), "replace" frees the live model first (NOT_SERVING while the new one loads;
    # the previous version is loaded back if it fails), "inplace" loads the new weights into the running vLLM
    # engine while new calls wait (one engine, no gap; a version of another architecture or tokenizer, or another
    # backend, is replaced instead), "off" keeps the version current at start (a Deployment rollout restarts the
    # pods instead). "auto": inplace for vllm, whose engine reserves most of the GPU
    # (THINKMESH_POLICY_VLLM_GPU_MEMORY_UTILIZATION), so a second one never fits; swap otherwise.
    reload: Reload = "auto"
    # openai backend: an OpenAI-compatible /v1 endpoint and its model name.
    openai_base_url: str = ""
    openai_model: str = ""
    openai_api_key_file: str = ""
    # Worked examples in the step format before each prompt (a teacher model for a first round: the authors
    # show 2); openai backend only, whose prompts are plain text.
    few_shot: int = 0
    # vllm backend: the engine's arguments (THINKMESH_POLICY_VLLM_*: a preset, single arguments, any other as JSON;
    # services/common/vllm_args.py).
    vllm: VLLMSettings = field(default_factory=VLLMSettings)

    @property
    def reload_mode(self) -> ReloadMode:
        return resolve_reload(self.reload, auto="inplace" if self.backend == "vllm" else "swap")

    def validate(self) -> None:
        super().validate()
        require(self.backend in BACKENDS, self, "backend", f"must be one of {', '.join(BACKENDS)}")
        require(self.reload in RELOADS, self, "reload", f"must be one of {', '.join(RELOADS)}")
        require(0 < self.default_n <= self.max_n, self, "default_n", "must be between 1 and max_n")
        require(
            0 < self.default_max_new_tokens <= self.max_new_tokens,
            self,
            "default_max_new_tokens",
            "must be between 1 and max_new_tokens",
        )
        require(self.max_prompt_chars > 0, self, "max_prompt_chars", "must be positive")
        require(
            self.max_request_chars >= self.max_prompt_chars,
            self,
            "max_request_chars",
            "must be at least max_prompt_chars",
        )
        require(0 < self.max_temperature < float("inf"), self, "max_temperature", "must be a positive number")
        require(self.batch_window_ms >= 0, self, "batch_window_ms", "must not be negative")
        require(self.prefix_cache_mb >= 0, self, "prefix_cache_mb", "must not be negative")
        if self.backend == "vllm":
            self.vllm.check(self)
        require(
            self.backend != "openai" or bool(self.openai_base_url),
            self,
            "openai_base_url",
            "the openai backend needs an endpoint URL",
        )
