"""The kubelet of `make test-images` (kubelet.py) runs a pod with a Localhost seccomp profile under the profile the
chart ships to the nodes: the key of the rendered ConfigMap <fullname>-seccomp that the chart's DaemonSet writes to
<kubelet root>/seccomp/thinkmesh/. Without Docker; runs in `make test`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e.helmchart import Rendered

from images.kubelet import Kubelet, Untranslated

PROFILE = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []})


def _sandbox(seccomp: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "thinkmesh-sandbox", "namespace": "thinkmesh"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "sandbox"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10003, "seccompProfile": seccomp},
                    "containers": [{"name": "sandbox", "image": "thinkmesh-sandbox:test"}],
                },
            }
        },
    }


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "thinkmesh"}, "data": data}


def _options(tmp_path: Path, seccomp: dict[str, Any], *objects: dict[str, Any]) -> tuple[str, ...]:
    workload = _sandbox(seccomp)
    kubelet = Kubelet(Rendered([workload, *objects]), scratch=tmp_path, volume_prefix="t", host_cpus=2, images={})
    options: tuple[str, ...] = kubelet.pod(workload).options
    return options


LOCALHOST = {"type": "Localhost", "localhostProfile": "thinkmesh/sandbox.json"}


def test_a_localhost_profile_runs_under_the_rendered_configmaps_file(tmp_path: Path) -> None:
    options = _options(tmp_path, LOCALHOST, _config_map("thinkmesh-seccomp", {"sandbox.json": PROFILE}))
    (seccomp,) = [option for option in options if option.startswith("seccomp=")]
    assert options[options.index(seccomp) - 1] == "--security-opt"
    assert Path(seccomp.removeprefix("seccomp=")).read_text() == PROFILE


def test_runtime_default_stays_dockers_default(tmp_path: Path) -> None:
    options = _options(tmp_path, {"type": "RuntimeDefault"}, _config_map("thinkmesh-seccomp", {"sandbox.json": "{}"}))
    assert not [option for option in options if option.startswith("seccomp=")]


@pytest.mark.parametrize(
    ("seccomp", "objects", "message"),
    [
        (LOCALHOST, [], r"0 rendered ConfigMaps <fullname>-seccomp with key sandbox.json"),
        (LOCALHOST, [_config_map("thinkmesh-seccomp", {"other.json": "{}"})], r"0 rendered ConfigMaps"),
        (LOCALHOST, [_config_map("thinkmesh-sandbox", {"sandbox.json": "{}"})], r"0 rendered ConfigMaps"),
        (
            LOCALHOST,
            [_config_map("a-seccomp", {"sandbox.json": "{}"}), _config_map("b-seccomp", {"sandbox.json": "{}"})],
            r"2 rendered ConfigMaps .*\['a-seccomp', 'b-seccomp'\]",
        ),
        ({"type": "Localhost", "localhostProfile": "other/sandbox.json"}, [], r"only thinkmesh/<key> is known"),
        ({"type": "Localhost"}, [], r"localhostProfile '': only thinkmesh/<key> is known"),
        ({"type": "Localhost", "localhostProfile": "thinkmesh/x", "extra": 1}, [], r"seccompProfile: extra"),
    ],
)
def test_a_profile_it_cannot_find_fails_and_says_what_is_missing(
    tmp_path: Path, seccomp: dict[str, Any], objects: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(Untranslated, match=message):
        _options(tmp_path, seccomp, *objects)
