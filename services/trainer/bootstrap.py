"""`thinkmesh bootstrap`: the embedded default's round-0 models, built into the store.

No pretrained weights can be downloaded where thinkmesh is built, so it grows its own (this plays the role of
the paper's bootstrap model):
1. a byte-level BPE tokenizer trained on curriculum text (markers as single tokens, one token per digit);
2. a tiny Qwen2-architecture policy fine-tuned on teacher solutions of the curriculum's easy levels;
3. a PPM initialised from that policy, given a first cheap training: Bradley–Terry on teacher steps against
   corrupted versions of the same steps that share the prefix (the mistakes the policy makes: a miscopied
   number, another number of the question, a wrong operation or variable, a skipped move; corrupt.py).
The trainer's rounds later replace the PPM with ones trained on search trees, as in the paper.
Idempotent: with a current policy and PPM in the store it does nothing (unless forced).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from transformers import Qwen2ForCausalLM

from services.common.store import Lineage, ModelStore
from services.math import stepfmt
from services.math.curriculum.rephrase import teacher_problems
from services.policy.tiny import PRESETS, tiny_config, train_tokenizer
from services.ppm.model import ProcessRewardModel
from services.trainer.corrupt import corrupted_pairs
from services.trainer.data import PPMConfig, SFTConfig, StepPair, Trajectory
from services.trainer.ppm_train import pairwise_accuracy, train_ppm
from services.trainer.sft import train_sft

log = logging.getLogger(__name__)

BASE_MODEL = "thinkmesh-tiny-qwen2"


@dataclass(frozen=True)
class BootstrapConfig:
    preset: str = "small"
    levels: tuple[int, ...] = (1, 2)
    # Distinct teacher problems for SFT; the step budget (1,000 steps × batch 16) sees each about 1.3 times.
    # Optimizer steps, not tokens, decide how well a tiny model learns to copy numbers, and a short schedule
    # needs Adam's second moment to adapt quickly (β2 = 0.95). Measured with experiments/bootstrap_sweep.py (greedy
    # on unseen level-1 problems, 3 seeds; docs/results.md): 1,000 steps at 1.5e-3 with β2 0.95 match 1,500
    # at 2e-3 with β2 0.999; fewer steps, larger rates, batch 8 or 12, or a narrower model fall off sharply.
    sft_problems: int = 12_000
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(max_steps=1000, learning_rate=1.5e-3, warmup_steps=60, adam_beta2=0.95)
    )
    ppm_problems: int = 2_000
    # Three corruptions per teacher step share its prefix and so cost little more than one.
    corruptions_per_step: int = 3
    ppm: PPMConfig = field(default_factory=lambda: PPMConfig(max_steps=200, adam_beta2=0.95))
    heldout_problems: int = 100  # their pairs (one corruption per step) measure the PPM, never train it
    tokenizer_problems_per_level: int = 400
    # Of the teacher problems (SFT, PPM pairs, tokenizer), the share said another way by the taught rephrasings
    # (`services/math/curriculum/rephrase.py`): the templates' few wordings alone leave a person's own phrasing of
    # the same problem unread (docs/results.md measures both on held-out rephrasings).
    rephrased: float = 0.5
    seed: int = 0


PRESET_CONFIGS = {
    "small": BootstrapConfig(),
    # Seconds, for tests of the machinery: the models learn nothing useful.
    "micro": BootstrapConfig(
        preset="micro",
        sft_problems=64,
        sft=SFTConfig(max_steps=8, batch_size=4, warmup_steps=1),
        ppm_problems=32,
        ppm=PPMConfig(max_steps=4, batch_size=4, warmup_steps=1),
        heldout_problems=6,
        tokenizer_problems_per_level=20,
    ),
}


def ppm_pairs(config: BootstrapConfig) -> tuple[list[StepPair], list[StepPair]]:
    """(held-out, training) teacher-vs-corrupted pairs for the first PPM, split by problem: a held-out pair's
    problem never appears in training, so its accuracy says how the PPM does on problems it has not seen."""
    rng = random.Random(config.seed)
    problems = [
        p
        for level in (*config.levels, max(config.levels) + 1)
        for p in teacher_problems(
            level, config.ppm_problems // (len(config.levels) + 1), config.seed + 101 * level, config.rephrased
        )
    ]
    rng.shuffle(problems)
    heldout = corrupted_pairs(problems[: config.heldout_problems], rng)
    return heldout, corrupted_pairs(problems[config.heldout_problems :], rng, config.corruptions_per_step)


def bootstrap(store: ModelStore, config: BootstrapConfig, *, force: bool = False, progress: bool = True) -> dict:  # type: ignore[type-arg]
    """Builds and publishes the round-0 policy and PPM; returns a report (timings, losses, PPM accuracy)."""
    if not force and store.current_name("policy") and store.current_name("ppm"):
        return {"skipped": True, "policy": store.current_name("policy"), "ppm": store.current_name("ppm")}
    started = time.monotonic()
    torch.manual_seed(config.seed)
    preset = PRESETS[config.preset]

    # 1. Tokenizer over every level's text, so harder levels' words are not split into bytes later.
    corpus = [
        stepfmt.render_prompt(p.question, p.solution)
        for level in range(1, 6)
        for p in teacher_problems(
            level, config.tokenizer_problems_per_level, config.seed + 7919 * level, config.rephrased
        )
    ]
    tokenizer = train_tokenizer(corpus, preset.vocab_size)

    # 2. The policy: SFT on teacher solutions of the easy levels.
    per_level = config.sft_problems // len(config.levels)
    teacher = [
        p for level in config.levels for p in teacher_problems(level, per_level, config.seed + level, config.rephrased)
    ]
    model = Qwen2ForCausalLM(tiny_config(tokenizer, preset))  # type: ignore[no-untyped-call]
    parameters = sum(p.numel() for p in model.parameters())
    log.info("bootstrap policy: %.2fM parameters, %d teacher solutions", parameters / 1e6, len(teacher))
    sft_metrics = train_sft(
        model, tokenizer, [Trajectory(p.question, tuple(p.solution)) for p in teacher], config.sft, progress=progress
    )

    lineage_data = f"curriculum levels {','.join(map(str, config.levels))}, {len(teacher)} teacher solutions"
    policy = store.publish_pretrained(
        "policy",
        model,
        tokenizer,
        Lineage(base_model=BASE_MODEL, round=0, source="bootstrap", data=lineage_data, metrics=sft_metrics),
    )

    # 3. The PPM: initialised from the policy, trained on teacher-vs-corrupted step pairs.
    heldout, train_pairs = ppm_pairs(config)
    ppm = ProcessRewardModel.from_pretrained(policy.path, likelihood=config.ppm.likelihood)
    before = pairwise_accuracy(ppm, tokenizer, heldout)
    ppm_metrics = train_ppm(ppm, tokenizer, train_pairs, config.ppm, progress=progress)
    after = pairwise_accuracy(ppm, tokenizer, heldout)
    ppm_metrics.update({"heldout_pair_accuracy_before": before, "heldout_pair_accuracy": after})

    ppm_version = store.publish_pretrained(
        "ppm",
        ppm,
        tokenizer,
        Lineage(
            base_model=f"policy {policy.version}",
            round=0,
            source="bootstrap",
            data=f"{len(train_pairs)} teacher-vs-corrupted step pairs",
            metrics=ppm_metrics,
        ),
    )
    return {
        "skipped": False,
        "policy": policy.version,
        "ppm": ppm_version.version,
        "parameters": parameters,
        "sft": sft_metrics,
        "ppm_training": ppm_metrics,
        "seconds": round(time.monotonic() - started, 1),
        "config": asdict(config),
    }


def config_for(preset: str, seed: int, sft_steps: int | None = None) -> BootstrapConfig:
    config = replace(PRESET_CONFIGS[preset], seed=seed)
    if sft_steps is not None:
        config = replace(config, sft=replace(config.sft, max_steps=sft_steps))
    return config
