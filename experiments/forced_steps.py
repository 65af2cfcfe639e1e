"""Where a policy leaves the teacher's solution; a measurement, not part of the product.

python experiments/forced_steps.py --policy DIR [--level 3] [--moves 4] [--n 50] [--seed 12345]

Takes the first N curriculum problems of the level (eval seed) whose teacher solution has MOVES moves, gives
the policy the question and the teacher's first k steps, for every k, and decodes the next step greedily. Each
next step is counted as one of:
  teacher      the teacher's own step k (what it should write)
  print        the print step, written while moves remain (the policy thinks it is done)
  later move   the comment of a later teacher step (a move skipped)
  comment      the teacher's comment with other code (the right move, a number or operation wrong)
  other        anything else
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.math.curriculum import generate
from services.math.stepfmt import END_OF_CODE, END_OF_STEP, render_prompt

KINDS = ("teacher", "print", "later move", "comment", "other")


def next_step(model: Any, tokenizer: Any, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    stops = tokenizer.convert_tokens_to_ids([END_OF_STEP, END_OF_CODE])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=96, do_sample=False, eos_token_id=stops, pad_token_id=stops[0])
    return str(tokenizer.decode(out[0, ids.shape[1] :])).strip()


def kind_of(step: str, teacher: list[str], k: int, moves: int) -> str:
    comment = step.split("\n", 1)[0]
    if step == teacher[k].strip():
        return "teacher"
    if k < moves and "print(" in step:
        return "print"
    if any(comment == later.split("\n", 1)[0] for later in teacher[k + 1 : moves]):
        return "later move"
    if comment == teacher[k].split("\n", 1)[0]:
        return "comment"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="a stored policy directory")
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--moves", type=int, default=4, help="teacher steps before the print step")
    parser.add_argument("--n", type=int, default=50, help="problems with that many moves")
    parser.add_argument("--seed", type=int, default=12345, help="curriculum seed (the eval seed by default)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    model = AutoModelForCausalLM.from_pretrained(args.policy)
    model.eval()  # type: ignore[no-untyped-call]
    problems = [p for p in generate(args.level, 40 * args.n, seed=args.seed) if p.moves == args.moves][: args.n]
    counts: Counter[tuple[int, str]] = Counter()
    for problem in problems:
        teacher = list(problem.solution)
        for k in range(args.moves + 1):
            step = next_step(model, tokenizer, render_prompt(problem.question, teacher[:k]))
            counts[k, kind_of(step, teacher, k, args.moves)] += 1
    print(f"{len(problems)} level-{args.level} problems of {args.moves} moves; next step after the teacher's first k")
    print("| k | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for k in range(args.moves + 1):
        print(f"| {k} | " + " | ".join(str(counts[k, kind]) for kind in KINDS) + " |")


if __name__ == "__main__":
    main()
