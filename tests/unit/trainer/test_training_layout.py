"""A training stage's spec, result and layout: what crosses to the ranks, and what a strategy means on a machine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from services.common.errors import ConfigError, InvalidInput
from services.common.settings import load_settings
from services.trainer.data import PPMConfig, SFTConfig
from services.trainer.settings import TrainerSettings
from services.trainer.training.hf import layout, training_arguments
from services.trainer.training.spec import Progress, Strategy, TrainingResult, TrainingSpec


def test_a_spec_crosses_to_the_ranks_unchanged(tmp_path: Path) -> None:
    spec = TrainingSpec(
        "ppm", "/store/pairs.jsonl", "/store/policy/v3", str(tmp_path), PPMConfig(batch_size=512), Strategy(fsdp="on")
    )
    path = spec.write()
    assert path == tmp_path / "spec.json"
    assert TrainingSpec.read(tmp_path) == spec == TrainingSpec.read(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "dpo"}, "stage must be sft or ppm"),
        ({"recipe": {"max_steps": 3, "momentum": 0.9}}, "unknown fields momentum"),
        ({"strategy": {"fsdp": "always"}}, "auto, on or off"),
        ({"strategy": {"attention": "flash"}}, "attention must be one of"),
        ({"strategy": {"checkpoint_steps": -1}}, "must be >= 0"),
    ],
)
def test_a_bad_spec_is_refused_with_what_is_wrong(change: dict[str, object], message: str) -> None:
    raw = {"stage": "sft", "data": "d", "base": "b", "out": "o", "recipe": {}, **change}
    with pytest.raises(InvalidInput, match=message):
        TrainingSpec.from_json(json.dumps(raw))


def test_a_spec_refuses_the_other_stages_recipe() -> None:
    with pytest.raises(InvalidInput, match="a sft stage takes a SFTConfig, not PPMConfig"):
        TrainingSpec("sft", "d", "b", "o", PPMConfig())


def test_result_and_progress_files(tmp_path: Path) -> None:
    assert TrainingResult.read(tmp_path) is None and Progress.read(tmp_path) is None
    (tmp_path / "progress.json").write_text("{half")  # being replaced: read as not there yet
    assert Progress.read(tmp_path) is None
    Progress(3, 10, 1.5).write(tmp_path)
    assert Progress.read(tmp_path) == Progress(3, 10, 1.5)
    result = TrainingResult(
        "sft", "/o/model", 2, 8, 1.0, 1.2, 3.0, 48, 0, 1000, 333.3, 1 << 30, 10**6, 12 * 10**6, 4, "ddp", False, (0, 1)
    )
    (tmp_path / "result.json").write_text(result.to_json())
    assert TrainingResult.read(tmp_path) == result


def test_the_recipes_batch_is_the_global_batch() -> None:
    # 128 sequences a step (the paper's SFT batch) on 8 GPUs with 4 sequences per pass: 4 accumulation steps.
    plan = layout(Strategy(micro_batch_size=4), 128, 8, gpu=True)
    assert (plan.micro_batch_size, plan.accumulation, plan.fsdp, plan.gradient_checkpointing) == (4, 4, True, True)
    assert plan.sharding == "fsdp"
    # Without a micro batch: the batch split over the ranks, no accumulation.
    assert dataclasses.astuple(layout(Strategy(), 8, 2, gpu=False))[4:] == (4, 1)
    # One GPU, auto: nothing to shard, activations still recomputed.
    one = layout(Strategy(), 16, 1, gpu=True)
    assert (one.sharding, one.gradient_checkpointing) == ("none", True)
    # CPU processes: DDP, and no checkpointing unless asked.
    cpu = layout(Strategy(), 16, 2, gpu=False)
    assert (cpu.sharding, cpu.gradient_checkpointing) == ("ddp", False)
    assert layout(Strategy(fsdp="off"), 16, 8, gpu=True).sharding == "ddp"


def test_fsdp_is_refused_where_accelerate_would_silently_run_ddp() -> None:
    with pytest.raises(InvalidInput, match="fsdp=on needs GPUs"):
        layout(Strategy(fsdp="on"), 16, 2, gpu=False)


def test_the_fsdp_arguments_are_ones_transformers_accepts(tmp_path: Path) -> None:
    """The FSDP configuration cannot train here (no GPU), but transformers parses and checks it here: full
    sharding, activation checkpointing by the wrapper (not twice), sharded checkpoints, rank-0 loading."""
    plan = layout(Strategy(micro_batch_size=2), 16, 4, gpu=True)
    args = training_arguments(
        str(tmp_path),
        SFTConfig(max_steps=10),
        dataclasses.replace(plan, gpu=False, world_size=1, fsdp=False),
        Strategy(),
        progress=False,
    )
    assert not args.fsdp  # a CPU layout: no sharding
    sharded = training_arguments(
        str(tmp_path),
        SFTConfig(max_steps=10),
        dataclasses.replace(plan, gpu=False, world_size=1, fsdp=True),
        Strategy(checkpoint_steps=5),
        progress=False,
    )
    plugin = sharded.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True
    assert plugin["activation_checkpointing"] is True and not sharded.gradient_checkpointing
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT" and plugin["cpu_ram_efficient_loading"] is True
    assert (sharded.per_device_train_batch_size, sharded.gradient_accumulation_steps) == (2, 2)
    assert (sharded.save_strategy, sharded.save_steps) == ("steps", 5)


def test_trainer_settings_compose_the_training_group() -> None:
    settings = load_settings(
        TrainerSettings,
        {
            "THINKMESH_TRAINER_TRAINING_MODE": "job",
            "THINKMESH_TRAINER_JOB_NAMESPACE": "ml",
            "THINKMESH_TRAINER_JOB_NODES": "2",
            "THINKMESH_TRAINER_JOB_GPUS_PER_NODE": "8",
            "THINKMESH_TRAINER_TRAINING_FSDP": "on",
            "THINKMESH_TRAINER_TRAINING_MICRO_BATCH_SIZE": "4",
        },
    )
    assert (settings.training.job_nodes, settings.training.job_gpus_per_node) == (2, 8)
    assert settings.training.strategy() == Strategy(fsdp="on", micro_batch_size=4)
    with pytest.raises(ConfigError, match="THINKMESH_TRAINER_JOB_NAMESPACE: job mode needs the namespace"):
        load_settings(TrainerSettings, {"THINKMESH_TRAINER_TRAINING_MODE": "job"})
    with pytest.raises(ConfigError, match="THINKMESH_TRAINER_TRAINING_ATTENTION"):
        load_settings(TrainerSettings, {"THINKMESH_TRAINER_TRAINING_ATTENTION": "flash"})


def test_checkpoints_are_resumed_only_by_the_spec_and_data_that_made_them(tmp_path: Path) -> None:
    from services.trainer.training.launch import clear_outcome

    data = tmp_path / "sft.jsonl"
    data.write_text('{"question": "q", "steps": ["a"]}\n')
    spec = TrainingSpec("sft", str(data), "base", str(tmp_path / "out"), SFTConfig(max_steps=10))
    checkpoint = spec.out_dir / "checkpoints" / "checkpoint-4"

    def left_after(stage: TrainingSpec) -> bool:
        checkpoint.mkdir(parents=True, exist_ok=True)
        (spec.out_dir / "result.json").write_text("{}")
        clear_outcome(stage)
        assert not (spec.out_dir / "result.json").exists()  # never an earlier run's result
        return checkpoint.is_dir()

    clear_outcome(spec)  # the first start records what its checkpoints will be made from
    assert left_after(spec)  # a restart of the same stage resumes
    assert not left_after(dataclasses.replace(spec, recipe=SFTConfig(max_steps=20)))  # another recipe
    assert left_after(dataclasses.replace(spec, recipe=SFTConfig(max_steps=20)))
    data.write_text('{"question": "other", "steps": ["a"]}\n')
    assert not left_after(dataclasses.replace(spec, recipe=SFTConfig(max_steps=20)))  # other data, same path
