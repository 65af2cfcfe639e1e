"""Where a decoding step's time goes on this machine: the hf sampling loop's time per step against rows and
dtype, a launch and sync round trip, and the torch profiler's top operators for 32 steps of 32 rows.

    python experiments/decode_profile.py --store STORE [--cudnn-attention]

STORE holds a policy (`thinkmesh bootstrap`). `--cudnn-attention` keeps cuDNN among torch's attention backends,
as torch has it by default: on a Hopper GPU its plan building then tops the profile (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from services.common.store import ModelStore
from services.math.curriculum import generate
from services.policy.decoding import sample_candidates
from services.policy.engine import StepPrompt
from services.policy.hf_engine import HFEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--cudnn-attention", action="store_true", help="leave cuDNN attention on (torch's default)")
    args = parser.parse_args()

    policy = ModelStore(args.store).current("policy")
    if policy is None:
        raise SystemExit(f"no policy in {args.store}: run `thinkmesh bootstrap` first")
    engine = HFEngine(policy.path, policy.version)
    if args.cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(True)
    on_gpu = engine.device.startswith("cuda")
    print(f"device {engine.device}, threads {torch.get_num_threads()}", flush=True)
    questions = [p.question for p in generate(2, 64, seed=5)]

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    def decode(model: torch.nn.Module, rows: int, steps: int, *, stop: bool) -> tuple[float, list[int]]:
        """rows candidates (4 per prompt), `steps` tokens each unless a step marker stops them."""
        texts = [engine.render(StepPrompt(q)) for q in questions[: max(1, rows // 4)]]
        encoded, _ = engine._encode(texts, 256)
        with torch.inference_mode():
            sync()
            started = time.perf_counter()
            sampled = sample_candidates(
                model,
                encoded["input_ids"],
                encoded["attention_mask"],
                counts=[rows // len(texts)] * len(texts),
                max_new_tokens=steps,
                stop_ids=(engine._stop_ids or []) if stop else [],
                temperature=0.8,
                generator=torch.Generator(engine.device).manual_seed(0),
            )
            sync()
        return time.perf_counter() - started, [len(s.token_ids) for s in sampled]

    native = next(engine.model.parameters()).dtype
    for dtype in (native, torch.float32):
        model = engine.model.to(dtype)
        decode(model, 4, 8, stop=False)  # warm-up
        for rows in (4, 16, 64, 256):
            seconds, _ = decode(model, rows, 32, stop=False)
            print(f"{dtype} rows={rows:4d}, 32 steps: {1000 * seconds / 32:.2f} ms/step", flush=True)
        for rows in (4, 32, 128):
            seconds, lengths = decode(model, rows, 256, stop=True)
            print(
                f"{dtype} rows={rows:4d} to their markers: {seconds:.3f} s, longest {max(lengths)}, "
                f"median {statistics.median(lengths)} tokens",
                flush=True,
            )
    engine.model.to(native)

    x = torch.ones(16, device=engine.device)
    sync()
    started = time.perf_counter()
    for _ in range(1000):
        x = x + 1
    sync()
    print(f"1000 tiny kernels: {1000 * (time.perf_counter() - started):.1f} ms", flush=True)
    started = time.perf_counter()
    for _ in range(200):
        (x + 1).tolist()
    print(f"200 kernel + copy-back round trips: {1000 * (time.perf_counter() - started):.1f} ms", flush=True)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as profiler:
        decode(engine.model, 32, 32, stop=False)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=22), flush=True)


if __name__ == "__main__":
    main()
