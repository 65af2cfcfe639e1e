"""`thinkmesh train sft|ppm`: one training stage outside a round, through the launcher a round's stages use.

    thinkmesh train sft --data FILE --base DIR --out DIR [--nproc-per-node N] [--max-steps N] [--json]
    thinkmesh train ppm --data PAIRS --base DIR --out DIR ...

`--nproc-per-node N` > 1 runs N torchrun processes on this machine (one per GPU; gloo on a CPU); the trained model
lands in `OUT/model/`, checkpoints in `OUT/checkpoints/` (run the same command again to resume a stopped stage),
and `--json` ends the output with one line: the stage's result (services/trainer/training/spec.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

RECIPE_KNOBS = ("max_steps", "batch_size", "learning_rate", "warmup_steps", "max_length", "seed")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.common.errors import InvalidInput, NotFound
    from services.common.store import prompt_format_of
    from services.trainer.data import PPMConfig, SFTConfig
    from services.trainer.training.launch import LocalLauncher
    from services.trainer.training.spec import Strategy, TrainingFailed, TrainingSpec

    base = Path(args.base).resolve()
    try:
        if not (base / "config.json").is_file():
            raise InvalidInput(f"--base {base} is not a Hugging Face model directory (no config.json)")
        recipe_class = SFTConfig if args.stage == "sft" else PPMConfig
        knobs = {name: getattr(args, name) for name in RECIPE_KNOBS if getattr(args, name) is not None}
        recipe = dataclasses.replace(recipe_class(), **knobs)
        strategy = Strategy(
            fsdp=args.fsdp,
            gradient_checkpointing=args.gradient_checkpointing,
            attention=args.attention,
            micro_batch_size=args.micro_batch_size,
            group_by_length=args.group_by_length,
            checkpoint_steps=args.checkpoint_steps,
        )
        spec = TrainingSpec(
            stage=args.stage,
            data=str(Path(args.data).resolve()),
            base=str(base),
            out=str(Path(args.out).resolve()),
            recipe=recipe,
            strategy=strategy,
            prompt_format=args.prompt_format or prompt_format_of(base),
        )
        result = LocalLauncher(args.nproc_per_node).run(spec, name=f"cli-{args.stage}")
    except (InvalidInput, NotFound, TrainingFailed) as exc:
        print(f"thinkmesh train {args.stage}: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, TrainingFailed) else 1
    if args.json:
        print(result.to_json())
    else:
        print(
            f"{args.stage}: {result.steps} steps on {result.world_size} process(es) ({result.sharding}), final loss "
            f"{result.final_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s, model in {result.out}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = sub.add_parser("train", help="run one training stage (policy SFT or PPM), on 1..N processes")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, help_text, data_help in (
        (
            "sft",
            "fine-tune a policy on solutions in the step format",
            "JSONL: question and solution (the list of steps `thinkmesh curriculum sample` prints) or steps",
        ),
        (
            "ppm",
            "train a process preference model on step pairs",
            "JSONL step pairs in a round's format: question, prefix (steps), chosen, rejected",
        ),
    ):
        parser = stages.add_parser(stage, help=help_text)
        parser.add_argument("--data", required=True, metavar="FILE", help=data_help)
        parser.add_argument(
            "--base",
            required=True,
            metavar="DIR",
            help="Hugging Face directory to start from (ppm: the policy it is initialised from, or a PPM)",
        )
        parser.add_argument("--out", required=True, metavar="DIR", help="where the model, checkpoints and logs go")
        parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N", help="torchrun processes (default 1)")
        parser.add_argument("--max-steps", type=int, default=None, metavar="N", help="optimizer steps")
        parser.add_argument("--batch-size", type=int, default=None, help="global batch (every process together)")
        parser.add_argument("--learning-rate", type=float, default=None)
        parser.add_argument("--warmup-steps", type=int, default=None)
        parser.add_argument("--max-length", type=int, default=None, help="longer examples are left out, never cut")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--prompt-format", choices=("plain", "chat"), default=None, help="default: the base's")
        parser.add_argument("--fsdp", choices=("auto", "on", "off"), default="auto", help="auto: on for >1 GPU")
        parser.add_argument(
            "--gradient-checkpointing", choices=("auto", "on", "off"), default="auto", help="auto: on for GPUs"
        )
        parser.add_argument(
            "--attention", choices=("", "sdpa", "eager", "flash_attention_2"), default="", help="default: the model's"
        )
        parser.add_argument("--micro-batch-size", type=int, default=0, help="per process per pass; 0 = batch/N")
        parser.add_argument("--group-by-length", action="store_true", help="batch similar lengths together (sft)")
        parser.add_argument("--checkpoint-steps", type=int, default=50, help="checkpoint every N steps (0: never)")
        parser.add_argument("--json", action="store_true", help="end with the result as one JSON line")
        parser.set_defaults(func=_train)
