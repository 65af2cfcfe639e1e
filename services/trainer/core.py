"""The trainer's core: runs rounds one at a time in a background thread; reports their state; lists models.

It knows nothing of gRPC. A round is the resumable RoundRunner; starting the trainer again after a crash and
calling StartRound resumes the unfinished round at its first unfinished stage.
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

    def start_round(
        self,
        pool_size: int = 0,
        rollouts: int = 0,
        candidates: int = 0,
        *,
        pool_file: str = "",
        eval_dataset: str = "",
    ) -> int:
        for name, value in (("pool_size", pool_size), ("rollouts", rollouts), ("candidates", candidates)):
            if value > 10_000:
                raise InvalidInput(f"{name}={value} is unreasonably large (at most 10000)")
        pool = self.in_store(pool_file, "pool_file") if pool_file else self.config.pool_file
        evaluated = self.eval_source(eval_dataset) if eval_dataset else self.config.eval_dataset
        if pool:
            read_pool(pool)  # a bad file fails the call, not the round; the round reads it from the cache
        with self._lock:
            if self.busy:
                raise FailedPrecondition("a round is already running: follow it with GetRound")
            config = replace(
                self.config, pool_size=pool_size or self.config.pool_size, pool_file=pool, eval_dataset=evaluated
            ).searching(
                rollouts=rollouts or self.config.search.rollouts,
                candidates=candidates or self.config.search.candidates,
            )
            number = self.rounds.next_number()
            runner = self._make_runner(config)
            self._thread = threading.Thread(target=self._run, args=(runner,), name=f"round-{number}", daemon=True)
            self._thread.start()
            return number

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
