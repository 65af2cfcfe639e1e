"""The start-up probe: a program run exactly as any other, which reports what its process can and cannot do.

The isolation report is built from these observations, so it states what programs actually get here.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from typing import Any

from services.sandbox.child import ChildPlan
from services.sandbox.layers import IsolationReport, Layer
from services.sandbox.protocol import ZygoteConfig

PROGRAM = """
import json, os, resource
# RUNTIME (the interpreter's directories, see services/sandbox/runtime.py) is set by program() above this line.
facts = {"uid": os.getuid(), "env": sorted(os.environ), "cwd": os.getcwd()}
with open("/proc/self/status") as status:
    facts["seccomp"] = [line.split()[1] for line in status if line.startswith("Seccomp:")][0]
try:
    import socket
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    facts["socket"] = "allowed"
except OSError as exc:
    facts["socket"] = exc.errno
with open("/proc/self/net/dev") as dev:
    facts["interfaces"] = [line.split(":")[0].strip() for line in dev.readlines()[2:]]
facts["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
try:
    facts["user_namespace"] = os.readlink("/proc/self/ns/user")
except OSError:
    facts["user_namespace"] = None
facts["writable"] = [p for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.access(p, os.W_OK)]
with open("/proc/self/mountinfo") as mounts:
    facts["cwd_tmpfs"] = any(line.split()[4] == os.getcwd() and " - tmpfs " in line for line in mounts)
facts["pid"] = os.getpid()
try:
    facts["processes"] = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
except OSError as exc:
    facts["processes"] = exc.errno
try:
    os.listdir("/")
    facts["root_listing"] = "allowed"
except OSError as exc:
    facts["root_listing"] = exc.errno
# By the file modes alone (access() ignores Landlock): what this uid cannot read of the interpreter's files.
facts["unreadable"] = [p for p in RUNTIME if not os.access(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0))]
print(json.dumps(facts))
"""

EXPECTED_ENV = ["HOME", "LANG", "PATH", "TMPDIR"]
_MARKER = "sandbox: isolation layer "


@dataclass
class ZygoteSetup:
    """What the zygote's own set-up achieved, and why a layer could not be had."""

    network: bool = False
    namespace_error: str = ""
    covered: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    # The server's uid (programs keep it unless they get their own; None: the probe's own view of it).
    uid: int | None = None
    # The zygote's user namespace ("user:[inode]"), where it made one and the kernel counts RLIMIT_NPROC per user
    # namespace (Linux 5.14+); a program's own is nested in it.
    user_namespace: str = ""
    # The tasks RLIMIT_NPROC counted for the uid at start-up (what a shared budget is added to).
    counted_tasks: int = 0
    # Directories the programs' uids could not enter, covered so that only the interpreter's files show through.
    exposed: list[str] = field(default_factory=list)


def program(runtime_paths: list[str]) -> str:
    """The probe, told which of the interpreter's paths a program must be able to read."""
    return f"RUNTIME = {json.dumps(runtime_paths)}\n{PROGRAM}"


def unreadable_reason(paths: list[str], uid: int, setup: ZygoteSetup) -> str:
    exposed = f" (covered and bound back for it: {', '.join(setup.exposed)})" if setup.exposed else ""
    return (
        f"uid {uid} cannot read the interpreter's {', '.join(paths)}{exposed}, so programs would fail to import "
        "the modules the zygote did not; programs keep the server's uid (make these directories readable to "
        "others, or run the server as the interpreter's non-root owner)"
    )


def failed_layer(stderr: str) -> str | None:
    """The layer named by a process that could not isolate itself (see child.run)."""
    if _MARKER not in stderr:
        return None
    return stderr.split(_MARKER, 1)[1].split(":", 1)[0]


def build_report(
    facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan, config: ZygoteConfig, threads: int
) -> IsolationReport:
    return IsolationReport(
        (
            Layer(
                "process",
                threads == 1,
                f"a process per program, forked from a warm zygote ({threads} thread); own session, killed as a group",
            ),
            _filesystem(facts, setup, plan, config),
            _proc(facts, setup, plan),
            _network(facts, setup),
            _rlimits(facts, setup, plan, config),
            _uid(facts, setup, plan, config),
            Layer("environment", facts["env"] == EXPECTED_ENV, f"only {', '.join(EXPECTED_ENV)}; none of the server's"),
            _landlock(facts, setup, plan),
            _seccomp(facts, setup, plan),
        )
    )


def _rlimits(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan, config: ZygoteConfig) -> Layer:
    processes, counted_apart = process_budget(plan, setup, facts)
    return Layer(
        "rlimits",
        facts["nproc"] == plan.process_limit and counted_apart,
        f"address space, CPU time, file size ({config.max_file_mb} MiB), open files ({config.max_open_files}), "
        f"{processes}, no core dumps",
    )


