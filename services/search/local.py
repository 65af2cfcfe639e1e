"""The embedded components in one process: the store's current policy and PPM, a sandbox zygote, a grader.

Used by `thinkmesh eval` (its default) and by the trainer's evaluations, so no server has to run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.common.store import ModelStore
from services.search.backends import Backends, LocalGenerator, LocalRunner, LocalScorer, ProcessGrader


@asynccontextmanager
async def local_backends(
    store: ModelStore, *, policy_version: str | None = None, ppm_version: str | None = None
) -> AsyncIterator[Backends]:
    from services.common.errors import NotReady
    from services.common.settings import load_settings
    from services.policy.hf_engine import HFEngine
    from services.ppm.scorer import HFScorer
    from services.sandbox.executor import SandboxExecutor
    from services.sandbox.settings import SandboxSettings

    policy = store.get("policy", policy_version) if policy_version else store.current("policy")
    ppm = store.get("ppm", ppm_version) if ppm_version else store.current("ppm")
    if policy is None or ppm is None:
        raise NotReady(f"the store at {store.root} has no current policy and PPM: run `thinkmesh bootstrap`")
    engine = HFEngine(policy.path, policy.version, max_batch_sequences=128)
    scorer = HFScorer(ppm.path, ppm.version, max_batch=64)
    executor = SandboxExecutor(load_settings(SandboxSettings))
    await executor.start()
    grader = ProcessGrader()
    try:
        yield Backends(LocalGenerator(engine), LocalRunner(executor), LocalScorer(scorer), grader)
    finally:
        grader.close()
        await executor.close()
        await scorer.close()
        await engine.close()
