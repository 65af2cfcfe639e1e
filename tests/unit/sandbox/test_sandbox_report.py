"""The isolation report says what programs really get, including what they do not."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import ConfigError
from services.sandbox.child import ChildPlan
from services.sandbox.layers import LAYER_NAMES, IsolationReport, Layer, require_layers
from services.sandbox.probe import EXPECTED_ENV, ZygoteSetup, build_report, failed_layer
from services.sandbox.protocol import ZygoteConfig

CONFIG = ZygoteConfig(2, 60000, "/tmp/thinkmesh-sandbox", 64, 16, 64, 16, 4096, 60000, 1 << 20)


def _plan(**changes: Any) -> ChildPlan:
    values: dict[str, Any] = dict(
        private_tmp=True,
        drop_uid=True,
        seccomp=None,
        max_processes=16,
        shared_process_limit=200,
        max_open_files=64,
        max_file_mb=16,
        workdir_mb=64,
        max_memory_mb=4096,
        max_timeout_ms=60000,
    )
    values.update(changes)
    return ChildPlan(**values)


def _facts(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "uid": 60000,
        "env": EXPECTED_ENV,
        "cwd": "/tmp",
        "seccomp": "0",
        "socket": "allowed",
        "interfaces": ["lo"],
        "nproc": 16,
        "writable": ["/tmp"],
        "cwd_tmpfs": True,
    }
    facts.update(changes)
    return facts


def test_all_layers_are_reported_in_order() -> None:
    report = build_report(_facts(), ZygoteSetup(network=True), _plan(), CONFIG, threads=1)
    assert tuple(layer.name for layer in report.layers) == LAYER_NAMES


def test_a_non_root_server_reports_the_uid_layer_inactive_and_says_why() -> None:
    report = build_report(_facts(uid=1000), ZygoteSetup(network=True), _plan(drop_uid=False), CONFIG, threads=1)
    assert not report.is_active("uid")
    (uid,) = [layer for layer in report.layers if layer.name == "uid"]
    assert "not root" in uid.detail and "1000" in uid.detail


def test_seccomp_counts_only_when_the_probe_saw_it_in_force() -> None:
    report = build_report(
        _facts(), ZygoteSetup(network=True, failures={"seccomp": "pyseccomp missing"}), _plan(), CONFIG, threads=1
    )
    assert not report.is_active("seccomp")
    assert "pyseccomp missing" in report.summary()


def test_a_visible_interface_or_shared_writable_dir_turns_layers_off() -> None:
    facts = _facts(interfaces=["lo", "eth0"], writable=["/tmp", "/var/tmp"])
    report = build_report(facts, ZygoteSetup(network=False, namespace_error="unshare refused"), _plan(), CONFIG, 1)
    assert not report.is_active("network")
    assert not report.is_active("filesystem")
    assert "unshare refused" in report.summary()


def test_a_leaked_variable_turns_the_environment_layer_off() -> None:
    report = build_report(_facts(env=[*EXPECTED_ENV, "SECRET"]), ZygoteSetup(network=True), _plan(), CONFIG, 1)
    assert not report.is_active("environment")


def test_a_threaded_zygote_is_not_a_safe_process_layer() -> None:
    assert not build_report(_facts(), ZygoteSetup(network=True), _plan(), CONFIG, threads=3).is_active("process")


def test_failed_layer_reads_the_isolation_message() -> None:
    assert failed_layer("sandbox: isolation layer uid: [Errno 1] Operation not permitted; ...") == "uid"
    assert failed_layer("Traceback ...") is None


def test_report_round_trips_and_required_layers_are_enforced() -> None:
    report = IsolationReport((Layer("seccomp", False, "no libseccomp"), Layer("network", True, "empty")))
    assert IsolationReport.from_json(report.to_json()) == report
    require_layers(report, ["network"])
    with pytest.raises(ConfigError, match=r"THINKMESH_SANDBOX_REQUIRED_LAYERS.*seccomp.*no libseccomp"):
        require_layers(report, ["network", "seccomp"])
