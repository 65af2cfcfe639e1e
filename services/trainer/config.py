"""Configuration of self-evolution rounds, with named presets (the numbers and why they are what they are)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.trainer.ppm_train import PPMConfig
from services.trainer.sft import SFTConfig


@dataclass(frozen=True)
class RoundConfig:
    # The pool: problems with reference answers, drawn fresh each round from the levels the policy is growing
    # into (self-evolution only learns from problems the search sometimes solves).
    pool_size: int = 150
    pool_levels: tuple[int, ...] = (2, 3, 4, 5)
    # Search budget per problem. Paper: 8 candidates × 16 rollouts (round 1: 5 × 8); scaled to a 2-core CPU.
    rollouts: int = 8
    candidates: int = 4
    max_depth: int = 12
    # Rounds 1–2: terminal-guided Q; from this round on: PPM-augmented (paper: rounds 3–4).
    ppm_q_from_round: int = 3
    # Consecutive code errors tolerated (authors' code: 2 in round 1, 1 afterwards).
    first_round_code_errors: int = 2
    code_errors: int = 1
    pair_margin: float = 0.5
    # Policy SFT from the round-0 model on all SFT data so far; PPM from the new policy on all pairs so far.
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(max_steps=400, batch_size=16, learning_rate=1e-3))
    ppm: PPMConfig = field(default_factory=lambda: PPMConfig(max_steps=300, batch_size=16))
    # Held-out evaluation: unseen problems of levels 3–5, every method at equal rollouts.
    eval_levels: tuple[int, ...] = (3, 4, 5)
    eval_per_level: int = 20
    eval_rollouts: int = 8
    frontier_problems: int = 20
    frontier_samples: int = 16
    heldout_pair_fraction: float = 0.15
    # A round whose MCTS accuracy drops more than this below the current models' is not published.
    regression_gate: float = 0.05
    seed: int = 0


PRESETS: dict[str, RoundConfig] = {
    "default": RoundConfig(),
    # CI: asserts the machinery in minutes, not the gains.
    "tiny": RoundConfig(
        pool_size=6,
        pool_levels=(1,),
        rollouts=2,
        candidates=2,
        max_depth=6,
        sft=SFTConfig(max_steps=4, batch_size=4, warmup_steps=1),
        ppm=PPMConfig(max_steps=4, batch_size=4, warmup_steps=1),
        eval_levels=(1,),
        eval_per_level=4,
        eval_rollouts=2,
        frontier_problems=3,
        frontier_samples=2,
        regression_gate=1.0,
    ),
}


def preset(name: str, **overrides: object) -> RoundConfig:
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