def process_budget(plan: ChildPlan, setup: ZygoteSetup, facts: dict[str, Any]) -> tuple[str, bool]:
    """Which process budget (RLIMIT_NPROC) programs get here, in words; and whether the probe saw it counted
    where it should be (a program that should have a user namespace of its own has one)."""
    limit = plan.process_limit
    uid = setup.uid if setup.uid is not None else facts["uid"]
    if plan.drop_uid:
        return f"processes ({limit} per program: a uid of its own)", True
    if plan.own_user_namespace:
        seen = facts.get("user_namespace")  # None where /proc has no namespace links: nothing to compare
        apart = seen is None or seen != setup.user_namespace
        return (
            f"processes ({limit} per program, counted in a user namespace of its own: no other process of uid {uid} "
            "counts against it)",
            apart,
        )
    why_shared = f" ({setup.failures['rlimits']})" if "rlimits" in setup.failures else ""
    if setup.user_namespace:
        return (
            f"processes ({limit} for all programs together, counted in the zygote's user namespace: no process "
            f"outside it counts){why_shared}",
            True,
        )
    return (
        f"processes ({limit} for every process of uid {uid} together: with no user namespace (or a kernel before "
        f"5.14) RLIMIT_NPROC counts them all on the node, other pods' included, and counted {setup.counted_tasks} "
        f"at start-up; a neighbour of the same uid uses up what programs have left){why_shared}",
        True,
    )


def _filesystem(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan, config: ZygoteConfig) -> Layer:
    shared = [path for path in facts["writable"] if path != facts["cwd"]]
    if plan.private_tmp and facts["cwd_tmpfs"] and not shared:
        covered = f"; covered read-only: {', '.join(setup.covered)}" if setup.covered else ""
        return Layer(
            "filesystem",
            True,
            f"a private {config.workdir_mb} MiB tmpfs as /tmp and working directory, gone with the process{covered}",
        )
    why = setup.failures.get("filesystem") or setup.namespace_error or f"still writable: {', '.join(shared)}"
    return Layer(
        "filesystem",
        False,
        f"{why}; programs work in a plain directory under {config.work_root} and disk use is limited per file "
        f"only ({config.max_file_mb} MiB)",
    )


def _proc(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan) -> Layer:
    processes = facts.get("processes")
    if plan.private_proc and processes == [facts.get("pid")]:
        return Layer(
            "proc",
            True,
            "a /proc of its own (hidepid=invisible, subset=pid): it sees its own process only, not the server's, "
            "the zygote's or other programs' (no PID namespace: pids stay the node's)",
        )
    if "proc" in setup.failures:
        why = setup.failures["proc"]
    elif not plan.private_proc and setup.uid == 0:
        why = "programs keep the server's uid (root), from whom a /proc of its own would hide nothing"
    elif not plan.private_proc:
        why = "not root: a /proc of its own would need a PID namespace and a second process per program"
    else:
        why = f"{len(processes)} processes visible" if isinstance(processes, list) else "/proc is not its own"
    if _landlock_active(facts, plan):
        return Layer("proc", False, f"{why}; Landlock lets it list /proc but read its own entries only")
    return Layer("proc", False, f"{why}; it can list the node's processes and read their command lines")


def _landlock_active(facts: dict[str, Any], plan: ChildPlan) -> bool:
    return plan.landlock is not None and facts.get("root_listing") == errno.EACCES


def _landlock(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan) -> Layer:
    if plan.landlock is None or not _landlock_active(facts, plan):
        return Layer("landlock", False, setup.failures.get("landlock") or "the restriction is not in force")
    abi = plan.landlock.abi
    devices = [path for path in plan.landlock.paths if path.startswith("/dev/")]
    files = [path for path in plan.landlock.paths if path not in devices]
    extra = "; TCP bind and connect refused" if abi >= 4 else ""
    extra += "; signals and abstract sockets only within its own processes" if abi >= 6 else ""
    return Layer(
        "landlock",
        True,
        f"opens nothing but: {', '.join(files)} (read, execute), {', '.join(devices)}, its working directory "
        f"(read, write) and its own /proc entries, whatever the modes (ABI {abi}){extra}",
    )


def _network(facts: dict[str, Any], setup: ZygoteSetup) -> Layer:
    if setup.network and all(name == "lo" for name in facts["interfaces"]):
        return Layer("network", True, "an own network namespace with no interface up: no network at all")
    why = setup.namespace_error or f"interfaces present: {', '.join(facts['interfaces'])}"
    return Layer("network", False, f"no network namespace ({why}); sockets are refused only if seccomp is active")


def _uid(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan, config: ZygoteConfig) -> Layer:
    if plan.drop_uid and facts["uid"] != 0:
        last = config.run_as_uid + config.slots - 1
        return Layer("uid", True, f"uid/gid {config.run_as_uid}..{last}, one per worker slot, no groups")
    uid = setup.uid if setup.uid is not None else facts["uid"]
    why = setup.failures.get("uid") or f"the server is not root, so programs keep its uid {uid}"
    return Layer("uid", False, why)


def _seccomp(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan) -> Layer:
    if plan.seccomp is not None and facts["seccomp"] == "2" and facts["socket"] != "allowed":
        skipped = f" (not on this architecture: {', '.join(plan.seccomp.skipped)})" if plan.seccomp.skipped else ""
        return Layer(
            "seccomp",
            True,
            "denied: sockets, ptrace, mount, namespaces, signals to other processes, leaving the process group, "
            f"SysV/POSIX IPC{skipped}",
        )
    return Layer("seccomp", False, setup.failures.get("seccomp") or "the filter is not in force")
