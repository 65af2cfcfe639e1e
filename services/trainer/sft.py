"""Supervised fine-tuning of a policy on step-format trajectories, with transformers' Trainer.

An example is the prompt followed by the trajectory's steps, tokenised piece by piece exactly as the policy will
see them at generation time. The loss covers only what the model writes: the prompt and the `<output>` blocks
(appended by the search from the program's stdout, never generated) are masked out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.trainer.data import SFTConfig, Trajectory
from services.trainer.training.hf import TOKENS, CountingTrainer, Run, run_trainer
from services.trainer.training.spec import Strategy

IGNORE = -100


class TooLong(ValueError):
    """Every example of a training run is longer than its max_length: there is nothing left to train on."""


def encode_trajectory(renderer: PromptRenderer, trajectory: Trajectory, max_length: int) -> dict[str, Any] | None:
    """The ids the policy is served (`PromptRenderer.ids`), with labels on the steps it writes itself; None when
    they do not fit in `max_length` (never cut: a cut trajectory teaches a solution without its end)."""
    ids = renderer.head_ids(trajectory.question)
    labels = [IGNORE] * len(ids)
    newline = renderer.newline_ids
    for step in trajectory.steps:
        piece = renderer.step_ids(step) + newline
        written_by_model = stepfmt.written_by_policy(step)
        ids.extend(piece)
        labels.extend(piece if written_by_model else [IGNORE] * len(piece))
    if len(ids) > max_length:
        return None
    return {"input_ids": ids, "labels": labels}


class PadToLongest:
    """Right-pads a batch; padded positions are masked and ignored by the loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"])
            labels[row, :n] = torch.tensor(feature["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, TOKENS: mask.sum()}


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def sft_examples(
    tokenizer: PreTrainedTokenizerBase, trajectories: Sequence[Trajectory], config: SFTConfig, prompt_format: str
) -> tuple[list[dict[str, Any]], int]:
    """The encoded examples that fit in `config.max_length`, and how many did not (left out, never cut)."""
    if not trajectories:
        raise ValueError("no trajectories to train on")
    renderer = PromptRenderer(tokenizer, prompt_format)
    encoded = [encode_trajectory(renderer, t, config.max_length) for t in trajectories]
    dataset = [example for example in encoded if example is not None]
    dropped = len(encoded) - len(dataset)
    if not dataset:
        raise TooLong(f"all {dropped} trajectories are longer than max_length={config.max_length} tokens")
    return dataset, dropped


def fit_sft(
    model: PreTrainedModel | Callable[[], PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    trajectories: Sequence[Trajectory],
    config: SFTConfig,
    *,
    prompt_format: str = "plain",
    progress: bool = True,
    on_step: Callable[[int, int, float | None], None] | None = None,
    strategy: Strategy | None = None,
    checkpoint_dir: Path | None = None,
) -> Run:
    """Fine-tunes `model` (or the model a loader returns) in place on prompts in its `prompt_format`, laid out by
    `strategy`, checkpointed into `checkpoint_dir` and resumed from it when given (training/hf.py). Its metrics:
    final loss, steps, seconds, `examples` and `dropped_too_long` (trajectories longer than `config.max_length`,
    left out)."""
    dataset, dropped = sft_examples(tokenizer, trajectories, config, prompt_format)
    run = run_trainer(
        CountingTrainer,
        model,
        dataset,
        PadToLongest(pad_id_of(tokenizer)),
        config,
        progress=progress,
        name="sft",
        strategy=strategy,
        checkpoint_dir=checkpoint_dir,
        on_step=on_step,
        groupable=True,
    )
    run.metrics.update(dropped_too_long=float(dropped), examples=float(len(dataset)))
    return run


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    trajectories: Sequence[Trajectory],
    config: SFTConfig,
    *,
    prompt_format: str = "plain",
    progress: bool = True,
) -> dict[str, float]:
    """`fit_sft` in this process, without checkpoints: its metrics."""
    return fit_sft(model, tokenizer, trajectories, config, prompt_format=prompt_format, progress=progress).metrics
