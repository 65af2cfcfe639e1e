"""One transformers Trainer run, laid out by a `Strategy`: the same code trains on one CPU process, on torchrun
processes over gloo, or on GPUs under FSDP.

Distribution is transformers' and Accelerate's: under torchrun (RANK, WORLD_SIZE set) the Trainer initialises the
process group, shards each global batch over the ranks and averages gradients. On GPUs with `fsdp` the model is
wrapped by PyTorch FSDP2 (`fully_shard` per decoder layer: parameters, gradients and AdamW state split over the
ranks), with bf16 compute over fp32 master weights (the model is loaded in fp32; Accelerate's mixed precision
casts for the forward and backward passes) and activation checkpointing per wrapped layer. Accelerate does not
shard on CPU: a multi-process CPU run is DDP, which the CPU tests use to prove the ranks, the checkpoints and the
publishing protocol; the FSDP arguments are checked there too (`training_arguments`), and run on a GPU machine.

Checkpoints are the Trainer's own (`checkpoint-<step>/`: weights, optimizer, scheduler, RNG and data position;
sharded per rank under FSDP), so a restarted stage resumes mid-epoch with the optimizer it had.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from services.common.errors import InvalidInput
from services.trainer.training.spec import Strategy

# A collator may add this key: the tokens (not padding) of the batch, popped before the model sees the batch.
TOKENS = "num_tokens"


def world() -> tuple[int, int]:
    """(rank, world size) of this process, from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def on_gpu() -> bool:
    return torch.cuda.is_available()


@dataclass(frozen=True)
class Layout:
    """What a strategy means on this machine, for this world size."""

    world_size: int
    gpu: bool
    fsdp: bool
    gradient_checkpointing: bool
    micro_batch_size: int
    accumulation: int

    @property
    def sharding(self) -> str:
        return "fsdp" if self.fsdp else ("ddp" if self.world_size > 1 else "none")


def layout(strategy: Strategy, batch_size: int, world_size: int, gpu: bool) -> Layout:
    """Decides sharding, checkpointing and the per-rank batch: the recipe's `batch_size` is the global batch,
    split over the ranks and, past `micro_batch_size`, over gradient accumulation steps."""
    fsdp = strategy.fsdp == "on" or (strategy.fsdp == "auto" and gpu and world_size > 1)
    if fsdp and not gpu:
        raise InvalidInput("fsdp=on needs GPUs: Accelerate trains multi-process CPU runs as DDP (use auto or off)")
    checkpointing = strategy.gradient_checkpointing == "on" or (strategy.gradient_checkpointing == "auto" and gpu)
    per_rank = max(1, math.ceil(batch_size / world_size))
    micro = min(per_rank, strategy.micro_batch_size) if strategy.micro_batch_size else per_rank
    accumulation = max(1, math.ceil(per_rank / micro))
    return Layout(world_size, gpu, fsdp, checkpointing, micro, accumulation)


def training_arguments(
    output_dir: str,
    config: Any,
    plan: Layout,
    strategy: Strategy,
    *,
    progress: bool,
    group_by_length: bool = False,
) -> TrainingArguments:
    """Arguments of every training run. Under FSDP each of the model's `_no_split_modules` (its decoder layers)
    is sharded as one unit (Accelerate reads them from the model)."""
    from services.common.devices import cpu_supports_bf16, pick_device

    if plan.gpu:
        pick_device("auto")  # sets torch up for the GPU as the engines do
    checkpoints = strategy.checkpoint_steps > 0
    sharding: dict[str, Any] = {}
    if plan.fsdp:
        sharding = {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "reshard_after_forward": True,  # full sharding: parameters gathered per layer, freed after use
                "activation_checkpointing": plan.gradient_checkpointing,
                "state_dict_type": "SHARDED_STATE_DICT",  # checkpoints: each rank writes its own shard
                "cpu_ram_efficient_loading": True,
            },
        }
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=config.max_steps,
        per_device_train_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        logging_steps=max(1, config.max_steps // 20),
        save_strategy="steps" if checkpoints else "no",
        save_steps=strategy.checkpoint_steps if checkpoints else 500,
        save_total_limit=strategy.keep_checkpoints,
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        bf16=plan.gpu or cpu_supports_bf16(),
        use_cpu=not plan.gpu,
        # Under FSDP the wrapper checkpoints each layer itself; a second, Trainer-level checkpointing would
        # all-gather the parameters again in the backward pass.
        gradient_checkpointing=plan.gradient_checkpointing and not plan.fsdp,
        gradient_checkpointing_kwargs={"use_reentrant": False} if plan.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        ddp_find_unused_parameters=False,
        ddp_backend=("nccl" if plan.gpu else "gloo") if plan.world_size > 1 else None,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=not progress,
        **sharding,
    )


