"""`thinkmesh bootstrap` and `thinkmesh evolve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _quiet_libraries() -> None:
    import logging

    from services.common.logs import configure_logging

    configure_logging("text", "INFO")
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _bootstrap(args: argparse.Namespace) -> int:
    from services.common.store import ModelStore
    from services.trainer.bootstrap import bootstrap as build
    from services.trainer.bootstrap import config_for

    _quiet_libraries()
    report = build(
        ModelStore(args.store),
        config_for(args.preset, args.seed, args.sft_steps),
        force=args.force,
        progress=not args.quiet,
    )
    if report["skipped"]:
        print(f"store already has policy {report['policy']} and ppm {report['ppm']}: nothing to do (--force rebuilds)")
    else:
        print(
            f"published policy {report['policy']} ({report['parameters'] / 1e6:.2f}M parameters) and ppm "
            f"{report['ppm']} in {report['seconds']}s; PPM held-out pair accuracy "
            f"{report['ppm_training']['heldout_pair_accuracy']:.3f}"
        )
    if args.json:
        print(json.dumps(report))
    return 0


def _retries(text: str) -> tuple[tuple[int, int], ...]:
    from services.trainer.config import parse_retries

    try:
        return parse_retries(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _levels(text: str) -> tuple[int, ...]:
    from services.math.curriculum import LEVELS

    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels are comma-separated numbers, not {text!r}") from None
    if not levels or any(level not in LEVELS for level in levels):
        raise argparse.ArgumentTypeError(f"levels must be among {sorted(LEVELS)}, not {text!r}")
    return levels


def _eval_dataset(spec: str | None) -> str | None:
    """A dataset name as it is; a file as an absolute path (the trainer may run elsewhere than the shell)."""
    if spec is None:
        return None
    from services.math.datasets import dataset_names

    return spec if spec in dataset_names() else str(Path(spec).resolve())


def _evolve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from services.common.errors import InvalidInput, ThinkmeshError
    from services.common.store import ModelStore
    from services.dev.stack import LocalStack, interrupt_on_sigterm, local_trainer_settings
    from services.math.datasets import load_problems
    from services.trainer.bootstrap import bootstrap, config_for
    from services.trainer.config import preset
    from services.trainer.data import read_trajectories
    from services.trainer.progress import StageBars
    from services.trainer.rounds import RoundRunner, Rounds
    from services.trainer.rounds.report import markdown_table
    from services.trainer.rounds.rules import read_pool
    from services.trainer.wiring import make_runner_factory

    _quiet_libraries()
    state_dir = Path(args.state_dir).resolve()
    stack = LocalStack(state_dir, announce=lambda line: print(line, file=sys.stderr, flush=True))
    store = ModelStore(stack.store)
    bootstrap(store, config_for(args.bootstrap_preset, seed=0))
    config = preset(
        args.preset,
        pool_size=args.pool,
        pool_levels=args.pool_levels,
        seed=args.seed,
        unsolved_retries=args.unsolved_retries,
        frontier_retries=args.frontier_retries,
        pool_file=str(Path(args.pool_file).resolve()) if args.pool_file else None,
        eval_dataset=_eval_dataset(args.eval_dataset),
        eval_size=args.eval_size,
        curriculum_replay=args.curriculum_replay or None,
        sft_file=str(Path(args.sft_file).resolve()) if args.sft_file else None,
    )
    if args.rollouts:
        config = config.searching(rollouts=args.rollouts)
    try:  # a bad problem file is reported before anything starts
        if config.pool_file:
            read_pool(config.pool_file)  # read once: the rounds take it from the cache
        if config.eval_dataset:
            load_problems(config.eval_dataset)
        if config.sft_file:
            read_trajectories(Path(config.sft_file))
        upcoming = Rounds(store).next_number()
        if (args.teacher or args.sft_file) and upcoming != 1:
            raise InvalidInput(f"--teacher and --sft-file start round 1; this store's next round is {upcoming}")
    except ThinkmeshError as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 2
    bars = StageBars()

    interrupt_on_sigterm()
    try:
        stack.start(with_search=False)
        if args.teacher:
            config = replace(config, teacher_target=stack.start_teacher(args.teacher, model=args.teacher_model))
        factory = make_runner_factory(local_trainer_settings(stack), store, progress=bars, stop_after=args.stop_after)
        rounds = Rounds(store)
        # Up to round `--rounds`: the same command run again resumes an interrupted round and adds none.
        bar = tqdm(total=rounds.to_run(args.rounds), desc="rounds")
        while rounds.to_run(args.rounds):
            runner: RoundRunner = factory(replace(config))
            state = runner.run()
            bars.close()
            bar.update()
            print(f"round {state.round}: {state.state} ({state.message or 'ok'})", file=sys.stderr)
            if state.state == "failed" or args.stop_after:
                break
        bar.close()
        print(markdown_table(rounds.states()))
        print(f"report: {store.root / 'rounds' / 'report.md'}, plot: {store.root / 'rounds' / 'progress.png'}")
    except KeyboardInterrupt:
        if not stack.failure:
            print("interrupted: run the same command again to resume the round", file=sys.stderr)
            return 130
    finally:
        stack.stop()
    if stack.failure:  # a service kept dying: the supervisor stopped the round
        print(f"thinkmesh evolve: {stack.failure}; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    boot = sub.add_parser("bootstrap", help="train the embedded tiny policy and PPM into the store (once)")
    boot.add_argument("--store", default=None, help="store root (default: $THINKMESH_STORE or ./.thinkmesh/store)")
    boot.add_argument(
        "--preset",
        choices=("small", "micro"),
        default="small",
        help="small: the embedded default; micro: seconds, for tests",
    )
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument("--sft-steps", type=int, default=None, help="override the SFT optimizer steps")
    boot.add_argument("--force", action="store_true", help="rebuild even when the store has models")
    boot.add_argument("--quiet", action="store_true", help="no progress bars")
    boot.add_argument("--json", action="store_true", help="print the full report as JSON")
    boot.set_defaults(func=_bootstrap)

    evolve = sub.add_parser("evolve", help="run self-evolution rounds on this machine (resumable)")
    evolve.add_argument(
        "--rounds", type=int, default=3, help="run the rounds up to this one (default 3); a rerun resumes"
    )
    evolve.add_argument(
        "--preset",
        choices=("default", "demo", "tiny", "rstar-r1", "rstar-r2", "rstar-r3", "rstar-r4"),
        default="default",
        help="the round's configuration: the embedded ones, or the paper's rounds for real models (docs/models.md)",
    )
    evolve.add_argument("--pool", type=int, default=None, help="problems per round (default: the preset's)")
    evolve.add_argument(
        "--pool-levels",
        type=_levels,
        default=None,
        metavar="L[,L…]",
        help="curriculum levels of the pool, a repeat weighting a level (default: around the frontier)",
    )
    evolve.add_argument(
        "--pool-file",
        default=None,
        metavar="FILE",
        help="search your own problems instead of the curriculum: JSONL with question and answer (optional id, "
        "level, source); the MATH and GSM8K files of ../shared/data as they are",
    )
    evolve.add_argument(
        "--eval-dataset",
        default=None,
        metavar="NAME|FILE",
        help="evaluate each round on this dataset (any `thinkmesh eval` dataset, or a problem file) instead of "
        "the curriculum's levels",
    )
    evolve.add_argument("--eval-size", type=int, default=None, help="problems of --eval-dataset (default 100)")
    evolve.add_argument(
        "--curriculum-replay",
        action="store_true",
        help="with --pool-file, still mix the curriculum's teacher data into SFT and PPM training",
    )
    evolve.add_argument(
        "--teacher",
        default=None,
        metavar="TARGET",
        help="search round 1 with a teacher instead of your model: an OpenAI-compatible endpoint (http://…/v1, "
        "shown 2 worked examples), a model directory, or a running PolicyService's host:port",
    )
    evolve.add_argument("--teacher-model", default="", help="the endpoint's model name (with an http teacher)")
    evolve.add_argument(
        "--sft-file",
        default=None,
        metavar="FILE",
        help="round 1 trains on these trajectories (JSONL: question and steps in the step format) instead of searching",
    )
    evolve.add_argument("--rollouts", type=int, default=None)
    evolve.add_argument(
        "--unsolved-retries",
        type=_retries,
        default=None,
        metavar="R:C[,R:C]",
        help="search the unsolved problems again with R rollouts and C candidates, once per pass (e.g. 64:16,128:16)",
    )
    evolve.add_argument(
        "--frontier-retries",
        type=_retries,
        default=None,
        metavar="R:C[,R:C]",
        help="search the problems the first search solved only sometimes again with R rollouts and C candidates",
    )
    evolve.add_argument("--seed", type=int, default=None)
    evolve.add_argument("--state-dir", default=".thinkmesh", help="store, broker and logs (default ./.thinkmesh)")
    evolve.add_argument("--bootstrap-preset", choices=("small", "micro"), default="small")
    evolve.add_argument("--stop-after", default=None, help="stop after this stage (to test resuming)")
    evolve.set_defaults(func=_evolve)
