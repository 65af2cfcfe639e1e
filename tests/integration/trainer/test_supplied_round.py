"""`thinkmesh evolve --sft-file`: round 1 trains the user's model on supplied step-format trajectories, with PPM
pairs of their steps against corrupted ones, and searches nothing."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.store import ModelStore
from services.math.curriculum import generate
from services.trainer.config import preset
from services.trainer.rounds import RoundRunner
from support.tiny_models import publish_micro_models


def test_round_one_trains_on_supplied_trajectories(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    publish_micro_models(store)
    supplied = tmp_path / "trajectories.jsonl"
    problems = generate(1, 12, seed=9)
    supplied.write_text(
        "".join(json.dumps({"question": p.question, "steps": list(p.solution)}) + "\n" for p in problems)
    )
    config = preset("tiny", sft_file=str(supplied), seed=2)
    state = RoundRunner(store, config, dispatcher=None).run()  # type: ignore[arg-type]  # no search: no dispatcher
    assert state.state == "succeeded", state.message
    assert state.metrics["supplied_trajectories"] == 12 and state.metrics["ppm_pairs"] > 0
    round_dir = store.root / "rounds" / "0001"
    assert not (round_dir / "trees").exists()  # nothing was searched
    trained = [json.loads(line) for line in (round_dir / "sft.jsonl").read_text().splitlines()]
    assert len(trained) == state.metrics["sft_trajectories"]
    assert {r["question"] for r in trained} <= {p.question for p in problems}
    assert f"round 1 from {supplied}" in store.get("policy", state.policy_version).lineage.data
