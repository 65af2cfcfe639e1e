"""The sandbox image under the chart's seccomp profile (deploy/helm/thinkmesh/files/seccomp/sandbox.json), run as the
chart runs it (non-root, no capability, read-only root, no privilege escalation), next to a "neighbour": another
container of the same uid holding 160 threads, invisible from the sandbox's /proc but counted by the kernel's
RLIMIT_NPROC, which counts per uid and user namespace (docs/sandbox.md, "Process budget").

Under the profile each program counts its processes in a user namespace of its own: the neighbour takes nothing
from it, and a fork bomb still stops at the program's budget. Under the runtime's default profile there is no user
namespace: the report says that the whole uid shares the budget, and its count includes the neighbour."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e.helmchart import CHART

from images.conftest import MAKE_IMAGES, Images
from images.docker import docker

pytestmark = pytest.mark.images

PROFILE = CHART / "files" / "seccomp" / "sandbox.json"
UID = 10001  # the image's user; the sandbox and its neighbour share it
NEIGHBOUR_THREADS = 160
MAX_PROCESSES = 16  # THINKMESH_SANDBOX_MAX_PROCESSES' default: the program's main thread and 15 more tasks

NEIGHBOUR = f"""
import threading
hold = threading.Event()
for _ in range({NEIGHBOUR_THREADS}):
    threading.Thread(target=hold.wait, daemon=True).start()
print("holding", threading.active_count() - 1, "threads", flush=True)
hold.wait()
"""
THREADS = """
import threading
hold = threading.Event()
threads = [threading.Thread(target=hold.wait) for _ in range(8)]
for thread in threads:
    thread.start()
print(threading.active_count() - 1)
hold.set()
"""
# Every process forks for 2 s (a failed fork is retried); then the main process counts its process group.
FORK_BOMB = """
import os, time
main = os.getpid()
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
if os.getpid() != main:
    time.sleep(60)
    os._exit(0)
group = os.getpgid(0)
members = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        members += os.getpgid(int(pid)) == group
    except OSError:
        pass
print(members)
"""


def _sandbox_image() -> str:
    """The sandbox image scripts/images.sh built, named from the same settings as the other image checks."""
    images = Images.from_env()
    repository = yaml.safe_load((CHART / "values.yaml").read_text())["sandbox"]["image"]["repository"]
    if images.prefix:
        repository = f"{images.prefix}/{repository.rsplit('/', 1)[-1]}"
    tag = images.tag or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = f"{repository}:{tag}"
    if docker("image", "inspect", image, check=False).returncode != 0:
        pytest.fail(f"not in the local Docker engine: {image}; {MAKE_IMAGES}", pytrace=False)
    return image


# As the chart runs the sandbox (kubelet.py translates its securityContext to these), without network.
CHART_LIKE = ["--user", f"{UID}:{UID}", "--cap-drop", "ALL", "--read-only", "--security-opt", "no-new-privileges"]
CHART_LIKE += ["--tmpfs", "/tmp:rw,exec,mode=1777", "--network", "none"]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    image = _sandbox_image()
    name = f"thinkmesh-neighbour-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, *CHART_LIKE, "--entrypoint", "python", image, "-c", NEIGHBOUR)
    try:
        deadline = time.monotonic() + 60
        while f"holding {NEIGHBOUR_THREADS} threads" not in docker("logs", name).stdout:
            running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
            assert running and time.monotonic() < deadline, docker("logs", name, check=False).stderr
            time.sleep(0.2)
        yield image
    finally:
        docker("rm", "-f", name, check=False)


def _sandbox(image: str, *args: str, profile: Path | None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`thinkmesh sandbox ARGS` in a container of its own, under the profile (None: the runtime's default)."""
    seccomp = ["--security-opt", f"seccomp={profile}"] if profile else []
    return subprocess.run(
        ["docker", "run", "--rm", "-i", *CHART_LIKE, *seccomp, image, "sandbox", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _layers(image: str, profile: Path | None) -> dict[str, tuple[str, str]]:
    done = _sandbox(image, "layers", profile=profile)
    assert done.returncode == 0, done.stderr
    rows = [line.split(maxsplit=2) for line in done.stdout.splitlines()]
    return {name: (state, detail) for state, name, detail in rows}


def _run(image: str, code: str, profile: Path | None) -> dict[str, str]:
    done = _sandbox(image, "run", "--json", profile=profile, stdin=code)
    assert done.stdout, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_under_the_profile_only_the_uid_and_proc_layers_are_inactive(image: str) -> None:
    layers = _layers(image, PROFILE)
    assert {name for name, (state, _) in layers.items() if state != "active"} == {"uid", "proc"}, layers
    assert f"processes ({MAX_PROCESSES} per program, counted in a user namespace of its own" in layers["rlimits"][1]


def test_a_neighbour_of_the_same_uid_leaves_a_program_its_threads(image: str) -> None:
    result = _run(image, THREADS, PROFILE)
    assert (result["status"], result["stdout"]) == ("ok", "8\n"), result


def test_a_fork_bomb_still_stops_at_the_programs_budget(image: str) -> None:
    result = _run(image, FORK_BOMB, PROFILE)
    assert result["status"] == "ok", result
    # Its own budget, whole: the neighbour's 160 threads take nothing from it, and it gets no more.
    assert int(result["stdout"]) == MAX_PROCESSES, result


def test_under_the_runtime_default_the_report_says_the_uid_shares_the_budget(image: str) -> None:
    layers = _layers(image, None)
    state, detail = layers["rlimits"]
    assert state == "active" and f"for every process of uid {UID} together" in detail, detail
    # The kernel's count, found by trying forks, includes the neighbour that /proc here does not show.
    counted = re.search(r"other pods' included, and counted (\d+) at start-up", detail)
    assert counted and int(counted.group(1)) > NEIGHBOUR_THREADS, detail
    # So a program started after it still has threads to start (a neighbour growing later would take them).
    result = _run(image, THREADS, None)
    assert (result["status"], result["stdout"]) == ("ok", "8\n"), result
