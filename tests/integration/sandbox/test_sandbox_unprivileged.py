"""As a non-root user (what a Kubernetes pod with runAsNonRoot is), the sandbox says which layers it lacks.

Runs only where this test can become an unprivileged user: as root, with setpriv and a system Python that can
import thinkmesh's dependencies (the virtual environment's own interpreter may sit in root's home).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import REPO

NOBODY = 65534
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def _as_nobody(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos"), sysconfig.get_paths()["purelib"]]),
        "THINKMESH_SANDBOX_WORK_ROOT": str(tmp_path / "work"),
    }
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(SYSTEM_PYTHON)]
    return subprocess.run(
        [*command, "-m", "services.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root, setpriv and a system Python of the same version")
    # pytest's own temporary directories sit under a root-only parent.
    directory = Path(tempfile.mkdtemp(prefix="thinkmesh-nobody-"))
    directory.chmod(0o777)
    try:
        probe = _as_nobody(directory, "--version")
        if probe.returncode != 0:
            pytest.skip(f"the system Python cannot run thinkmesh as nobody: {probe.stderr[-300:]}")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_non_root_server_reports_the_uid_layer_inactive(nobody_dir: Path) -> None:
    done = _as_nobody(nobody_dir, "sandbox", "layers")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert rows["uid"] == "INACTIVE"
    assert f"not root, so programs keep its uid {NOBODY}" in done.stdout
    # Whatever else this kernel allows, what is there is reported, and the process layers do not depend on root.
    assert rows["process"] == rows["rlimits"] == rows["environment"] == "active"


def test_a_non_root_program_still_cannot_touch_the_zygote(nobody_dir: Path) -> None:
    code = "import os\nprint(os.getuid())\nos.kill(os.getppid(), 9)"
    done = _as_nobody(nobody_dir, "sandbox", "run", "--json", stdin=code)
    result = json.loads(done.stdout)
    assert result["stdout"] == f"{NOBODY}\n"
    assert result["status"] == "error"
    assert "PermissionError" in result["stderr"]
    assert "isolation layer uid is inactive" in done.stderr  # the CLI says what it runs without
