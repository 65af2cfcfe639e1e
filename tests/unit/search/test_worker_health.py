"""The worker's probe verdicts (services/search/worker/health.py), driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.search.settings import SearchSettings
from services.search.worker.health import HealthReport, WorkerHealth


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> WorkerHealth:
    return WorkerHealth(stale_after_s=60.0, clock=clock)


def _running(health: WorkerHealth) -> WorkerHealth:
    health.connected()
    health.worker_ready()
    return health


def test_before_worker_ready_it_is_live_but_not_ready(health: WorkerHealth, clock: FakeClock) -> None:
    report = health.report()
    assert (report.ready, report.live, report.started, report.seconds_since_beat) == (False, True, False, None)
    health.connected()
    clock.advance(3600)  # a slow start is the startup probe's business, not liveness'
    report = health.report()
    assert (report.ready, report.live, report.broker_connected) == (False, True, True)


def test_ready_once_worker_ready_and_connected_in_either_order(clock: FakeClock) -> None:
    first_connected = WorkerHealth(60.0, clock)
    first_connected.connected()
    assert not first_connected.report().ready
    first_connected.worker_ready()
    assert first_connected.report().ready

    first_ready = WorkerHealth(60.0, clock)
    first_ready.worker_ready()
    assert not first_ready.report().ready
    first_ready.connected()
    assert first_ready.report().ready


def test_beats_keep_it_live_and_a_silence_longer_than_the_threshold_does_not(
    health: WorkerHealth, clock: FakeClock
) -> None:
    _running(health)
    for _ in range(10):
        clock.advance(59.0)
        health.beat()
        assert health.report().live
    clock.advance(60.0)
    assert health.report().live  # exactly at the threshold: still fresh
    clock.advance(0.5)
    report = health.report()
    assert not report.live
    assert not report.ready and report.broker_connected  # a loop that does not turn takes no tasks either
    assert report.seconds_since_beat == 60.5
    health.beat()
    assert health.report().live and health.report().ready  # a loop that turns again is back


def test_a_lost_connection_is_unready_at_once_and_stale_without_a_reconnect(
    health: WorkerHealth, clock: FakeClock
) -> None:
    _running(health)
    health.disconnected()
    report = health.report()
    assert (report.ready, report.live, report.broker_connected) == (False, True, False)
    clock.advance(61.0)  # reconnecting all that time: the consumer loop has not turned
    assert not health.report().live
    health.connected()  # reconnected: ready again, and that is progress
    report = health.report()
    assert (report.ready, report.live, report.seconds_since_beat) == (True, True, 0.0)


def test_shutting_down_is_unready_for_good_but_never_stale(health: WorkerHealth, clock: FakeClock) -> None:
    _running(health)
    health.shutting_down()
    clock.advance(3600)  # draining long tasks: not a hang, the pod's grace period bounds it
    report = health.report()
    assert (report.ready, report.live, report.shutting_down) == (False, True, True)
    health.connected()
    assert not health.report().ready


def test_the_beat_interval_fits_several_beats_in_the_threshold(clock: FakeClock) -> None:
    assert WorkerHealth(60.0, clock).beat_interval_s == 1.0
    assert WorkerHealth(2.0, clock).beat_interval_s == 0.5
    with pytest.raises(ValueError):
        WorkerHealth(0.0, clock)


def test_the_report_goes_through_json_unchanged(health: WorkerHealth, clock: FakeClock) -> None:
    assert HealthReport.from_json(health.report().to_json()) == health.report()
    _running(health)
    clock.advance(1.25)
    report = health.report()
    assert HealthReport.from_json(report.to_json()) == report
    assert report.seconds_since_beat == 1.25


def test_settings_read_the_health_variables_and_name_a_bad_one() -> None:
    settings = load_settings(
        SearchSettings, {"THINKMESH_SEARCH_HEALTH_PORT": "8081", "THINKMESH_SEARCH_HEALTH_STALE_S": "12.5"}
    )
    assert (settings.health_port, settings.health_stale_s) == (8081, 12.5)
    assert load_settings(SearchSettings, {}).health_port == 0  # off unless set
    with pytest.raises(ConfigError, match="THINKMESH_SEARCH_HEALTH_STALE_S"):
        load_settings(SearchSettings, {"THINKMESH_SEARCH_HEALTH_STALE_S": "4.5"})  # below a SQLite loop's turn
    with pytest.raises(ConfigError, match="THINKMESH_SEARCH_HEALTH_PORT"):
        load_settings(SearchSettings, {"THINKMESH_SEARCH_HEALTH_PORT": "70000"})
