"""The zygote: a warm, single-threaded interpreter that forks one isolated process per program.

The server starts it as `python -m services.sandbox.zygote FD CONFIG` with an almost empty environment and talks
to it over the Unix socket FD (services.sandbox.protocol). Importing and exercising sympy and numpy happens once,
here; each program then costs a fork (≈1 ms) instead of an interpreter start (≈350 ms with sympy). It must stay
a process of its own: forking the server would copy gRPC's threads into every program.

One event loop (epoll) watches the control socket, every program's stdout/stderr pipes, and SIGCHLD; timers
enforce wall-clock deadlines. A program's process group is killed when its main process exits, when its time is
up or when its output passes the cap, so nothing it started outlives it.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import io
import json
import mmap
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from services.sandbox import child, isolation, landlock, probe, runtime
from services.sandbox.layers import IsolationReport
from services.sandbox.model import Status
from services.sandbox.protocol import (
    CANCEL,
    JOB,
    FrameBuffer,
    Job,
    JobResult,
    ZygoteConfig,
    decode_cancel,
    decode_job,
    encode_hello,
    encode_result,
)

# Where programs share one process budget (no uid or user namespace of their own): room for the tasks the uid
# may add later (gRPC's pools, a neighbour's threads), on top of those it has at start-up.
SHARED_TASK_MARGIN = 64

# After a program's main process exits, how long its pipes may stay open (a descendant being killed).
EOF_GRACE_S = 0.5

# Exercised once so that every program finds these imported, their caches filled and lazy imports done.
WARMUP = """
import cmath, collections, decimal, fractions, functools, itertools, math, random, re, statistics
import numpy as np
import sympy as sp
from sympy import *
x, y = sp.symbols("x y")
print(sp.solve(x**2 - 5*x + 6, x), sp.solve([x + y - 3, x - y - 1], [x, y]), sp.solveset(x**2 - 4, x, sp.S.Reals))
print(sp.simplify((x**2 - 1) / (x - 1)), sp.factor(x**3 - x), sp.expand((x + 1)**3), sp.cancel((x**2 - 1) / (x + 1)))
print(sp.Rational(3, 4) + sp.Rational(1, 6), sp.sqrt(8), sp.nsimplify(0.75), sp.N(sp.pi, 20), sp.Integer(10)**20)
print(sp.integrate(x**2, (x, 0, 1)), sp.diff(sp.sin(x), x), sp.limit(sp.sin(x) / x, x, 0))
print(sp.series(sp.exp(x), x, 0, 4))
print(sp.Matrix([[1, 2], [3, 4]]).det(), sp.binomial(10, 3), sp.factorial(6), sp.gcd(12, 18), sp.isprime(97))
print(sp.latex(x**2 / 3), sp.Eq(x, 1), sp.summation(x, (x, 1, 10)), sp.factorint(360), sp.Poly(x**2 + 1).all_coeffs())
print(np.array([1, 2, 3]).sum(), np.linalg.solve(np.eye(2), np.ones(2)), np.mean([1.0, 2.0]), np.sqrt(2.0))
print(fractions.Fraction(1, 3) + fractions.Fraction(1, 6), math.comb(5, 2), list(itertools.permutations(range(3))))
print(decimal.Decimal("1.1") + decimal.Decimal("2.2"), statistics.median([1, 3, 2]), random.Random(0).random())
"""


@dataclass
class Prepared:
    """A process forked for a slot ahead of its program: isolated, waiting on its wake pipe."""

    pid: int
    wake: int
    stdout: int
    stderr: int
    status: int
    workdir: str | None


@dataclass
class Slot:
    index: int
    uid: int
    # Shared with the slot's processes; the zygote writes the next program here before waking one.
    region: mmap.mmap
    prepared: Prepared | None = None


@dataclass
class Running:
    job: Job
    pid: int
    slot: Slot
    workdir: str | None
    started: float
    deadline: float
    fds: dict[int, bytearray] = field(default_factory=dict)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    # TIMEOUT, OUTPUT_LIMIT or KILLED (cancelled) once the zygote has stopped the program for that reason.
    verdict: Status | None = None
    exit_status: int | None = None
    cpu_seconds: float = 0.0
    ended: float | None = None
    eof_deadline: float = float("inf")
    status_fd: int = -1


class Zygote:
    def __init__(self, config: ZygoteConfig, deliver: Callable[[JobResult], None]) -> None:
        self.config = config
        self.deliver = deliver
        self.selector = selectors.DefaultSelector()
        self.running: dict[int, Running] = {}
        self.pending: collections.deque[Job] = collections.deque()
        size = child.region_size(config.max_code_bytes)
        self.slots = [Slot(i, config.run_as_uid + i, mmap.mmap(-1, size)) for i in range(config.slots)]
        # First in, first out: the slot freed last is still forking its next process, an older one is ready.
        self.free_slots = collections.deque(self.slots)
        # Off while the start-up probe is still choosing the layers a process gets.
        self.prefork = False
        self.plan = child.ChildPlan(
            private_tmp=False,
            drop_uid=False,
            seccomp=None,
            max_processes=config.max_processes,
            shared_process_limit=config.max_processes,
            max_open_files=config.max_open_files,
            max_file_mb=config.max_file_mb,
            workdir_mb=config.workdir_mb,
            max_memory_mb=config.max_memory_mb,
            max_timeout_ms=config.max_timeout_ms,
        )
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_read = wake_read
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_write)
        self.selector.register(wake_read, selectors.EVENT_READ, self._reap)

    # --- jobs -------------------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self.free_slots:
            self._dispatch(job, self.free_slots.popleft())
        else:
            self.pending.append(job)

    def cancel(self, job_id: int) -> None:
        """The caller gave up: stop the program (its result still comes back, and is ignored)."""
        self.pending = collections.deque(job for job in self.pending if job.job_id != job_id)
        for running in self.running.values():
            if running.job.job_id == job_id and running.exit_status is None and running.verdict is None:
                running.verdict = Status.KILLED
                self._kill(running)

    def _prepare(self, slot: Slot) -> Prepared:
        workdir = None
        if not self.plan.private_tmp:
            workdir = tempfile.mkdtemp(prefix=f"slot-{slot.index}-", dir=self.config.work_root)
            if self.plan.drop_uid:
                os.chown(workdir, slot.uid, slot.uid)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        wake_read, wake_write = os.pipe2(os.O_CLOEXEC)
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        # The zygote never blocks on a program: its ends are non-blocking (the program's stay blocking).
        for fd in (out_read, err_read, status_read):
            os.set_blocking(fd, False)
        ruleset = None
        if self.plan.landlock is not None:
            # Without one (out of descriptors?) the process refuses to run its program: never unconfined.
            with contextlib.suppress(OSError):
                ruleset = self.plan.landlock.ruleset()
        pid = os.fork()
        if pid == 0:  # the program's process: never returns
            try:
                for other in self.slots:
                    if other is not slot:
                        other.region.close()  # no process can read or rewrite another slot's program
                child.run(
                    slot.region,
                    plan=self.plan,
                    uid=slot.uid,
                    workdir=workdir,
                    stdout_fd=out_write,
                    stderr_fd=err_write,
                    wake_fd=wake_read,
                    status_fd=status_write,
                    ruleset_fd=ruleset,
                )
            finally:
                os._exit(child.EXIT_ISOLATION)
        for fd in (out_write, err_write, wake_read, status_write):
            os.close(fd)
        if ruleset is not None:
            os.close(ruleset)
        return Prepared(pid, wake_write, out_read, err_read, status_read, workdir)

    def _dispatch(self, job: Job, slot: Slot) -> None:
        prepared, slot.prepared = slot.prepared, None
        if prepared is None:
            prepared = self._prepare(slot)
        started = time.monotonic()
        child.write_job(slot.region, job.code, job.timeout_ms, job.memory_mb)
        # If it died while waiting (an isolation failure), its exit status tells the rest.
        with contextlib.suppress(BrokenPipeError):
            os.write(prepared.wake, b"\1")
        os.close(prepared.wake)
        running = Running(job, prepared.pid, slot, prepared.workdir, started, started + job.timeout_ms / 1000)
        for fd, buffer in ((prepared.stdout, running.stdout), (prepared.stderr, running.stderr)):
            running.fds[fd] = buffer
            self.selector.register(fd, selectors.EVENT_READ, lambda fd=fd, r=running: self._read_output(r, fd))
        running.status_fd = prepared.status
        self.selector.register(prepared.status, selectors.EVENT_READ, lambda r=running: self._read_status(r))
        self.running[prepared.pid] = running

    def _discard(self, prepared: Prepared) -> None:
        for fd in (prepared.wake, prepared.stdout, prepared.stderr, prepared.status):
            os.close(fd)
        if prepared.workdir is not None:
            shutil.rmtree(prepared.workdir, ignore_errors=True)

    def _read_output(self, running: Running, fd: int, finish: bool = True) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_fd(running, fd)
            if finish:
                self._maybe_finish(running)
            return
        buffer = running.fds[fd]
        room = running.job.max_output_bytes - len(buffer)
        if len(data) <= room:
            buffer += data
            return
        buffer += data[: max(room, 0)]
        running.truncated = True
        if running.verdict is None and running.exit_status is None:
            running.verdict = Status.OUTPUT_LIMIT
            self._kill(running)

    def _read_status(self, running: Running) -> None:
        """The exit code, written just before the process exits: the program is over now."""
        try:
            data = os.read(running.status_fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._close_status(running)
        if data and running.exit_status is None:
            self._ended(running, exit_status=data[0] << 8, cpu_seconds=0.0)

    def _close_status(self, running: Running) -> None:
        if running.status_fd >= 0:
            self.selector.unregister(running.status_fd)
            os.close(running.status_fd)
            running.status_fd = -1

    def _ended(self, running: Running, exit_status: int, cpu_seconds: float) -> None:
        running.exit_status = exit_status
        running.cpu_seconds = cpu_seconds
        running.ended = time.monotonic()
        running.eof_deadline = running.ended + EOF_GRACE_S
        # The program is over when its main process is: whatever it left running goes with it.
        self._kill_group(running.pid)
        for fd in list(running.fds):  # usually all there already, EOF included: no need for another wake-up
            self._read_output(running, fd, finish=False)
        self._maybe_finish(running)

    def _close_fd(self, running: Running, fd: int) -> None:
        if running.fds.pop(fd, None) is not None:
            self.selector.unregister(fd)
            os.close(fd)

    def _reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            running = self.running.get(pid)
            if running is None:
                for slot in self.slots:
                    if slot.prepared is not None and slot.prepared.pid == pid:
                        # Died before it had a program: the slot forks afresh when one comes.
                        self._discard(slot.prepared)
                        slot.prepared = None
                continue  # otherwise a program's orphan, reparented to us (a subreaper) and now reaped
            if running.exit_status is None:  # else it reported its exit code already
                self._ended(running, status, usage.ru_utime + usage.ru_stime)

    def _kill(self, running: Running) -> None:
        running.ended = time.monotonic()
        self._kill_group(running.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)  # in case it died before it had its own group

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _check_timers(self, now: float) -> None:
        for running in list(self.running.values()):
            if running.exit_status is None and now >= running.deadline and running.verdict is None:
                running.verdict = Status.TIMEOUT
                self._kill(running)
            elif running.exit_status is not None:
                self._maybe_finish(running, now)

    def _next_timer(self) -> float | None:
        times = [r.deadline if r.exit_status is None else r.eof_deadline for r in self.running.values()]
        return min(times) if times else None

    def _maybe_finish(self, running: Running, now: float | None = None) -> None:
        if running.exit_status is None:
            return
        if running.fds and (now or time.monotonic()) < running.eof_deadline:
            return
        for fd in list(running.fds):
            self._close_fd(running, fd)
        self._close_status(running)
        del self.running[running.pid]
        if running.workdir is not None:
            shutil.rmtree(running.workdir, ignore_errors=True)
        self.deliver(self._result(running))
        if self.pending:
            self._dispatch(self.pending.popleft(), running.slot)
            return
        if self.prefork and running.slot.prepared is None:
            running.slot.prepared = self._prepare(running.slot)
        self.free_slots.append(running.slot)

    def _result(self, running: Running) -> JobResult:
        stderr = bytes(running.stderr)
        assert running.exit_status is not None and running.ended is not None
        status: Status | None = running.verdict
        if status is None:
            status, note = classify(running.exit_status, running.cpu_seconds, running.job.timeout_ms)
            if note:
                stderr = (stderr + b"\n" if stderr and not stderr.endswith(b"\n") else stderr) + note.encode()
        duration_ms = max(0, round((running.ended - running.started) * 1000))
        return JobResult(running.job.job_id, status, running.truncated, duration_ms, bytes(running.stdout), stderr)

    # --- the loop ---------------------------------------------------------------------------------------------

    def step(self) -> None:
        deadline = self._next_timer()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for key, _ in self.selector.select(timeout):
            # An earlier callback of this round may have closed this descriptor, and a later one reused its
            # number for a new pipe: only a key that is still registered is live.
            if self.selector.get_map().get(key.fd) is key:
                key.data()
        self._check_timers(time.monotonic())

    def run_one(self, job: Job) -> JobResult:
        """Run a job to its end before serving anything (the start-up probe)."""
        results: list[JobResult] = []
        deliver, self.deliver = self.deliver, results.append
        try:
            self.submit(job)
            while not results:
                self.step()
        finally:
            self.deliver = deliver
        return results[0]

    def serve(self, control: socket.socket) -> None:
        frames = FrameBuffer()
        closed = False

        def on_control() -> None:
            nonlocal closed
            data = control.recv(1 << 20)
            if not data:
                closed = True
                return
            for kind, payload in frames.feed(data):
                if kind == JOB:
                    self.submit(decode_job(payload))
                elif kind == CANCEL:
                    self.cancel(decode_cancel(payload))

        self.selector.register(control, selectors.EVENT_READ, on_control)
        while not closed:
            self.step()
        self.shutdown()

    def shutdown(self) -> None:
        self.prefork = False
        for slot in self.slots:
            if slot.prepared is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.prepared.pid, signal.SIGKILL)
                self._discard(slot.prepared)
                slot.prepared = None
        for running in list(self.running.values()):
            self._kill(running)
        deadline = time.monotonic() + 2
        while self.running and time.monotonic() < deadline:
            self.step()

    # --- isolation at start-up --------------------------------------------------------------------------------

    def establish_isolation(self) -> IsolationReport:
        """Apply the zygote's layers, then find by trial which per-program layers work here."""
        setup = probe.ZygoteSetup(uid=os.getuid())
        root = os.geteuid() == 0
        setup.network, mounts, setup.namespace_error = isolation.enter_zygote_namespaces()
        # A program's own user namespace gives it its own process budget only where the kernel counts per namespace.
        if not root and (setup.network or mounts) and isolation.counts_processes_per_user_namespace(os.uname().release):
            try:
                setup.user_namespace = os.readlink("/proc/self/ns/user")
            except OSError:  # a /proc without namespace links: the probe then has nothing to compare with
                setup.user_namespace = "user:[unknown]"
        # Only now (a user namespace needs its id maps written through /proc/self first): no process of the
        # same uid may read or write the zygote's memory through /proc or ptrace, nor that of its children.
        isolation.prctl(isolation.PR_SET_DUMPABLE, 0)
        if mounts:
            try:
                setup.covered = isolation.cover_world_writable([p for p in isolation.WORLD_WRITABLE if p != "/tmp"])
            except OSError as exc:
                setup.failures["filesystem"] = f"covering world-writable directories failed: {exc}"
        # For the fallback when a private tmpfs cannot be had (harmless otherwise: it stays empty).
        os.makedirs(self.config.work_root, mode=0o711, exist_ok=True)
        # What programs must read, wherever the interpreter lives: as root, reachable for the programs' uids.
        runtime_paths = runtime.runtime_paths()
        if root and mounts:
            uids = [slot.uid for slot in self.slots]
            try:
                setup.exposed = runtime.expose(runtime_paths, uids)
            except OSError as exc:
                setup.failures["uid"] = f"could not bind the interpreter's directories for uid {uids[0]}: {exc}"
        rules = self._landlock_rules(runtime_paths, setup)
        try:
            seccomp: isolation.SeccompProgram | None = isolation.compile_seccomp()
        except (ImportError, OSError) as exc:
            seccomp = None
            setup.failures["seccomp"] = f"cannot compile the filter: {type(exc).__name__}: {exc}"
        # What RLIMIT_NPROC counts for this uid here (as root: nothing, the limit binds only after the uid change);
        # only a budget shared by every program uses it.
        setup.counted_tasks = 0 if root else isolation.tasks_counted_for_uid()
        shared_limit = setup.counted_tasks + SHARED_TASK_MARGIN + self.config.max_processes * len(self.slots)
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        self.plan = child.ChildPlan(
            private_tmp=mounts,
            drop_uid=root,
            seccomp=seccomp,
            max_processes=self.config.max_processes,
            shared_process_limit=shared_limit if hard == resource.RLIM_INFINITY else min(shared_limit, hard),
            max_open_files=self.config.max_open_files,
            max_file_mb=self.config.max_file_mb,
            workdir_mb=self.config.workdir_mb,
            max_memory_mb=self.config.max_memory_mb,
            max_timeout_ms=self.config.max_timeout_ms,
            own_user_namespace=bool(setup.user_namespace),
            private_proc=root and mounts,
            landlock=rules,
        )
        # A layer that fails in the probe's process is dropped from the plan (and reported), then the probe
        # runs again; whatever plan passes is enforced for every program from then on.
        program = probe.program(runtime_paths).encode()
        for _ in range(len(child.OPTIONAL_LAYERS) + 1):
            result = self.run_one(Job(0, program, 10_000, 256, 65536))
            stderr = result.stderr.decode(errors="replace")
            if result.status is Status.OK:
                facts = json.loads(result.stdout)
                if not (self.plan.drop_uid and facts["unreadable"]):
                    break
                # Programs of another uid would fail on every import the zygote did not make ahead.
                setup.failures["uid"] = probe.unreadable_reason(facts["unreadable"], self.slots[0].uid, setup)
                self.plan = self.plan.without("uid")
                continue
            failed = probe.failed_layer(stderr)
            try:
                self.plan = self.plan.without(failed)
            except ValueError:
                raise RuntimeError(f"the isolation probe failed ({result.status}): {stderr}") from None
            setup.failures[str(failed)] = stderr.strip()
        else:
            raise RuntimeError(f"the isolation probe failed with every optional layer dropped: {stderr}")
        if rules is not None and self.plan.landlock is None:
            rules.close()
        self.prefork = True
        for slot in self.slots:
            slot.prepared = self._prepare(slot)
        threads = len(os.listdir("/proc/self/task"))
        return probe.build_report(facts, setup, self.plan, self.config, threads)

    @staticmethod
    def _landlock_rules(runtime_paths: list[str], setup: probe.ZygoteSetup) -> landlock.Rules | None:
        """Reads beneath the interpreter's files and the system's programs and libraries, a few devices."""
        try:
            rules = landlock.Rules(landlock.abi_version())
        except OSError as exc:
            setup.failures["landlock"] = landlock.why_unavailable(exc)
            return None
        system = [os.path.realpath(path) for path in landlock.SYSTEM_READ if os.path.exists(path)]
        try:
            rules.allow(runtime.outermost([*runtime_paths, *system]), landlock.READ)
            for device, rights in landlock.DEVICES.items():
                rules.allow([device], rights)
            os.close(rules.ruleset())  # the kernel takes every rule
        except OSError as exc:
            rules.close()
            setup.failures["landlock"] = f"cannot make its rules: {exc}"
            return None
        return rules


