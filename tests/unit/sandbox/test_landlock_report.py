"""The report's landlock and proc lines say what the probe saw, and why a layer is missing."""

from __future__ import annotations

import errno
from typing import Any

from services.sandbox import landlock
from services.sandbox.child import OPTIONAL_LAYERS, ChildPlan
from services.sandbox.layers import LAYER_NAMES, Layer
from services.sandbox.probe import EXPECTED_ENV, ZygoteSetup, build_report, program, unreadable_reason
from services.sandbox.protocol import ZygoteConfig

CONFIG = ZygoteConfig(2, 60000, "/tmp/thinkmesh-sandbox", 64, 16, 64, 16, 4096, 60000, 1 << 20)
RULES = landlock.Rules(7, [("/usr", -1, landlock.READ), ("/opt/python", -1, landlock.READ)])


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
        private_proc=True,
        landlock=RULES,
    )
    values.update(changes)
    return ChildPlan(**values)


def _facts(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "uid": 60000,
        "env": EXPECTED_ENV,
        "cwd": "/tmp",
        "seccomp": "2",
        "socket": errno.EPERM,
        "interfaces": ["lo"],
        "nproc": 16,
        "writable": ["/tmp"],
        "cwd_tmpfs": True,
        "pid": 4321,
        "processes": [4321],
        "root_listing": errno.EACCES,
        "unreadable": [],
    }
    facts.update(changes)
    return facts


def _layer(name: str, facts: dict[str, Any], plan: ChildPlan, setup: ZygoteSetup | None = None) -> Layer:
    report = build_report(facts, setup or ZygoteSetup(network=True), plan, CONFIG, threads=1)
    (layer,) = [layer for layer in report.layers if layer.name == name]
    return layer


def test_the_new_layers_are_named_reported_and_optional() -> None:
    assert {"landlock", "proc"} <= set(LAYER_NAMES) & set(OPTIONAL_LAYERS)
    report = build_report(_facts(), ZygoteSetup(network=True), _plan(), CONFIG, threads=1)
    assert tuple(layer.name for layer in report.layers) == LAYER_NAMES
    assert _plan().without("landlock").landlock is None and not _plan().without("proc").private_proc


def test_landlock_is_active_when_the_probe_was_refused_the_root_directory() -> None:
    layer = _layer("landlock", _facts(), _plan())
    assert layer.active
    assert "/usr, /opt/python" in layer.detail and "(ABI 7)" in layer.detail and "TCP" in layer.detail


def test_landlock_is_inactive_when_the_probe_could_list_the_root_directory() -> None:
    assert not _layer("landlock", _facts(root_listing="allowed"), _plan()).active


def test_landlock_missing_from_the_kernel_is_reported_with_the_reason() -> None:
    setup = ZygoteSetup(network=True, failures={"landlock": landlock.why_unavailable(OSError(errno.ENOSYS, "no"))})
    layer = _layer("landlock", _facts(root_listing="allowed"), _plan(landlock=None), setup)
    assert not layer.active and "Linux 5.13" in layer.detail


def test_proc_is_active_when_the_probe_saw_only_itself() -> None:
    assert _layer("proc", _facts(), _plan()).active
    other = _layer("proc", _facts(processes=[1, 4321]), _plan())
    assert not other.active and "2 processes visible" in other.detail


def test_proc_without_root_says_what_landlock_still_closes() -> None:
    layer = _layer("proc", _facts(processes=[1, 77, 4321]), _plan(private_proc=False, drop_uid=False))
    assert not layer.active
    assert "not root" in layer.detail and "read its own entries only" in layer.detail
    bare = _layer("proc", _facts(processes=[1, 4321], root_listing="allowed"), _plan(private_proc=False, landlock=None))
    assert "read their command lines" in bare.detail


def test_the_probe_is_told_the_interpreter_paths_and_the_uid_reason_names_them() -> None:
    assert program(["/opt/python"]).startswith('RUNTIME = ["/opt/python"]\n')
    reason = unreadable_reason(["/root/.pyenv/x"], 60000, ZygoteSetup(exposed=["/root"]))
    assert "uid 60000 cannot read the interpreter's /root/.pyenv/x" in reason and "keep the server's uid" in reason
