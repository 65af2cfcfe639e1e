"""One rank of a training stage: `python -m services.trainer.training.worker SPEC` under torchrun (or
`run_stage(spec)` in the trainer's own process: world size 1, the same code).

Every rank trains; at the end every rank takes part in gathering the full weights (under FSDP each holds a
shard), records that it took part (`ranks/<rank>.json`), and waits for the others. Only then does rank 0 write
the model — into a staging directory renamed to `model/` once complete — and last `result.json`. A stage whose
result exists finished on every rank; the trainer publishes a version only from such a stage, and only after its
launcher saw every process exit cleanly.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from services.common.jsonfiles import write_json
from services.common.store import share_with_group
from services.trainer.data import PPMConfig, SFTConfig, read_pairs, read_trajectories
from services.trainer.training.hf import Run, peak_memory_bytes, state_bytes, world
from services.trainer.training.spec import (
    CHECKPOINTS_DIR,
    MODEL_DIR,
    RANKS_DIR,
    RESULT_FILE,
    Progress,
    TrainingResult,
    TrainingSpec,
)

log = logging.getLogger(__name__)


class ProgressWriter:
    """On rank 0: `<out>/progress.json` after each optimizer step (at most every `every_s` seconds, and always at
    the last step), and the caller's own hook."""

    def __init__(self, out: Path, rank: int, hook: Callable[[Progress], None] | None, every_s: float = 1.0) -> None:
        self.out, self.rank, self.hook, self.every_s = out, rank, hook, every_s
        self.written = 0.0

    def __call__(self, step: int, max_steps: int, loss: float | None) -> None:
        if self.rank != 0:
            return
        progress = Progress(step, max_steps, loss)
        now = time.monotonic()
        if now - self.written >= self.every_s or step >= max_steps:
            progress.write(self.out)
            self.written = now
        if self.hook is not None:
            self.hook(progress)


def _fit(spec: TrainingSpec, on_step: Callable[[int, int, float | None], None]) -> tuple[Run, Any]:
    """Trains the stage's model; the Trainer run and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.ppm.model import ProcessRewardModel
    from services.trainer.ppm_train import fit_ppm
    from services.trainer.sft import fit_sft

    tokenizer = AutoTokenizer.from_pretrained(spec.base)
    torch.manual_seed(spec.recipe.seed)
    attention = {"attn_implementation": spec.strategy.attention} if spec.strategy.attention else {}
    common: dict[str, Any] = {
        "prompt_format": spec.prompt_format,
        "progress": False,
        "on_step": on_step,
        "strategy": spec.strategy,
        "checkpoint_dir": spec.path(CHECKPOINTS_DIR),
    }
    # fp32 weights: the optimizer's master copy; bf16 is the compute precision (hf.training_arguments).
    if spec.stage == "sft":
        assert isinstance(spec.recipe, SFTConfig)
        trajectories = read_trajectories(Path(spec.data))

        def load_policy() -> Any:
            return AutoModelForCausalLM.from_pretrained(spec.base, dtype=torch.float32, **attention)

        return fit_sft(load_policy, tokenizer, trajectories, spec.recipe, **common), tokenizer
    assert isinstance(spec.recipe, PPMConfig)
    pairs = read_pairs(Path(spec.data))
    recipe = spec.recipe

    def load_ppm() -> ProcessRewardModel:
        model = ProcessRewardModel.from_pretrained(spec.base, likelihood=recipe.likelihood)
        if spec.strategy.attention:
            model.model.set_attn_implementation(spec.strategy.attention)
        return model

    return fit_ppm(load_ppm, tokenizer, pairs, recipe, **common), tokenizer


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _sum_over_ranks(value: int) -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor([value], dtype=torch.long)
        torch.distributed.all_reduce(total)
        return int(total.item())
    return value


def _write_model(run: Run, tokenizer: Any, state: dict[str, Any], target: Path) -> None:
    """Rank 0: the full weights and the tokenizer as one Hugging Face directory, appearing whole at `target`."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model = run.trainer.accelerator.unwrap_model(run.trainer.model)
    model.save_pretrained(staging, state_dict=state)  # a causal LM's, or the PPM's own format (ppm/model.py)
    tokenizer.save_pretrained(staging)
    share_with_group(staging)  # the serving pods read it under other uids of the store's group
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def run_stage(spec: TrainingSpec, on_progress: Callable[[Progress], None] | None = None) -> TrainingResult | None:
    """Trains this rank's part of `spec`; rank 0 returns the result (and has written it), the others None."""
    rank, world_size = world()
    out = spec.out_dir
    run, tokenizer = _fit(spec, ProgressWriter(out, rank, on_progress))
    parameters, held = state_bytes(run.trainer)
    # Every rank: the full weights are gathered from the shards (rank 0 receives them), tokens summed.
    state = run.trainer.accelerator.get_state_dict(run.trainer.model)
    tokens = _sum_over_ranks(run.trainer.tokens)
    (out / RANKS_DIR).mkdir(parents=True, exist_ok=True)
    took_part = {"rank": rank, "world_size": world_size, "tokens": run.trainer.tokens, "steps": run.metrics["steps"]}
    write_json(out / RANKS_DIR / f"{rank}.json", took_part)
    _barrier()  # every rank finished training and took part in the gather
    result = None
    if rank == 0:
        _write_model(run, tokenizer, state, out / MODEL_DIR)
        ranks = tuple(sorted(int(p.stem) for p in (out / RANKS_DIR).glob("*.json")))
        seconds = run.metrics["seconds"]
        result = TrainingResult(
            stage=spec.stage,
            out=str(out / MODEL_DIR),
            world_size=world_size,
            steps=int(run.metrics["steps"]),
            final_loss=run.metrics["final_loss"],
            train_loss=run.metrics["train_loss"],
            seconds=seconds,
            examples=int(run.metrics["examples"]),
            dropped_too_long=int(run.metrics["dropped_too_long"]),
            tokens=tokens,
            tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
            peak_memory_bytes=peak_memory_bytes(),
            parameters=parameters,
            state_bytes=held,
            resumed_from_step=run.resumed_from_step,
            sharding=run.plan.sharding,
            gradient_checkpointing=run.plan.gradient_checkpointing,
            ranks=ranks,
        )
        write_json(out / RESULT_FILE, json.loads(result.to_json()))  # last: the stage is complete
    _barrier()
    return result


@record  # under torchrun: a rank's exception goes into the launcher's summary ("Root Cause"), not only its log
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.trainer.training.worker SPEC (a spec.json or the directory holding it)")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(process)d %(levelname)s %(name)s %(message)s")
    spec = TrainingSpec.read(args[0])
    result = run_stage(spec)
    if result is not None:
        log.info("stage %s finished: %s", spec.stage, result.to_json())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
