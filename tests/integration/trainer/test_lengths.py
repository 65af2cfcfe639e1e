"""Over-long training examples are left out and counted, never cut and never fatal to the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.store import ModelStore
from services.math.prompting import PromptRenderer
from services.ppm.model import ProcessRewardModel
from services.trainer.data import PPMConfig, SFTConfig, StepPair, Trajectory
from services.trainer.ppm_train import train_ppm
from services.trainer.sft import TooLong, encode_trajectory, train_sft
from support.tiny_models import QUESTION, STEPS, publish_micro_models

LONG_QUESTION = QUESTION + " And then" * 200


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy, _ = publish_micro_models(ModelStore(tmp_path_factory.mktemp("store")))
    return policy.path


def test_a_trajectory_longer_than_max_length_is_left_out_not_cut(policy_dir: Path) -> None:
    renderer = PromptRenderer(AutoTokenizer.from_pretrained(policy_dir))
    full = renderer.ids(QUESTION, STEPS)
    assert encode_trajectory(renderer, Trajectory(QUESTION, STEPS), len(full))["input_ids"] == full  # type: ignore[index]
    assert encode_trajectory(renderer, Trajectory(QUESTION, STEPS), len(full) - 1) is None


def test_training_counts_what_it_left_out_and_refuses_only_when_nothing_fits(policy_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    config = SFTConfig(max_steps=1, batch_size=2, warmup_steps=0, max_length=200)
    short, long = Trajectory(QUESTION, STEPS), Trajectory(LONG_QUESTION, STEPS)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    metrics = train_sft(model, tokenizer, [short, long, short], config, progress=False)
    assert metrics["dropped_too_long"] == 1 and metrics["steps"] == 1
    with pytest.raises(TooLong, match="all 1 trajectories are longer than max_length=200"):
        train_sft(model, tokenizer, [long], config, progress=False)

    ppm = ProcessRewardModel.from_pretrained(policy_dir)
    ppm_config = PPMConfig(max_steps=1, batch_size=2, warmup_steps=0, max_length=200)
    pairs = [
        StepPair(QUESTION, STEPS[:1], STEPS[1], STEPS[1].replace("apples", "pears")),
        StepPair(LONG_QUESTION, STEPS[:1], STEPS[1], STEPS[1].replace("apples", "pears")),
        StepPair(LONG_QUESTION, STEPS[:1], STEPS[1], STEPS[1].replace("print", "len")),
    ]
    assert train_ppm(ppm, tokenizer, pairs, ppm_config, progress=False)["dropped_too_long"] == 2
    with pytest.raises(TooLong, match="all 2 pairs are longer"):
        train_ppm(ppm, tokenizer, pairs[1:], ppm_config, progress=False)
