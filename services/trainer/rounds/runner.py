"""Running a self-evolution round: the stages of `stages.STAGES` in their order, resumably.

Each stage writes its output into `rounds/<n>/` and then records itself as finished in `state.json`
(atomically), so a trainer killed at any point resumes at the first unfinished stage; finished searches are
never sent again. Before the first round, the bootstrap models are evaluated once as round 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.common.store import ModelStore
from services.trainer.config import RoundConfig
from services.trainer.dispatch import CeleryDispatcher
from services.trainer.rounds.stages import STAGE_NAMES, STAGES, RoundContext
from services.trainer.rounds.state import Rounds, RoundState
from services.trainer.training.launch import Launcher, LocalLauncher
from services.trainer.training.spec import Strategy

if TYPE_CHECKING:
    from services.trainer.evaluation import OpenSandbox

log = logging.getLogger(__name__)


class RoundRunner:
    def __init__(
        self,
        store: ModelStore,
        config: RoundConfig,
        dispatcher: CeleryDispatcher,
        *,
        progress: Callable[[str, int, int], None] | None = None,
        on_publish: Callable[[str, str], None] | None = None,
        before_search: Callable[[], None] | None = None,
        sandbox: OpenSandbox | None = None,
        launcher: Launcher | None = None,
        strategy: Strategy | None = None,
        stop_after: str | None = None,
    ) -> None:
        self.context = RoundContext(
            store=store,
            rounds=Rounds(store),
            config=config,
            dispatcher=dispatcher,
            progress=progress or (lambda stage, done, total: None),
            on_publish=on_publish,
            before_search=before_search,
            sandbox=sandbox,
            launcher=launcher or LocalLauncher(),
            strategy=strategy or Strategy(),
        )
        self.stop_after = stop_after  # tests: simulate a crash after this stage

    def run(self) -> RoundState:
        rounds = self.context.rounds
        number = rounds.next_number()
        try:
            self._ensure_baseline()
        except Exception as exc:  # recorded, so that GetRound says why a queued round never started
            state = rounds.state(number) or RoundState(round=number, stage="")
            state.state, state.message = "failed", f"baseline: {type(exc).__name__}: {exc}"
            rounds.save(state)
            raise
        state = rounds.state(number) or RoundState(round=number)
        state.state, state.message = "running", ""
        log.info("round %d: resuming at %s", number, next((s for s in STAGE_NAMES if s not in state.finished), "done"))
        for stage in STAGES:
            if stage.name in state.finished:
                continue
            state.stage = stage.name
            rounds.save(state)
            started = time.monotonic()
            try:
                stage.run(self.context, state)
            except Exception as exc:
                state.state, state.message = "failed", f"{stage.name}: {type(exc).__name__}: {exc}"
                rounds.save(state)
                raise
            state.seconds[stage.name] = round(time.monotonic() - started, 1)
            state.finished.append(stage.name)
            rounds.save(state)
            if state.state != "running" or stage.name == self.stop_after:
                break
        return state

    def _ensure_baseline(self) -> None:
        """Round 0's row: the current (bootstrap) models evaluated on the same held-out set, once."""
        context = self.context
        if context.rounds.state(0) is not None:
            return
        policy, ppm = context.store.current_name("policy"), context.store.current_name("ppm")
        if policy is None or ppm is None:
            raise RuntimeError("the store has no current policy and PPM: run `thinkmesh bootstrap` first")
        metrics = context.evaluate(0, policy, ppm, [])
        state = RoundState(
            round=0,
            state="succeeded",
            stage="publish",
            finished=list(STAGE_NAMES),
            metrics=metrics,
            policy_version=policy,
            ppm_version=ppm,
        )
        context.rounds.save(state)
        context.report(state)