class CountingTrainer(Trainer):
    """Counts the tokens each optimizer step went over (a collator's TOKENS), for tokens per second."""

    tokens: int = 0

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        counted = inputs.pop(TOKENS, None)
        if counted is not None:
            self.tokens += int(counted)
        return super().training_step(model, inputs, num_items_in_batch)


class StepReporter(TrainerCallback):
    """Calls `on_step(step, max_steps, latest loss)` after every optimizer step (on every rank)."""

    def __init__(self, on_step: Callable[[int, int, float | None], None]) -> None:
        self.on_step = on_step
        self.loss: float | None = None

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.on_step(state.global_step, state.max_steps, self.loss)


@dataclass
class Run:
    """A finished Trainer run: its metrics and the Trainer (whose model a caller may still gather and save)."""

    trainer: CountingTrainer
    metrics: dict[str, float]
    resumed_from_step: int
    plan: Layout


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated by this process, or its peak resident set on CPU."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor: this rank's shard
    return int(local.numel() * local.element_size())


def state_bytes(trainer: Trainer) -> tuple[int, int]:
    """(parameters, bytes): the model's parameter count, and what this rank's weights and optimizer state hold."""
    assert trainer.model is not None
    parameters = list(trainer.model.parameters())
    held = sum(_local_bytes(p) for p in parameters)
    if trainer.optimizer is not None:
        for state in trainer.optimizer.state.values():
            held += sum(_local_bytes(v) for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return sum(p.numel() for p in parameters), held


@contextmanager
def _output_dir(checkpoint_dir: Path | None, name: str) -> Iterator[str]:
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        yield str(checkpoint_dir)
        return
    with tempfile.TemporaryDirectory(prefix=f"thinkmesh-{name}-") as scratch:
        yield scratch


def run_trainer(
    trainer_class: type[CountingTrainer],
    model: Any,
    dataset: list[dict[str, Any]],
    collator: Any,
    config: Any,
    *,
    progress: bool,
    name: str,
    strategy: Strategy | None = None,
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, int, float | None], None] | None = None,
    groupable: bool = False,
    **trainer_options: Any,
) -> Run:
    """One Trainer run of `model` (a module, or a function that loads it). With `checkpoint_dir` it checkpoints
    there every `strategy.checkpoint_steps` steps and resumes from the latest checkpoint it finds; without, it
    runs in a scratch directory and keeps nothing. `groupable`: the dataset's rows have `input_ids`, so
    `strategy.group_by_length` can batch by length."""
    # Without a strategy: one process's defaults, batches in the sampler's order (what the bootstrap measured).
    strategy = strategy or Strategy(group_by_length=False)
    if checkpoint_dir is None:
        strategy = replace(strategy, checkpoint_steps=0)
    group_by_length = strategy.group_by_length and groupable
    _, world_size = world()
    plan = layout(strategy, config.batch_size, world_size, on_gpu())
    with _output_dir(checkpoint_dir, name) as output_dir:
        args = training_arguments(
            output_dir, config, plan, strategy, progress=progress, group_by_length=group_by_length
        )
        if not isinstance(model, torch.nn.Module):
            # A loader: the model is read only now that the arguments have set up the process group, so that under
            # FSDP rank 0 alone reads the weights and the others receive them (cpu_ram_efficient_loading).
            model = model()
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, data_collator=collator, **trainer_options
        )
        if not progress:
            # Without progress bars, Trainer prints every log line instead; keep it silent then.
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        if on_step is not None:
            trainer.add_callback(StepReporter(on_step))
        resume = get_last_checkpoint(output_dir) if checkpoint_dir is not None else None  # type: ignore[no-untyped-call]
        resumed_from = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
        result = trainer.train(resume_from_checkpoint=resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "train_loss": float(result.training_loss),
        "final_loss": float(losses[-1]) if losses else math.nan,
        "steps": float(result.global_step),
        "seconds": float(result.metrics.get("train_runtime", 0.0)),
    }
    return Run(trainer, metrics, resumed_from, plan)
