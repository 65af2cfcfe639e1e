"""A restarted trainer resumes the round it left queued or running, with the request it was started with; a round
that cannot resume, or whose baseline fails, says why. The gRPC side, and a real restart of `thinkmesh serve
trainer`: test_round_start.py and test_round_start_sigterm.py."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.common.errors import InvalidInput
from services.common.store import ModelStore
from services.trainer.config import RoundConfig, preset
from services.trainer.core import TrainerCore
from services.trainer.rounds import RoundRunner, Rounds, RoundState
from services.trainer.rounds.state import RoundRequest

pytestmark = pytest.mark.integration


@dataclass
class Recorded:
    """A trainer whose rounds only record the config they were given."""

    store: ModelStore
    configs: list[RoundConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = TrainerCore(self.store, preset("tiny"), self.runner)

    def runner(self, config: RoundConfig) -> RoundRunner:
        return SimpleNamespace(run=lambda: self.configs.append(config))  # type: ignore[return-value]

    def resume(self) -> int | None:
        number = self.core.resume()
        deadline = time.monotonic() + 10
        while self.core.busy and time.monotonic() < deadline:  # the recorded round ends at once
            time.sleep(0.01)
        return number


def test_a_restarted_trainer_resumes_the_queued_round_as_it_was_asked(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "mine.jsonl").write_text(json.dumps({"question": "q?", "answer": "1"}) + "\n")
    request = RoundRequest(pool_size=3, rollouts=5, candidates=2, pool_file="pools/mine.jsonl")
    # What StartRound leaves when the trainer stops before the round's first stage.
    Rounds(store).save(RoundState(round=1, state="queued", stage="", request=request))
    restarted = Recorded(store)
    assert restarted.resume() == 1
    (config,) = restarted.configs
    assert (config.pool_size, config.search.rollouts, config.search.candidates) == (3, 5, 2)
    assert config.pool_file == str((tmp_path / "pools" / "mine.jsonl").resolve())


@pytest.mark.parametrize(("saved", "resumed"), [("queued", True), ("running", True), ("failed", False)])
def test_resume_at_start_takes_queued_and_running_rounds_only(tmp_path: Path, saved: str, resumed: bool) -> None:
    store = ModelStore(tmp_path)
    Rounds(store).save(RoundState(round=0, state="succeeded"))
    Rounds(store).save(RoundState(round=1, state=saved, stage="sft", finished=["search", "extract"]))
    trainer = Recorded(store)
    assert trainer.resume() == (1 if resumed else None)
    assert len(trainer.configs) == int(resumed)
    assert trainer.configs == [] or trainer.configs[0].pool_size == preset("tiny").pool_size  # nothing was asked
    if not resumed:  # a failed round waits for StartRound, which resumes it as asked
        assert trainer.core.start_round(RoundRequest(pool_size=4)) == 1
        state = Rounds(store).state(1)
        assert state is not None
        assert (state.state, state.finished, state.request) == (
            "queued",
            ["search", "extract"],
            RoundRequest(pool_size=4),
        )


def test_nothing_to_resume_on_a_new_store_or_after_a_finished_round(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert Recorded(store).resume() is None
    Rounds(store).save(RoundState(round=1, state="rejected"))
    assert Recorded(store).resume() is None


def test_a_round_that_cannot_resume_is_reported_failed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    Rounds(store).save(RoundState(round=1, state="queued", request=RoundRequest(pool_file="pools/gone.jsonl")))
    trainer = Recorded(store)
    assert trainer.resume() is None and trainer.configs == []
    state = Rounds(store).state(1)
    assert state is not None and state.state == "failed" and "pools/gone.jsonl" in state.message


def test_a_round_whose_baseline_fails_says_why(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)  # no models: the baseline evaluation cannot run
    with pytest.raises(RuntimeError, match="bootstrap"):
        RoundRunner(store, preset("tiny"), dispatcher=None).run()  # type: ignore[arg-type]
    state = Rounds(store).state(1)
    assert state is not None and state.state == "failed" and state.message.startswith("baseline: RuntimeError")


def test_the_saved_request_is_checked_like_a_new_one() -> None:
    assert RoundRequest.from_json({"pool_size": 3, "unknown": 1}) == RoundRequest(pool_size=3)
    with pytest.raises(InvalidInput, match="rollouts=-1 is out of range"):
        RoundRequest.from_json({"rollouts": -1})
