"""The images (deploy/docker/*.Dockerfile): no Docker engine runs here, so the tests read the Dockerfiles and
resolve the installs that are small enough to resolve (pip --dry-run against the package index).

The CUDA images (policy on vLLM, ppm and trainer with torch) are checked for shape only: resolving torch and
vLLM would download gigabytes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from e2e.helmchart import CHART, REPO

DOCKER = REPO / "deploy" / "docker"
# image → (pyproject extra it installs, gRPC port, CUDA)
IMAGES = {
    "sandbox": ("sandbox", 50051, False),
    "policy": ("vllm", 50052, True),
    "ppm": ("ppm", 50053, True),
    "search": ("search", 50054, False),
    "trainer": ("trainer", 50055, True),
}
# The chart's pod security context runs every thinkmesh container as this uid.
UID = 10001
HEAVY = re.compile(r"^(torch|triton|vllm|nvidia-.*|xformers|flash-attn)$", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def stages(image: str) -> tuple[dict[str, str], list[Stage]]:
    """Build args with their defaults, and the stages, from a Dockerfile (line continuations joined)."""
    text = re.sub(r"\\\n", " ", (DOCKER / f"{image}.Dockerfile").read_text())
    args: dict[str, str] = {}
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not found:
            key, _, default = rest.partition("=")
            args[key] = default
        elif op == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            found.append(Stage(match.group(1), match.group(2), []))
        else:
            found[-1].instructions.append((op, rest))
    return args, found


def base_image(args: dict[str, str], stage: Stage) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_are_multi_stage_pinned_and_non_root(image: str) -> None:
    args, all_stages = stages(image)
    final = all_stages[-1]
    assert len(all_stages) >= 2, "build the wheel in a stage of its own"
    for stage in all_stages:
        base = base_image(args, stage)
        assert re.search(r":[\w.\-]+$", base) and not base.endswith(":latest"), f"unpinned base {base}"
    # A numeric uid, so that the kubelet can check runAsNonRoot, and the one the chart runs as.
    assert final.all("USER") == [f"{UID}:{UID}"]
    assert any(f"--uid {UID}" in run for run in final.all("RUN"))
    # Only built artefacts reach the runtime stage, never the source tree.
    assert all(c.startswith("--from=") for c in final.all("COPY")), final.all("COPY")
    assert final.all("ENTRYPOINT") == ['["thinkmesh"]']
    _, port, _ = IMAGES[image]
    assert json.loads(final.all("CMD")[0]) == ["serve", image, "--host", "0.0.0.0", "--port", str(port)]
    assert final.all("EXPOSE") == [f"{port} 9090"]
    env = " ".join(final.all("ENV"))
    # The root filesystem is read-only in the cluster; HOME is the /tmp emptyDir.
    assert "HOME=/tmp" in env


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_its_own_extra_from_the_wheel(image: str) -> None:
    _, all_stages = stages(image)
    extra, _, cuda = IMAGES[image]
    installs = [run for stage in all_stages for run in stage.all("RUN") if "pip install" in run]
    assert len(installs) == 1, installs
    assert f'"$(ls /wheels/thinkmesh-*.whl)[{extra}]"' in installs[0]
    copied = [c.split()[0] for stage in all_stages for c in stage.all("COPY") if not c.startswith("--from=")]
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    if not cuda:
        assert all("cuda" not in s.base.lower() and "vllm" not in s.base.lower() for s in all_stages)


def test_the_chart_uses_these_images() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for image in IMAGES:
        assert values[image]["image"]["repository"].endswith(f"/thinkmesh-{image}")
        assert values[image]["podSecurityContext"]["runAsUser"] == UID
    # Workers run `thinkmesh worker` from the search image.
    assert values["worker"]["image"]["repository"] == values["search"]["image"]["repository"]


def test_the_policy_image_runs_on_vllm() -> None:
    args, all_stages = stages("policy")
    assert base_image(args, all_stages[-1]).startswith("vllm/vllm-openai:")


def _resolve(extra: str, tmp_path: Path) -> list[str]:
    """What `pip install ".[extra]"` would install into an empty environment (names only)."""
    report = tmp_path / f"{extra}.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            f".[{extra}]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"pip could not resolve .[{extra}]:\n{proc.stderr[-3000:]}"
    return [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]


@pytest.mark.slow
@pytest.mark.parametrize("image", ["sandbox", "search"])
def test_slim_images_resolve_without_torch(image: str, tmp_path: Path) -> None:
    names = _resolve(IMAGES[image][0], tmp_path)
    assert "thinkmesh" in names and "grpcio" in names
    heavy = [n for n in names if HEAVY.match(n)]
    assert not heavy, f"the {image} image would pull {heavy}"
