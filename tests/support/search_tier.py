"""The search tier on this machine for a round's tests: sandbox, PPM and a policy server (whichever command a
test gives), a real Celery worker on a SQLite broker, and the trainer's dispatcher to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.math.curriculum import generate
from services.search.celery_app import make_celery
from services.search.settings import CelerySettings
from services.trainer.config import RoundConfig
from services.trainer.dispatch import CeleryDispatcher
from support.processes import REPO, THINKMESH, server_process, wait_serving


@dataclass
class SearchTier:
    dispatcher: CeleryDispatcher
    addresses: dict[str, str]  # "sandbox", "ppm", "policy" and any extra server, by name


@contextmanager
def search_tier(
    root: Path,
    store: Path,
    policy: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    extra: Mapping[str, Sequence[str]] | None = None,
    dispatcher: type[CeleryDispatcher] = CeleryDispatcher,
) -> Iterator[SearchTier]:
    """Servers on 127.0.0.1 port 0 (`policy`: the policy server's command; `extra`: more servers by name), all
    SERVING, and one worker calling them; stopped afterwards."""
    environment = {
        "THINKMESH_STORE": str(store),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "THINKMESH_PPM_DEVICE": "cpu",
        # A scripted policy server (support.policy_server) reads its port from its settings: port 0, so that test
        # runs side by side (or a local stack on 50052) never collide.
        "THINKMESH_POLICY_PORT": "0",
        "THINKMESH_SEARCH_BROKER_URL": f"sqla+sqlite:///{root}/broker.sqlite",
        "THINKMESH_SEARCH_RESULT_BACKEND": f"db+sqlite:///{root}/results.sqlite",
        **(env or {}),
    }
    commands = {
        "sandbox": [THINKMESH, "serve", "sandbox", "--port", "0"],
        "ppm": [THINKMESH, "serve", "ppm", "--port", "0"],
        "policy": list(policy),
        **{name: list(command) for name, command in (extra or {}).items()},
    }
    with ExitStack() as servers:
        addresses = {
            name: servers.enter_context(server_process(argv, environment))[1] for name, argv in commands.items()
        }
        for address in addresses.values():
            wait_serving(address)
        environment.update(
            THINKMESH_SEARCH_SANDBOX_TARGET=addresses["sandbox"],
            THINKMESH_SEARCH_PPM_TARGET=addresses["ppm"],
            THINKMESH_SEARCH_POLICY_TARGET=addresses["policy"],
        )
        worker = subprocess.Popen(
            [THINKMESH, "worker"],
            env={**os.environ, **environment},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            app = make_celery(
                CelerySettings(
                    broker_url=environment["THINKMESH_SEARCH_BROKER_URL"],
                    result_backend=environment["THINKMESH_SEARCH_RESULT_BACKEND"],
                )
            )
            yield SearchTier(dispatcher(app, store, poll_s=0.2), addresses)
        finally:
            worker.terminate()
            worker.wait(timeout=60)


@contextmanager
def teacher_tier(
    root: Path, store: Path, config: RoundConfig, *, dispatcher: type[CeleryDispatcher] = CeleryDispatcher
) -> Iterator[SearchTier]:
    """`search_tier` whose policy is the scripted teacher (support.teacher_policy), knowing the solutions of round
    1's curriculum pool under `config` (the same draw RoundRunner makes)."""
    per_level = -(-config.pool_size // len(config.pool_levels))
    pool = [p for level in config.pool_levels for p in generate(level, per_level, seed=config.seed + 7_001)]
    teacher = root / "teacher.json"
    teacher.write_text(json.dumps({p.question: p.solution for p in pool}))
    with search_tier(
        root,
        store,
        [sys.executable, "-m", "support.teacher_policy"],
        {"THINKMESH_TEST_TEACHER_FILE": str(teacher)},
        dispatcher=dispatcher,
    ) as tier:
        yield tier
