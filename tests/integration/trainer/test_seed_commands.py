"""The two commands the chart's seeding runs (docs/operations.md, "Installing"): `models import --if-empty` in the
seed Job, which a retried or re-created Job may run again, and `models wait` in the model pods' init containers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.cli.main import main
from services.common.store import ModelStore
from support.tiny_models import publish_micro_models, write_chat_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_checkpoint(tmp_path_factory.mktemp("user") / "qwen-like")


def test_a_seed_run_again_imports_nothing(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = ["models", "import", str(checkpoint), "--store", str(tmp_path), "--if-empty", "--kind"]
    assert main([*seed, "policy"]) == 0
    assert main([*seed, "ppm"]) == 0
    capsys.readouterr()
    for kind in ("policy", "ppm"):  # the retry
        assert main([*seed, kind]) == 0
        assert f"already has a current {kind} (v1): nothing imported" in capsys.readouterr().out
    store = ModelStore(tmp_path)
    assert [v.version for v in store.versions("policy")] == ["v1"] and [v.version for v in store.versions("ppm")] == [
        "v1"
    ]
    # Without the flag an import is a new version, as before.
    assert main(["models", "import", str(checkpoint), "--store", str(tmp_path), "--kind", "policy"]) == 0
    assert store.current_name("policy") == "v2"


def test_wait_returns_when_the_seed_lands_and_fails_after_its_timeout(tmp_path: Path) -> None:
    wait = [sys.executable, "-m", "services.cli", "models", "wait", "--store", str(tmp_path), "--interval", "0.2"]
    timed_out = subprocess.run([*wait, "--kind", "ppm", "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert timed_out.returncode == 1
    assert "still has no current ppm" in timed_out.stdout

    started = time.monotonic()
    waiting = subprocess.Popen([*wait, "--kind", "policy", "--kind", "ppm"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert waiting.poll() is None, "it returned before the store had models"
        publisher = threading.Thread(target=publish_micro_models, args=(ModelStore(tmp_path),))
        publisher.start()
        publisher.join()
        out, _ = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0
    assert "waiting for a current policy, ppm" in out  # what `kubectl logs` shows meanwhile
    assert out.strip().endswith("policy v1, ppm v1 current")
    assert time.monotonic() - started < 60
