"""A program's process budget (RLIMIT_NPROC), and what the rlimits layer says of it: per program where it has a uid
or a user namespace of its own, shared where it has neither — and then the report says with whom."""

from __future__ import annotations

from typing import Any

import pytest

from services.sandbox import isolation
from services.sandbox.child import ChildPlan
from services.sandbox.probe import EXPECTED_ENV, ZygoteSetup, build_report, process_budget
from services.sandbox.protocol import ZygoteConfig

CONFIG = ZygoteConfig(2, 60000, "/tmp/thinkmesh-sandbox", 64, 16, 64, 16, 4096, 60000, 1 << 20)
ZYGOTE_NS = "user:[4026532001]"
PROGRAM_NS = "user:[4026532002]"


def _plan(**changes: Any) -> ChildPlan:
    values: dict[str, Any] = dict(
        private_tmp=True,
        drop_uid=False,
        seccomp=None,
        max_processes=16,
        shared_process_limit=250,
        max_open_files=64,
        max_file_mb=16,
        workdir_mb=64,
        max_memory_mb=4096,
        max_timeout_ms=60000,
        own_user_namespace=True,
    )
    values.update(changes)
    return ChildPlan(**values)


def _facts(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "uid": 65534,  # how a program in an unmapped user namespace sees its uid
        "env": EXPECTED_ENV,
        "cwd": "/tmp",
        "seccomp": "2",
        "socket": 1,
        "interfaces": ["lo"],
        "nproc": 16,
        "writable": ["/tmp"],
        "cwd_tmpfs": True,
        "user_namespace": PROGRAM_NS,
    }
    facts.update(changes)
    return facts


def _rlimits(facts: dict[str, Any], setup: ZygoteSetup, plan: ChildPlan) -> tuple[bool, str]:
    (layer,) = [layer for layer in build_report(facts, setup, plan, CONFIG, 1).layers if layer.name == "rlimits"]
    return layer.active, layer.detail


def test_a_program_with_its_own_user_namespace_has_a_budget_of_its_own() -> None:
    plan = _plan()
    assert plan.process_limit == 16
    setup = ZygoteSetup(network=True, uid=10001, user_namespace=ZYGOTE_NS, counted_tasks=1)
    active, detail = _rlimits(_facts(), setup, plan)
    assert active
    assert "16 per program, counted in a user namespace of its own" in detail
    assert "uid 10001" in detail  # the real uid, not the 65534 the program sees


def test_a_program_left_in_the_zygotes_user_namespace_is_not_counted_apart() -> None:
    setup = ZygoteSetup(network=True, uid=10001, user_namespace=ZYGOTE_NS)
    active, _ = _rlimits(_facts(user_namespace=ZYGOTE_NS), setup, _plan())
    assert not active


def test_without_its_own_user_namespace_the_budget_is_shared_by_all_programs_in_the_zygotes() -> None:
    plan = _plan().without("rlimits")
    assert not plan.own_user_namespace and plan.process_limit == 250
    why = "sandbox: isolation layer rlimits: [Errno 28] No space left on device; the program was not run"
    setup = ZygoteSetup(network=True, uid=10001, user_namespace=ZYGOTE_NS, failures={"rlimits": why})
    active, detail = _rlimits(_facts(nproc=250, user_namespace=ZYGOTE_NS), setup, plan)
    assert active
    assert "250 for all programs together, counted in the zygote's user namespace" in detail
    assert "No space left on device" in detail  # why it is not per program


def test_without_any_user_namespace_the_report_says_the_whole_uid_shares_it() -> None:
    plan = _plan(own_user_namespace=False)
    setup = ZygoteSetup(network=False, uid=10001, counted_tasks=170)
    active, detail = _rlimits(_facts(nproc=250, uid=10001, user_namespace="user:[4026531837]"), setup, plan)
    assert active
    assert "250 for every process of uid 10001 together" in detail
    assert "other pods' included, and counted 170 at start-up" in detail


def test_as_root_each_program_has_a_uid_and_so_a_budget_of_its_own() -> None:
    plan = _plan(drop_uid=True, own_user_namespace=False)
    assert plan.process_limit == 16
    text, counted_apart = process_budget(plan, ZygoteSetup(network=True, uid=0), _facts(uid=60000))
    assert counted_apart and text == "processes (16 per program: a uid of its own)"


def test_only_a_per_program_budget_can_fall_back_to_a_shared_one() -> None:
    shared = _plan().without("rlimits")
    with pytest.raises(ValueError, match="not optional"):
        shared.without("rlimits")
    with pytest.raises(ValueError, match="not optional"):
        _plan(drop_uid=True, own_user_namespace=False).without("rlimits")
    with pytest.raises(ValueError, match="not optional"):
        _plan().without(None)  # a failure that names no layer


@pytest.mark.parametrize(
    ("release", "per_namespace"),
    [
        ("6.18.44-fc-v1272", True),
        ("5.14.0-284.11.1.el9_2.x86_64", True),  # RHEL 9
        ("5.15.0-1057-aws", True),
        ("5.10.219-208.866.amzn2.x86_64", False),  # Amazon Linux 2
        ("5.4.0-150-generic", False),  # Ubuntu 20.04
        ("4.18.0-553.el8_10.x86_64", False),  # RHEL 8
        ("not-a-release", False),
    ],
)
def test_a_per_program_budget_needs_a_kernel_that_counts_per_user_namespace(release: str, per_namespace: bool) -> None:
    assert isolation.counts_processes_per_user_namespace(release) is per_namespace
