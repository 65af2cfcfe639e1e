"""The isolation layers, as the system calls that apply them.

Two places apply them. The zygote, once at start-up: its own network namespace (no interfaces up, so no
network at all for anything it forks) and its own mount namespace, where the world-writable directories of the
host are covered by empty read-only tmpfs mounts. Each program's process, after the fork: a mount namespace of
its own with a fresh size-limited tmpfs as /tmp and working directory (it vanishes with the process, so cleanup
is O(1) whatever the program wrote), its own /proc (root), a user namespace of its own where RLIMIT_NPROC is
counted (non-root), rlimits, an unprivileged uid (root), an empty environment, Landlock (services/sandbox/landlock.py)
and a seccomp filter.

Python 3.11 has no os.unshare or os.mount, hence libc through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import resource
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
    CLONE_NEWTIME,
)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

# The only mounts the sandbox makes, and the namespaces it makes without root: the chart's seccomp profile
# (deploy/helm/thinkmesh/files/seccomp/sandbox.json) allows mount() with exactly these flags and unshare() with no
# other namespace, and tests/unit/sandbox/test_sandbox_seccomp_profile.py holds the two to each other.
PRIVATE_PROPAGATION = MS_REC | MS_PRIVATE  # the zygote's mount namespace: nothing leaks back to the node
COVER_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV  # empty read-only tmpfs over world-writable directories
PRIVATE_TMP_FLAGS = MS_NOSUID | MS_NODEV  # a program's own /tmp
MOUNT_FLAGS = (PRIVATE_PROPAGATION, COVER_FLAGS, PRIVATE_TMP_FLAGS)
UNPRIVILEGED_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET
# Mounts made only as root, which the chart never runs the sandbox as (so its profile need not allow them): a
# program's own /proc (private_proc), and the interpreter's directories bound back where its uid could not reach
# them (services/sandbox/runtime.py). Without root the kernel would refuse both anyway: a procfs shows the
# mounter's PID namespace, and only root may mount the node's.
PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Directories any uid may write to on a typical host; in the zygote's mount namespace they are covered, so a
# program can fill no disk but its own size-limited tmpfs.
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/run/shm", "/dev/mqueue")

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def detach(target: str) -> None:
    """Unmount `target` and what is mounted beneath it (MNT_DETACH)."""
    _check(_libc.umount2(target.encode(), 2), f"umount {target}")


# --- the zygote, once ---------------------------------------------------------------------------------------


def enter_zygote_namespaces() -> tuple[bool, bool, str]:
    """Give the zygote (and so every program) its own network and mount namespaces.

    Returns (network, mounts, why not). As root each is a plain unshare. Without root it takes a user namespace
    with them, which locked-down pods usually forbid; then the layers stay off and the reason says why.
    """
    uid, gid = os.getuid(), os.getgid()
    errors = []
    if uid == 0:
        got = []
        for flag, name in ((CLONE_NEWNET, "network"), (CLONE_NEWNS, "mount")):
            try:
                unshare(flag)
                got.append(True)
            except OSError as exc:
                got.append(False)
                errors.append(f"{name} namespace refused: {exc.strerror}")
        return got[0], got[1], "; ".join(errors)
    # One user namespace only: a second unshare would nest another. Both layers, else whichever is allowed.
    for flags, network, mounts in (
        (CLONE_NEWNET | CLONE_NEWNS, True, True),
        (CLONE_NEWNET, True, False),
        (CLONE_NEWNS, False, True),
    ):
        try:
            unshare(CLONE_NEWUSER | flags)
        except OSError as exc:
            errors.append(exc.strerror or str(exc))
            continue
        _map_ids(uid, gid)
        return network, mounts, "" if network and mounts else f"user namespace refused in part: {errors[0]}"
    return False, False, f"not root, and no user namespace allowed: {errors[0]}"


def own_process_count() -> None:
    """A user namespace of the process's own, nested in the zygote's, so that RLIMIT_NPROC counts its tasks only.

    Since Linux 5.14 the kernel counts a uid's processes and threads per user namespace (ucounts): a process is
    checked against its RLIMIT_NPROC at the level of its own namespace, and against the limit each namespace's
    creator had at every level above. So the namespace must be made while the limit is still the zygote's
    (unlimited) and RLIMIT_NPROC set after it; then the program's budget is its own, whatever other processes of
    the same uid (the server, other programs, other pods on the node) hold.

    Its ids stay unmapped: the process is non-dumpable, so it cannot write its own /proc/self/uid_map, and making
    it dumpable for that moment would let any process of the uid open its memory. Only what the program sees
    changes: its uid and gid read as the overflow ids (65534), while the kernel still checks files and signals
    against the real ones.
    """
    unshare(CLONE_NEWUSER)


def counts_processes_per_user_namespace(release: str) -> bool:
    """Whether this kernel (`os.uname().release`) counts RLIMIT_NPROC per user namespace: Linux 5.14 and later.

    Before, it counts per uid across the node whatever the namespace, and a program's own namespace would leave it
    its budget minus every other process of the uid.
    """
    numbers = [int(part) for part in release.split("-")[0].split(".")[:2] if part.isdigit()]
    return len(numbers) == 2 and (numbers[0], numbers[1]) >= (5, 14)


def tasks_counted_for_uid(most: int = 1 << 22) -> int:
    """The processes and threads the kernel counts against RLIMIT_NPROC for this process's real uid, at most `most`.

    /proc shows only this pod's processes; without a user namespace the kernel counts the uid's on the whole node,
    other pods' included. Forking under a lowered soft limit tells which (a fork succeeds while the count is below
    the limit): doubling, then halving, so ~2 log2(count) forks of the caller. Not for root or a process with
    CAP_SYS_RESOURCE or CAP_SYS_ADMIN, whose forks the limit never stops (it would return 0).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        most = min(most, hard - 1)  # the soft limit tried below is at most the hard one

    def fits(count: int) -> bool:  # the count is at most `count`: one more task is allowed under count + 1
        resource.setrlimit(resource.RLIMIT_NPROC, (count + 1, hard))
        try:
            pid = os.fork()
        except BlockingIOError:
            return False
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return True

    low, high = 0, min(64, most)
    try:
        while high < most and not fits(high):
            low, high = high + 1, min(2 * high, most)
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
    return low


