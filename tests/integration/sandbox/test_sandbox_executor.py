"""What a program sees and how it ends, through the real executor and zygote (no gRPC)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from services.common.errors import Overloaded
from services.common.settings import load_settings
from services.sandbox.executor import SandboxExecutor
from services.sandbox.model import Program, Status
from services.sandbox.settings import SandboxSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def run(executor: SandboxExecutor, code: str, **limits: int) -> tuple[Status, str, str]:
    result = await executor.execute(Program(code, **limits))
    return result.status, result.stdout, result.stderr


async def test_a_program_runs_as_main_and_prints(executor: SandboxExecutor) -> None:
    code = "import sympy\nx = sympy.Symbol('x')\nprint(__name__, sympy.solve(x**2 - 4, x))"
    assert await run(executor, code) == (Status.OK, "__main__ [-2, 2]\n", "")


async def test_nothing_carries_over_between_programs(executor: SandboxExecutor) -> None:
    await run(executor, "import math\nmath.pi = 3\nleaked = 42\nopen('note', 'w').write('x')")
    status, stdout, _ = await run(
        executor, "import math, os\nprint(math.pi, 'leaked' in globals(), os.path.exists('note'))"
    )
    assert (status, stdout) == (Status.OK, "3.141592653589793 False False\n")


async def test_an_exception_is_an_error_with_the_traceback(executor: SandboxExecutor) -> None:
    status, stdout, stderr = await run(executor, "print('before')\nx = 1 / 0")
    assert (status, stdout) == (Status.ERROR, "before\n")
    assert stderr.startswith('Traceback (most recent call last):\n  File "<step>", line 2, in <module>')
    assert stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "sandbox" not in stderr  # no frame of ours in the program's traceback


async def test_a_syntax_error_is_an_error(executor: SandboxExecutor) -> None:
    status, _, stderr = await run(executor, "print(")
    assert status is Status.ERROR
    assert "SyntaxError" in stderr


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys\nsys.exit()", Status.OK),
        ("import sys\nsys.exit(0)", Status.OK),
        ("import sys\nsys.exit(77)", Status.ERROR),
        ("import sys\nsys.exit('bad input')", Status.ERROR),
    ],
)
async def test_sys_exit_follows_python(executor: SandboxExecutor, code: str, expected: Status) -> None:
    status, _, stderr = await run(executor, code)
    assert status is expected
    if "bad input" in code:
        assert stderr == "bad input\n"


async def test_a_sleeping_program_times_out_on_the_wall_clock(executor: SandboxExecutor) -> None:
    started = time.monotonic()
    result = await executor.execute(Program("import time\nprint('started', flush=True)\ntime.sleep(30)", 500))
    assert result.status is Status.TIMEOUT
    assert result.stdout == "started\n"  # what it printed before the kill is kept
    assert 450 <= result.duration_ms < 1500
    assert time.monotonic() - started < 2


async def test_a_busy_loop_times_out(executor: SandboxExecutor) -> None:
    assert (await run(executor, "while True:\n    pass", timeout_ms=500))[0] is Status.TIMEOUT


async def test_memory_over_the_limit_is_memory_limit(executor: SandboxExecutor) -> None:
    status, _, stderr = await run(executor, "block = bytearray(400 * 1024 * 1024)", memory_mb=128)
    assert status is Status.MEMORY_LIMIT
    assert stderr.rstrip().endswith("MemoryError")
    assert (await run(executor, "block = bytearray(64 * 1024 * 1024)", memory_mb=128))[0] is Status.OK


async def test_output_past_the_cap_is_truncated(executor: SandboxExecutor) -> None:
    result = await executor.execute(Program("while True:\n    print('x' * 999)", 5000))
    assert result.status is Status.OUTPUT_LIMIT
    assert result.truncated
    assert len(result.stdout) == executor.settings.max_output_bytes


async def test_a_segfault_is_killed(executor: SandboxExecutor) -> None:
    status, _, stderr = await run(executor, "import ctypes\nctypes.string_at(0)")
    assert status is Status.KILLED
    assert "SIGSEGV" in stderr


async def test_threads_are_joined_like_in_python(executor: SandboxExecutor) -> None:
    code = "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()"
    assert await run(executor, code) == (Status.OK, "late\n", "")


async def test_stdin_is_empty_and_output_is_utf8(executor: SandboxExecutor) -> None:
    assert await run(executor, "import sys\nprint(repr(sys.stdin.read()), '√2 ≈ 1.414')") == (
        Status.OK,
        "'' √2 ≈ 1.414\n",
        "",
    )


async def test_a_batch_runs_concurrently_in_order(executor: SandboxExecutor) -> None:
    programs = [Program(f"import time\ntime.sleep(0.5)\nprint({i})") for i in range(2)] + [Program("1/0")]
    started = time.monotonic()
    results = await executor.execute_batch(programs)
    assert [r.stdout for r in results] == ["0\n", "1\n", ""]
    assert results[2].status is Status.ERROR
    assert time.monotonic() - started < 0.95  # two workers: the sleeps overlapped (in turn: over 1 s)


async def test_a_caller_deadline_cuts_the_program_short(executor: SandboxExecutor) -> None:
    result = await executor.execute(Program("import time\ntime.sleep(10)"), deadline=time.monotonic() + 0.3)
    assert result.status is Status.TIMEOUT
    assert result.duration_ms < 1000


async def test_beyond_workers_and_queue_the_sandbox_is_overloaded(executor: SandboxExecutor) -> None:
    # 2 workers + a queue of 2: a fifth program in flight is refused rather than held in memory.
    sleepers = [asyncio.ensure_future(run(executor, "import time\ntime.sleep(0.5)")) for _ in range(4)]
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="sandbox is full"):
        await run(executor, "print(1)")
    assert [status for status, _, _ in await asyncio.gather(*sleepers)] == [Status.OK] * 4
    assert (await run(executor, "print(1)"))[0] is Status.OK


async def test_hundreds_of_short_programs_in_flight_all_come_back_right(executor: SandboxExecutor) -> None:
    # Many programs ending at once exercise the zygote's bookkeeping: pipes closed and their numbers reused
    # within one round of its event loop, slots freed and refilled.
    zygote = executor.zygote_pid
    codes = [
        f"print({i})" if i % 3 else f"import sys\nprint({i}, file=sys.stderr)\nraise SystemExit(1)" for i in range(300)
    ]
    results = await asyncio.gather(*(executor.execute(Program(code)) for code in codes[:4]))
    for start in range(4, len(codes), 4):  # as many in flight as workers + queue admit
        results += await asyncio.gather(*(executor.execute(Program(code)) for code in codes[start : start + 4]))
    for i, result in enumerate(results):
        expected = (Status.ERROR, "", f"{i}\n") if i % 3 == 0 else (Status.OK, f"{i}\n", "")
        assert (result.status, result.stdout, result.stderr) == expected
    assert executor.zygote_pid == zygote


async def test_a_dead_zygote_is_replaced_and_the_lost_program_says_so() -> None:
    sandbox = SandboxExecutor(load_settings(SandboxSettings, environ={}, max_workers=1))
    await sandbox.start()
    try:
        first = sandbox.zygote_pid
        assert first is not None
        in_flight = asyncio.ensure_future(run(sandbox, "import time\ntime.sleep(5)"))
        await asyncio.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        status, _, stderr = await in_flight
        assert status is Status.KILLED
        assert "zygote" in stderr
        assert await run(sandbox, "print(1)") == (Status.OK, "1\n", "")
        assert sandbox.zygote_pid not in (None, first)
    finally:
        await sandbox.close()
