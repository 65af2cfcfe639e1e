"""PPMSettings: how a new version takes over (THINKMESH_PPM_RELOAD)."""

from __future__ import annotations

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.ppm.settings import PPMSettings


@pytest.mark.parametrize(("value", "mode"), [("", "swap"), ("auto", "swap"), ("replace", "replace"), ("off", "off")])
def test_reload_mode(value: str, mode: str) -> None:
    env = {"THINKMESH_PPM_RELOAD": value} if value else {}
    assert load_settings(PPMSettings, environ=env).reload_mode == mode


def test_an_unknown_reload_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match="THINKMESH_PPM_RELOAD='never' must be one of auto, swap, replace, inplace, off"
    ):
        load_settings(PPMSettings, environ={"THINKMESH_PPM_RELOAD": "never"})
