"""What runs in a program's own process: from the zygote's fork to the program's last line, then _exit.

The zygote forks a process for a worker slot before a program arrives. The process isolates itself at once (a
failure to apply any planned layer ends it before it could ever run code), then waits on its wake pipe; the
zygote writes the program into the slot's shared memory and wakes it. The fork and the isolation are thus off
the critical path. The program then runs as a fresh `__main__`, and how it ended is reported by the exit code.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import linecache
import mmap
import os
import signal
import struct
import sys
import traceback
import types
from dataclasses import dataclass, replace
from typing import NoReturn

from services.sandbox import isolation, landlock

# Exit codes the zygote reads. A program's own sys.exit(n) is reported as 1 for any n != 0, so only these
# lines can produce them (a program calling os._exit(77) fools no one but itself).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MEMORY = 77
EXIT_ISOLATION = 78

FILENAME = "<step>"
_HERE = __file__
# In the slot's shared memory: timeout ms, memory MB, code length, then the code.
_JOB = struct.Struct("!III")
_WAKE_FD = 3
# The process writes its exit code here just before it exits: tearing down an address space forked from the
# zygote takes about a millisecond, and the result need not wait for it. (A program could write here too, but
# it would only misreport itself, and is killed at once all the same.)
_STATUS_FD = 4


@dataclass(frozen=True)
class ChildPlan:
    """The per-process layers the zygote found to work at start-up; each one is required from then on."""

    private_tmp: bool
    drop_uid: bool
    seccomp: isolation.SeccompProgram | None
    max_processes: int
    # With neither a uid nor a user namespace of its own, a program shares RLIMIT_NPROC (counted per uid and user
    # namespace) with every other process of the uid there: it then gets a budget for all of them together.
    shared_process_limit: int
    max_open_files: int
    max_file_mb: int
    workdir_mb: int
    # Ceilings until the program's own limits are known.
    max_memory_mb: int
    max_timeout_ms: int
    # A user namespace of its own, made before RLIMIT_NPROC is set, so that only its own tasks count against it
    # (non-root, where the zygote has a user namespace to nest it in).
    own_user_namespace: bool = False
    # A /proc of its own showing only itself (root, with private_tmp's mount namespace).
    private_proc: bool = False
    # What it may open; the zygote makes a ruleset from these for each process (see services/sandbox/landlock.py).
    landlock: landlock.Rules | None = None

    @property
    def process_limit(self) -> int:
        return self.max_processes if self.drop_uid or self.own_user_namespace else self.shared_process_limit

    def without(self, layer: str | None) -> ChildPlan:
        if layer == "filesystem":
            return replace(self, private_tmp=False)
        if layer == "rlimits" and self.own_user_namespace:
            return replace(self, own_user_namespace=False)  # the shared budget instead of a per-program one
        if layer == "uid":
            # Programs of the server's uid (root) are hidden nothing by hidepid: Landlock's /proc/self rule instead.
            return replace(self, drop_uid=False, private_proc=False)
        if layer == "seccomp":
            return replace(self, seccomp=None)
        if layer == "proc":
            return replace(self, private_proc=False)
        if layer == "landlock":
            return replace(self, landlock=None)
        raise ValueError(f"layer {layer!r} is not optional")


# The layers a process may go without (or, for rlimits, with a weaker form of) when this host does not permit
# them; the report then says so.
OPTIONAL_LAYERS = ("filesystem", "proc", "rlimits", "uid", "landlock", "seccomp")


class LayerFailed(Exception):
    def __init__(self, layer: str, cause: BaseException) -> None:
        super().__init__(f"{layer}: {cause}")
        self.layer = layer


def region_size(max_code_bytes: int) -> int:
    return _JOB.size + max_code_bytes


def write_job(region: mmap.mmap, code: bytes, timeout_ms: int, memory_mb: int) -> None:
    region[: _JOB.size + len(code)] = _JOB.pack(timeout_ms, memory_mb, len(code)) + code


def run(
    region: mmap.mmap,
    *,
    plan: ChildPlan,
    uid: int,
    workdir: str | None,
    stdout_fd: int,
    stderr_fd: int,
    wake_fd: int,
    status_fd: int,
    ruleset_fd: int | None = None,
) -> NoReturn:
    try:
        inherited = _isolate(plan, uid, workdir, stdout_fd, stderr_fd, wake_fd, status_fd, ruleset_fd)
    except BaseException as exc:
        message = f"sandbox: isolation layer {exc}; the program was not run\n"
        os.write(2, message.encode(errors="replace"))
        os._exit(EXIT_ISOLATION)
    if not os.read(_WAKE_FD, 1):
        os._exit(EXIT_OK)  # the zygote is shutting down: no program will come
    os.close(_WAKE_FD)
    timeout_ms, memory_mb, length = _JOB.unpack_from(region)
    code = region[_JOB.size : _JOB.size + length]
    region.close()
    try:
        isolation.narrow_limits(inherited, memory_mb, timeout_ms)
    except (OSError, ValueError) as exc:
        os.write(2, f"sandbox: isolation layer rlimits: {exc}; the program was not run\n".encode())
        os._exit(EXIT_ISOLATION)
    _execute(code)


def _isolate(
    plan: ChildPlan,
    uid: int,
    workdir: str | None,
    stdout_fd: int,
    stderr_fd: int,
    wake_fd: int,
    status_fd: int,
    ruleset_fd: int | None,
) -> int:
    zygote = os.getppid()
    # A session of its own: the zygote kills the whole process group, and seccomp keeps it from leaving.
    os.setsid()
    _restore_signals()
    # Only its own pipes: the zygote's control socket and other programs' pipes are closed here.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.dup2(wake_fd, _WAKE_FD)
    os.dup2(status_fd, _STATUS_FD, inheritable=False)
    # The zygote's descriptors are all above the five set here (its own standard streams, epoll and signal pipe
    # hold the low numbers), so the ruleset it made for this process survives until restrict_self closes it.
    ruleset = ruleset_fd if plan.landlock is not None and ruleset_fd is not None and ruleset_fd > _STATUS_FD else None
    os.closerange(_STATUS_FD + 1, ruleset or 1 << 20)
    if ruleset is not None:
        os.closerange(ruleset + 1, 1 << 20)
    try:
        if plan.private_tmp:
            owner = (uid, uid) if plan.drop_uid else (os.getuid(), os.getgid())
            workdir = isolation.private_tmp(*owner, plan.workdir_mb)
    except OSError as exc:
        raise LayerFailed("filesystem", exc) from exc
    if workdir is None:
        raise LayerFailed("filesystem", RuntimeError("no working directory"))
    os.chdir(workdir)
    try:
        if plan.private_proc:
            isolation.private_proc()
    except OSError as exc:
        raise LayerFailed("proc", exc) from exc
    if plan.landlock is not None:
        # Its own rules, on what only exists in this process's mount namespace: made while it may still open them.
        if ruleset is None:
            raise LayerFailed("landlock", RuntimeError("the zygote could not make a ruleset for this process"))
        try:
            _own_rules(plan, ruleset, workdir)
        except OSError as exc:
            raise LayerFailed("landlock", exc) from exc
    try:
        # After the private /tmp (mounted with the zygote's privileges in its namespaces), before RLIMIT_NPROC.
        if plan.own_user_namespace:
            isolation.own_process_count()
        inherited = isolation.set_limits(
            memory_mb=plan.max_memory_mb,
            timeout_ms=plan.max_timeout_ms,
            max_processes=plan.process_limit,
            max_open_files=plan.max_open_files,
            max_file_mb=plan.max_file_mb,
        )
    except (OSError, ValueError) as exc:
        raise LayerFailed("rlimits", exc) from exc
    try:
        if plan.drop_uid:
            isolation.drop_privileges(uid)
    except OSError as exc:
        raise LayerFailed("uid", exc) from exc
    # After the uid change, which clears it: if the zygote dies, so does the program.
    isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:
        os._exit(EXIT_OK)  # it died before the line above could take effect
    isolation.clean_environment(workdir)
    try:
        if ruleset is not None:
            landlock.restrict_self(ruleset)
    except OSError as exc:
        raise LayerFailed("landlock", exc) from exc
    try:
        if plan.seccomp is not None:
            plan.seccomp.load()
    except OSError as exc:
        raise LayerFailed("seccomp", exc) from exc
    return inherited


def _own_rules(plan: ChildPlan, ruleset: int, workdir: str) -> None:
    assert plan.landlock is not None
    handled_fs = plan.landlock.handled_fs
    landlock.add_path(ruleset, workdir, landlock.WORK, handled_fs)
    if plan.private_proc:
        # Its own /proc shows nothing but its own process.
        landlock.add_path(ruleset, "/proc", landlock.READ_FILE | landlock.READ_DIR, handled_fs)
    else:
        # The node's /proc: the process directories may be listed (their numbers can be probed with getpgid()
        # anyway), but only its own files read. A process it forks has another /proc/self, closed to it.
        landlock.add_path(ruleset, "/proc", landlock.READ_DIR, handled_fs)
        landlock.add_path(ruleset, "/proc/self", landlock.READ_FILE | landlock.READ_DIR, handled_fs)


def _restore_signals() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _execute(code: bytes) -> NoReturn:
    """Run the program as `python -c` would, with tracebacks that show only its own frames."""
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    # Line-buffered: what a program printed before a timeout kill is still reported.
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = [FILENAME]
    main_pid = os.getpid()
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    status = EXIT_OK
    try:
        source = code.decode("utf-8")
        linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
        exec(compile(source, FILENAME, "exec"), main.__dict__)
        _join_threads()
    except SystemExit as exc:
        status = _exit_status(exc)
    except MemoryError as exc:
        main.__dict__.clear()  # whatever filled the memory, so that the traceback can be written
        _report(exc)
        status = EXIT_MEMORY
    except BaseException as exc:
        _report(exc)
        status = EXIT_ERROR
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # the program may have closed its own output
            stream.flush()
    # Only the program's own process reports; a process it forked ends here too, and must not.
    if os.getpid() == main_pid:
        # Output closed first: the zygote, woken by the status, finds all of it waiting. (Any of these may
        # already be closed by the program; the zygote then learns the exit code from SIGCHLD.)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.write(_STATUS_FD, bytes([status]))
    os._exit(status)


def _join_threads() -> None:
    # A Python interpreter waits for non-daemon threads before it exits; so does a program here.
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None or exc.code == 0:
        return EXIT_OK
    if not isinstance(exc.code, int):
        _write_stderr(f"{exc.code}\n")
    return EXIT_ERROR


def _report(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
        tb = tb.tb_next
    try:
        _write_stderr("".join(traceback.format_exception(type(exc), exc, tb)))
    except BaseException:  # no memory left even for the traceback
        os.write(2, f"{type(exc).__name__}\n".encode())


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except BaseException:
        pass
