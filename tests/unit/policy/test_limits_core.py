"""The policy's bounds on a request, checked on the raw request before any engine (or tokenizer) sees it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from services.common.errors import ConfigError, InvalidInput
from services.common.settings import load_settings
from services.policy.core import Limits, PolicyCore
from services.policy.engine import GeneratedStep, SamplingParams, StepPrompt
from services.policy.settings import PolicySettings

LIMITS = Limits(
    default_n=4,
    max_n=8,
    max_prompts=4,
    default_max_new_tokens=64,
    max_new_tokens=128,
    max_prompt_chars=100,
    max_request_chars=250,
    max_temperature=2.0,
)


class RecordingEngine:
    """A real, tiny engine that only remembers what reached it."""

    version = "v1"

    def __init__(self) -> None:
        self.calls: list[Sequence[StepPrompt]] = []

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        self.calls.append(prompts)
        return [[] for _ in prompts]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": float("nan")}, "temperature=nan is not a finite number"),
        ({"temperature": float("inf")}, "temperature=inf is not a finite number"),
        ({"temperature": float("-inf")}, "temperature=-inf is not a finite number"),
        ({"temperature": 2.5}, "temperature=2.5 is above this server's maximum of 2.0"),
        ({"top_p": float("nan")}, "top_p=nan is not a finite number"),
        ({"top_p": float("inf")}, "top_p=inf is not a finite number"),
    ],
)
def test_sampling_floats_must_be_finite_and_the_temperature_bounded(fields: dict[str, float], message: str) -> None:
    request = {"n": 1, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 10, "seed": 0, **fields}
    with pytest.raises(InvalidInput, match=message):
        PolicyCore(LIMITS).resolve(**request)  # type: ignore[arg-type]


def test_the_maximum_temperature_itself_is_allowed() -> None:
    params = PolicyCore(LIMITS).resolve(n=1, temperature=2.0, top_p=0.9, max_new_tokens=10, seed=0)
    assert params.temperature == 2.0


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (
            [StepPrompt("q" * 101)],
            r"prompts\[0\] is 101 characters \(question and steps\); this server's maximum is 100",
        ),
        (
            [StepPrompt("q"), StepPrompt("q" * 40, ("s" * 30, "s" * 31))],
            r"prompts\[1\] is 101 characters .*maximum is 100 characters",
        ),
        (
            [StepPrompt("q" * 90)] * 3,
            "the prompts are 270 characters in all; this server's maximum for a request is 250",
        ),
    ],
)
async def test_oversized_prompts_are_refused_before_the_engine_sees_them(
    prompts: list[StepPrompt], message: str
) -> None:
    core = PolicyCore(LIMITS)
    engine = RecordingEngine()
    await core.slot.install(engine)
    with pytest.raises(InvalidInput, match=message):
        await core.generate(prompts, SamplingParams())
    assert engine.calls == []
    await core.generate([StepPrompt("q" * 100)], SamplingParams())  # the bound itself is allowed
    assert len(engine.calls) == 1


async def test_a_ten_megabyte_prompt_is_refused_in_milliseconds() -> None:
    core = PolicyCore(Limits(default_n=1, max_n=1, max_prompts=1, default_max_new_tokens=1, max_new_tokens=1))
    await core.slot.install(RecordingEngine())
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="this server's maximum is 32768 characters"):
        await core.generate([StepPrompt("7" * 10 * 1024 * 1024)], SamplingParams())
    assert time.perf_counter() - started < 0.1


def test_the_bounds_are_settings() -> None:
    settings = load_settings(
        PolicySettings,
        {
            "THINKMESH_POLICY_MAX_PROMPT_CHARS": "1000",
            "THINKMESH_POLICY_MAX_REQUEST_CHARS": "5000",
            "THINKMESH_POLICY_MAX_TEMPERATURE": "3.5",
        },
    )
    assert (settings.max_prompt_chars, settings.max_request_chars, settings.max_temperature) == (1000, 5000, 3.5)
    defaults = PolicySettings()
    assert (defaults.max_prompt_chars, defaults.max_request_chars, defaults.max_temperature) == (32768, 4194304, 10.0)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"THINKMESH_POLICY_MAX_PROMPT_CHARS": "0"}, "THINKMESH_POLICY_MAX_PROMPT_CHARS"),
        ({"THINKMESH_POLICY_MAX_REQUEST_CHARS": "10"}, "THINKMESH_POLICY_MAX_REQUEST_CHARS"),
        ({"THINKMESH_POLICY_MAX_TEMPERATURE": "nan"}, "THINKMESH_POLICY_MAX_TEMPERATURE"),
        ({"THINKMESH_POLICY_MAX_TEMPERATURE": "0"}, "THINKMESH_POLICY_MAX_TEMPERATURE"),
    ],
)
def test_bad_bounds_are_refused_at_start_up_naming_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(PolicySettings, environ)
