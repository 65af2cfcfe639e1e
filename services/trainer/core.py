"""The trainer's core: runs rounds one at a time in a background thread; reports their state; lists models.

It knows nothing of gRPC. A round is the resumable RoundRunner. StartRound saves the round's state before it
answers; a trainer that starts again after a stop or a crash resumes a round that was queued or running at its
first unfinished stage, with the request it was started with (`resume`); StartRound resumes a failed one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from services.common.errors import FailedPrecondition, InvalidInput, NotFound
from services.common.store import ModelStore, ModelVersion
from services.trainer.config import RoundConfig
from services.trainer.rounds import RoundRunner, Rounds, RoundState
from services.trainer.rounds.rules import read_pool
from services.trainer.rounds.state import RoundRequest

log = logging.getLogger(__name__)


class TrainerCore:
    def __init__(
        self, store: ModelStore, config: RoundConfig, make_runner: Callable[[RoundConfig], RoundRunner]
    ) -> None:
        self.store = store
        self.config = config
        self.rounds = Rounds(store)
        self._make_runner = make_runner
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_round(self, request: RoundRequest | None = None) -> int:
        """Starts the next round, or resumes the unfinished one, in the background. Its state ("queued", with the
        request) is saved before this returns: GetRound finds the round at once, and a trainer stopped before the
        round's first stage resumes it when it starts again (`resume`)."""
        request = request or RoundRequest()
        config = self.round_config(request)
        with self._lock:
            if self.busy:
                raise FailedPrecondition("a round is already running: follow it with GetRound")
            number = self.rounds.next_number()
            state = self.rounds.state(number) or RoundState(round=number, stage="")
            state.state, state.message, state.request = "queued", "", request
            self.rounds.save(state)
            self._launch(number, config)
            return number

    def resume(self) -> int | None:
        """At start-up: resume the latest round when the trainer stopped while it was queued or running (a failed
        round waits for StartRound). Returns its number, or None when there is none to resume."""
        state = self.rounds.latest()
        if state is None or state.state not in ("queued", "running"):
            return None
        request = state.request or RoundRequest()
        try:
            config = self.round_config(request)
        except InvalidInput as exc:  # e.g. its pool file is gone: reported, not retried at every start
            state.state, state.message = "failed", f"resume: {exc}"
            self.rounds.save(state)
            log.error("round %d cannot resume: %s", state.round, exc)
            return None
        with self._lock:
            if self.busy:
                return None
            log.info("round %d was %s when the trainer stopped: resuming it", state.round, state.state)
            self._launch(state.round, config)
        return state.round

    def round_config(self, request: RoundRequest) -> RoundConfig:
        """The trainer's config with the request's knobs (0 / "": the configured value); its files checked."""
        pool = self.in_store(request.pool_file, "pool_file") if request.pool_file else self.config.pool_file
        evaluated = self.eval_source(request.eval_dataset) if request.eval_dataset else self.config.eval_dataset
        if pool:
            read_pool(pool)  # a bad file fails the call, not the round; the round reads it from the cache
        return replace(
            self.config, pool_size=request.pool_size or self.config.pool_size, pool_file=pool, eval_dataset=evaluated
        ).searching(
            rollouts=request.rollouts or self.config.search.rollouts,
            candidates=request.candidates or self.config.search.candidates,
        )

    def _launch(self, number: int, config: RoundConfig) -> None:
        runner = self._make_runner(config)
        self._thread = threading.Thread(target=self._run, args=(runner,), name=f"round-{number}", daemon=True)
        self._thread.start()

    def in_store(self, name: str, what: str) -> str:
        """A file named by a client, relative to the store's root: it may not point outside it."""
        root = self.store.root.resolve()
        path = (root / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(root):
            raise InvalidInput(f"{what} {name!r} must be a path inside the model store (relative to its root)")
        if not path.is_file():
            raise InvalidInput(f"{what} {name!r}: no such file in the model store")
        return str(path)

    def eval_source(self, name: str) -> str:
        from services.math.datasets import dataset_names

        return name if name in dataset_names() else self.in_store(name, "eval_dataset")

    @staticmethod
    def _run(runner: RoundRunner) -> None:
        try:
            runner.run()
        except Exception:  # recorded in the round's state by the runner
            log.exception("round failed")

    def get_round(self, number: int = 0) -> RoundState:
        numbers = self.rounds.numbers()
        if not numbers:
            raise NotFound("no round has run yet")
        number = number or numbers[-1]
        state = self.rounds.state(number)
        if state is None:
            raise NotFound(f"no round {number} (rounds: {', '.join(map(str, numbers))})")
        return state

    def list_models(self, kind: str | None) -> list[tuple[ModelVersion, bool]]:
        kinds = [kind] if kind else ["policy", "ppm"]
        listed: list[tuple[ModelVersion, bool]] = []
        for name in kinds:
            current = self.store.current_name(name)
            listed.extend((v, v.version == current) for v in self.store.versions(name))
        return listed
