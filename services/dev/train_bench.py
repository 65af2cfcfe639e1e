"""`thinkmesh bench train`: one SFT stage of an untrained model of a given shape, timed, with its memory measured
and set against the sizing arithmetic (services/trainer/training/sizing.py). `--sizing` prints the sizing table of
docs/operations.md instead.

    thinkmesh bench train --shape micro --steps 8                 # seconds, any machine (CI runs it)
    thinkmesh bench train --shape 0.5b --steps 300 --json         # a GPU: scripts/device/train_bench.sh

The model is random (speed and memory do not depend on training); the data are curriculum solutions, tokenised by a
tokenizer trained in seconds, so sequences are as long as the curriculum's (a few hundred tokens) — tokens/s is for
that length.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

# Shapes besides sizing.SHAPES: the embedded ones, for machines without a GPU.
SMALL_SHAPES = {"micro": "micro", "small": "small"}


def write_model(directory: Path, shape_name: str) -> None:
    """An untrained model of the shape, and a tokenizer trained on the curriculum, as a Hugging Face directory."""
    from dataclasses import replace

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from services.math import stepfmt
    from services.math.curriculum import generate
    from services.policy.tiny import PRESETS, tiny_config, train_tokenizer
    from services.trainer.training.sizing import SHAPES

    corpus = [stepfmt.render_prompt(p.question, p.solution) for level in range(1, 6) for p in generate(level, 40)]
    tokenizer = train_tokenizer(corpus, PRESETS["small"].vocab_size)
    torch.manual_seed(0)
    if shape_name in SMALL_SHAPES:
        config = tiny_config(tokenizer, replace(PRESETS[shape_name], max_positions=2048))
    else:
        shape = SHAPES[shape_name]
        config = Qwen2Config(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            intermediate_size=shape.intermediate,
            max_position_embeddings=4096,
            tie_word_embeddings=shape.tied,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    Qwen2ForCausalLM(config).save_pretrained(directory)  # type: ignore[no-untyped-call]
    tokenizer.save_pretrained(directory)


def _bench(args: argparse.Namespace) -> int:
    if args.sizing:
        from services.trainer.training.sizing import table

        print(table(sequence=args.sequence, micro_batch=args.micro_batch_size or 1))
        return 0
    from services.math.curriculum import generate
    from services.trainer.data import SFTConfig
    from services.trainer.training.launch import LocalLauncher
    from services.trainer.training.sizing import GIB, SHAPES, estimate
    from services.trainer.training.spec import Strategy, TrainingSpec

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="thinkmesh-train-bench-") as scratch:
        root = Path(scratch)
        write_model(root / "base", args.shape)
        rows = [
            {"question": p.question, "solution": list(p.solution)}
            for level in range(1, 6)
            for p in generate(level, max(8, args.steps * args.batch_size // 5 + 1), seed=level)
        ]
        data = root / "sft.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        spec = TrainingSpec(
            stage="sft",
            data=str(data),
            base=str(root / "base"),
            out=str(root / "out"),
            recipe=SFTConfig(max_steps=args.steps, batch_size=args.batch_size, warmup_steps=0, learning_rate=1e-4),
            strategy=Strategy(
                fsdp=args.fsdp,
                gradient_checkpointing=args.gradient_checkpointing,
                attention=args.attention,
                micro_batch_size=args.micro_batch_size,
                checkpoint_steps=0,
            ),
        )
        result = LocalLauncher(args.nproc_per_node).run(spec, name="bench")
    report = {
        "shape": args.shape,
        "world_size": result.world_size,
        "sharding": result.sharding,
        "gradient_checkpointing": result.gradient_checkpointing,
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": result.seconds,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "peak_memory_gib": round(result.peak_memory_bytes / GIB, 3),
        "parameters": result.parameters,
        "state_bytes": result.state_bytes,
        # Weights and AdamW state on rank 0, per parameter held there: 12 without sharding (gradients are freed
        # between steps); 12/N under FSDP over N ranks.
        "state_bytes_per_parameter": round(result.state_bytes / result.parameters, 3),
    }
    if args.shape in SHAPES:
        per_gpu = max(1, args.batch_size // result.world_size)
        micro = args.micro_batch_size or per_gpu
        # The curriculum's sequences are a few hundred tokens: the estimate for this run's mean length.
        mean_tokens = max(1, result.tokens // max(1, result.steps * args.batch_size))
        guess = estimate(
            SHAPES[args.shape], result.world_size, micro, mean_tokens, checkpointing=report["gradient_checkpointing"]
        )
        report["estimated_gib"] = round(guess.total / GIB, 3)
    print(json.dumps(report) if args.json else "\n".join(f"{k:>26}: {v}" for k, v in report.items()))
    return 0


def register(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = areas.add_parser("train", help="tokens/s and peak memory of an SFT stage; --sizing: the sizing table")
    bench.add_argument("--shape", choices=("micro", "small", "0.5b", "1.5b", "7b"), default="micro")
    bench.add_argument("--steps", type=int, default=8)
    bench.add_argument("--batch-size", type=int, default=8, help="global batch")
    bench.add_argument("--micro-batch-size", type=int, default=0)
    bench.add_argument("--nproc-per-node", type=int, default=1)
    bench.add_argument("--fsdp", choices=("auto", "on", "off"), default="auto")
    bench.add_argument("--gradient-checkpointing", choices=("auto", "on", "off"), default="auto")
    bench.add_argument("--attention", choices=("", "sdpa", "eager", "flash_attention_2"), default="")
    bench.add_argument("--sizing", action="store_true", help="print the sizing table (arithmetic) and exit")
    bench.add_argument("--sequence", type=int, default=4096, help="--sizing: tokens per sequence")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_bench)


def main(argv: list[str] | None = None) -> int:
    """`python -m services.dev.train_bench`: the same benchmark with only what training imports (a GPU machine
    with torch and transformers but not the whole service stack)."""
    parser = argparse.ArgumentParser(prog="python -m services.dev.train_bench", description=__doc__)
    register(parser.add_subparsers(dest="area", required=True))
    return int(_bench(parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])))


if __name__ == "__main__":
    sys.exit(main())
