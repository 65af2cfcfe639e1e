"""`thinkmesh up`, `thinkmesh solve`, `thinkmesh eval` and `thinkmesh compare`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.search.engine.answers import DEFAULT_METHOD, METHODS

if TYPE_CHECKING:
    from services.search.eval.evaluate import EvalSettings

# --------------------------------------------------------------------------------------------------- up


def _up(args: argparse.Namespace) -> int:
    from services.common.store import ModelStore
    from services.dev.stack import LocalStack, interrupt_on_sigterm

    state = Path(args.state_dir).resolve()
    store = ModelStore(state / "store")
    if not (store.current_name("policy") and store.current_name("ppm")):
        print("the store is empty: bootstrapping the embedded models first", file=sys.stderr)
        from services.trainer.bootstrap import bootstrap, config_for

        bootstrap(store, config_for(args.preset, seed=0))

    interrupt_on_sigterm()
    stack = LocalStack(state, announce=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        address = stack.start()
        print(f"search listening on {address}", flush=True)
        signal.pause()  # the supervisor restarts what dies; Ctrl-C, SIGTERM or a child that keeps dying end it
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping every service", file=sys.stderr, flush=True)
        stack.stop()
    if stack.failure:
        print(f"thinkmesh up: {stack.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------ solve


def _channel(args: argparse.Namespace) -> Any:
    from services.common.channels import open_channel
    from services.common.security import TlsFiles

    tls = TlsFiles(ca=Path(args.tls_ca)) if args.tls_ca else None
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    return open_channel(args.target, tls=tls, token=token)


def _solve(args: argparse.Namespace) -> int:
    import asyncio

    from grpc import aio

    from thinkmesh.v1 import search_pb2, search_pb2_grpc

    async def call() -> Any:
        async with _channel(args) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            request = search_pb2.SolveRequest(
                problem=args.problem,
                rollouts=args.rollouts,
                candidates=args.candidates,
                searches=args.searches,
                reference_answer=args.reference or "",
            )
            return await stub.Solve(request, timeout=args.timeout)

    try:
        reply = asyncio.run(call())
    except aio.AioRpcError as exc:
        print(f"thinkmesh: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    stats = {f: getattr(reply.stats, f) for f in search_pb2.SearchStats.DESCRIPTOR.fields_by_name}
    if args.json:
        print(
            json.dumps(
                {
                    "answer": reply.answer,
                    "solution": reply.solution,
                    "score": reply.score,
                    "stats": stats,
                    "policy_version": reply.policy_version,
                    "ppm_version": reply.ppm_version,
                }
            )
        )
    else:
        print(
            f"answer: {reply.answer}   (score {reply.score:.3f}, {stats['rollouts']} rollouts, {stats['wall_ms']} ms)"
        )
        print(reply.solution)
    return 0


# ------------------------------------------------------------------------------------------------- eval


def load_problems(args: argparse.Namespace) -> list[Any]:
    from services.common.errors import InvalidInput
    from services.search.eval.evaluate import EvalProblem

    if args.dataset == "curriculum":
        from services.math.curriculum import generate
        from services.math.curriculum.rephrase import rephrasing

        generated = generate(args.level, args.n, seed=args.seed)
        if args.rephrase:  # only the problems it says another way, under their own ids (`thinkmesh compare`)
            said = rephrasing(args.rephrase)
            generated = [r for p in generated if (r := said.problem(p)).question != p.question]
        return [EvalProblem(p.id, p.question, p.answer, p.shape) for p in generated]
    if args.rephrase:
        raise InvalidInput("--rephrase rewrites curriculum problems: use it with --dataset curriculum")
    from services.math.datasets import load_problems as load

    problems = [EvalProblem(p.id, p.question, p.answer) for p in load(args.dataset)]
    return problems[: args.n] if args.n else problems


def _eval(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from tqdm import tqdm

    from services.common.store import ModelStore
    from services.search.eval.evaluate import evaluate, write_results
    from services.search.eval.local import local_backends

    logging.getLogger("transformers").setLevel(logging.ERROR)
    from services.common.errors import ThinkmeshError

    try:
        problems = load_problems(args)
    except ThinkmeshError as exc:  # an unknown dataset, a missing file, a bad row: said, not a traceback
        print(f"thinkmesh eval: {exc}", file=sys.stderr)
        return 2
    chosen = eval_settings(args)
    if args.target:
        print("thinkmesh: --target evaluation goes through SearchService.Solve", file=sys.stderr)
        return _eval_remote(args, problems, chosen)
    sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else [chosen.search.rollouts]
    points = []
    every_result = []  # with --sweep, one row per problem and rollout count
    for rollouts in sweep:
        settings = chosen.searching(rollouts=rollouts)

        async def run(settings: EvalSettings = settings) -> Any:
            async with local_backends(ModelStore(args.store)) as backends:
                with tqdm(
                    total=len(problems), desc=f"{settings.method} r={settings.search.rollouts}", disable=args.json
                ) as bar:
                    return await evaluate(problems, backends, settings, progress=bar.update)

        results, summary = asyncio.run(run())
        points.append(summary)
        if not args.json:
            print(
                f"{summary['method']:<7} rollouts={summary['rollouts']:<4} accuracy={summary['accuracy']:.3f} "
                f"pass@k={summary['pass_at_k']:.3f} "
                f"n={summary['n']}  tokens/problem={summary['tokens_per_problem']:.0f}  "
                f"s/problem={summary['seconds_per_problem']:.2f}"
            )
        if args.by_kind and not args.json:
            for kind, row in summary.get("by_kind", {}).items():
                print(f"  {kind:<28} n={row['n']:<4} accuracy={row['accuracy']:.3f} pass@k={row['pass_at_k']:.3f}")
        if args.show:
            for r in results:
                print(f"  {'✓' if r.correct else '✗'} {r.id}: {r.answer!r} (reference {r.reference!r})")
        every_result.extend(results)
    if args.results:
        write_results(Path(args.results), every_result)
    if args.plot:
        _plot(points, Path(args.plot), args)
    if args.json:
        print(json.dumps(points[-1] if len(points) == 1 else {**points[-1], "sweep": points}))
    return 0


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """The evaluation's settings: the preset's (--preset) or the defaults, then every flag given over them."""
    from services.search.eval.evaluate import EVAL_PRESETS, EvalSettings

    base = EVAL_PRESETS[args.preset] if args.preset else EvalSettings(method="greedy")
    knobs = {
        "rollouts": args.rollouts,
        "candidates": args.candidates,
        "max_depth": args.max_depth,
        "seed": args.seed,
    }
    settings = base.searching(**{k: v for k, v in knobs.items() if v is not None})
    sampling = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    return dataclasses.replace(
        settings,
        method=args.method or settings.method,
        answer_method=args.answer or settings.answer_method,
        searches=args.searches or settings.searches,
        sampling=dataclasses.replace(settings.sampling, **{k: v for k, v in sampling.items() if v is not None}),
    )


def _eval_remote(args: argparse.Namespace, problems: list[Any], settings: EvalSettings) -> int:
    import asyncio

    from services.math.grading import Grader
    from services.search.eval.evaluate import ProblemResult, write_results
    from thinkmesh.v1 import search_pb2, search_pb2_grpc

    async def run() -> list[Any]:
        async with _channel(args) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            s = settings.search
            requests = [
                search_pb2.SolveRequest(
                    problem=p.question,
                    rollouts=s.rollouts,
                    candidates=s.candidates,
                    max_depth=s.max_depth,
                    searches=settings.searches,
                )
                for p in problems
            ]
            return list(await asyncio.gather(*(stub.Solve(r, timeout=args.timeout) for r in requests)))

    replies = asyncio.run(run())
    with Grader() as grader:
        verdicts = grader.grade_many([(p.answer, r.answer) for p, r in zip(problems, replies, strict=True)])
    if args.results:
        rows = [
            ProblemResult(
                p.id,
                p.kind,
                p.question,
                p.answer,
                r.answer,
                v.equal,
                tokens=0,
                rollouts=r.stats.rollouts,
                seconds=r.stats.wall_ms / 1000,
            )
            for p, r, v in zip(problems, replies, verdicts, strict=True)
        ]
        write_results(Path(args.results), rows)
    summary = {
        "method": "mcts",
        "n": len(problems),
        "rollouts": settings.search.rollouts,
        "candidates": settings.search.candidates,
        "searches": settings.searches,
        "accuracy": sum(v.equal for v in verdicts) / max(1, len(problems)),
    }
    print(json.dumps(summary) if args.json else f"accuracy={summary['accuracy']:.3f} n={summary['n']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from services.search.eval.compare import compare, read_results

    def files(spec: str) -> list[Path]:
        return [Path(name) for name in spec.split(",") if name]

    try:
        result = compare(read_results(files(args.a)), read_results(files(args.b)))
    except (OSError, ValueError) as error:
        print(f"thinkmesh compare: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
        return 0
    print(f"A {args.a}: accuracy {result.accuracy_a:.3f}")
    print(f"B {args.b}: accuracy {result.accuracy_b:.3f}")
    print(
        f"{result.n} problems in both: A right and B wrong {result.only_a}, B right and A wrong {result.only_b}; "
        f"exact McNemar test p = {result.p_value:.3g}"
    )
    if result.unmatched:
        print(f"{result.unmatched} problems are in only one of them (left out)")
    return 0


def _plot(points: list[dict[str, Any]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot([p["rollouts"] for p in points], [p["accuracy"] for p in points], marker="o")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("rollouts")
    axis.set_ylabel("accuracy")
    axis.set_title(
        f"{points[-1]['method']} on {args.dataset}" + (f" level {args.level}" if args.dataset == "curriculum" else "")
    )
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="run the whole system on this machine (embedded defaults) until Ctrl-C")
    up.add_argument("--state-dir", default=".thinkmesh", help="store, broker and logs (default ./.thinkmesh)")
    up.add_argument("--preset", default="small", choices=("small", "micro"), help="models to bootstrap if none")
    up.set_defaults(func=_up)

    def client_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", default="127.0.0.1:50054", help="SearchService address")
        parser.add_argument("--token-file", default=None, help="a file holding the bearer token")
        parser.add_argument("--tls-ca", default=None, help="CA certificate to verify the server (enables TLS)")
        parser.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")

    solve = sub.add_parser("solve", help="ask SearchService for a solution")
    solve.add_argument("problem")
    client_options(solve)
    solve.add_argument("--rollouts", type=int, default=0)
    solve.add_argument("--candidates", type=int, default=0)
    solve.add_argument("--searches", type=int, default=0)
    solve.add_argument("--reference", default=None, help="reference answer (training mode)")
    solve.add_argument("--json", action="store_true")
    solve.set_defaults(func=_solve)

    evaluation = sub.add_parser("eval", help="accuracy of a decoding method on a dataset")
    evaluation.add_argument("--dataset", required=True, help="curriculum, a dataset of ../shared/data, or a JSONL file")
    evaluation.add_argument("--level", type=int, default=1)
    evaluation.add_argument("--n", type=int, default=100)
    evaluation.add_argument("--seed", type=int, default=12345, help="curriculum seed (held out from training seeds)")
    evaluation.add_argument(
        "--rephrase",
        choices=("taught", "held-out"),
        default=None,
        help="curriculum: only the problems these rephrasings say another way (held-out: wordings never trained on)",
    )
    evaluation.add_argument(
        "--preset",
        choices=("rstar-eval",),
        default=None,
        help="start from a named configuration (rstar-eval: the authors' inference search); flags override it",
    )
    evaluation.add_argument("--method", choices=("greedy", "bon", "maj", "mcts"), default=None, help="default greedy")
    evaluation.add_argument("--rollouts", type=int, default=None, help="N for maj/bon, R for mcts (default 16)")
    evaluation.add_argument("--candidates", type=int, default=None, help="candidates per expansion (default 4)")
    evaluation.add_argument("--max-depth", type=int, default=None, help="steps per trajectory (default 16)")
    evaluation.add_argument("--searches", type=int, default=None, help="mcts: independent searches pooled (default 1)")
    evaluation.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0.8)")
    evaluation.add_argument("--max-new-tokens", type=int, default=None, help="new tokens per step (default 256)")
    evaluation.add_argument(
        "--answer", choices=METHODS, default=None, help=f"how MCTS picks its answer (default {DEFAULT_METHOD})"
    )
    evaluation.add_argument("--sweep", default=None, help="comma-separated rollout counts, e.g. 1,2,4,8,16")
    evaluation.add_argument("--plot", default=None, help="write accuracy against rollouts to this PNG")
    evaluation.add_argument("--store", default=None)
    evaluation.add_argument("--show", action="store_true", help="print every problem's answer")
    evaluation.add_argument(
        "--by-kind", action="store_true", help="accuracy per kind of problem (curriculum: moves and number length)"
    )
    evaluation.add_argument(
        "--results", default=None, help="write every problem's result to this JSONL file (for `thinkmesh compare`)"
    )
    evaluation.add_argument("--json", action="store_true")
    client_options(evaluation)
    evaluation.set_defaults(target=None, func=_eval)

    comparison = sub.add_parser(
        "compare", help="are two evaluations of the same problems different? (files from `eval --results`)"
    )
    comparison.add_argument("a", help="results file(s) of A, comma-separated to pool (e.g. one per level)")
    comparison.add_argument("b", help="results file(s) of B, the same problems")
    comparison.add_argument("--json", action="store_true")
    comparison.set_defaults(func=_compare)
