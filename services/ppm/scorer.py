"""Step scoring in domain terms, and the transformers-based scorer.

One forward pass scores every step of an item: the input is the prompt followed by each step, tokenised piece
by piece so the position of each step's last token is exact, and the value head is read there. Concurrent
requests are merged into one padded batch (services.common.batching), in which items that differ only in their
last step (a search node's new children) share one row (services.ppm.packing).

A request's items go through the batcher as micro-batches of at most `max_batch` items, each carrying its caller's
`Liveness`: the items of a caller who went away or ran out of time are not encoded nor scored, so an abandoned
request costs at most the micro-batch in progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoTokenizer

from services.common.batching import MicroBatcher
from services.common.deadlines import Liveness
from services.common.devices import cpu_supports_bf16, pick_device
from services.common.errors import InvalidInput
from services.common.store import prompt_format_of
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.ppm.model import ProcessRewardModel
from services.ppm.packing import PackedRow, pack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreItem:
    question: str
    steps: tuple[str, ...]


class StepScorer(Protocol):
    """One score in [-1, 1] per step of each item."""

    @property
    def version(self) -> str: ...

    async def score(self, items: Sequence[ScoreItem]) -> list[list[float]]: ...

    async def close(self) -> None: ...


def encode_step(renderer: PromptRenderer, step: str) -> list[int]:
    """A step's token ids, exactly as they follow the prompt and earlier steps; an empty step is refused."""
    piece = renderer.step_ids(step)
    if not piece:
        raise InvalidInput("a step is empty: every step needs text")
    return piece


class ItemTooLong(InvalidInput):
    """An item longer than the PPM reads (a caller's bad input; training leaves such an example out)."""


def require_fits(length: int, max_length: int) -> None:
    if length > max_length:
        raise ItemTooLong(f"item is {length} tokens; the PPM reads at most {max_length}")


@dataclass(frozen=True)
class EncodedItem:
    ids: list[int]  # prompt + steps, each step followed by the newline that separates it from the next
    positions: list[int]  # the index of each step's last token (its end marker), where its score is read
    counted: list[bool]  # per token: the policy wrote it (its steps, not the prompt, newlines or <output> blocks)


@dataclass(frozen=True)
class PackableItem:
    """An item as its prefix (every step but the last) and its last step: items that differ only in their last
    step (a node's new children) can share the prefix in one row."""

    prefix: EncodedItem
    last: list[int]
    last_counted: bool


def encode_item(renderer: PromptRenderer, item: ScoreItem, max_length: int) -> EncodedItem:
    """The policy's prompt for the item (`PromptRenderer.ids`), with where each step's score is read."""
    ids = renderer.head_ids(item.question)
    counted = [False] * len(ids)
    newline = renderer.newline_ids
    positions = []
    for step in item.steps:
        piece = encode_step(renderer, step)
        ids.extend(piece)
        counted.extend([stepfmt.written_by_policy(step)] * len(piece))
        positions.append(len(ids) - 1)  # the step's last token: its end marker
        ids.extend(newline)  # steps are separated exactly as the policy saw them
        counted.extend([False] * len(newline))
    require_fits(len(ids), max_length)
    return EncodedItem(ids, positions, counted)


def encode_packable(renderer: PromptRenderer, item: ScoreItem, max_length: int) -> PackableItem:
    """prefix + last step is exactly `encode_item`'s sequence (without the final newline)."""
    if not item.steps:
        raise InvalidInput("an item has no steps: there is nothing to score")
    prefix = encode_item(renderer, ScoreItem(item.question, item.steps[:-1]), max_length)
    last = encode_step(renderer, item.steps[-1])
    require_fits(len(prefix.ids) + len(last), max_length)
    return PackableItem(prefix, last, stepfmt.written_by_policy(item.steps[-1]))


