"""The `hf` backend: transformers generate() on CPU or GPU, with concurrent requests merged into one batch.

Requests that arrive within a short window (`batch_window_ms`) run as one padded generate() call (see
services.common.batching): on a CPU a batch of 16 sequences costs little more wall time than one, which is
where the throughput comes from. Markers that are single tokens stop generation exactly (the tiny models);
otherwise transformers' stop strings do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common import stepfmt
from services.common.batching import MicroBatcher
from services.common.errors import InvalidInput
from services.policy.engine import GeneratedStep, SamplingParams, StepPrompt, classify_end, cut_at_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    prompts: Sequence[StepPrompt]
    params: SamplingParams

    @property
    def sequences(self) -> int:
        return len(self.prompts) * self.params.n

    def batch_key(self) -> tuple[float, float, int]:
        # Requests share one generate() call only when they sample the same way. The seed is not part of the
        # key: a merged batch is seeded by its first request, so a seed makes a request reproducible when it
        # runs alone, and never costs the batching (one generate() call per seed would undo it).
        p = self.params
        return (p.temperature, p.top_p, p.max_new_tokens)


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class HFEngine:
    def __init__(
        self,
        model_dir: Path,
        version: str,
        *,
        device: str = "auto",
        batch_window_ms: float = 5.0,
        max_batch_sequences: int = 64,
    ) -> None:
        self._version = version
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        # On CPUs with bf16 units autocast is ≈10% faster; weights stay fp32 so numerics stay stable.
        self._autocast = self.device == "cpu" and cpu_supports_bf16()
        self._stop_ids = self._single_token_stops()
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.batcher: MicroBatcher[_Request, list[list[GeneratedStep]]] = MicroBatcher(
            self._generate_group,
            size=lambda r: r.sequences,
            key=lambda r: r.batch_key(),
            window_s=batch_window_ms / 1000,
            max_batch=max_batch_sequences,
            name="hf-generate",
        )

    @property
    def version(self) -> str:
        return self._version

    def _single_token_stops(self) -> list[int] | None:
        """Marker token ids when every stop marker is one token (the tiny models); else None (use stop strings)."""
        ids = []
        for marker in stepfmt.STOP_STRINGS:
            encoded = self.tokenizer.encode(marker, add_special_tokens=False)
            if len(encoded) != 1:
                return None
            ids.append(encoded[0])
        return ids

    def render(self, prompt: StepPrompt) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return stepfmt.render_chat_prompt(prompt.question, list(prompt.steps), self.tokenizer)
        return stepfmt.render_prompt(prompt.question, list(prompt.steps))

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        return await self.batcher.submit(_Request(prompts, params))

    def _generate_group(self, group: list[_Request]) -> list[list[list[GeneratedStep]]]:
        params = group[0].params
        texts = [
            self.render(prompt) for request in group for prompt in request.prompts for _ in range(request.params.n)
        ]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_length = encoded["input_ids"].shape[1]
        budget = min(params.max_new_tokens, self.max_positions - prompt_length)
        if budget <= 0:
            raise InvalidInput(
                f"prompt is {prompt_length} tokens; the model's context is {self.max_positions}: no room to generate"
            )
        seed = next((r.params.seed for r in group if r.params.seed is not None), None)
        if seed is not None:
            torch.manual_seed(seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        stopping: dict[str, Any] = (
            {"eos_token_id": self._stop_ids}
            if self._stop_ids is not None
            else {"stop_strings": list(stepfmt.STOP_STRINGS), "tokenizer": self.tokenizer}
        )
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._autocast):
            output = self.model.generate(
                input_ids=encoded["input_ids"].to(self.device),
                attention_mask=encoded["attention_mask"].to(self.device),
                max_new_tokens=budget,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=True,
                **sampling,
                **stopping,
            )
        generated = output.sequences[:, prompt_length:]
        scores = self.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        steps = [self._to_step(generated[row], scores[row]) for row in range(generated.shape[0])]
        # Split the flat rows back into request → prompt → n candidates.
        results: list[list[list[GeneratedStep]]] = []
        cursor = 0
        for request in group:
            per_prompt = []
            for _ in request.prompts:
                per_prompt.append(steps[cursor : cursor + request.params.n])
                cursor += request.params.n
            results.append(per_prompt)
        return results

    def _to_step(self, tokens: torch.Tensor, scores: torch.Tensor) -> GeneratedStep:
        ids = tokens.tolist()
        pad = self.tokenizer.pad_token_id
        stops = set(self._stop_ids or [])
        length = len(ids)
        for index, token in enumerate(ids):
            if token in stops:
                length = index + 1
                break
            if token == pad:  # finished early in the batch: the rest is padding
                length = index
                break
        text = str(self.tokenizer.decode(ids[:length], skip_special_tokens=False))
        text, by_marker = cut_at_stop(text)
        logprob = float(scores[:length].float().sum()) if length else 0.0
        return GeneratedStep(text=text, end=classify_end(text, by_marker), num_tokens=length, logprob=logprob)

    async def close(self) -> None:
        await self.batcher.close()