def classify(exit_status: int, cpu_seconds: float, timeout_ms: int) -> tuple[Status | None, str]:
    """(status, a note for stderr) from how the main process ended; None: the sandbox itself failed."""
    if os.WIFEXITED(exit_status):
        code = os.WEXITSTATUS(exit_status)
        if code == child.EXIT_OK:
            return Status.OK, ""
        if code == child.EXIT_MEMORY:
            return Status.MEMORY_LIMIT, ""
        if code == child.EXIT_ISOLATION:
            return None, ""
        return Status.ERROR, ""
    signum = os.WTERMSIG(exit_status)
    # SIGXCPU at the soft CPU limit, SIGKILL at the hard one: both are the CPU-time flavour of a timeout.
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_seconds * 1000 >= timeout_ms):
        return Status.TIMEOUT, ""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return Status.KILLED, f"sandbox: the program was killed by {name}\n"


def _prepare_process(parent: int) -> None:
    # Die with the server, and adopt programs' orphans so that they are reaped here rather than left as zombies.
    isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(0)
    isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _warm_up() -> None:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        exec(compile(WARMUP, "<warmup>", "exec"), {"__name__": "__warmup__"})
    try:
        exec(compile("1 / 0", child.FILENAME, "exec"), {})
    except ZeroDivisionError as exc:
        traceback.format_exception(exc)  # the formatting path every failing program takes
    gc.collect()
    # Objects that exist now are never collected in a program's process, so its GC never writes to (and
    # copies) the pages it shares with the zygote.
    gc.freeze()


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    config = ZygoteConfig.from_json(argv[2])
    _prepare_process(int(argv[3]))
    started = time.monotonic()
    _warm_up()
    warmup_ms = round((time.monotonic() - started) * 1000)

    def deliver(result: JobResult) -> None:
        # Once the server has gone (its end closed while programs still ran), results have nowhere to go.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            control.sendall(encode_result(result))

    zygote = Zygote(config, deliver)
    try:
        report = zygote.establish_isolation()
    except Exception as exc:
        control.sendall(encode_hello({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    os.environ.clear()
    hello = {"pid": os.getpid(), "report": report.to_json(), "warmup_ms": warmup_ms}
    control.sendall(encode_hello(hello))
    zygote.serve(control)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