def _map_ids(uid: int, gid: int) -> None:
    # Keep the same ids inside; the capabilities that unshare granted in the new user namespace remain.
    with open("/proc/self/setgroups", "w") as setgroups:
        setgroups.write("deny")
    with open("/proc/self/uid_map", "w") as uid_map:
        uid_map.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as gid_map:
        gid_map.write(f"{gid} {gid} 1")


def cover_world_writable(paths: Iterable[str] = WORLD_WRITABLE) -> list[str]:
    """Mount an empty read-only tmpfs over each world-writable directory; returns the ones covered."""
    mount("none", "/", None, PRIVATE_PROPAGATION)  # nothing we mount may leak back to the host
    covered = []
    for path in paths:
        try:
            if os.path.islink(path) or not os.path.isdir(path) or not os.stat(path).st_mode & 0o002:
                continue
        except OSError:
            continue
        mount("tmpfs", path, "tmpfs", COVER_FLAGS, "size=4k,mode=0755")
        covered.append(path)
    return covered


def network_is_empty() -> bool:
    """True when no interface but a down loopback exists (what a fresh network namespace has)."""
    try:
        with open("/proc/net/dev") as dev:
            names = [line.split(":")[0].strip() for line in dev.readlines()[2:]]
    except OSError:
        return False
    if any(name != "lo" for name in names):
        return False
    try:
        with open("/sys/class/net/lo/operstate") as state:
            return state.read().strip() != "up"
    except OSError:
        return True  # no sysfs for this namespace: the loopback is down as created


# --- seccomp --------------------------------------------------------------------------------------------------

