"""Every step of greedy decoding's trajectory on unseen curriculum problems, for comparing decoding paths.

    python experiments/greedy_paths.py --store STORE --level 3 --n 300 --out new.jsonl
    THINKMESH_POLICY_PREFIX_CACHE_MB=0 THINKMESH_POLICY_LEAN_DECODING=false python experiments/greedy_paths.py \\
        --store STORE --level 3 --n 300 --out plain.jsonl
    cmp new.jsonl plain.jsonl

The problems are the round evaluation's held-out ones (seed 424242); the policy runs in process as `thinkmesh
eval` runs it, with the decoding settings of the environment (THINKMESH_POLICY_*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from services.common.store import ModelStore
from services.math.curriculum import generate
from services.search.engine.orchestrator import Orchestrator, Sampling
from services.search.eval.evaluate import EvalProblem, EvalSettings, trees_for
from services.search.eval.local import local_backends
from services.trainer.evaluation import EVAL_SEED


async def paths(store: str, level: int, n: int, out: Path) -> None:
    problems = [EvalProblem(p.id, p.question, p.answer) for p in generate(level, n, seed=EVAL_SEED)]
    settings = EvalSettings("greedy")
    forest = [trees_for(p, settings) for p in problems]
    async with local_backends(ModelStore(store)) as backends:
        orchestrator = Orchestrator(backends, Sampling(temperature=0.0))
        for start in range(0, len(forest), settings.batch):
            await orchestrator.run([t for trees in forest[start : start + settings.batch] for t in trees], seed=0)
    with out.open("w") as file:
        for problem, (tree,) in zip(problems, forest, strict=True):
            steps = [list(tree.steps_of(node.id)) for node in tree.terminals()]
            file.write(json.dumps({"id": problem.id, "paths": steps}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(paths(args.store, args.level, args.n, args.out))


if __name__ == "__main__":
    main()
