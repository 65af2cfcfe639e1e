"""`thinkmesh sandbox ...`: run a program from stdin, remotely or locally with the same isolation.

Imports nothing heavy at module level: `thinkmesh --help` must not start grpc or the zygote.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sandbox = subparsers.add_parser("sandbox", help="run Python programs in the isolated sandbox")
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the program read from stdin",
        description="Run the program read from stdin. Without --target it runs here, with the same isolation as "
        "the server (as root: namespaces, seccomp, an unprivileged uid).",
    )
    run.add_argument("--target", help="a sandbox server, HOST:PORT or dns:///name:port (default: run locally)")
    run.add_argument("--timeout-ms", type=int, default=0, help="wall-clock limit (default: the server's)")
    run.add_argument("--memory-mb", type=int, default=0, help="memory limit (default: the server's)")
    run.add_argument("--json", action="store_true", help="print one JSON object with the whole result")
    run.add_argument("--token", help="bearer token for a server that requires one")
    run.add_argument("--tls-ca", type=Path, help="CA certificate to verify a TLS server with")
    run.set_defaults(func=_run)

    layers = commands.add_parser("layers", help="start a zygote here and show which isolation layers are active")
    layers.set_defaults(func=_layers)


def _run(args: argparse.Namespace) -> int:
    from services.common.errors import ConfigError, ThinkmeshError
    from services.sandbox.model import Program

    program = Program(sys.stdin.read(), timeout_ms=args.timeout_ms, memory_mb=args.memory_mb)
    try:
        result = asyncio.run(_remote(args, program) if args.target else _local(program))
    except (ConfigError, ThinkmeshError) as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.aio.AioRpcError):
            print(f"thinkmesh: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        raise
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.status.value != "ok":
            truncated = ", output truncated" if result.truncated else ""
            print(f"thinkmesh: {result.status.value} after {result.duration_ms} ms{truncated}", file=sys.stderr)
    return 0 if result.status.value == "ok" else 1


async def _local(program: Any) -> Any:
    from services.common.settings import load_settings
    from services.sandbox.executor import SandboxExecutor
    from services.sandbox.settings import SandboxSettings

    # The CLI speaks for itself below; the server's log lines would repeat it.
    logging.getLogger("services.sandbox").setLevel(logging.ERROR)
    executor = SandboxExecutor(load_settings(SandboxSettings, max_workers=1))
    report = await executor.start()
    for layer in report.inactive:  # never run with less isolation than usual without saying so
        print(f"thinkmesh: warning: isolation layer {layer.name} is inactive: {layer.detail}", file=sys.stderr)
    try:
        return await executor.execute(program)
    finally:
        await executor.close()


async def _remote(args: argparse.Namespace, program: Any) -> Any:
    from services.common.channels import open_channel
    from services.common.security import TlsFiles
    from services.sandbox.servicer import result_from_proto
    from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

    tls = TlsFiles(ca=args.tls_ca) if args.tls_ca else None
    async with open_channel(args.target, tls=tls, token=args.token) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        request = sandbox_pb2.ExecuteRequest(
            code=program.code, timeout_ms=program.timeout_ms, memory_mb=program.memory_mb
        )
        # The program's own limit plus room for queueing; the server caps everything at its maximum anyway.
        wait_s = (program.timeout_ms or 60_000) / 1000 + 30
        response = await stub.Execute(request, timeout=wait_s, wait_for_ready=True)
    return result_from_proto(response)


def _layers(args: argparse.Namespace) -> int:
    from services.common.settings import load_settings
    from services.sandbox.executor import SandboxExecutor
    from services.sandbox.settings import SandboxSettings

    logging.getLogger("services.sandbox").setLevel(logging.ERROR)

    async def report() -> str:
        executor = SandboxExecutor(load_settings(SandboxSettings, max_workers=1))
        try:
            return (await executor.start()).summary()
        finally:
            await executor.close()

    print(asyncio.run(report()))
    return 0
