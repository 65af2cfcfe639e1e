"""PolicySettings: how a new version takes over (THINKMESH_POLICY_RELOAD)."""

from __future__ import annotations

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.policy.settings import PolicySettings


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "swap"),
        ({"THINKMESH_POLICY_BACKEND": "vllm"}, "inplace"),  # two vLLM engines never fit on one GPU
        ({"THINKMESH_POLICY_BACKEND": "vllm", "THINKMESH_POLICY_RELOAD": "swap"}, "swap"),
        ({"THINKMESH_POLICY_BACKEND": "vllm", "THINKMESH_POLICY_RELOAD": "off"}, "off"),
        ({"THINKMESH_POLICY_RELOAD": "replace"}, "replace"),
    ],
)
def test_reload_mode(env: dict[str, str], mode: str) -> None:
    assert load_settings(PolicySettings, environ=env).reload_mode == mode


def test_an_unknown_reload_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match="THINKMESH_POLICY_RELOAD='restart' must be one of auto, swap, replace, inplace, off"
    ):
        load_settings(PolicySettings, environ={"THINKMESH_POLICY_RELOAD": "restart"})
    with pytest.raises(ConfigError, match="THINKMESH_POLICY_RELOAD: must be one of"):
        load_settings(PolicySettings, environ={}, reload="restart")
