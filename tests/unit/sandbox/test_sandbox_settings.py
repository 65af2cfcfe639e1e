"""SandboxSettings: defaults, environment parsing and start-up validation."""

from __future__ import annotations

import os

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.sandbox.settings import SandboxSettings


def test_defaults_follow_the_conventions() -> None:
    settings = load_settings(SandboxSettings, environ={})
    assert settings.port == 50051
    assert settings.max_workers == len(os.sched_getaffinity(0))
    assert settings.max_code_bytes == 1024 * 1024
    assert settings.default_timeout_ms == 10_000 <= settings.max_timeout_ms
    assert settings.default_memory_mb == 1024 <= settings.max_memory_mb


def test_values_come_from_the_environment() -> None:
    env = {
        "THINKMESH_SANDBOX_MAX_WORKERS": "3",
        "THINKMESH_SANDBOX_MAX_TIMEOUT_MS": "30000",
        "THINKMESH_SANDBOX_REQUIRED_LAYERS": "seccomp, network",
    }
    settings = load_settings(SandboxSettings, environ=env)
    assert settings.max_workers == 3
    assert settings.max_timeout_ms == 30_000
    assert settings.required_layers == ("seccomp", "network")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"THINKMESH_SANDBOX_MAX_WORKERS": "0"}, "THINKMESH_SANDBOX_MAX_WORKERS"),
        ({"THINKMESH_SANDBOX_DEFAULT_TIMEOUT_MS": "90000"}, "THINKMESH_SANDBOX_DEFAULT_TIMEOUT_MS"),
        (
            {"THINKMESH_SANDBOX_DEFAULT_MEMORY_MB": "2048", "THINKMESH_SANDBOX_MAX_MEMORY_MB": "1024"},
            "THINKMESH_SANDBOX_DEFAULT_MEMORY_MB",
        ),
        ({"THINKMESH_SANDBOX_MAX_OUTPUT_BYTES": "10"}, "THINKMESH_SANDBOX_MAX_OUTPUT_BYTES"),
        ({"THINKMESH_SANDBOX_REQUIRED_LAYERS": "seccomp,magic"}, "THINKMESH_SANDBOX_REQUIRED_LAYERS"),
        ({"THINKMESH_SANDBOX_RUN_AS_UID": "0"}, "THINKMESH_SANDBOX_RUN_AS_UID"),
        ({"THINKMESH_SANDBOX_MAX_QUEUE": "many"}, "THINKMESH_SANDBOX_MAX_QUEUE"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(SandboxSettings, environ=env)
