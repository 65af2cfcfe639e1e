"""A round's evaluations run the candidates' programs on the SandboxService at THINKMESH_TRAINER_SANDBOX_TARGET,
so the trainer's pod (which writes the model store) runs no model-written code itself."""

from __future__ import annotations

from services.common.settings import load_settings
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import remote_sandbox
from support.processes import THINKMESH, server_process


async def test_the_evaluations_sandbox_is_the_sandbox_service() -> None:
    with server_process([THINKMESH, "serve", "sandbox", "--port", "0"]) as (_, address):
        open_sandbox = remote_sandbox(load_settings(TrainerSettings, {}, sandbox_target=address))
        assert open_sandbox is not None
        async with open_sandbox() as runner:
            results = await runner.run(["print(6 * 7)", "1 / 0"], timeout_ms=5_000)
    assert results[0].ok and results[0].stdout.strip() == "42"
    assert not results[1].ok and "ZeroDivisionError" in results[1].error


def test_without_a_target_the_evaluations_run_an_in_process_sandbox() -> None:
    assert remote_sandbox(load_settings(TrainerSettings, {}, sandbox_target="")) is None
