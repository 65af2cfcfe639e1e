"""Measurements behind the bootstrap's schedule (services/trainer/bootstrap.py); not part of the product.

python experiments/bootstrap_sweep.py sft --out sft.jsonl [--parallel 16] [--device cuda]
    The SFT grid: each configuration trains a fresh tiny policy in its own process (16 at a time fit one
    GPU) and is scored by greedy decoding on 300 unseen level-1 problems: the program is generated up to
    `<end_of_code>`, run, and its output compared with the answer. This proxy reads a few points lower
    than `thinkmesh eval` (it has no answer step and no retries); compare rows, not absolute values.
python experiments/bootstrap_sweep.py ppm --policy DIR [--steps 250] [--center 0.1] [--per-step 3] [--seed 0]
    One bootstrap PPM training on teacher-vs-corrupted pairs from DIR's policy; held-out pair accuracy on
    pairs of 100 problems never trained on, by kind of corruption.
python experiments/bootstrap_sweep.py samples --store STORE --level 3 --n 60 --seed 777 --out own.jsonl
    The store's policy samples 16 trajectories per problem (temperature 0.8, as best-of-16 does); each
    finished trajectory, with its correctness, is one line: what a PPM must rank for search to help.
python experiments/bootstrap_sweep.py ppm ... --own own.jsonl
    Also scores those trajectories with the new PPM: best-of-16 and the score-weighted vote over the same
    samples, and how often a right trajectory outscores a wrong one of the same problem (AUC).
python experiments/bootstrap_sweep.py own --ppm DIR own.jsonl
    The same for an existing PPM (e.g. a store's models/ppm/v1).
python experiments/bootstrap_sweep.py table sft.jsonl
    The SFT results as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from services.math import stepfmt
from services.math.curriculum import generate
from services.math.prompting import PromptRenderer
from services.policy.tiny import TinyPreset, tiny_config, train_tokenizer
from services.trainer.data import Trajectory
from services.trainer.sft import PadToLongest, encode_trajectory, pad_id_of

HELD_OUT_SEED = 424242


def sft_grid() -> list[dict[str, Any]]:
    """(name, overrides) of every SFT run: batch 16, lr 2e-3, β2 0.95, 1,000 steps unless said otherwise."""
    grid: list[tuple[str, dict[str, Any]]] = [
        ("β2 0.999, 1500 steps (the old default)", {"steps": 1500, "beta2": 0.999}),
        ("β2 0.999, 1000 steps", {"beta2": 0.999}),
        ("1500 steps", {"steps": 1500}),
        ("800 steps", {"steps": 800}),
        ("600 steps", {"steps": 600}),
        ("lr 3e-3, 800 steps", {"lr": 3e-3, "steps": 800}),
        ("lr 4e-3, 800 steps", {"lr": 4e-3, "steps": 800}),
        ("batch 8, 1500 steps", {"bs": 8, "steps": 1500}),
        ("batch 12, 1300 steps", {"bs": 12, "steps": 1300}),
        ("8 heads, 800 steps", {"steps": 800, "preset": {"heads": 8, "kv_heads": 4}}),
        ("MLP 512", {"preset": {"intermediate": 512}}),
        ("3 layers", {"preset": {"layers": 3}}),
        ("hidden 192", {"preset": {"hidden": 192, "intermediate": 576}}),
    ]
    runs = [{"name": name, "seed": 0, **overrides} for name, overrides in grid]
    runs.append({"name": "batch 12, 1300 steps", "seed": 1, "bs": 12, "steps": 1300})
    for seed in (0, 1, 2):
        runs.append({"name": "1000 steps", "seed": seed})
        runs.append({"name": "1100 steps", "seed": seed, "steps": 1100})
        runs.append({"name": "1200 steps", "seed": seed, "steps": 1200})
        runs.append({"name": "lr 1.5e-3 (the default)", "seed": seed, "lr": 1.5e-3})
    return runs


def train_policy(run: dict[str, Any], tokenizer_dir: str, device: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    seed = run.get("seed", 0)
    torch.manual_seed(seed)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, TinyPreset(**run.get("preset", {})))).to(device)
    teacher = [p for level in (1, 2) for p in generate(level, 6000, seed=seed + level)]
    data = [
        encode_trajectory(PromptRenderer(tokenizer), Trajectory(p.question, tuple(p.solution)), 768) for p in teacher
    ]
    collate = PadToLongest(pad_id_of(tokenizer))
    steps, batch_size, lr, warmup = run.get("steps", 1000), run.get("bs", 16), run.get("lr", 2e-3), 60
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "norm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, run.get("beta2", 0.95)),
    )

    def schedule(step: int) -> float:  # linear warm-up, then cosine to 0: what Trainer does
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng, order, position, padded = random.Random(seed), [], 0, 0
    started = time.time()
    model.train()
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = list(range(len(data))), 0
            rng.shuffle(order)
        batch = collate([data[i] for i in order[position : position + batch_size]])
        position += batch_size
        padded += batch["input_ids"].numel()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    result = dict(run, final_loss=round(loss.item(), 4), padded_tokens=padded, train_s=round(time.time() - started, 1))
    for level, n in ((1, 300), (2, 150)):
        result[f"greedy_L{level}"] = greedy_accuracy(model, tokenizer, generate(level, n, seed=HELD_OUT_SEED + level))
    return result


def _run_program(code: str) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=5)
        return done.stdout.strip()
    except subprocess.TimeoutExpired:
        return ""


@torch.no_grad()
def greedy_accuracy(model: Any, tokenizer: Any, problems: list[Any]) -> float:
    model.eval()
    device = next(model.parameters()).device
    stops = [tokenizer.convert_tokens_to_ids(stepfmt.END_OF_CODE), tokenizer.eos_token_id]
    programs = []
    for start in range(0, len(problems), 100):
        chunk = problems[start : start + 100]
        prompts = [stepfmt.render_prompt(p.question, []) for p in chunk]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.generate(
                **encoded, max_new_tokens=220, do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id
            )
        for text in tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :]):
            text = text.split(stepfmt.END_OF_CODE)[0]
            for marker in (tokenizer.pad_token, tokenizer.eos_token, stepfmt.END_OF_STEP):
                text = text.replace(marker, "")
            programs.append(text)
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(_run_program, programs))
    return round(sum(o == str(p.answer).strip() for o, p in zip(outputs, problems, strict=True)) / len(problems), 3)


def sweep_sft(args: argparse.Namespace) -> None:
    tokenizer_dir = str(Path(args.out).with_suffix(".tokenizer"))
    corpus = [
        stepfmt.render_prompt(p.question, p.solution)
        for level in range(1, 6)
        for p in generate(level, 400, seed=7919 * level)
    ]
    train_tokenizer(corpus, 640).save_pretrained(tokenizer_dir)
    pending, running = sft_grid(), []
    with open(args.out, "a") as out:
        while pending or running:
            while pending and len(running) < args.parallel:
                run = pending.pop(0)
                command = [sys.executable, __file__, "one", json.dumps(run), tokenizer_dir, args.device]
                running.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
            for process in [p for p in running if p.poll() is not None]:
                running.remove(process)
                line = process.stdout.read().strip().splitlines()[-1] if process.stdout else ""
                print(line, flush=True)
                out.write(line + "\n")
                out.flush()
            time.sleep(1)


def sweep_ppm(args: argparse.Namespace) -> None:
    import re

    from services.ppm.model import ProcessRewardModel
    from services.trainer.bootstrap import BootstrapConfig, ppm_pairs
    from services.trainer.ppm_train import pairwise_accuracy, train_ppm

    config = replace(BootstrapConfig(), corruptions_per_step=args.per_step)
    torch.manual_seed(args.seed)
    heldout, train = ppm_pairs(config)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.policy)
    ppm = ProcessRewardModel.from_pretrained(args.policy)
    ppm_config = replace(config.ppm, max_steps=args.steps, center_coefficient=args.center)
    metrics = train_ppm(ppm, tokenizer, train, ppm_config, progress=False)

    def kind(pair: Any) -> str:  # services.trainer.corrupt's kinds, read back from the pair
        if pair.chosen.startswith(stepfmt.ANSWER_START):
            return "answer"
        if re.sub(r"\d", "", pair.chosen) == re.sub(r"\d", "", pair.rejected):
            code = pair.rejected.split("\n")[-2]
            in_question = set(re.findall(r"\d+", code)) <= set(re.findall(r"\d+", pair.question))
            return "question" if in_question else "miscopy"
        if re.sub(r"[-+*/]", "", pair.chosen) == re.sub(r"[-+*/]", "", pair.rejected):
            return "operator"
        return "variable" if pair.chosen.split("\n")[0] == pair.rejected.split("\n")[0] else "skip"

    by_kind = defaultdict(list)
    for pair in heldout:
        by_kind[kind(pair)].append(pair)
    own = own_sample_metrics(ppm, tokenizer, args.own) if args.own else {}
    report = {
        "steps": args.steps,
        "center": args.center,
        "per_step": args.per_step,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "heldout_accuracy": round(pairwise_accuracy(ppm, tokenizer, heldout), 3),
        "by_kind": {k: [len(v), round(pairwise_accuracy(ppm, tokenizer, v), 3)] for k, v in sorted(by_kind.items())},
        "train_seconds": round(metrics["seconds"], 1),
        **own,
    }
    print(json.dumps(report))


def sample_own(args: argparse.Namespace) -> None:
    import asyncio
    import logging

    from services.common.store import ModelStore
    from services.search.engine.orchestrator import Orchestrator, Sampling
    from services.search.eval.evaluate import EvalProblem, EvalSettings, trees_for
    from services.search.eval.local import local_backends

    logging.getLogger("transformers").setLevel(logging.ERROR)
    problems = generate(args.level, args.n, seed=args.seed)

    async def run() -> list[dict[str, Any]]:
        async with local_backends(ModelStore(args.store)) as backends:
            settings = EvalSettings("maj").searching(rollouts=args.samples)
            forest = [trees_for(EvalProblem(p.id, p.question, p.answer), settings) for p in problems]
            await Orchestrator(backends, Sampling(temperature=0.8, max_new_tokens=256)).run(
                [tree for trees in forest for tree in trees], seed=0
            )
            finished = [
                (p, tree, node)
                for p, trees in zip(problems, forest, strict=True)
                for tree in trees
                for node in tree.terminals()
            ]
            verdicts = await backends.grader.grade([(p.answer, node.answer or "") for p, _, node in finished])
            return [
                {
                    "id": p.id,
                    "question": p.question,
                    "answer": node.answer or "",
                    "correct": bool(ok),
                    "steps": list(tree.steps_of(node.id)),
                }
                for (p, tree, node), ok in zip(finished, verdicts, strict=True)
            ]

    rows = asyncio.run(run())
    Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(json.dumps({"trajectories": len(rows), "right": sum(r["correct"] for r in rows)}))


def own_sample_metrics(ppm: Any, tokenizer: Any, path: str) -> dict[str, Any]:
    """Best-of-N, score-weighted vote and within-problem AUC of the PPM's final-step score on sampled rows."""
    from services.ppm.scorer import ScoreItem, encode_packable, score_packed

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    ppm.eval()
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        encoded = [
            encode_packable(PromptRenderer(tokenizer), ScoreItem(r["question"], tuple(r["steps"])), 100_000)
            for r in chunk
        ]
        for row, scores in zip(chunk, score_packed(ppm, encoded, pad_id_of(tokenizer)), strict=True):
            row["score"] = scores[-1]
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_problem[row["id"]].append(row)
    best = vote = majority = found = 0
    aucs = []
    for group in by_problem.values():
        best += max(group, key=lambda r: r["score"])["correct"]
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for r in group:
            totals[r["answer"]] += (1 + r["score"]) / 2
            counts[r["answer"]] += 1
        right = {r["answer"] for r in group if r["correct"]}
        vote += max(totals, key=totals.__getitem__) in right
        majority += max(counts, key=counts.__getitem__) in right
        found += bool(right)
        good = [r["score"] for r in group if r["correct"]]
        bad = [r["score"] for r in group if not r["correct"]]
        if good and bad:
            aucs.append(sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad)))
    n = len(by_problem)
    return {
        "own_problems": n,
        "own_best_of_n": round(best / n, 3),
        "own_vote": round(vote / n, 3),
        "own_majority": round(majority / n, 3),
        "own_pass": round(found / n, 3),
        "own_auc": round(sum(aucs) / len(aucs), 3) if aucs else None,
    }


