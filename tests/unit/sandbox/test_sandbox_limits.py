"""Requests beyond the server's limits are refused before anything runs (no zygote is started here)."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.common.settings import load_settings
from services.sandbox.executor import SandboxExecutor
from services.sandbox.model import Program
from services.sandbox.settings import SandboxSettings


@pytest.fixture
def executor() -> SandboxExecutor:
    settings = load_settings(
        SandboxSettings,
        environ={},
        max_timeout_ms=5000,
        default_timeout_ms=1000,
        max_memory_mb=512,
        default_memory_mb=256,
        max_batch=4,
    )
    return SandboxExecutor(settings)


async def test_code_over_one_mib_is_invalid(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match=r"code is 1048577 bytes, over the limit of 1048576"):
        await executor.execute(Program("#" * (1024 * 1024 + 1)))


async def test_code_is_measured_in_utf8_bytes(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match="over the limit"):
        await executor.execute(Program("é" * (512 * 1024 + 1)))


async def test_a_timeout_above_the_maximum_is_invalid(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match="timeout_ms=5001 is over this server's maximum of 5000"):
        await executor.execute(Program("print(1)", timeout_ms=5001))


async def test_memory_above_the_maximum_is_invalid(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match="memory_mb=513 is over this server's maximum of 512"):
        await executor.execute(Program("print(1)", memory_mb=513))


async def test_a_batch_names_the_bad_item_and_runs_nothing(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match=r"requests\[1\]: timeout_ms"):
        await executor.execute_batch([Program("print(1)"), Program("print(2)", timeout_ms=99_999)])


async def test_a_batch_over_the_limit_is_invalid(executor: SandboxExecutor) -> None:
    with pytest.raises(InvalidInput, match="batch of 5 programs is over the limit of 4"):
        await executor.execute_batch([Program("print(1)")] * 5)
