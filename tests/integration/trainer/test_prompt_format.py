"""A user's chat-templated checkpoint, imported with `thinkmesh models import`: serving, SFT, PPM training and
PPM scoring build the same token ids for the same question and steps, in the format the store recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from services.cli.main import main
from services.common.store import ModelStore
from services.math.prompting import PromptRenderer
from services.policy.engine import SamplingParams, StepPrompt
from services.policy.hf_engine import HFEngine
from services.ppm.scorer import HFScorer, ScoreItem, encode_item
from services.trainer.data import StepPair, Trajectory
from services.trainer.ppm_train import encode_group, group_pairs
from services.trainer.sft import encode_trajectory
from support.tiny_models import QUESTION, STEPS, write_chat_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_checkpoint(tmp_path_factory.mktemp("user") / "qwen-like")


def _import(checkpoint: Path, store: Path, kind: str, *flags: str) -> None:
    assert main(["models", "import", str(checkpoint), "--kind", kind, "--store", str(store), *flags]) == 0


async def test_the_four_paths_read_the_same_ids(checkpoint: Path, tmp_path: Path) -> None:
    _import(checkpoint, tmp_path, "policy")
    _import(checkpoint, tmp_path, "ppm")  # initialised from the causal LM, as in the paper
    store = ModelStore(tmp_path)
    policy, ppm = store.current("policy"), store.current("ppm")
    assert policy is not None and ppm is not None
    assert policy.prompt_format == ppm.prompt_format == "chat"  # decided once, recorded with each version

    engine = HFEngine(policy.path, policy.version, device="cpu")
    scorer = HFScorer(ppm.path, ppm.version, device="cpu")
    try:
        served = list(engine.render(StepPrompt(QUESTION, STEPS)))
        # Training reads the format from the base model's version, as the round's stages pass it.
        trainer_renderer = PromptRenderer(AutoTokenizer.from_pretrained(policy.path), policy.prompt_format)
        sft = encode_trajectory(trainer_renderer, Trajectory(QUESTION, STEPS), 100_000)["input_ids"]
        group = encode_group(
            trainer_renderer, group_pairs([StepPair(QUESTION, STEPS[:-1], STEPS[-1], "x")])[0], 100_000
        )
        ppm_training = group["prefix"] + group["steps"][0] + trainer_renderer.newline_ids
        ppm_scoring = encode_item(scorer.renderer, ScoreItem(QUESTION, STEPS), 100_000).ids
        assert served == sft == ppm_training == ppm_scoring
        assert engine.tokenizer.decode(served).startswith("<|im_start|>user\n" + QUESTION)
        plain = PromptRenderer(engine.tokenizer, "plain").ids(QUESTION, STEPS)
        assert served != plain  # the chat template was used, not the raw prompt

        # And the engine generates from those ids.
        [[step]] = await engine.generate([StepPrompt(QUESTION, STEPS[:1])], SamplingParams(n=1, max_new_tokens=4))
        assert step.num_tokens > 0
    finally:
        await engine.close()
        await scorer.close()


def test_an_import_may_choose_the_plain_format_and_serving_follows_it(checkpoint: Path, tmp_path: Path) -> None:
    _import(checkpoint, tmp_path, "policy", "--prompt-format", "plain")
    policy = ModelStore(tmp_path).current("policy")
    assert policy is not None and policy.prompt_format == "plain"
    engine = HFEngine(policy.path, policy.version, device="cpu")
    assert list(engine.render(StepPrompt(QUESTION, STEPS))) == PromptRenderer(engine.tokenizer, "plain").ids(
        QUESTION, STEPS
    )
