"""Typed settings: parsed by type from THINKMESH_<SERVICE>_*, bad values named at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from services.common.errors import ConfigError
from services.common.server import ServerSettings
from services.common.settings import load_settings, require


@dataclass(frozen=True)
class DemoSettings(ServerSettings):
    SERVICE: ClassVar[str] = "demo"
    workers: int = 2
    ratio: float = 0.5
    enabled: bool = False
    model_dir: Path | None = None
    queues: tuple[str, ...] = ("search",)

    def validate(self) -> None:
        super().validate()
        require(self.workers > 0, self, "workers", "must be at least 1")


def test_defaults_without_environment() -> None:
    settings = load_settings(DemoSettings, environ={})
    assert settings == DemoSettings()


def test_values_are_parsed_by_type() -> None:
    env = {
        "THINKMESH_DEMO_WORKERS": "8",
        "THINKMESH_DEMO_RATIO": "0.25",
        "THINKMESH_DEMO_ENABLED": "yes",
        "THINKMESH_DEMO_MODEL_DIR": "/models/x",
        "THINKMESH_DEMO_QUEUES": "search, train",
        "THINKMESH_DEMO_PORT": "6000",
        "THINKMESH_OTHER_WORKERS": "99",
    }
    settings = load_settings(DemoSettings, environ=env)
    assert (settings.workers, settings.ratio, settings.enabled) == (8, 0.25, True)
    assert settings.model_dir == Path("/models/x")
    assert settings.queues == ("search", "train")
    assert settings.port == 6000


def test_overrides_win_and_none_overrides_are_ignored() -> None:
    env = {"THINKMESH_DEMO_PORT": "6000"}
    assert load_settings(DemoSettings, environ=env, port=0).port == 0
    assert load_settings(DemoSettings, environ=env, port=None).port == 6000


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("THINKMESH_DEMO_WORKERS", "many", "THINKMESH_DEMO_WORKERS='many' is not a valid int"),
        ("THINKMESH_DEMO_ENABLED", "maybe", "THINKMESH_DEMO_ENABLED='maybe' is not a valid bool"),
        ("THINKMESH_DEMO_WORKERS", "0", "THINKMESH_DEMO_WORKERS: must be at least 1"),
        ("THINKMESH_DEMO_PORT", "70000", "THINKMESH_DEMO_PORT: must be between 0 and 65535"),
        ("THINKMESH_DEMO_LOG_FORMAT", "xml", "THINKMESH_DEMO_LOG_FORMAT: must be 'json' or 'text'"),
        ("THINKMESH_DEMO_TLS_CERT", "/x.pem", "THINKMESH_DEMO_TLS_KEY: set tls_cert and tls_key together"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(DemoSettings, environ={variable: value})
    assert message in str(caught.value)


def test_optional_field_empty_means_none() -> None:
    assert load_settings(DemoSettings, environ={"THINKMESH_DEMO_METRICS_PORT": ""}).metrics_port is None


def test_a_composed_group_is_read_under_the_same_prefix() -> None:
    from services.search.settings import SearchSettings
    from services.trainer.settings import TrainerSettings

    env = {
        "THINKMESH_SEARCH_ROLLOUTS": "32",
        "THINKMESH_SEARCH_Q_MODE": "terminal",
        "THINKMESH_SEARCH_TEMPERATURE": "0.5",
        "THINKMESH_SEARCH_BROKER_URL": "redis://redis:6379/0",
    }
    s = load_settings(SearchSettings, env, candidates=8)
    assert (s.search.rollouts, s.search.q_mode, s.search.candidates) == (32, "terminal", 8)
    assert s.search.max_depth == 16 and s.sampling.temperature == 0.5 and s.sampling.max_new_tokens == 256
    assert s.celery.broker_url == "redis://redis:6379/0"
    trainer = load_settings(TrainerSettings, {"THINKMESH_TRAINER_SANDBOX_TARGET": "dns:///sandbox:50051"})
    assert trainer.targets.sandbox_target == "dns:///sandbox:50051"
    assert trainer.celery == SearchSettings().celery  # one declaration of the broker's defaults


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("THINKMESH_SEARCH_Q_MODE", "greedy", "THINKMESH_SEARCH_Q_MODE='greedy' must be one of terminal, ppm"),
        ("THINKMESH_SEARCH_ROLLOUTS", "0", "THINKMESH_SEARCH_ROLLOUTS: must be between 1 and max_rollouts"),
        ("THINKMESH_SEARCH_MAX_BATCH", "0", "THINKMESH_SEARCH_MAX_BATCH: must be at least 1"),
    ],
)
def test_a_bad_value_in_a_composed_group_is_named(variable: str, value: str, message: str) -> None:
    from services.search.settings import SearchSettings

    with pytest.raises(ConfigError, match=message):
        load_settings(SearchSettings, {variable: value})
