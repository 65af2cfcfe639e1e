"""Policy core rules: request validation, defaults, and hot reload without dropped requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.common.batching import MicroBatcher
from services.common.errors import InvalidInput, NotReady
from services.policy.core import Limits, PolicyCore
from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt, classify_end, cut_at_stop

LIMITS = Limits(default_n=4, max_n=8, max_prompts=3, default_max_new_tokens=64, max_new_tokens=128)


class EchoEngine:
    """A real, tiny engine: each candidate echoes the question; optionally waits to be released."""

    def __init__(self, version: str, gate: asyncio.Event | None = None) -> None:
        self._version = version
        self.gate = gate
        self.closed = False

    @property
    def version(self) -> str:
        return self._version

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        if self.gate is not None:
            await self.gate.wait()
        return [
            [GeneratedStep(f"{p.question}<end_of_step>", StepEnd.STEP, 3, -1.0) for _ in range(params.n)]
            for p in prompts
        ]

    async def close(self) -> None:
        self.closed = True


def test_zero_fields_take_the_server_defaults() -> None:
    params = PolicyCore(LIMITS).resolve(n=0, temperature=0.5, top_p=0, max_new_tokens=0, seed=0)
    assert params == SamplingParams(n=4, temperature=0.5, top_p=1.0, max_new_tokens=64, seed=None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 9}, "n=9 is above this server's maximum of 8"),
        ({"max_new_tokens": 129}, "max_new_tokens=129 is above"),
        ({"temperature": -1.0}, "temperature=-1.0 must not be negative"),
        ({"top_p": 1.5}, "top_p=1.5 must be between 0 and 1"),
    ],
)
def test_limits_are_enforced(fields: dict[str, float], message: str) -> None:
    request = {"n": 1, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 10, "seed": 0, **fields}
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        PolicyCore(LIMITS).resolve(**request)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "prompts is empty"),
        ([StepPrompt("q")] * 4, "4 prompts is above"),
        ([StepPrompt("q"), StepPrompt("  ")], r"prompts\[1\].question is empty"),
    ],
)
async def test_bad_prompts_are_invalid_input(prompts: list[StepPrompt], message: str) -> None:
    core = PolicyCore(LIMITS)
    await core.slot.install(EchoEngine("v1"))
    with pytest.raises(InvalidInput, match=message):
        await core.generate(prompts, SamplingParams())


async def test_no_model_means_not_ready() -> None:
    with pytest.raises(NotReady):
        await PolicyCore(LIMITS).generate([StepPrompt("q")], SamplingParams())


async def test_hot_reload_finishes_in_flight_requests_on_the_old_version() -> None:
    core = PolicyCore(LIMITS)
    gate = asyncio.Event()
    old = EchoEngine("v1", gate)
    await core.slot.install(old)
    in_flight = asyncio.create_task(core.generate([StepPrompt("q")], SamplingParams(n=2)))
    await asyncio.sleep(0.01)
    swap = asyncio.create_task(core.slot.install(EchoEngine("v2")))
    await asyncio.sleep(0.01)
    # New requests already go to v2 while v1 still has one request running.
    fresh = await core.generate([StepPrompt("q")], SamplingParams(n=1))
    assert fresh.model_version == "v2"
    assert not old.closed
    gate.set()
    finished = await in_flight
    await swap
    assert finished.model_version == "v1"
    assert len(finished.results[0]) == 2
    assert old.closed


async def test_micro_batcher_merges_concurrent_requests_by_key() -> None:
    seen: list[list[int]] = []

    def run(batch: list[int]) -> list[int]:
        seen.append(batch)
        return [x * 10 for x in batch]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, size=lambda _: 1, key=lambda x: x % 2, window_s=0.05)
    results = await asyncio.gather(*(batcher.submit(x) for x in range(6)))
    await batcher.close()
    assert results == [0, 10, 20, 30, 40, 50]
    assert sorted(map(sorted, seen)) == [[0, 2, 4], [1, 3, 5]]


async def test_a_failing_batch_fails_only_its_requests() -> None:
    def run(batch: list[int]) -> list[int]:
        if 13 in batch:
            raise ValueError("unlucky")
        return batch

    batcher: MicroBatcher[int, int] = MicroBatcher(run, size=lambda _: 1, key=lambda x: x == 13, window_s=0.02)
    outcomes = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
    assert isinstance(outcomes[0], ValueError) and outcomes[1] == 1
    assert await batcher.submit(2) == 2  # the loop survives
    await batcher.close()


def test_step_end_comes_from_the_marker() -> None:
    text, by_marker = cut_at_stop("x = 1\n<end_of_step>\n# more")
    assert (text, by_marker) == ("x = 1\n<end_of_step>", True)
    assert classify_end(text, by_marker) is StepEnd.STEP
    assert classify_end("print(x)\n<end_of_code>", True) is StepEnd.CODE
    assert classify_end("<answer>\\boxed{3} <end_of_answer>", True) is StepEnd.ANSWER
    assert cut_at_stop("x = 1") == ("x = 1", False)
    assert classify_end("x = 1", False) is StepEnd.LENGTH