def score_packed(
    model: ProcessRewardModel,
    encoded: Sequence[PackableItem],
    pad_id: int,
    *,
    device: str = "cpu",
    bf16_on_cpu: bool = False,
) -> list[list[float]]:
    """Each item's step scores: items with the same prefix (a node's new children) share one row
    (services.ppm.packing)."""
    row_of: dict[tuple[int, ...], int] = {}
    rows: list[PackedRow] = []
    placement = []  # per item: its row and its continuation's index there
    for item in encoded:
        key = tuple(item.prefix.ids)
        if key not in row_of:
            row_of[key] = len(rows)
            rows.append(PackedRow(item.prefix.ids, [], prefix_counted=item.prefix.counted))
        row = rows[row_of[key]]
        placement.append((row_of[key], len(row.continuations)))
        row.continuations.append(item.last)
        row.continuations_counted.append(item.last_counted)
    packed = pack(rows, pad_id)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_on_cpu):
        per_token = model(
            packed.input_ids.to(device),
            packed.attention_mask.to(device),
            packed.position_ids.to(device),
            packed.counted.to(device),
        ).cpu()
    return [
        [float(per_token[row, p]) for p in item.prefix.positions] + [float(per_token[row, packed.ends[row][index]])]
        for item, (row, index) in zip(encoded, placement, strict=True)
    ]


@dataclass(frozen=True)
class _Job:
    """One item to score, and whether the caller of its request still waits (shared by the request's items)."""

    item: ScoreItem
    liveness: Liveness


class HFScorer:
    def __init__(
        self, model_dir: Path, version: str, *, device: str = "auto", batch_window_ms: float = 5.0, max_batch: int = 32
    ) -> None:
        self._version = version
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # The prompt format of the policy this PPM scores for, recorded with the model (services/common/store.py).
        self.renderer = PromptRenderer(self.tokenizer, prompt_format_of(Path(model_dir)))
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = ProcessRewardModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self._autocast = self.device == "cpu" and cpu_supports_bf16()
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 4096))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        self.batcher: MicroBatcher[_Job, list[float] | InvalidInput] = MicroBatcher(
            self._score_jobs,
            size=lambda _: 1,
            liveness=lambda job: job.liveness,
            window_s=batch_window_ms / 1000,
            max_batch=max_batch,
            name="ppm",
        )

    @property
    def version(self) -> str:
        return self._version

    async def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        liveness = Liveness.of_current_call()
        # Each item is a batch element, so items of concurrent requests share forward passes.
        try:
            results = await asyncio.gather(*(self.batcher.submit(_Job(item, liveness)) for item in items))
        except BaseException:
            liveness.cancel()  # the request has failed or was cancelled: its items still queued need not run
            raise
        for result in results:
            if isinstance(result, InvalidInput):
                raise result
        return [r for r in results if not isinstance(r, InvalidInput)]

    def _score_jobs(self, jobs: list[_Job]) -> list[list[float] | InvalidInput]:
        return self._score_batch([job.item for job in jobs], alive=lambda index: jobs[index].liveness.alive())

    def _score_batch(
        self, items: list[ScoreItem], alive: Callable[[int], bool] = lambda _: True
    ) -> list[list[float] | InvalidInput]:
        """Scores for each item; an item that cannot be encoded gets its error, the others their scores. A path
        longer than the model reads (a deep search of a long problem) scores -1 at every step, the lowest, so the
        search stops preferring it, instead of failing the whole batch. An item whose caller no longer waits
        (`alive(index)` false, asked before its encoding and again before the forward pass) is neither encoded nor
        scored: it gets an empty list, which the batcher never hands out."""
        encoded: list[PackableItem | InvalidInput | list[float]] = []
        for index, item in enumerate(items):
            if not alive(index):
                encoded.append([])
                continue
            try:
                encoded.append(encode_packable(self.renderer, item, self.max_length))
            except ItemTooLong:
                log.warning("an item is longer than the %d tokens the PPM reads: scored -1", self.max_length)
                encoded.append([-1.0] * len(item.steps))
            except InvalidInput as exc:
                encoded.append(exc)
        encoded = [e if not isinstance(e, PackableItem) or alive(index) else [] for index, e in enumerate(encoded)]
        valid = [e for e in encoded if isinstance(e, PackableItem)]
        scores = iter(self._forward(valid) if valid else [])
        return [next(scores) if isinstance(e, PackableItem) else e for e in encoded]

    def _forward(self, encoded: list[PackableItem]) -> list[list[float]]:
        return score_packed(self.model, encoded, self.pad_id, device=self.device, bf16_on_cpu=self._autocast)

    async def close(self) -> None:
        await self.batcher.close()
