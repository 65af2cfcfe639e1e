"""The vLLM engine's arguments from the policy's settings: base, preset, single settings, JSON pass-through."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.common.vllm_args import BASE, VLLM_PRESETS, VLLMSettings, build_engine_args
from services.policy.settings import PolicySettings


def test_without_settings_the_engine_gets_the_base_arguments() -> None:
    assert VLLMSettings().engine_args() == BASE
    assert BASE["enable_prefix_caching"] is True  # a tree's siblings share their prefix


def test_each_layer_wins_over_the_one_before() -> None:
    settings = load_settings(
        PolicySettings,
        {
            "THINKMESH_POLICY_BACKEND": "vllm",
            "THINKMESH_POLICY_VLLM_PRESET": "7b-4gpu",
            "THINKMESH_POLICY_VLLM_MAX_NUM_SEQS": "64",
            "THINKMESH_POLICY_VLLM_ENFORCE_EAGER": "true",
            "THINKMESH_POLICY_VLLM_DTYPE": "",  # empty: unset, the preset's stays
            "THINKMESH_POLICY_VLLM_ENGINE_ARGS": '{"max_num_seqs": 32, "disable_log_stats": false}',
        },
    )
    args = settings.vllm.engine_args()
    assert args["tensor_parallel_size"] == 2 and args["data_parallel_size"] == 2  # the preset's
    assert args["dtype"] == "bfloat16" and args["enforce_eager"] is True  # preset, then a single setting
    assert args["max_num_seqs"] == 32  # the pass-through wins over the single setting
    assert args["disable_log_stats"] is False and args["enable_prefix_caching"] is True
    assert settings.vllm.gpus() == 4


@pytest.mark.parametrize("preset", sorted(VLLM_PRESETS))
def test_a_presets_gpu_count_is_in_its_name(preset: str) -> None:
    assert VLLMSettings(vllm_preset=preset).gpus() == int(preset.split("-")[1].removesuffix("gpu"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THINKMESH_POLICY_VLLM_PRESET": "70b-8gpu"}, "VLLM_PRESET='70b-8gpu' must be one of 1.5b-1gpu"),
        ({"THINKMESH_POLICY_VLLM_ENGINE_ARGS": "{max_num_seqs: 3}"}, "VLLM_ENGINE_ARGS is not JSON"),
        ({"THINKMESH_POLICY_VLLM_ENGINE_ARGS": "[1]"}, "must be a JSON object"),
        ({"THINKMESH_POLICY_VLLM_ENGINE_ARGS": '{"model": "/x"}'}, "the model is THINKMESH_POLICY_MODEL's"),
        ({"THINKMESH_POLICY_VLLM_GPU_MEMORY_UTILIZATION": "1.5"}, "VLLM_GPU_MEMORY_UTILIZATION: must be in"),
        ({"THINKMESH_POLICY_VLLM_TENSOR_PARALLEL_SIZE": "0"}, "VLLM_TENSOR_PARALLEL_SIZE: must be at least 1"),
        ({"THINKMESH_POLICY_VLLM_MAX_MODEL_LEN": "x"}, "VLLM_MAX_MODEL_LEN='x' is not a valid int"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(PolicySettings, {"THINKMESH_POLICY_BACKEND": "vllm", **env})


def test_other_backends_do_not_read_the_vllm_settings() -> None:
    load_settings(PolicySettings, {"THINKMESH_POLICY_VLLM_PRESET": "nonsense"})  # hf: not checked, not used


@dataclass
class FakeEngineArgs:  # the shape of vLLM's AsyncEngineArgs: a dataclass of keyword fields
    model: str
    enable_prefix_caching: bool = False
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def test_engine_args_are_built_by_name_and_an_unknown_one_is_refused_with_the_known_ones() -> None:
    built = build_engine_args(FakeEngineArgs, "/store/policy/v3", dict(BASE))
    assert built == FakeEngineArgs("/store/policy/v3", True, 0.85, 4096)
    with pytest.raises(ConfigError, match=r"no engine argument max_num_sqs .*knows: .*gpu_memory_utilization"):
        build_engine_args(FakeEngineArgs, "/m", {**BASE, "max_num_sqs": 8})
