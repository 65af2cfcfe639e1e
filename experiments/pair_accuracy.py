"""How well a PPM, or a policy's own likelihood, ranks step pairs; a measurement, not part of the product.

python experiments/pair_accuracy.py --ppm DIR PAIRS.jsonl [PAIRS.jsonl ...]
    The share of pairs whose chosen step a stored PPM scores above the rejected one.
python experiments/pair_accuracy.py --policy DIR PAIRS.jsonl [...]
    The same for the policy's likelihood alone: a PPM freshly initialised from the policy with its value head
    zeroed scores a step by tanh(w * m + b), which orders steps exactly as m, the mean log-probability of the
    tokens the policy wrote on the way to the step (services/ppm/model.py).

PAIRS.jsonl are a round's pair files (`STORE/rounds/NNNN/pairs_heldout.jsonl`: one StepPair a line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from services.ppm.model import ProcessRewardModel
from services.trainer.data import step_pairs
from services.trainer.ppm_train import pairwise_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ppm", type=Path, help="a stored PPM directory")
    source.add_argument("--policy", type=Path, help="a policy directory: its likelihood alone")
    parser.add_argument("pairs", nargs="+", type=Path)
    args = parser.parse_args()
    pairs = step_pairs([json.loads(line) for path in args.pairs for line in path.read_text().splitlines()])
    directory = args.ppm or args.policy
    model = ProcessRewardModel.from_pretrained(directory)
    if args.policy is not None:
        with torch.no_grad():
            model.value_head.weight.zero_()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    accuracy = pairwise_accuracy(model, tokenizer, pairs)
    print(json.dumps({"source": str(directory), "pairs": len(pairs), "pair_accuracy": round(accuracy, 3)}))


if __name__ == "__main__":
    main()
