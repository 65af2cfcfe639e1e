"""Training the process preference model on step pairs with the Bradley–Terry loss.

A pair shares a prefix (question + earlier steps) and differs in the next step: `chosen` led to a correct
answer with high Q, `rejected` to a wrong one with low Q (the paper's rule; services/trainer/extract.py draws
pairs from search trees). The loss is −log σ(r_chosen − r_rejected), with r read at each candidate step's last
token. Regressing on Q values directly works worse because Q is noisy (paper, Table 8).

Pairs that share a prefix are trained as one group: a row holds the prefix once and then every candidate step
(see `encode_group`), so a node's 2 best and 2 worst candidates give 4 pairs for little more than one row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.ppm.model import ProcessRewardModel
from services.ppm.packing import PackedRow, pack
from services.ppm.scorer import ItemTooLong, ScoreItem, encode_item, encode_step, require_fits
from services.trainer.data import PPMConfig, StepPair
from services.trainer.sft import TooLong, pad_id_of
from services.trainer.training.hf import TOKENS, CountingTrainer, Run, run_trainer
from services.trainer.training.spec import Strategy


@dataclass(frozen=True)
class PairGroup:
    """The candidate steps that follow one prefix, and which of them beat which: one row trains them all."""

    question: str
    prefix: tuple[str, ...]
    steps: tuple[str, ...]
    preferences: tuple[tuple[int, int], ...]  # (better, worse) indices into `steps`


def group_pairs(pairs: Sequence[StepPair]) -> list[PairGroup]:
    """Pairs that share question and prefix become one group (each distinct step once), in first-seen order.

    The paper's rule pairs the 2 best against the 2 worst candidates of a node: 4 pairs over 4 steps."""
    grouped: dict[tuple[str, tuple[str, ...]], tuple[list[str], list[tuple[int, int]]]] = {}
    for pair in pairs:
        steps, preferences = grouped.setdefault((pair.question, pair.prefix), ([], []))
        for step in (pair.chosen, pair.rejected):
            if step not in steps:
                steps.append(step)
        preference = (steps.index(pair.chosen), steps.index(pair.rejected))
        if preference not in preferences:
            preferences.append(preference)
    return [
        PairGroup(question, prefix, tuple(steps), tuple(preferences))
        for (question, prefix), (steps, preferences) in grouped.items()
    ]


def encode_group(renderer: PromptRenderer, group: PairGroup, max_length: int) -> dict[str, Any]:
    """One row: the prefix once, then every candidate step.

    A causal model's prefix states do not depend on what follows, so running the prefix once for all of a
    node's candidates gives the same scores as one row per candidate for a fraction of the tokens (a pair:
    about 40% fewer on the curriculum). The collator's mask keeps each step from seeing the others, and each
    step's positions restart where the prefix ends (tested against separate rows)."""
    prefix = encode_item(renderer, ScoreItem(group.question, group.prefix), max_length)
    steps = [encode_step(renderer, step) for step in group.steps]
    for ids in steps:
        require_fits(len(prefix.ids) + len(ids), max_length)  # each step is read as if alone
    return {
        "prefix": prefix.ids,
        "prefix_counted": prefix.counted,
        "steps": steps,
        "steps_counted": [stepfmt.written_by_policy(step) for step in group.steps],
        "preferences": list(group.preferences),
    }


class GroupCollator:
    """Packs groups into `prefix + step_1 + … + step_k` rows (services.ppm.packing) and lists the pairs to compare."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        packed = pack(
            [PackedRow(f["prefix"], f["steps"], f["prefix_counted"], f["steps_counted"]) for f in features], self.pad_id
        )
        rows, better_at, worse_at = [], [], []
        for row, (f, ends) in enumerate(zip(features, packed.ends, strict=True)):
            for better, worse in f["preferences"]:
                rows.append(row)
                better_at.append(ends[better])
                worse_at.append(ends[worse])
        return {
            "input_ids": packed.input_ids,
            "attention_mask": packed.attention_mask,
            "position_ids": packed.position_ids,
            "counted": packed.counted,
            "pair_rows": torch.tensor(rows),
            "better_at": torch.tensor(better_at),
            "worse_at": torch.tensor(worse_at),
            TOKENS: torch.tensor(sum(len(f["prefix"]) + sum(len(step) for step in f["steps"]) for f in features)),
        }


def pair_scores(model: ProcessRewardModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the better and the worse step of every pair in the batch."""
    per_token = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch["counted"])
    return per_token[batch["pair_rows"], batch["better_at"]], per_token[batch["pair_rows"], batch["worse_at"]]


