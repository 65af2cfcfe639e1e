"""The `thinkmesh` command.

Each group of subcommands is a module of this room with a `register(subparsers)` function (listed in
COMMAND_MODULES); those modules import nothing heavy at the top, so `thinkmesh --help` stays fast and a sandbox
image without torch can still run `thinkmesh serve sandbox`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from services import __version__

# Modules that add subcommands. Every image installs the whole package and these import only the standard library
# at the top, so each one imports everywhere: one that fails is a bug, and the error says which.
COMMAND_MODULES = (
    "services.cli.sandbox",
    "services.cli.problems",
    "services.cli.models",
    "services.cli.search",
    "services.cli.trainer",
    "services.cli.train",
    "services.cli.bench",
    "services.cli.secrets",
)

# `thinkmesh serve NAME` → the service's one wiring function, `async def run(**overrides)`.
SERVICES = {
    "sandbox": "services.sandbox.main",
    "policy": "services.policy.main",
    "ppm": "services.ppm.main",
    "search": "services.search.service.main",
    "trainer": "services.trainer.main",
}


def _serve(args: argparse.Namespace) -> int:
    from services.common.errors import ConfigError

    try:
        module = importlib.import_module(SERVICES[args.service])
    except ModuleNotFoundError as exc:
        print(
            f"thinkmesh: cannot serve {args.service}: {exc} (is the '{args.service}' extra installed?)", file=sys.stderr
        )
        return 2
    try:
        asyncio.run(module.run(port=args.port, host=args.host))
    except ConfigError as exc:
        print(f"thinkmesh: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _worker(args: argparse.Namespace) -> int:
    from services.search.worker.main import run_worker

    return int(run_worker(concurrency=args.concurrency, queues=args.queues))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinkmesh", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"thinkmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one gRPC service until SIGTERM")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--port", type=int, default=None, help="port to bind (0 picks a free one)")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a Celery worker for search tasks")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument("--queues", default=None, help="comma-separated queues: solve, round (default: both)")
    worker.set_defaults(func=_worker)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
