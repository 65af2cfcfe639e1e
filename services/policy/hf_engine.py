"""The `hf` backend: transformers models on CPU or GPU, with concurrent requests merged into one batch.

Requests that arrive within a short window (`batch_window_ms`) run as one padded batch (see
services.common.batching): on a CPU a batch of 16 sequences costs little more wall time than one, which is
where the throughput comes from. When every step marker is a single token (the embedded models) the batch runs
in our own sampling loop (services.policy.decoding: each prompt encoded once for all its candidates, finished
candidates leave the batch); otherwise in transformers' generate() with stop strings.

Each request carries its caller's `Liveness` (services.common.batching): a request whose caller went away or ran
out of time is not rendered, and its rows leave the batch at the next token (in generate(), they are marked
finished), so the thread is free for the next batch within a decoding step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from services.common.batching import MicroBatcher
from services.common.deadlines import Liveness
from services.common.devices import cpu_supports_bf16, pick_device
from services.common.errors import InvalidInput
from services.common.store import prompt_format_of
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.policy.decoding import Prefilled, prefill, prefill_cached, sample_from, wanted_rows
from services.policy.engine import (
    NO_ROOM,
    GeneratedStep,
    SamplingParams,
    StepPrompt,
    classify_end,
    cut_at_stop,
)
from services.policy.lean import LeanDecoder
from services.policy.prefix_cache import PrefixCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    prompts: Sequence[StepPrompt]
    params: SamplingParams
    liveness: Liveness = field(default_factory=Liveness)  # whether the caller still waits for the answer

    @property
    def sequences(self) -> int:
        return len(self.prompts) * self.params.n

    def batch_key(self) -> tuple[float, float, int]:
        # Requests share one generate() call only when they sample the same way. The seed is not part of the
        # key: a merged batch is seeded by its first request, so a seed makes a request reproducible when it
        # runs alone, and never costs the batching (one generate() call per seed would undo it).
        p = self.params
        return (p.temperature, p.top_p, p.max_new_tokens)


class _Prompt(NamedTuple):
    ids: tuple[int, ...]
    n: int
    owner: int  # the index, in its batch, of the request that asked for it


class _StopAbandonedRows(StoppingCriteria):
    """generate()'s counterpart of the sampling loop's check: a row whose caller stopped waiting is finished."""

    def __init__(self, owners: Sequence[int], alive: Callable[[int], bool], device: str) -> None:
        self._wanted = wanted_rows(len(owners), owners, alive, torch.device(device))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return ~self._wanted()  # type: ignore[return-value]


class HFEngine:
    def __init__(
        self,
        model_dir: Path,
        version: str,
        *,
        device: str = "auto",
        batch_window_ms: float = 5.0,
        max_batch_sequences: int = 64,
        prefix_cache_mb: int = 0,
        lean_decoding: bool = False,
    ) -> None:
        self._version = version
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The model's prompt format, as recorded in the store (services/math/prompting.py): the ids it was trained on.
        self.renderer = PromptRenderer(self.tokenizer, prompt_format_of(Path(model_dir)))
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        # On CPUs with bf16 units, bf16 autocast speeds up encoding prompts (see decoding.py); weights stay fp32.
        self._autocast = self.device == "cpu" and cpu_supports_bf16()
        self._stop_ids = self._single_token_stops()
        # One-token steps without transformers' per-call framework (services/policy/lean.py; None where the model
        # is not one it reproduces, e.g. on a GPU or in bf16).
        self.lean = LeanDecoder.of(self.model) if lean_decoding else None
        # Prompts already encoded, so a child's prompt encodes only its new step (our sampling loop only).
        self.prefix_cache = (
            PrefixCache(prefix_cache_mb << 20, boundary=self.renderer.newline_ids[-1])
            if prefix_cache_mb > 0 and self._stop_ids is not None
            else None
        )
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.batcher: MicroBatcher[_Request, list[list[GeneratedStep]]] = MicroBatcher(
            self._generate_group,
            size=lambda r: r.sequences,
            key=lambda r: r.batch_key(),
            liveness=lambda r: r.liveness,
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

    def render(self, prompt: StepPrompt) -> tuple[int, ...]:
        """The prompt's token ids, exactly as SFT and the PPM build them."""
        return tuple(self.renderer.ids(prompt.question, prompt.steps))

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        return await self.batcher.submit(_Request(prompts, params, Liveness.of_current_call()))

    def _generate_group(self, group: list[_Request]) -> list[list[list[GeneratedStep]]]:
        """Each request's candidates; a request whose caller no longer waits gets an empty (or partial) answer,
        which the batcher never hands out."""

        def alive(owner: int) -> bool:
            return group[owner].liveness.alive()

        # Rendering is the tokenizer's work: a request found dead here is never rendered.
        rendered = [
            [_Prompt(self.render(prompt), request.params.n, owner) for prompt in request.prompts]
            if alive(owner)
            else []
            for owner, request in enumerate(group)
        ]
        prompts = [prompt for request in rendered for prompt in request]
        seed = next((r.params.seed for r in group if r.params.seed is not None), None)
        sample = self._sample if self._stop_ids is not None else self._sample_with_generate
        # A prompt that fills the model's context gets no token: its candidates end at the length limit, empty,
        # and the search counts the node as unfinished — the other prompts of the batch are not failed for it.
        fits = [len(p.ids) < self.max_positions for p in prompts]
        fitting = [p for p, ok in zip(prompts, fits, strict=True) if ok]
        sampled = iter(sample(fitting, group[0].params, seed, alive) if fitting else [])
        candidates = iter([next(sampled) if ok else [NO_ROOM] * p.n for p, ok in zip(prompts, fits, strict=True)])
        # Back from the flat prompt list to request → prompt → n candidates.
        return [[next(candidates) for _ in request] for request in rendered]

    def _encode(self, prompts: list[tuple[int, ...]], max_new_tokens: int) -> tuple[dict[str, torch.Tensor], int]:
        encoded = self.tokenizer.pad({"input_ids": [list(ids) for ids in prompts]}, padding=True, return_tensors="pt")
        budget = self._budget(encoded["input_ids"].shape[1], max_new_tokens)
        return {name: tensor.to(self.device) for name, tensor in encoded.items()}, budget

    def _budget(self, prompt_length: int, max_new_tokens: int) -> int:
        """New tokens the longest prompt leaves room for in the model's context."""
        budget = min(max_new_tokens, self.max_positions - prompt_length)
        if budget <= 0:
            raise InvalidInput(
                f"prompt is {prompt_length} tokens; the model's context is {self.max_positions}: no room to generate"
            )
        return budget

    def _sample(
        self, prompts: list[_Prompt], params: SamplingParams, seed: int | None, alive: Callable[[int], bool]
    ) -> list[list[GeneratedStep]]:
        """Our own loop (services.policy.decoding): each distinct prompt encoded once, finished rows dropped, and
        the rows of a request whose caller stopped waiting too."""
        asking: dict[tuple[int, ...], list[int]] = {}  # each distinct prompt → the indices of the prompts that are it
        for index, prompt in enumerate(prompts):
            asking.setdefault(prompt.ids, []).append(index)
        counts = [sum(prompts[index].n for index in indices) for indices in asking.values()]
        # A distinct prompt's rows go to the prompts that asked for it, in order (see the hand-out below).
        owners = [
            prompts[index].owner for indices in asking.values() for index in indices for _ in range(prompts[index].n)
        ]
        distinct = list(asking)
        budget = self._budget(max(len(ids) for ids in distinct), params.max_new_tokens)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        device = torch.device(self.device)
        cache = self.prefix_cache

        def encode() -> Prefilled:
            if cache is not None:
                pad = int(self.tokenizer.pad_token_id)
                return prefill_cached(
                    self.model, distinct, cache, pad_id=pad, device=device, bf16_on_cpu=self._autocast
                )
            encoded, _ = self._encode(distinct, params.max_new_tokens)
            return prefill(self.model, encoded["input_ids"], encoded["attention_mask"], self._autocast)

        with torch.inference_mode():
            sampled = sample_from(
                self.model,
                encode,
                counts=counts,
                max_new_tokens=budget,
                stop_ids=self._stop_ids or [],
                temperature=params.temperature,
                top_p=params.top_p,
                generator=generator,
                owners=owners,
                alive=alive,
                device=device,
                lean=self.lean,
            )
        # A distinct prompt's rows are consecutive: hand them out, n at a time, to the prompts that asked.
        rows = iter(sampled)
        candidates: list[list[GeneratedStep]] = [[] for _ in prompts]
        for indices in asking.values():
            for index in indices:
                candidates[index] = [self._to_step(s.token_ids, s.logprob) for s in islice(rows, prompts[index].n)]
        return candidates

    def _sample_with_generate(
        self, prompts: list[_Prompt], params: SamplingParams, seed: int | None, alive: Callable[[int], bool]
    ) -> list[list[GeneratedStep]]:
        """transformers' generate() with stop strings: for tokenizers whose step markers span several tokens."""
        rows_in = [p.ids for p in prompts for _ in range(p.n)]
        abandoned = _StopAbandonedRows([p.owner for p in prompts for _ in range(p.n)], alive, self.device)
        encoded, budget = self._encode(rows_in, params.max_new_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._autocast):
            output = self.model.generate(
                **encoded,
                max_new_tokens=budget,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=True,
                stop_strings=list(stepfmt.STOP_STRINGS),
                tokenizer=self.tokenizer,
                stopping_criteria=StoppingCriteriaList([abandoned]),
                **sampling,
            )
        prompt_length = encoded["input_ids"].shape[1]
        scores = self.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        steps = []
        for row in range(len(rows_in)):
            ids = output.sequences[row, prompt_length:].tolist()
            if self.tokenizer.pad_token_id in ids:  # finished early in the batch: the rest is padding
                ids = ids[: ids.index(self.tokenizer.pad_token_id)]
            steps.append(self._to_step(ids, float(scores[row, : len(ids)].float().sum())))
        rows = iter(steps)
        return [[next(rows) for _ in range(p.n)] for p in prompts]

    def _to_step(self, ids: list[int], logprob: float) -> GeneratedStep:
        text = str(self.tokenizer.decode(ids, skip_special_tokens=False))
        text, by_marker = cut_at_stop(text)
        return GeneratedStep(text=text, end=classify_end(text, by_marker), num_tokens=len(ids), logprob=logprob)

    async def close(self) -> None:
        await self.batcher.close()
