"""What one training stage is asked to do and what it reports, as plain data that crosses process boundaries.

A stage (policy SFT or PPM) runs wherever its launcher puts it: in the trainer's own process, in `torchrun`
processes beside it, or in the pods of a Kubernetes Job. Every rank reads the same `TrainingSpec` from
`<out>/spec.json` on the shared store volume; rank 0 writes `<out>/progress.json` as it goes and, once every rank
has finished, the model under `<out>/model/` and `<out>/result.json` — the file whose presence says the stage is
complete. Nothing here imports torch: the trainer's settings, the Job launcher and the CLI read these without
loading any training code.

The output directory:

    spec.json        the stage's spec (written by the launcher before any rank starts)
    checkpoints/     checkpoint-<step>/ every `strategy.checkpoint_steps` steps; a restarted stage resumes from the last
    progress.json    rank 0: step, max_steps, loss, updated as it trains
    ranks/<r>.json   every rank: what it trained on, written when it finishes (proof that it took part)
    model/           rank 0: the trained model and its tokenizer, a Hugging Face directory
    result.json      rank 0, last: the TrainingResult
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.common.errors import InvalidInput
from services.common.jsonfiles import write_json
from services.trainer.data import PPMConfig, SFTConfig

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
RANKS_DIR = "ranks"
LOGS_DIR = "logs"

Stage = Literal["sft", "ppm"]
STAGES: tuple[str, ...] = ("sft", "ppm")
Switch = Literal["auto", "on", "off"]
ATTENTION: tuple[str, ...] = ("", "sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class Strategy:
    """How a stage uses its hardware: the same recipe (SFTConfig, PPMConfig) trains on a laptop or on 64 GPUs.

    `fsdp`: auto = PyTorch FSDP full sharding (parameters, gradients and optimizer state split over the ranks)
    whenever more than one GPU trains; Accelerate runs multi-process CPU training as DDP (it does not shard on
    CPU), so `on` is refused there. `gradient_checkpointing`: auto = on for GPUs (activations recomputed in the
    backward pass: the memory of one layer's activations instead of all of them). `attention`: the transformers
    attention implementation ("" = the model's default; "flash_attention_2" needs the flash-attn package).
    `micro_batch_size`: sequences per rank per forward pass (0 = the recipe's batch split evenly over the ranks);
    the rest of the recipe's batch is gradient accumulation, so the global batch stays the recipe's.
    `group_by_length`: batches of similar lengths, less padding (SFT; off by default: it changes the order the
    measured recipes saw their data in). `checkpoint_steps`: a checkpoint every so many
    optimizer steps (0 = none), the last `keep_checkpoints` kept."""

    fsdp: Switch = "auto"
    gradient_checkpointing: Switch = "auto"
    attention: str = ""
    micro_batch_size: int = 0
    group_by_length: bool = False
    checkpoint_steps: int = 50
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.fsdp not in ("auto", "on", "off") or self.gradient_checkpointing not in ("auto", "on", "off"):
            raise InvalidInput("fsdp and gradient_checkpointing are auto, on or off")
        if self.attention not in ATTENTION:
            raise InvalidInput(f"attention must be one of {', '.join(a or '(default)' for a in ATTENTION)}")
        if self.micro_batch_size < 0 or self.checkpoint_steps < 0 or self.keep_checkpoints < 1:
            raise InvalidInput("micro_batch_size and checkpoint_steps must be >= 0, keep_checkpoints >= 1")


@dataclass(frozen=True)
class TrainingSpec:
    """One stage: train `base` on the rows of `data` with `recipe`, write the result under `out`.

    `data`: JSONL; for sft, a `question` and its `steps` (or `solution`: the list of steps `thinkmesh curriculum
    sample` prints); for ppm, step pairs (`question`, `prefix`, `chosen`, `rejected`: a round's pairs.jsonl).
    `base`: a Hugging Face directory (sft: the policy to fine-tune; ppm: the policy the PPM starts from, or a PPM
    to train further). Paths are absolute where ranks run in other processes or pods: they must name the same
    files there (the store's volume)."""

    stage: Stage
    data: str
    base: str
    out: str
    recipe: SFTConfig | PPMConfig
    strategy: Strategy = field(default_factory=Strategy)
    prompt_format: str = "plain"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InvalidInput(f"stage must be sft or ppm, not {self.stage!r}")
        wanted = SFTConfig if self.stage == "sft" else PPMConfig
        if not isinstance(self.recipe, wanted):
            raise InvalidInput(f"a {self.stage} stage takes a {wanted.__name__}, not {type(self.recipe).__name__}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        try:
            raw = json.loads(text)
            stage = raw["stage"]
            recipe_class = SFTConfig if stage == "sft" else PPMConfig
            return cls(
                stage=stage,
                data=raw["data"],
                base=raw["base"],
                out=raw["out"],
                recipe=_build(recipe_class, raw["recipe"]),
                strategy=_build(Strategy, raw.get("strategy", {})),
                prompt_format=raw.get("prompt_format", "plain"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"not a training spec: {exc}") from exc

    def write(self) -> Path:
        """Writes `<out>/spec.json` (creating `out`); returns its path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(SPEC_FILE)
        write_json(target, asdict(self))  # atomically: a rank (re)starting now reads the old spec or the new
        return target

    @classmethod
    def read(cls, path: Path | str) -> TrainingSpec:
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.is_file():
            raise InvalidInput(f"no training spec at {path}")
        return cls.from_json(path.read_text())


@dataclass(frozen=True)
class TrainingResult:
    """What a finished stage reports (`<out>/result.json`, and `thinkmesh train … --json`)."""

    stage: str
    out: str  # the trained model's directory (<out>/model)
    world_size: int
    steps: int
    final_loss: float
    train_loss: float
    seconds: float
    examples: int  # rows trained on (after dropping the ones longer than max_length)
    dropped_too_long: int
    tokens: int  # tokens the optimizer steps went over, every rank together (padding not counted)
    tokens_per_s: float
    peak_memory_bytes: int  # rank 0: peak GPU memory allocated, or the process's peak resident set on CPU
    parameters: int  # the model's, all ranks' shards together
    state_bytes: int  # rank 0: what its weights and optimizer state hold (its shards under FSDP), after training
    resumed_from_step: int  # 0 when the stage started fresh
    sharding: str  # "fsdp", "ddp" or "none"
    gradient_checkpointing: bool
    ranks: tuple[int, ...]  # the ranks that reported taking part

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainingResult:
        raw = json.loads(text)
        raw["ranks"] = tuple(raw.get("ranks", ()))
        result: TrainingResult = _build(cls, raw)
        return result

    @classmethod
    def read(cls, out: Path | str) -> TrainingResult | None:
        """The result of a finished stage whose output directory is `out`; None while it is not finished."""
        path = Path(out) / RESULT_FILE
        return cls.from_json(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class Progress:
    """Rank 0's latest step (`<out>/progress.json`), for whoever watches the stage."""

    step: int
    max_steps: int
    loss: float | None = None

    def write(self, out: Path) -> None:
        write_json(out / PROGRESS_FILE, asdict(self))

    @classmethod
    def read(cls, out: Path | str) -> Progress | None:
        try:
            progress: Progress = _build(cls, json.loads((Path(out) / PROGRESS_FILE).read_text()))
            return progress
        except (OSError, ValueError, TypeError):
            return None  # not written yet, or being replaced


def _build(cls: Any, raw: dict[str, Any]) -> Any:
    """`cls(**raw)` refusing unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InvalidInput(f"{cls.__name__}: unknown fields {', '.join(unknown)}")
    return cls(**raw)


class TrainingFailed(RuntimeError):
    """A stage ended without a result: a rank failed, the Job ran out of retries, or it was deleted."""
