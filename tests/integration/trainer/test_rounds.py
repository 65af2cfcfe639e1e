"""A self-evolution round end to end on small parts: Celery searches over real services (the policy writes
teacher and corrupted steps), extraction, SFT and PPM training of micro models, evaluation, a gated publish —
and a trainer stopped after its search resumes without searching again."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from services.common.store import ModelStore
from services.math.curriculum import generate
from services.search.eval.compare import read_results
from services.trainer.config import preset
from services.trainer.dispatch import CeleryDispatcher
from services.trainer.rounds import RoundRunner, Rounds, held_out
from support.search_tier import teacher_tier
from support.tiny_models import publish_micro_models

pytestmark = pytest.mark.timeout(900)
CONFIG = preset("tiny", seed=5)


class CountingDispatcher(CeleryDispatcher):
    sent = 0

    def missing(self, job):  # type: ignore[no-untyped-def]
        missing = super().missing(job)
        return missing

    def run(self, job, progress=None):  # type: ignore[no-untyped-def]
        CountingDispatcher.sent += len(self.missing(job))
        return super().run(job, progress)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelStore, CeleryDispatcher]]:
    root = tmp_path_factory.mktemp("rounds")
    store = ModelStore(root / "store")
    publish_micro_models(store)
    with teacher_tier(root, store.root, CONFIG, dispatcher=CountingDispatcher) as tier:
        yield store, tier.dispatcher


def test_a_round_stopped_after_its_search_resumes_and_publishes(stack: tuple[ModelStore, CeleryDispatcher]) -> None:
    store, dispatcher = stack
    first = RoundRunner(store, CONFIG, dispatcher, stop_after="search").run()
    assert first.round == 1 and first.finished == ["search"] and first.state == "running"
    trees = sorted((store.root / "rounds" / "0001" / "trees").glob("*.json"))
    assert len(trees) == CONFIG.pool_size
    stamps = {p.name: p.stat().st_mtime_ns for p in trees}
    sent_before = CountingDispatcher.sent

    # A new trainer process would do exactly this: look for the unfinished round and carry on.
    reported: list[tuple[str, int, int]] = []
    resumed = RoundRunner(store, CONFIG, dispatcher, progress=lambda *event: reported.append(event)).run()
    assert resumed.round == 1
    for stage, steps in (("sft", CONFIG.sft.max_steps), ("ppm", CONFIG.ppm.max_steps)):
        assert [done for name, done, _ in reported if name == stage] == list(range(1, steps + 1))
    assert CountingDispatcher.sent == sent_before  # no search was sent again
    assert {p.name: p.stat().st_mtime_ns for p in trees} == stamps
    assert resumed.finished == ["search", "extract", "sft", "ppm", "evaluate", "publish"]
    assert resumed.state == "succeeded", resumed.message
    assert resumed.metrics["pool_solved"] > 0.5 and resumed.metrics["ppm_pairs"] > 0
    assert resumed.metrics["sft_trajectories"] > 0
    heldout = (store.root / "rounds" / "0001" / "pairs_heldout.jsonl").read_text().splitlines()
    assert resumed.metrics["heldout_pairs"] == len(heldout)
    for key in ("greedy_accuracy", "maj_accuracy", "bon_accuracy", "mcts_accuracy", "frontier_pass_at_k"):
        assert 0.0 <= resumed.metrics[key] <= 1.0
    # Every problem's result of round 0's and round 1's evaluation, for `thinkmesh compare`.
    for number in ("0000", "0001"):
        for method in ("greedy", "maj", "bon", "mcts"):
            rows = read_results([store.root / "rounds" / number / "eval" / f"{method}.jsonl"])
            assert len(rows) == len(CONFIG.eval_levels) * CONFIG.eval_per_level
            if number == "0001":
                assert sum(rows.values()) / len(rows) == resumed.metrics[f"{method}_accuracy"]
    # Published: the candidates became current, with their lineage.
    assert store.current_name("policy") == resumed.policy_version == "v2"
    assert store.current_name("ppm") == resumed.ppm_version == "v2"
    assert store.get("policy", "v2").lineage.round == 1
    # Problem by problem against round 0, per level and pooled, with the McNemar test.
    assert resumed.metrics["paired_previous_round"] == 0
    for method in ("greedy", "mcts"):
        pooled = resumed.metrics["paired_previous"][method]["all"]
        assert pooled["n"] == len(CONFIG.eval_levels) * CONFIG.eval_per_level and 0.0 <= pooled["p"] <= 1.0
        assert pooled["after"] == pytest.approx(resumed.metrics[f"{method}_accuracy"], abs=1e-4)
        gain = (pooled["gained"] - pooled["lost"]) / pooled["n"]
        assert pooled["after"] - pooled["before"] == pytest.approx(gain, abs=1e-3)
        assert resumed.metrics[f"{method}_gained_vs_previous"] == pooled["gained"]
    assert set(resumed.metrics["eval_seconds"]) == {"greedy", "maj", "mcts"}
    for key in ("sft_dropped_foreign_number", "sft_dropped_code_error", "lone_solutions"):
        assert resumed.metrics[key] >= 0
    report, per_level = (store.root / "rounds" / "report.md").read_text().split("\n\n")
    lines = report.splitlines()
    assert lines[0].startswith("| round | MCTS acc |") and "greedy vs previous" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["0", "1"]
    assert per_level.splitlines()[0].startswith("| round | level | greedy |")
    assert (store.root / "rounds" / "progress.png").stat().st_size > 1000
    assert Rounds(store).next_number() == 2


def test_sft_data_keeps_only_correct_clean_trajectories(stack: tuple[ModelStore, CeleryDispatcher]) -> None:
    store, _ = stack
    rows = [json.loads(line) for line in (store.root / "rounds" / "0001" / "sft.jsonl").read_text().splitlines()]
    from services.math import stepfmt
    from services.math.grading import Grader

    references = {p.question: p.answer for p in generate(1, CONFIG.pool_size, seed=CONFIG.seed + 7_001)}
    with Grader() as grader:
        for row in rows:
            answer = stepfmt.final_answer(row["steps"])
            assert answer is not None and grader.grade(references[row["question"]], answer).equal
    per_problem: dict[str, int] = {}
    for row in rows:
        per_problem[row["question"]] = per_problem.get(row["question"], 0) + 1
    assert max(per_problem.values()) <= 2  # the top-2 trajectories per problem
    pairs = [json.loads(p) for p in (store.root / "rounds" / "0001" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    heldout = (store.root / "rounds" / "0001" / "pairs_heldout.jsonl").read_text().splitlines()
    assert not {json.loads(p)["question"] for p in heldout} & {p["question"] for p in pairs}  # split by problem
    # a held-out problem's trajectories stay out of the policy's SFT as well
    assert not any(held_out(row["question"], CONFIG.heldout_pair_fraction) for row in rows)


def test_training_replays_the_bootstrap_data(stack: tuple[ModelStore, CeleryDispatcher]) -> None:
    store, _ = stack
    policy, ppm = store.get("policy", "v2").lineage, store.get("ppm", "v2").lineage
    assert f"{CONFIG.sft_replay} teacher" in policy.data and f"x{CONFIG.sft_weight}" in policy.data
    assert "teacher-vs-corrupted" in ppm.data and policy.metrics["steps"] == CONFIG.sft.max_steps


def test_the_curriculum_as_a_pool_file_searches_like_the_built_in_pool(
    stack: tuple[ModelStore, CeleryDispatcher], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from dataclasses import replace

    from services.trainer.rounds.rules import solved

    _, dispatcher = stack
    # Round 1's built-in pool, exported as a user would have it: a JSONL problem file.
    per_level = -(-CONFIG.pool_size // len(CONFIG.pool_levels))
    exported = tmp_path_factory.mktemp("pool") / "curriculum.jsonl"
    rows = [
        {"id": p.id, "question": p.question, "answer": p.answer, "level": p.level}
        for level in CONFIG.pool_levels
        for p in generate(level, per_level, seed=CONFIG.seed + 7_001)
    ]
    exported.write_text("".join(json.dumps(row) + "\n" for row in rows))
    other = ModelStore(tmp_path_factory.mktemp("file-pool") / "store")
    publish_micro_models(other)
    from_file = CeleryDispatcher(dispatcher.app, other.root, poll_s=0.2)
    state = RoundRunner(other, replace(CONFIG, pool_file=str(exported)), from_file, stop_after="search").run()
    assert state.finished == ["search"]
    built_in = dispatcher.results.job("rounds/0001/trees")
    searched = from_file.results.job("rounds/0001/trees")
    assert sorted(searched) == sorted(built_in)  # the same problems, under the same ids
    assert solved(searched) == solved(built_in) and solved(searched)  # and the same ones solved
