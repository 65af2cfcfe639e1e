"""A vLLM engine's arguments, from a service's settings (the policy's, and the PPM's on its vllm backend): a preset
for a model size and GPU count, the settings a deployment names one by one, and any other engine argument passed
through as it is (no vLLM import here: the settings are read and checked where vLLM is not installed).

Each layer wins over the one before it:

    BASE                          prefix caching on (sibling nodes of a tree share their prefix), 0.85 of the GPU,
                                  4,096 tokens of context
    VLLM_PRESETS[vllm_preset]     a model size on a number of GPUs (below)
    vllm_<argument> settings      THINKMESH_POLICY_VLLM_TENSOR_PARALLEL_SIZE=2, ... (the `VLLMSettings` fields;
                                  THINKMESH_PPM_VLLM_* for the PPM)
    vllm_engine_args              THINKMESH_POLICY_VLLM_ENGINE_ARGS='{"max_num_partial_prefills": 2}': a JSON
                                  object of any other `AsyncEngineArgs` field

The presets size the engine for Qwen2.5-Math (1.5B: 12 attention heads, 2 KV heads; 7B: 28 heads, 4 KV heads) in
bf16 with 4,096 tokens of context: 1.5B fits one GPU many times over, so more GPUs are data-parallel copies (more
batches, the same latency); 7B (15 GB of weights) runs on one GPU of 40 GB or more, and is split by tensor
parallelism over 2 GPUs (half the weights each: more room for the KV cache, lower latency), then data-parallel
over pairs. `max_num_seqs` bounds the sequences scheduled at once: a search sends many short continuations, and
more of them fit where the KV cache has room.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from services.common.errors import ConfigError
from services.common.settings import env_name, require

BASE: dict[str, Any] = {"enable_prefix_caching": True, "gpu_memory_utilization": 0.85, "max_model_len": 4096}

VLLM_PRESETS: dict[str, dict[str, Any]] = {
    "1.5b-1gpu": {"dtype": "bfloat16", "max_num_seqs": 256},
    "1.5b-2gpu": {"dtype": "bfloat16", "max_num_seqs": 256, "data_parallel_size": 2},
    "1.5b-4gpu": {"dtype": "bfloat16", "max_num_seqs": 256, "data_parallel_size": 4},
    "7b-1gpu": {"dtype": "bfloat16", "max_num_seqs": 128, "gpu_memory_utilization": 0.9},
    "7b-2gpu": {"dtype": "bfloat16", "max_num_seqs": 256, "tensor_parallel_size": 2},
    "7b-4gpu": {"dtype": "bfloat16", "max_num_seqs": 256, "tensor_parallel_size": 2, "data_parallel_size": 2},
}

# The parallel sizes whose product is the GPUs one engine uses.
PARALLEL = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


@dataclass(frozen=True)
class VLLMSettings:
    """A vllm backend's settings (THINKMESH_<SERVICE>_VLLM_*); an unset one (empty) takes the preset's or vLLM's."""

    vllm_preset: str = ""
    vllm_gpu_memory_utilization: float | None = None
    vllm_max_model_len: int | None = None
    vllm_tensor_parallel_size: int | None = None
    vllm_pipeline_parallel_size: int | None = None
    vllm_data_parallel_size: int | None = None
    vllm_dtype: str | None = None  # auto, bfloat16, float16, float32
    vllm_quantization: str | None = None  # e.g. awq, gptq, fp8
    vllm_kv_cache_dtype: str | None = None  # auto, fp8
    vllm_max_num_seqs: int | None = None
    vllm_max_num_batched_tokens: int | None = None
    vllm_enable_chunked_prefill: bool | None = None
    vllm_enforce_eager: bool | None = None  # no CUDA graphs: a faster start, slower decoding
    vllm_swap_space: float | None = None  # GiB of CPU memory per GPU for preempted sequences
    vllm_engine_args: str = ""  # a JSON object of any other AsyncEngineArgs field

    def engine_args(self, service: str = "policy") -> dict[str, Any]:
        """Every engine argument but the model, layered as the module doc says; raises ConfigError naming the
        variable (of `service`'s settings) for a preset that does not exist or a pass-through that is not a JSON
        object."""
        if self.vllm_preset and self.vllm_preset not in VLLM_PRESETS:
            raise ConfigError(
                f"{env_name(service, 'vllm_preset')}={self.vllm_preset!r} must be one of {', '.join(VLLM_PRESETS)}"
            )
        args = {**BASE, **VLLM_PRESETS.get(self.vllm_preset, {})}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name not in ("vllm_preset", "vllm_engine_args") and value is not None:
                args[field.name.removeprefix("vllm_")] = value
        if self.vllm_engine_args.strip():
            variable = env_name(service, "vllm_engine_args")
            try:
                extra = json.loads(self.vllm_engine_args)
            except ValueError as exc:
                raise ConfigError(f"{variable} is not JSON: {exc}") from exc
            if not isinstance(extra, dict):
                raise ConfigError(f"{variable} must be a JSON object of engine arguments")
            if "model" in extra:
                raise ConfigError(f"{variable}: the model is {env_name(service, 'model')}'s (the store)")
            args.update(extra)
        return args

    def gpus(self, service: str = "policy") -> int:
        """The GPUs one engine uses: the product of its parallel sizes."""
        args = self.engine_args(service)
        count = 1
        for name in PARALLEL:
            count *= int(args.get(name) or 1)
        return count

    def check(self, owner: object) -> None:
        """For the owning settings' validate(): the layers combine (the preset exists, the JSON parses), and the
        numbers that vLLM would only refuse after minutes of loading are in range."""
        args = self.engine_args(str(getattr(owner, "SERVICE")))  # noqa: B009
        utilization = args.get("gpu_memory_utilization")
        require(
            utilization is None or 0 < float(utilization) <= 1,
            owner,
            "vllm_gpu_memory_utilization",
            "must be in (0, 1]",
        )
        require(int(args.get("max_model_len") or 1) > 0, owner, "vllm_max_model_len", "must be positive")
        for name in PARALLEL:
            size = args.get(name)
            require(size is None or int(size) >= 1, owner, f"vllm_{name}", "must be at least 1")


def build_engine_args(engine_args_class: type, model: str, args: dict[str, Any], service: str = "policy") -> Any:
    """`AsyncEngineArgs(model=model, **args)`, an unknown argument refused by name with the known ones listed."""
    known = {field.name for field in fields(engine_args_class)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"vLLM has no engine argument {', '.join(unknown)} ({env_name(service, 'vllm')}_*); this vLLM knows: "
            + ", ".join(sorted(known))
        )
    return engine_args_class(model=model, **args)
