"""Where torch runs: the device a model engine or a trainer picks, and what the CPU can compute in.

torch is imported only when a device is picked, so that services.common stays importable in the images that
have no torch (sandbox, search).
"""

from __future__ import annotations

from pathlib import Path


def pick_device(requested: str) -> str:
    """The device to run on ("auto": the GPU if there is one), with torch set up for it."""
    import torch

    device = requested if requested != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        avoid_cudnn_attention()
    return device


def free_device_memory() -> None:
    """Give back what this process holds on the GPU for objects no longer referenced (a released model engine):
    collect them, then empty torch's cache, so the next model finds the memory free."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def avoid_cudnn_attention() -> None:
    """Take cuDNN out of torch's attention backends (process-wide; the others stay in their order).

    torch sends attention with a padding mask to cuDNN first on Hopper GPUs, and cuDNN builds an execution plan
    for every shape it has not seen: ≈ 35 ms each on an H200, measured. A search never repeats a shape (prompts
    of every length, a cache one token longer each step), so every decoding step paid for a new plan and the
    GPU ran slower than two CPU cores (docs/benchmarks.md). The other fused kernels take any shape.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where autocast to it pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
