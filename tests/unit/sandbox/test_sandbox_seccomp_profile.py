"""The chart's seccomp profile for the sandbox (deploy/helm/thinkmesh/files/seccomp/sandbox.json): the runtime's
default plus exactly the unshare() and mount() calls the sandbox makes, checked against the flags isolation.py
uses. The profile is read as a filter would apply it: a call is allowed when an ALLOW rule for it matches every
one of its argument conditions; anything else gets the default, EPERM."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from services.sandbox import isolation

PROFILE_PATH = Path(__file__).resolve().parents[3] / "deploy/helm/thinkmesh/files/seccomp/sandbox.json"
PROFILE: dict[str, Any] = json.loads(PROFILE_PATH.read_text())
ADDED = "thinkmesh sandbox:"

MS_BIND, MS_REMOUNT, MS_MOVE = 0x1000, 0x20, 0x2000
SIGCHLD = 17

_OPS = {
    "SCMP_CMP_EQ": lambda arg, value, two: arg == value,
    "SCMP_CMP_NE": lambda arg, value, two: arg != value,
    "SCMP_CMP_LT": lambda arg, value, two: arg < value,
    "SCMP_CMP_LE": lambda arg, value, two: arg <= value,
    "SCMP_CMP_GT": lambda arg, value, two: arg > value,
    "SCMP_CMP_GE": lambda arg, value, two: arg >= value,
    "SCMP_CMP_MASKED_EQ": lambda arg, value, two: arg & value == two,
}


def allowed(name: str, *args: int) -> bool:
    for rule in PROFILE["syscalls"]:
        if name not in rule["names"] or rule["action"] != "SCMP_ACT_ALLOW":
            continue
        conditions = rule.get("args") or []
        if all(_OPS[c["op"]](args[c["index"]], c["value"], c.get("valueTwo", 0)) for c in conditions):
            return True
    return False


def test_it_uses_only_the_fields_docker_and_containerd_read_alike() -> None:
    # containerd reads a Localhost profile as the OCI runtime spec's LinuxSeccomp and ignores Docker's own fields:
    # a rule conditioned on capabilities or architectures ("includes", "excludes", "archMap") would apply
    # unconditionally there. So the profile has none, and every rule says why it is there.
    assert set(PROFILE) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for rule in PROFILE["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args", "comment"}, rule
        assert rule["comment"], rule["names"]


def test_everything_else_is_refused_with_eperm_as_by_the_runtime_default() -> None:
    assert (PROFILE["defaultAction"], PROFILE["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    for name in ("setns", "umount2", "pivot_root", "chroot", "keyctl", "bpf", "perf_event_open", "io_uring_setup"):
        assert not allowed(name, 0, 0, 0, 0), name
    (clone3,) = [rule for rule in PROFILE["syscalls"] if rule["names"] == ["clone3"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)  # ENOSYS: glibc falls back to clone


def test_only_unshare_and_mount_are_added_to_the_runtime_default() -> None:
    added = {name for rule in PROFILE["syscalls"] if rule["comment"].startswith(ADDED) for name in rule["names"]}
    assert added == {"unshare", "mount"}
    default = {name for rule in PROFILE["syscalls"] if not rule["comment"].startswith(ADDED) for name in rule["names"]}
    assert not default & {"unshare", "mount", "umount2", "setns"}


@pytest.mark.parametrize(
    "flags",
    [
        # the zygote (enter_zygote_namespaces), then its fallbacks
        isolation.CLONE_NEWUSER | isolation.CLONE_NEWNET | isolation.CLONE_NEWNS,
        isolation.CLONE_NEWUSER | isolation.CLONE_NEWNET,
        isolation.CLONE_NEWUSER | isolation.CLONE_NEWNS,
        isolation.CLONE_NEWNS,  # a program's private /tmp (private_tmp)
        isolation.CLONE_NEWUSER,  # a program's own process count (own_process_count)
    ],
)
def test_unshare_is_allowed_for_every_call_the_sandbox_makes(flags: int) -> None:
    assert allowed("unshare", flags)


def test_unshare_is_refused_for_any_other_namespace() -> None:
    others = [flag for flag in isolation.NAMESPACE_FLAGS if not flag & isolation.UNPRIVILEGED_NAMESPACES]
    assert len(others) == 5  # cgroup, uts, ipc, pid, time
    for flag, extra in itertools.product(others, (0, isolation.CLONE_NEWUSER, isolation.UNPRIVILEGED_NAMESPACES)):
        assert not allowed("unshare", flag | extra), hex(flag | extra)


def test_clone_still_never_makes_a_namespace() -> None:
    assert allowed("clone", SIGCHLD)
    for flag in isolation.NAMESPACE_FLAGS:
        if flag != isolation.CLONE_NEWTIME:  # not a clone() flag (its value is CSIGNAL's): unshare only
            assert not allowed("clone", SIGCHLD | flag), hex(flag)


@pytest.mark.parametrize("flags", isolation.MOUNT_FLAGS)
def test_mount_is_allowed_with_the_flags_the_sandbox_uses(flags: int) -> None:
    assert allowed("mount", 0, 0, 0, flags)


@pytest.mark.parametrize("flags", [0, MS_BIND, MS_BIND | isolation.MS_REC, MS_REMOUNT, MS_MOVE, isolation.MS_RDONLY])
def test_mount_is_refused_with_any_other_flags(flags: int) -> None:
    # Bind mounts, remounts and moves would let code outside a program rearrange what the sandbox covered.
    assert not allowed("mount", 0, 0, 0, flags)
