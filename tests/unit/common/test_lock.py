"""The lock (requirements/*.txt, `make lock`) agrees with pyproject.toml, with itself, and with this environment."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = ["all", "runtime", "sandbox", "search", "policy", "ppm", "trainer"]
# The lock's one platform: CPython 3.11 on Linux x86_64.
PLATFORM = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
}


def pins(name: str) -> dict[str, str]:
    """package → version of one lock file; every pin is exact and, outside constraints.txt, carries hashes."""
    text = (LOCK / f"{name}.txt").read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if not match:
            continue
        if name != "constraints":
            assert "--hash=sha256:" in block, f"{name}.txt: {match.group(1)} has no hash"
        found[canonicalize_name(match.group(1))] = match.group(2)
    assert found, f"{name}.txt pins nothing"
    return found


def requirements(extra: str | None) -> list[Requirement]:
    """What pyproject asks for with one extra, its own extras (thinkmesh[...]) followed."""
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = [extra] if extra else [], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for text in PROJECT["optional-dependencies"][current]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "thinkmesh":
                todo.extend(requirement.extras)
            else:
                wanted.append(requirement)
    return [r for r in wanted if r.marker is None or r.marker.evaluate(PLATFORM)]


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_is_locked_without_torch_and_satisfies_pyproject(extra: str) -> None:
    locked = pins(extra)
    # torch comes from TORCH (the CPU wheel here, a CUDA build on GPU machines), never from the lock.
    heavy = [n for n in locked if n == "torch" or n.startswith(("nvidia-", "triton", "cuda-"))]
    assert not heavy, f"{extra}.txt pulls {heavy}"
    for requirement in requirements(extra):
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in locked, f"{extra}.txt lacks {name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{extra}.txt pins {name}=={locked[name]}, pyproject asks {requirement}: run `make lock`"
        )


def test_every_lock_file_is_a_subset_of_the_one_resolution() -> None:
    constraints = pins("constraints")
    for name in [*EXTRAS, "vllm", "torch-cuda"]:
        differ = {p: v for p, v in pins(name).items() if constraints.get(p) != v}
        assert not differ, f"{name}.txt disagrees with constraints.txt: {differ}"
    # The GPU policy image: torch's layer and vLLM's file share no package.
    assert not set(pins("vllm")) & set(pins("torch-cuda"))
    assert pins("torch-cuda")["torch"] == constraints["torch"]


def test_the_lock_was_made_from_this_pyproject() -> None:
    """A dependency (or scripts/lock.sh) changed without `make lock`: the lock is no longer what pyproject asks."""
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lock_inputs.py")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (LOCK / "inputs.sha256").read_text().strip() == made, "pyproject's requirements changed: run `make lock`"


def test_one_download_serves_every_image() -> None:
    """scripts/images.sh fetches runtime.txt alone for the images: it must hold each image's lock file."""
    runtime = pins("runtime")
    for image_lock in ["sandbox", "search", "policy", "ppm", "trainer"]:
        missing = {p: v for p, v in pins(image_lock).items() if runtime.get(p) != v}
        assert not missing, f"{image_lock}.txt pins what runtime.txt does not: {missing}"


def test_this_environment_was_installed_from_the_lock() -> None:
    """What `make venv` installed is what requirements/all.txt pins (a stale venv is caught here, not in CI)."""
    stale = {}
    for name, pinned in pins("all").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            stale[name] = "missing"
            continue
        if installed != pinned:
            stale[name] = f"{installed} installed"
    assert not stale, f"not as locked in requirements/all.txt: {stale} (make venv)"