class BradleyTerryTrainer(CountingTrainer):
    def __init__(self, *args: Any, center_coefficient: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.center_coefficient = center_coefficient

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        better, worse = pair_scores(model, inputs)
        loss = -F.logsigmoid(better - worse).mean()  # every pair of the batch weighs the same
        loss = loss + self.center_coefficient * ((better + worse) ** 2).mean()
        return (loss, {"better": better, "worse": worse}) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Checkpoints in the PPM's own format (the Trainer's plain safetensors dump refuses its tied LM head)."""
        if self.args.should_save:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(output_dir or self.args.output_dir, state_dict=state_dict)


def ppm_examples(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[StepPair], config: PPMConfig, prompt_format: str
) -> tuple[list[dict[str, Any]], int]:
    """The encoded groups that fit in `config.max_length`, and how many pairs did not (left out, never cut)."""
    if not pairs:
        raise ValueError("no pairs to train on")
    renderer = PromptRenderer(tokenizer, prompt_format)
    dataset = []
    dropped = 0
    for group in group_pairs(pairs):
        try:
            dataset.append(encode_group(renderer, group, config.max_length))
        except ItemTooLong:
            dropped += len(group.preferences)
    if not dataset:
        raise TooLong(f"all {dropped} pairs are longer than max_length={config.max_length} tokens")
    return dataset, dropped


def fit_ppm(
    model: ProcessRewardModel | Callable[[], ProcessRewardModel],
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[StepPair],
    config: PPMConfig,
    *,
    prompt_format: str = "plain",
    progress: bool = True,
    on_step: Callable[[int, int, float | None], None] | None = None,
    strategy: Strategy | None = None,
    checkpoint_dir: Path | None = None,
) -> Run:
    """Trains the value head and backbone on step pairs, read in the policy's `prompt_format` (laid out by
    `strategy`, checkpointed as `fit_sft` is). A group whose prefix and step do not fit in `config.max_length` is
    left out, never cut, and its pairs are counted in the metrics (`dropped_too_long`)."""
    dataset, dropped = ppm_examples(tokenizer, pairs, config, prompt_format)
    run = run_trainer(
        BradleyTerryTrainer,
        model,
        dataset,
        GroupCollator(pad_id_of(tokenizer)),
        config,
        progress=progress,
        name="ppm",
        strategy=strategy,
        checkpoint_dir=checkpoint_dir,
        on_step=on_step,
        center_coefficient=config.center_coefficient,
    )
    run.metrics.update(dropped_too_long=float(dropped), examples=float(len(dataset)))
    return run


def train_ppm(
    model: ProcessRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[StepPair],
    config: PPMConfig,
    *,
    prompt_format: str = "plain",
    progress: bool = True,
) -> dict[str, float]:
    """`fit_ppm` in this process, without checkpoints: its metrics."""
    return fit_ppm(model, tokenizer, pairs, config, prompt_format=prompt_format, progress=progress).metrics


@torch.inference_mode()
def pairwise_accuracy(
    model: ProcessRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[StepPair],
    batch_size: int = 32,
    *,
    prompt_format: str = "plain",
) -> float:
    """Share of (distinct) pairs whose chosen step scores above the rejected one."""
    if not pairs:
        return float("nan")
    model.eval()
    collate = GroupCollator(pad_id_of(tokenizer))
    device = next(model.parameters()).device
    groups = group_pairs(pairs)
    renderer = PromptRenderer(tokenizer, prompt_format)
    wins = total = 0
    for start in range(0, len(groups), batch_size):
        chunk = [encode_group(renderer, group, 100_000) for group in groups[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        better, worse = pair_scores(model, batch)
        wins += int((better > worse).sum())
        total += len(better)
    return wins / total