def table(args: argparse.Namespace) -> None:
    with open(args.results) as results:
        rows = [json.loads(line) for line in results if line.strip()]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_name[row["name"]].append(row)
    print("| configuration | seeds | greedy L1 (proxy) | greedy L2 (proxy) | padded tokens (M) |")
    print("|---|---|---|---|---|")
    for name, runs in by_name.items():
        l1 = " / ".join(f"{r['greedy_L1']:.2f}" for r in runs)
        l2 = " / ".join(f"{r['greedy_L2']:.2f}" for r in runs)
        print(f"| {name} | {len(runs)} | {l1} | {l2} | {runs[0]['padded_tokens'] / 1e6:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sft = sub.add_parser("sft")
    sft.add_argument("--out", required=True)
    sft.add_argument("--parallel", type=int, default=16)
    sft.add_argument("--device", default="cuda")
    one = sub.add_parser("one")
    one.add_argument("run")
    one.add_argument("tokenizer_dir")
    one.add_argument("device")
    ppm = sub.add_parser("ppm")
    ppm.add_argument("--policy", required=True)
    ppm.add_argument("--steps", type=int, default=250)
    ppm.add_argument("--center", type=float, default=0.1)
    ppm.add_argument("--per-step", type=int, default=3)
    ppm.add_argument("--seed", type=int, default=0)
    ppm.add_argument("--own", help="a `samples` file: also score the policy's own trajectories")
    own = sub.add_parser("samples")
    own.add_argument("--store", required=True)
    own.add_argument("--level", type=int, default=3)
    own.add_argument("--n", type=int, default=60)
    own.add_argument("--seed", type=int, default=777)
    own.add_argument("--samples", type=int, default=16)
    own.add_argument("--out", required=True)
    score = sub.add_parser("own")
    score.add_argument("--ppm", required=True)
    score.add_argument("samples")
    tab = sub.add_parser("table")
    tab.add_argument("results")
    args = parser.parse_args()
    if args.command == "sft":
        sweep_sft(args)
    elif args.command == "one":
        print(json.dumps(train_policy(json.loads(args.run), args.tokenizer_dir, args.device)), flush=True)
    elif args.command == "ppm":
        sweep_ppm(args)
    elif args.command == "samples":
        sample_own(args)
    elif args.command == "own":
        from services.ppm.model import ProcessRewardModel

        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.ppm)
        print(json.dumps(own_sample_metrics(ProcessRewardModel.from_pretrained(args.ppm), tokenizer, args.samples)))
    else:
        table(args)


if __name__ == "__main__":
    main()
