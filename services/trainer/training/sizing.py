"""How much GPU memory a training stage needs: arithmetic from the parameters, the optimizer and the activations.

Per GPU, for a decoder of P parameters (L layers of width h, vocabulary V) trained by AdamW under FSDP full
sharding over N GPUs, with bf16 compute over fp32 master weights (services/trainer/training/hf.py):

    sharded state     16 P / N    fp32 weights 4 + fp32 gradients 4 + AdamW's two moments 8 bytes a parameter
    gathered weights   6 P_layer  bf16 copies of the layer being computed and the next (prefetched), and its bf16
                                  gradients before they are reduce-scattered
                     + 4 V h      the embedding and the LM head gathered in bf16 when they run (2 V h when tied)
    activations       b s (2 h L + 34 h)   with activation checkpointing: each layer's input kept (bf16), one
                                  layer's internals recomputed at a time (~34 h bytes a token, Korthikanti et al.
                                  2022, attention without the s² term: sdpa/flash never store the score matrix)
                      b s 34 h L  without checkpointing
                    + 10 b s V    the logits: bf16, their fp32 copy for the loss, and its gradient
    runtime           ~3 GiB      CUDA context, NCCL buffers, allocator fragmentation

b is the micro batch (sequences per GPU per pass) and s the sequence length. On one GPU nothing is sharded (N = 1)
and nothing is gathered. The measured check: a CPU run reports its parameters and the bytes its weights and
AdamW state hold (`thinkmesh bench train`), exactly 12 bytes a parameter (the gradients are freed between steps);
the GPU script (scripts/device/train_bench.sh) compares the peak memory a real run allocates with this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
RUNTIME_BYTES = 3 * GIB


@dataclass(frozen=True)
class Shape:
    """A Qwen2-architecture decoder's dimensions."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_parameters(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attention = h * h + 2 * h * kv + h * h + h + 2 * kv  # q, k, v (with biases), o
        mlp = 3 * h * self.intermediate
        return attention + mlp + 2 * h  # two RMSNorms

    @property
    def parameters(self) -> int:
        vocabulary = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_parameters + vocabulary + self.hidden


# Qwen2.5(-Math)'s published configurations.
SHAPES: dict[str, Shape] = {
    "0.5b": Shape("Qwen2.5-0.5B", 896, 24, 14, 2, 4864, 151936, tied=True),
    "1.5b": Shape("Qwen2.5-Math-1.5B", 1536, 28, 12, 2, 8960, 151936, tied=True),
    "7b": Shape("Qwen2.5-Math-7B", 3584, 28, 28, 4, 18944, 152064, tied=False),
}


@dataclass(frozen=True)
class Estimate:
    state: int
    gathered: int
    activations: int
    runtime: int

    @property
    def total(self) -> int:
        return self.state + self.gathered + self.activations + self.runtime


def estimate(shape: Shape, gpus: int, micro_batch: int, sequence: int, *, checkpointing: bool = True) -> Estimate:
    """Bytes per GPU (see the module's doc)."""
    p, h, v = shape.parameters, shape.hidden, shape.vocab
    tokens = micro_batch * sequence
    gathered = 0
    if gpus > 1:
        gathered = 6 * shape.layer_parameters + (2 if shape.tied else 4) * v * h
    kept = (2 * h * shape.layers + 34 * h) if checkpointing else 34 * h * shape.layers
    return Estimate(
        state=16 * p // gpus,
        gathered=gathered,
        activations=tokens * kept + 10 * tokens * v,
        runtime=RUNTIME_BYTES,
    )


def smallest_fit(shape: Shape, gpu_bytes: int, micro_batch: int, sequence: int, *, headroom: float = 0.9) -> int:
    """The fewest GPUs (a power of two up to 64) whose estimate fits in `headroom` of each GPU's memory; 0: none."""
    for gpus in (1, 2, 4, 8, 16, 32, 64):
        if estimate(shape, gpus, micro_batch, sequence).total <= headroom * gpu_bytes:
            return gpus
    return 0


def table(gpu_gib: tuple[int, ...] = (80, 40, 24), sequence: int = 4096, micro_batch: int = 1) -> str:
    """The sizing table of docs/operations.md: per stage shape, the estimate on 1, 2, 4 and 8 GPUs, and the fewest
    GPUs of each memory size that fit (policy SFT and the PPM share a backbone: the same table holds for both)."""
    lines = [
        f"micro batch {micro_batch} x {sequence} tokens, AdamW, bf16 compute over fp32 weights, activation "
        "checkpointing, FSDP full sharding over N GPUs (GiB per GPU)",
        "",
        "| model | parameters | N=1 | N=2 | N=4 | N=8 | " + " | ".join(f"fewest {g} GiB GPUs" for g in gpu_gib) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(gpu_gib),
    ]
    for key in ("1.5b", "7b"):
        shape = SHAPES[key]
        per_gpu = [estimate(shape, n, micro_batch, sequence).total / GIB for n in (1, 2, 4, 8)]
        fits = [smallest_fit(shape, g * GIB, micro_batch, sequence) for g in gpu_gib]
        lines.append(
            f"| {shape.name} | {shape.parameters / 1e9:.2f} B | "
            + " | ".join(f"{gib:.1f}" for gib in per_gpu)
            + " | "
            + " | ".join(str(n) if n else "-" for n in fits)
            + " |"
        )
    return "\n".join(lines)
