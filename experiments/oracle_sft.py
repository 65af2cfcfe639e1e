"""Can a round's SFT teach more moves than the bootstrap knows, given clean examples? A measurement, not part of
the product.

python experiments/oracle_sft.py --store STORE --out DIR [--examples 50] [--moves 4] [--level 3]

Fine-tunes the store's current policy exactly as a round of `thinkmesh evolve` does (the default round's SFT
recipe, learning rate and step rule, the same replay of teacher solutions of levels 1-2), except that in place
of the search's trajectories it is given EXAMPLES teacher solutions of level-LEVEL problems with MOVES moves
(training seed 777, never an evaluation seed), each repeated like a round's trajectories. Writes DIR as a store
holding the result (and the store's PPM), then evaluates it greedily on 300 unseen problems of levels 3 and 4,
by kind. It bounds what self-evolution could gain if its search found that many solutions of the kind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.store import Lineage, ModelStore
from services.math.curriculum import generate
from services.trainer.config import RoundConfig
from services.trainer.data import Trajectory
from services.trainer.rounds.rules import sft_mix
from services.trainer.sft import train_sft

TRAINING_SEED = 777


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a store with a current policy and PPM")
    parser.add_argument("--out", type=Path, required=True, help="a new store for the result (replaced)")
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--moves", type=int, default=4)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()

    source = ModelStore(args.store)
    shutil.rmtree(args.out, ignore_errors=True)
    out = ModelStore(args.out)
    policy, ppm = source.current("policy"), source.current("ppm")
    if policy is None or ppm is None:
        parser.error(f"{args.store} has no current policy and PPM")
    for kind, version in (("policy", policy), ("ppm", ppm)):
        shutil.copytree(version.path, args.out / "models" / kind / version.version)
        (args.out / "models" / kind / "CURRENT").write_text(version.version)

    config = RoundConfig()
    problems = generate(args.level, 20 * args.examples, seed=TRAINING_SEED)
    chosen = [p for p in problems if p.moves == args.moves][: args.examples]
    examples = [Trajectory(p.question, tuple(p.solution)) for p in chosen]
    data, _, steps = sft_mix(config, 1, examples)  # as round 1, with these in place of the search's
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(policy.path)
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    metrics = train_sft(model, tokenizer, data, replace(config.sft, max_steps=steps), progress=False)
    lineage = Lineage(base_model=f"policy {policy.version}", source="oracle-sft", data=f"{len(chosen)} teacher")
    out.publish_pretrained("policy", model, tokenizer, lineage, make_current=True)

    report: dict[str, object] = {"examples": len(chosen), "steps": steps, "final_loss": metrics["final_loss"]}
    for level in (3, 4):
        command = [sys.executable, "-m", "services.cli", "eval", "--dataset", "curriculum", "--level", str(level)]
        command += ["--n", "300", "--method", "greedy", "--by-kind", "--store", str(args.out), "--json"]
        line = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        summary = json.loads(line)
        report[f"level {level}"] = round(summary["accuracy"], 3)
        report[f"level {level} by kind"] = {kind: round(row["accuracy"], 3) for kind, row in summary["by_kind"].items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
