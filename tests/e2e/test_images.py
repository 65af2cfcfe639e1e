"""The Dockerfiles (deploy/docker/*.Dockerfile), read: the shape every image must keep. `make test-images` builds
and runs them (tests/images); these checks need no Docker engine and run in `make test`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import yaml

from e2e.helmchart import CHART, REPO

DOCKER = REPO / "deploy" / "docker"
# image → (the lock file it installs by default, gRPC port, on the shared torch layer)
IMAGES = {
    "sandbox": ("sandbox", 50051, False),
    "policy": ("vllm", 50052, True),
    "ppm": ("ppm", 50053, True),
    "search": ("search", 50054, False),
    "trainer": ("trainer", 50055, True),
}
# The chart's pod security context runs every thinkmesh container as this uid.
UID = 10001
HEAVY = re.compile(r"^(torch|triton|vllm|nvidia-.*|cuda-.*|xformers|flash-attn)==", re.IGNORECASE | re.MULTILINE)


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


@pytest.mark.parametrize("image", [*sorted(IMAGES), "torch", "build"])
def test_every_base_is_pinned(image: str) -> None:
    args, all_stages = stages(image)
    for stage in all_stages:
        base = base_image(args, stage)
        assert re.search(r":[\w.\-]+$", base) and not base.endswith(":latest"), f"unpinned base {base}"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_are_multi_stage_and_non_root(image: str) -> None:
    _, all_stages = stages(image)
    final = all_stages[-1]
    assert len(all_stages) >= 2, "install in a stage of its own"
    # A numeric uid, so that the kubelet can check runAsNonRoot, and the one the chart runs as.
    assert final.all("USER") == [f"{UID}:{UID}"]
    assert any(f"--uid {UID}" in run for run in final.all("RUN"))
    # Only built artefacts reach the runtime stage: no source tree, no wheelhouse.
    assert all(c.startswith("--from=") for c in final.all("COPY")), final.all("COPY")
    assert final.all("ENTRYPOINT") == ['["thinkmesh"]']
    _, port, _ = IMAGES[image]
    assert json.loads(final.all("CMD")[0]) == ["serve", image, "--host", "0.0.0.0", "--port", str(port)]
    assert final.all("EXPOSE") == [f"{port} 9090"]
    env = " ".join(final.all("ENV"))
    # The root filesystem is read-only in the cluster; HOME is the /tmp emptyDir.
    assert "HOME=/tmp" in env


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_its_own_lock_file_from_the_build_stage(image: str) -> None:
    _, all_stages = stages(image)
    lock, _, on_torch = IMAGES[image]
    assert all_stages[0].base == "${BUILD_IMAGE}"
    installs = [run for stage in all_stages for run in stage.all("RUN") if "install-lock" in run]
    assert len(installs) == 1, installs
    extra = installs[0].split()[1].strip('"')
    if extra == "$EXTRA":  # a build argument of the stage (the policy's: vllm, or policy for the CPU variant)
        (extra,) = [a.partition("=")[2] for s in all_stages for a in s.all("ARG") if a.startswith("EXTRA=")]
    assert extra == lock
    assert (REPO / "requirements" / f"{lock}.txt").exists()
    # The torch images keep torch in the shared layer and reach it through /opt/torch.
    assert ("/opt/torch" in installs[0]) == on_torch
    assert (all_stages[-1].base == "${TORCH_IMAGE}") == on_torch
    assert not any(s.all("COPY") and not all(c.startswith("--from=") for c in s.all("COPY")) for s in all_stages), (
        "the images copy nothing from the context: thinkmesh-build holds what they install"
    )


@pytest.mark.parametrize("lock", ["sandbox", "search"])
def test_slim_images_lock_no_torch(lock: str) -> None:
    heavy = HEAVY.findall((REPO / "requirements" / f"{lock}.txt").read_text())
    assert not heavy, f"the {lock} image would install {heavy}"


def test_the_build_context_is_the_package_and_the_lock_only() -> None:
    rules = [
        line for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "start from nothing, then admit what the images build from"
    admitted = {r[1:] for r in rules if r.startswith("!")}
    assert admitted == {
        "pyproject.toml",
        "README.md",
        "services",
        "protos",
        "requirements",
        ".whl",
        "deploy/docker/install-lock.sh",
    }


def test_the_chart_uses_these_images() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for image in IMAGES:
        assert values[image]["image"]["repository"].endswith(f"/thinkmesh-{image}")
        # The chart runs each component as a uid of its own, in the image's group (which owns its files).
        assert values[image]["podSecurityContext"]["runAsGroup"] == UID
    # Workers run `thinkmesh worker` from the search image.
    assert values["worker"]["image"]["repository"] == values["search"]["image"]["repository"]


def test_the_published_policy_image_runs_on_vllm() -> None:
    assert HEAVY.search((REPO / "requirements" / "vllm.txt").read_text())
    assert re.search(r"^vllm==", (REPO / "requirements" / "vllm.txt").read_text(), re.MULTILINE)
