"""`make demo`: the whole system on this machine, end to end.

1. bootstrap the embedded tiny models (cached in ./.thinkmesh/store after the first run);
2. start every service on 127.0.0.1 plus a Celery worker (`thinkmesh up`'s stack) over a fresh copy of those
   models in ./.thinkmesh/demo, so every run starts from the same models;
3. run one short self-evolution round on a small pool (search through Celery, SFT, PPM, evaluation, the gate),
   which publishes into the copy if it passes the gate, and the services pick the new versions up;
4. solve unseen level-3 curriculum problems (the first level the embedded models have not learnt) through the
   gRPC SearchService with MCTS, and the same problems by greedy decoding;
5. print the comparison: each method's accuracy, the problems one solves and the other does not, and the chance
   of a split that uneven if neither were better (the exact McNemar test `thinkmesh compare` does);
6. stop everything it started — also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from services.common.store import ModelStore

STATE = Path(".thinkmesh")
DEMO = STATE / "demo"
LEVEL = 3
PROBLEMS = 60
ROLLOUTS = 8


def say(line: str) -> None:
    print(f"==> {line}", flush=True)


async def solve_all(address: str, problems: list) -> list[tuple[Any, float]]:  # type: ignore[type-arg]
    from tqdm import tqdm

    from services.common.channels import open_channel
    from thinkmesh.v1 import search_pb2, search_pb2_grpc

    async with open_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        async def one(problem: Any, bar: tqdm) -> tuple[Any, float]:
            started = time.monotonic()
            reply = await stub.Solve(
                search_pb2.SolveRequest(problem=problem.question, rollouts=ROLLOUTS),
                timeout=900,
                wait_for_ready=True,
            )
            bar.update()
            return reply, time.monotonic() - started

        with tqdm(total=len(problems), desc="solved", unit="problem") as bar:
            return list(await asyncio.gather(*(one(p, bar) for p in problems)))


def fresh_copy(store: ModelStore) -> Path:
    """A new demo directory whose store holds the bootstrap models (the round publishes into it)."""
    demo = DEMO.resolve()
    shutil.rmtree(demo, ignore_errors=True)
    shutil.copytree(store.root / "models", demo / "store" / "models")
    return demo


def self_evolution_round(stack: Any) -> None:
    from services.dev.stack import local_trainer_settings
    from services.trainer.config import preset
    from services.trainer.progress import StageBars
    from services.trainer.rounds import Rounds
    from services.trainer.rounds.report import markdown_table
    from services.trainer.wiring import make_runner_factory, wait_for_current

    store = ModelStore(stack.store)
    bars = StageBars(prefix="round 1 ")

    settings = local_trainer_settings(stack)
    state = make_runner_factory(settings, store, progress=bars)(preset("demo")).run()
    bars.close()
    print(markdown_table(Rounds(store).states()))
    say(f"round {state.round}: {state.state} ({state.message or 'published; the services switch to it'})")
    wait_for_current(settings, store)()


async def greedy(store: ModelStore, problems: list) -> list[bool]:  # type: ignore[type-arg]
    from services.search.eval.evaluate import EvalProblem, EvalSettings, evaluate
    from services.search.eval.local import local_backends

    async with local_backends(store) as backends:
        results, _ = await evaluate(
            [EvalProblem(p.id, p.question, p.answer) for p in problems], backends, EvalSettings(method="greedy")
        )
    return [r.correct for r in results]


def comparison(problems: list, mcts_answers: list[str], mcts: list[bool], greedy: list[bool]) -> str:  # type: ignore[type-arg]
    """The demo's last words: accuracies, the problems only one method solves, and the McNemar test on them."""
    from services.search.eval.compare import sign_test

    n = len(problems)
    lines = [f"{'solved by':<10}{'problem':<82}{'ref':>7}{'MCTS':>7}"]
    for problem, answer, by_mcts, by_greedy in zip(problems, mcts_answers, mcts, greedy, strict=True):
        if by_mcts != by_greedy:
            question = problem.question if len(problem.question) <= 80 else problem.question[:77] + "..."
            lines.append(f"{'MCTS' if by_mcts else 'greedy':<10}{question:<82}{problem.answer:>7}{answer[:7]:>7}")
    only_mcts = sum(m and not g for m, g in zip(mcts, greedy, strict=True))
    only_greedy = sum(g and not m for m, g in zip(mcts, greedy, strict=True))
    lines += [
        "",
        f"{n} unseen level-{LEVEL} problems: greedy decoding {sum(greedy)}/{n}, MCTS ({ROLLOUTS} rollouts, PPM) "
        f"{sum(mcts)}/{n}; MCTS alone solved {only_mcts}, greedy alone {only_greedy} "
        f"(exact McNemar p = {sign_test(only_mcts, only_greedy):.2g}: the chance of a split this uneven if neither "
        "were better).",
        "On 300 such problems, and after self-evolution rounds: docs/results.md.",
    ]
    return "\n".join(lines)


def main() -> int:
    import logging

    from services.common.logs import configure_logging
    from services.dev.stack import LocalStack, interrupt_on_sigterm
    from services.math.curriculum import generate
    from services.math.grading import Grader
    from services.trainer.bootstrap import bootstrap, config_for

    configure_logging("text", "WARNING")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    store = ModelStore(STATE.resolve() / "store")
    if store.current_name("policy") and store.current_name("ppm"):
        say(f"models cached in {store.root} (policy {store.current_name('policy')}, ppm {store.current_name('ppm')})")
    else:
        say("training the embedded tiny policy and PPM (first run only, a few minutes)")
        report = bootstrap(store, config_for("small", seed=0))
        say(f"bootstrap done in {report['seconds']} s")
    problems = generate(LEVEL, PROBLEMS, seed=777)
    demo = fresh_copy(store)
    stack = LocalStack(demo, announce=lambda line: say(line))
    interrupt_on_sigterm()
    try:
        say("starting sandbox, policy, PPM, a Celery worker and the SearchService on 127.0.0.1")
        address = stack.start()
        say("one short self-evolution round (8 problems, 4 rollouts; `thinkmesh evolve` runs real ones)")
        self_evolution_round(stack)
        say(f"solving {len(problems)} unseen level-{LEVEL} problems through SearchService.Solve ({ROLLOUTS} rollouts)")
        replies = asyncio.run(solve_all(address, problems))
    except KeyboardInterrupt:
        say(stack.failure or "interrupted")  # the supervisor's reason when a service kept dying
        return 1 if stack.failure else 130
    finally:
        stack.stop()
        say("every service stopped")
    say("greedy decoding of the same problems, in process, for comparison")
    greedy_correct = asyncio.run(greedy(ModelStore(stack.store), problems))
    with Grader() as grader:
        mcts_correct = [grader.grade(p.answer, r.answer).equal for p, (r, _) in zip(problems, replies, strict=True)]
    print()
    print(comparison(problems, [r.answer for r, _ in replies], mcts_correct, greedy_correct))
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
