"""Supervised fine-tuning of a policy on step-format trajectories, with transformers' Trainer.

An example is the prompt followed by the trajectory's steps, tokenised piece by piece exactly as the policy will
see them at generation time. The loss covers only what the model writes: the prompt and the `<output>` blocks
(appended by the search from the program's stdout, never generated) are masked out.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments

from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.trainer.data import SFTConfig, Trajectory

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
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def training_arguments(output_dir: str, config: Any, *, progress: bool, batch_size: int) -> TrainingArguments:
    """Arguments shared by the SFT and PPM trainers: CPU or GPU, bf16 where the hardware has it, no checkpoints."""
    from services.common.devices import cpu_supports_bf16, pick_device

    on_gpu = pick_device("auto") != "cpu"  # sets torch up for the GPU as the engines do
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=config.max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        logging_steps=max(1, config.max_steps // 20),
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        bf16=on_gpu or cpu_supports_bf16(),
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


class StepReporter(TrainerCallback):
    def __init__(self, on_step: Callable[[int, int], None]) -> None:
        self.on_step = on_step

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.on_step(state.global_step, state.max_steps)


def run_trainer(
    trainer_class: type[Trainer],
    model: Any,
    dataset: list[dict[str, Any]],
    collator: Any,
    config: Any,
    *,
    progress: bool,
    name: str,
    on_step: Callable[[int, int], None] | None = None,
    **trainer_options: Any,
) -> dict[str, float]:
    """One transformers Trainer run in a scratch directory (nothing is checkpointed); its metrics.

    `on_step(done, total)` is called after every optimizer step (e.g. a round's own progress bar)."""
    with tempfile.TemporaryDirectory(prefix=f"thinkmesh-{name}-") as scratch:
        trainer = trainer_class(
            model=model,
            args=training_arguments(scratch, config, progress=progress, batch_size=config.batch_size),
            train_dataset=dataset,
            data_collator=collator,
            **trainer_options,
        )
        if not progress:
            # Without progress bars, Trainer prints every log line instead; keep it silent then.
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        if on_step is not None:
            trainer.add_callback(StepReporter(on_step))
        result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "train_loss": float(result.training_loss),
        "final_loss": float(losses[-1]) if losses else math.nan,
        "steps": float(result.global_step),
        "seconds": float(result.metrics.get("train_runtime", 0.0)),
    }


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    trajectories: Sequence[Trajectory],
    config: SFTConfig,
    *,
    prompt_format: str = "plain",
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Fine-tunes `model` in place on prompts in its `prompt_format`; returns the training metrics (final loss,
    steps, seconds, and `dropped_too_long`: trajectories longer than `config.max_length`, left out)."""
    if not trajectories:
        raise ValueError("no trajectories to train on")
    renderer = PromptRenderer(tokenizer, prompt_format)
    encoded = [encode_trajectory(renderer, t, config.max_length) for t in trajectories]
    dataset = [example for example in encoded if example is not None]
    dropped = len(encoded) - len(dataset)
    if not dataset:
        raise TooLong(f"all {dropped} trajectories are longer than max_length={config.max_length} tokens")
    metrics = run_trainer(
        Trainer,
        model,
        dataset,
        PadToLongest(pad_id_of(tokenizer)),
        config,
        progress=progress,
        name="sft",
        on_step=on_step,
    )
    return {**metrics, "dropped_too_long": float(dropped)}
