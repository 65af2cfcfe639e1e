"""The embedded components in one process: the store's current policy and PPM, a sandbox zygote, a grader.

Used by `thinkmesh eval` (its default) and by the trainer's evaluations, so no server has to run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from services.common.store import ModelStore
from services.search.engine.backends import Backends, Prompt, Runner, Sampled, execution
from services.search.engine.mcts import Execution
from services.search.grader import ProcessGrader


@asynccontextmanager
async def local_backends(
    store: ModelStore,
    *,
    policy_version: str | None = None,
    ppm_version: str | None = None,
    runner: Runner | None = None,
) -> AsyncIterator[Backends]:
    """The store's policy and PPM (current, or the versions named) in this process. Programs run on `runner` when
    one is given (a SandboxService: the trainer's pod runs no model-written code itself), else on an in-process
    sandbox."""
    from services.common.errors import NotReady
    from services.common.settings import load_settings
    from services.policy.hf_engine import HFEngine
    from services.policy.settings import PolicySettings
    from services.ppm.scorer import HFScorer
    from services.sandbox.executor import SandboxExecutor
    from services.sandbox.settings import SandboxSettings

    policy = store.get("policy", policy_version) if policy_version else store.current("policy")
    ppm = store.get("ppm", ppm_version) if ppm_version else store.current("ppm")
    if policy is None or ppm is None:
        raise NotReady(f"the store at {store.root} has no current policy and PPM: run `thinkmesh bootstrap`")
    decoding = load_settings(PolicySettings)  # THINKMESH_POLICY_PREFIX_CACHE_MB, THINKMESH_POLICY_LEAN_DECODING
    engine = HFEngine(
        policy.path,
        policy.version,
        max_batch_sequences=128,
        prefix_cache_mb=decoding.prefix_cache_mb,
        lean_decoding=decoding.lean_decoding,
    )
    scorer = HFScorer(ppm.path, ppm.version, max_batch=64)
    executor = SandboxExecutor(load_settings(SandboxSettings)) if runner is None else None
    if executor is not None:
        await executor.start()
    grader = ProcessGrader()
    try:
        yield Backends(LocalGenerator(engine), runner or LocalRunner(executor), LocalScorer(scorer), grader)
    finally:
        grader.close()
        if executor is not None:
            await executor.close()
        await scorer.close()
        await engine.close()


class LocalGenerator:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        from services.policy.engine import SamplingParams, StepEnd, StepPrompt

        results = await self.engine.generate(
            [StepPrompt(p.question, p.steps) for p in prompts],
            SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed or None),
        )
        return (
            [[Sampled(c.text, c.end is not StepEnd.LENGTH, c.num_tokens, c.logprob) for c in row] for row in results],
            self.engine.version,
        )


class LocalRunner:
    def __init__(self, executor: Any) -> None:
        self.executor = executor

    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]:
        from services.sandbox.model import Program

        results = await self.executor.execute_batch([Program(code=p, timeout_ms=timeout_ms) for p in programs])
        return [execution(r.status.value, r.stdout, r.stderr) for r in results]


class LocalScorer:
    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]:
        from services.ppm.scorer import ScoreItem

        scores = await self.scorer.score([ScoreItem(i.question, i.steps) for i in items])
        return scores, self.scorer.version
