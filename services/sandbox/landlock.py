"""Landlock: what a program's process may open, enforced by the kernel without privileges (Linux 5.13+).

A process restricts itself to a ruleset: for each access it "handles", only the paths with a rule that grants it
remain open to it, and its children inherit the restriction. A program may read and execute beneath the
interpreter's files (services/sandbox/runtime.py) and the system's programs and libraries, use a few devices, and
read and write only its working directory; everything else (/etc, /home, /root, the project's data, other
processes' /proc entries) is refused with EACCES, whatever the files' modes.

Rules hold on inodes, not on path strings: a rule on a directory covers what is beneath it, except what another
file system mounted there shows (the kernel ignores hidden mount points). The private tmpfs that a process mounts
after the fork is thus a new inode no ruleset could name before; so the zygote builds, for each process, a ruleset
with the rules it can make ahead (from paths it holds open, no lookup), and the process adds its working
directory and its /proc, then restricts itself.

Python 3.11 has no binding for these system calls, hence libc's syscall() through ctypes. Their numbers are the
same on x86-64 and arm64 (every architecture shares the numbers of calls added since Linux 5.1).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# File system rights (include/uapi/linux/landlock.h), with the ABI version that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2: rename or link into another directory (in ABI 1 always refused)
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
# Network (ABI 4) and scopes (ABI 6).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# The only rights a rule on a file (not a directory) may carry; the kernel refuses others with EINVAL.
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ = EXECUTE | READ_FILE | READ_DIR
DEVICE = READ_FILE | WRITE_FILE
# Everything in its own working directory but device nodes (which mknod could not make anyway).
WORK = ((1 << 16) - 1) & ~(MAKE_CHAR | MAKE_BLOCK)

# Beyond the interpreter's own files (services/sandbox/runtime.py): the system's programs and shared libraries, so
# that a standard-library extension loads the library it links to (ssl, sqlite3, lzma …) and subprocess can run
# a command. Packages' files only: no host data, configuration or secrets live there.
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")
DEVICES = {"/dev/null": DEVICE, "/dev/zero": READ_FILE, "/dev/urandom": READ_FILE, "/dev/random": READ_FILE}


class _RulesetAttr(ctypes.Structure):
    # A kernel that knows fewer fields accepts the larger struct as long as the fields it lacks are zero.
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; OSError where there is none (ENOSYS: before Linux 5.13; EOPNOTSUPP: built
    in but not enabled, i.e. not in the `lsm=` boot parameter; EPERM: a seccomp filter refuses the call)."""
    return _check(
        _syscall(
            SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
        ),
        "landlock_create_ruleset",
    )


def why_unavailable(exc: OSError) -> str:
    reasons = {
        errno.ENOSYS: "the kernel has no Landlock (Linux 5.13 or later, built with CONFIG_SECURITY_LANDLOCK)",
        errno.EOPNOTSUPP: "Landlock is built into the kernel but not enabled (add it to the lsm= boot parameter)",
        errno.EPERM: "a seccomp filter refuses the landlock system calls",
    }
    return reasons.get(exc.errno or 0, f"landlock_create_ruleset failed: {exc.strerror}")


def handled(abi: int) -> tuple[int, int, int]:
    """(file system rights, network rights, scopes) that ABI version `abi` can restrict: all of them, so that any
    access it knows of is refused unless a rule grants it."""
    fs = (1 << 13) - 1  # ABI 1: EXECUTE … MAKE_SYM
    if abi >= 2:
        fs |= REFER
    if abi >= 3:
        fs |= TRUNCATE
    if abi >= 5:
        fs |= IOCTL_DEV
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def rights_for(fd: int, wanted: int, handled_fs: int) -> int:
    """What a rule on the file behind `fd` may grant of `wanted`: only handled rights, only file rights on a file."""
    rights = wanted & handled_fs
    return rights if stat.S_ISDIR(os.fstat(fd).st_mode) else rights & FILE_RIGHTS


def add_rule(ruleset: int, fd: int, rights: int) -> None:
    attr = _PathBeneathAttr(rights, fd)
    _check(
        _syscall(
            SYS_LANDLOCK_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        ),
        "landlock_add_rule",
    )


def add_path(ruleset: int, path: str, wanted: int, handled_fs: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        add_rule(ruleset, fd, rights_for(fd, wanted, handled_fs))
    finally:
        os.close(fd)


def restrict_self(ruleset: int) -> None:
    """From now on this process (and all it starts) may open only what the ruleset grants; closes the ruleset."""
    try:
        # Required of an unprivileged process, so that it cannot run a set-uid program outside the restriction.
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(
            _syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self"
        )
    finally:
        os.close(ruleset)


@dataclass
class Rules:
    """The rules known in the zygote, held as O_PATH descriptors: each process's ruleset is built from these
    without a path lookup, and a path that vanishes or is replaced later keeps its rule on what was there."""

    abi: int
    # (path, descriptor, rights), the rights already fitted to the ABI and to the kind of file.
    rules: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def handled_fs(self) -> int:
        return handled(self.abi)[0]

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _ in self.rules]

    def allow(self, paths: Iterable[str], wanted: int) -> None:
        """Add rules for the paths that exist (a missing one, such as /lib32 on most hosts, is skipped)."""
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            self.rules.append((path, fd, rights_for(fd, wanted, self.handled_fs)))

    def ruleset(self) -> int:
        """A new ruleset with every rule; the caller's process adds its own and restricts itself with it."""
        fs, net, scoped = handled(self.abi)
        attr = _RulesetAttr(fs, net, scoped)
        ruleset = _check(
            _syscall(
                SYS_LANDLOCK_CREATE_RULESET,
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
                ctypes.c_uint32(0),
            ),
            "landlock_create_ruleset",
        )
        try:
            for _, fd, rights in self.rules:
                add_rule(ruleset, fd, rights)
        except OSError:
            os.close(ruleset)
            raise
        return ruleset

    def close(self) -> None:
        for _, fd, _ in self.rules:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.rules.clear()
