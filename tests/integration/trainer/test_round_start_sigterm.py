"""A trainer stopped right after StartRound answered: the round is on the store, and the next trainer resumes it.

`thinkmesh serve trainer` runs as a child process on a store with micro models (tiny preset, no services to wait
for, a SQLite broker without a worker). Right after StartRound the round is still queued behind the bootstrap
models' baseline evaluation; SIGTERM then stops the trainer, and the restarted one carries the round into its
search (which waits for a worker that never comes: enough to see that it resumed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from services.common.store import ModelStore
from support.processes import REPO, THINKMESH, read_first_line, wait_serving
from support.tiny_models import publish_micro_models
from thinkmesh.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextmanager
def trainer(root: Path, name: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`thinkmesh serve trainer --port 0` with its logs in a file (a pipe nobody reads could fill up)."""
    env = {
        **os.environ,
        "THINKMESH_STORE": str(root / "store"),
        "THINKMESH_TRAINER_PRESET": "tiny",
        "THINKMESH_TRAINER_WAIT_FOR": "",
        "THINKMESH_TRAINER_SANDBOX_TARGET": "",  # the evaluations run programs in process
        "THINKMESH_TRAINER_BROKER_URL": f"sqla+sqlite:///{root}/broker.sqlite",
        "THINKMESH_TRAINER_RESULT_BACKEND": f"db+sqlite:///{root}/results.sqlite",
        "THINKMESH_TRAINER_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
    }
    with open(root / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            [THINKMESH, "serve", "trainer", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=REPO,
        )
    try:
        line = read_first_line(proc, 60)
        assert line.startswith("listening on "), line
        address = line.removeprefix("listening on ")
        wait_serving(address, alive=lambda: proc.poll() is None)
        yield proc, address
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _get_round(address: str, number: int) -> trainer_pb2.GetRoundResponse:
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        reply: trainer_pb2.GetRoundResponse = trainer_pb2_grpc.TrainerServiceStub(channel).GetRound(
            trainer_pb2.GetRoundRequest(round=number), timeout=10
        )
        return reply


def test_sigterm_right_after_start_round_then_restart_resumes_the_round(tmp_path: Path) -> None:
    publish_micro_models(ModelStore(tmp_path / "store"))
    state_file = tmp_path / "store" / "rounds" / "0001" / "state.json"
    with trainer(tmp_path, "first") as (proc, address):
        with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            number = stub.StartRound(trainer_pb2.StartRoundRequest(pool_size=3, rollouts=2), timeout=30).round
            reply = stub.GetRound(trainer_pb2.GetRoundRequest(), timeout=10)
        assert number == 1
        assert (reply.round, reply.state, reply.stage) == (1, trainer_pb2.ROUND_STATE_RUNNING, "queued")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    saved = json.loads(state_file.read_text())
    assert (saved["state"], saved["finished"]) == ("queued", []), saved
    assert (saved["request"]["pool_size"], saved["request"]["rollouts"]) == (3, 2)

    with trainer(tmp_path, "second") as (proc, address):
        assert _get_round(address, 1).state == trainer_pb2.ROUND_STATE_RUNNING
        deadline = time.monotonic() + 240
        while (reply := _get_round(address, 1)).stage != "search":  # the baseline evaluated again, then search
            assert reply.state == trainer_pb2.ROUND_STATE_RUNNING, reply
            assert time.monotonic() < deadline, f"round 1 never resumed: {reply}"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert json.loads(state_file.read_text())["state"] == "running"
    assert "round 1 was queued when the trainer stopped: resuming it" in (tmp_path / "second.log").read_text()
