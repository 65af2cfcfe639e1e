"""Operator calls in one one-token decoding step: transformers' forward pass against `LeanDecoder.step`.

    python experiments/step_calls.py --policy STORE/models/policy/v1 [--rows 16] [--prompt 200]

Counts every operator torch's profiler records (nested ones included) for one step of `rows` sequences after a
prompt of `prompt` tokens. (How long the steps take is `thinkmesh bench search`'s business: on a shared CPU a
loop of a few steps times the neighbours.)
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM

from services.policy.decoding import _cache_argument, prefill
from services.policy.lean import LeanDecoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=200)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.policy).eval()
    lean = LeanDecoder.of(model)
    if lean is None:
        raise SystemExit("not a model LeanDecoder reproduces (a plain fp32 Qwen2 on the CPU)")
    ids = torch.randint(5, model.config.vocab_size, (args.rows, args.prompt))
    mask = torch.ones_like(ids)
    tokens = torch.randint(5, model.config.vocab_size, (args.rows,))
    with torch.inference_mode():

        def hf_step() -> int:
            encoded = prefill(model, ids, mask)
            grown = torch.cat([mask, mask.new_ones((args.rows, 1))], dim=1)
            position = torch.full((args.rows,), args.prompt)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(
                    input_ids=tokens[:, None],
                    attention_mask=grown,
                    position_ids=position[:, None],
                    use_cache=True,
                    **{_cache_argument(model): encoded.cache},
                )
            return sum(e.count for e in prof.key_averages())

        def lean_step() -> int:
            state = lean.start(prefill(model, ids, mask).cache, mask, 1)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                lean.step(state, tokens, torch.full((args.rows,), args.prompt))
            return sum(e.count for e in prof.key_averages())

        for name, count in (("transformers", hf_step), ("lean", lean_step)):
            print(f"{name:<13} {count():>5} operator calls a step")


if __name__ == "__main__":
    main()
