"""Fixtures of the chart tests: the pinned helm binaries, installed once per session."""

from __future__ import annotations

import platform
import subprocess

import pytest

from e2e.helmchart import REPO, Rendered, render


@pytest.fixture(scope="session", autouse=True)
def helm_installed() -> None:
    """Installs the pinned helm binaries (a no-op when present); CI gets them the same way."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64") and not (REPO / ".tools" / "helm").exists():
        pytest.skip("the pinned helm binaries are linux/amd64: put helm 4 at .tools/helm and helm 3 at .tools/helm3")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/install_helm.sh failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def defaults() -> Rendered:
    return render()