# Each denied call fails with EPERM, so a program sees a Python exception it can report, not a sudden death.
DENIED_SYSCALLS = (
    # network: no sockets at all (the namespace has no interfaces either; this also closes unix sockets)
    "socket",
    "socketpair",
    # other processes' memory and state
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    # signals: only kill(0, sig) — its own process group — stays allowed (rule below)
    "tkill",
    "tgkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_send_signal",
    # leaving the process group the zygote kills as a whole
    "setsid",
    "setpgid",
    # file systems and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "mknod",
    "mknodat",
    # System V and POSIX IPC outlive a process: a program could leave memory behind after it is gone
    "shmget",
    "msgget",
    "semget",
    "mq_open",
    # kernel attack surface a step of arithmetic never needs
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "personality",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "fanotify_init",
    "lookup_dcookie",
    "vhangup",
    "uselib",
    "ustat",
    "sysfs",
)


class SeccompProgram:
    """A filter compiled once in the zygote (libseccomp takes ~1.5 ms); a child only hands it to the kernel."""

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    def __init__(self, bpf: bytes, skipped: list[str]) -> None:
        self.skipped = skipped
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = self._Fprog(len(bpf) // 8, ctypes.addressof(self._buffer))

    def load(self) -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(
            _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._prog), 0, 0),
            "prctl(PR_SET_SECCOMP)",
        )


def compile_seccomp() -> SeccompProgram:
    """Raises ImportError or OSError where libseccomp is missing or refuses."""
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(sc.ALLOW)
    skipped = []
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(deny, name)
        except (OSError, ValueError):
            skipped.append(name)  # not a system call on this architecture
    rules.add_rule(deny, "kill", sc.Arg(0, sc.NE, 0))
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of the filter's sight: refuse it as unknown, and glibc falls back
    # to clone, whose flags the rules above check.
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb") as sink:
            rules.export_bpf(sink)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    return SeccompProgram(b"".join(chunks), skipped)


# --- each program's process -----------------------------------------------------------------------------------


def private_tmp(uid: int, gid: int, size_mb: int) -> str:
    """A mount namespace of the process's own, with a fresh tmpfs as /tmp; returns the directory to work in."""
    unshare(CLONE_NEWNS)
    mount("tmpfs", "/tmp", "tmpfs", PRIVATE_TMP_FLAGS, f"size={size_mb}m,mode=0700,uid={uid},gid={gid}")
    return "/tmp"


def private_proc() -> None:
    """A procfs of its own over /proc (in the mount namespace of private_tmp) that shows only processes this one
    may ptrace: with a uid of its own and non-dumpable, only itself. `subset=pid` leaves out everything but the
    process directories (/proc/cpuinfo, /proc/sys …). Root only; Linux 5.8+ for the named options, else hidepid=2.
    """
    try:
        mount("proc", "/proc", "proc", PROC_FLAGS, "hidepid=invisible,subset=pid")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        mount("proc", "/proc", "proc", PROC_FLAGS, "hidepid=2")


def set_limits(*, memory_mb: int, timeout_ms: int, max_processes: int, max_open_files: int, max_file_mb: int) -> int:
    """rlimits at the server's maximums, set while still privileged; returns the inherited address space.

    A process is prepared before its program is known, so memory and CPU time start at the ceiling and
    `narrow_limits` lowers them to the program's own (lowering needs no privilege).
    """
    with open("/proc/self/statm") as statm:
        inherited = int(statm.read().split()[0]) * _PAGE
    narrow_limits(inherited, memory_mb, timeout_ms)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb * _MIB, max_file_mb * _MIB))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    # Counted per real uid in the process's user namespace (see own_process_count), and never enforced for root:
    # as root it only binds after drop_privileges.
    resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
    # RLIMIT_AS binds each process, so a program's processes together may hold up to max_processes times its
    # memory; should that exhaust the machine, the kernel's OOM killer takes programs before anything else.
    # (Best effort: a non-dumpable process in a user namespace may not write its own /proc files.)
    with contextlib.suppress(OSError):
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    return inherited


def narrow_limits(inherited: int, memory_mb: int, timeout_ms: int) -> None:
    # The address space of the warm interpreter is inherited; the limit is what the program may add to it.
    address_space = inherited + memory_mb * _MIB
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    # A backstop behind the wall-clock kill: SIGXCPU a second after the timeout's worth of CPU, SIGKILL after 2.
    cpu = math.ceil(timeout_ms / 1000) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def clean_environment(home: str) -> None:
    """The server's variables never reach a program (the zygote itself starts with almost none)."""
    os.environ.clear()
    os.environ.update({"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"})
