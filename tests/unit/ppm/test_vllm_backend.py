"""The vllm PPM backend's own logic, without vLLM: its settings, the engine arguments, the request it sends for
an item and the step scores it assembles from the pooler's per-token [value, w · log-probability]
(services/ppm/vllm_scorer.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.common.store import ModelStore
from services.common.vllm_args import BASE
from services.math.prompting import PromptRenderer
from services.ppm.model import ProcessRewardModel
from services.ppm.scorer import ScoreItem, encode_packable, score_packed
from services.ppm.settings import PPMSettings
from services.ppm.vllm_model import ARCHITECTURE, LIKELIHOOD_KEY
from services.ppm.vllm_scorer import MODEL_CLASS, assemble_scores, engine_arguments, pooling_prompt
from support.tiny_models import QUESTION, STEPS, publish_micro_models


def test_a_step_reads_its_value_and_the_mean_weighted_logprob_of_the_counted_tokens_up_to_it() -> None:
    per_token = [[0.1, 0.0], [0.2, -1.0], [0.3, -3.0], [0.4, 0.0], [0.5, -2.0]]
    # Tokens 1, 2 and 4 count; steps end at 2 and 4; the uncounted token 3 adds nothing.
    assert assemble_scores(per_token, [1, 2, 4], [2, 4]) == pytest.approx(
        [math.tanh(0.3 + (-1 - 3) / 2), math.tanh(0.5 + (-1 - 3 - 2) / 3)]
    )
    # No counted token yet (a value head alone, or a step of the search's output): the value alone.
    assert assemble_scores(per_token, [], [0, 3]) == pytest.approx([math.tanh(0.1), math.tanh(0.4)])


def per_token_as_vllm_computes_it(model: ProcessRewardModel, ids: list[int]) -> list[list[float]]:
    """The pooler's output (services/ppm/vllm_model.py) computed with the transformers model's own modules: the
    value head at every token, and w · log p(token t | tokens before t) at every t > 0."""
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        hidden = model.model(input_ids=tokens).last_hidden_state[0]
        value = model.value_head(hidden).squeeze(-1).float()
        logprobs = model.lm_head(hidden[:-1]).float().log_softmax(-1).gather(1, tokens[0, 1:, None]).squeeze(1)
        weighted = torch.cat([torch.zeros(1), model.likelihood_weight.float() * logprobs])
    return torch.stack([value, weighted], -1).tolist()


def test_assembled_scores_equal_the_transformers_scorer_for_a_likelihood_ppm(tmp_path: Path) -> None:
    _, ppm = publish_micro_models(ModelStore(tmp_path))
    torch.manual_seed(3)
    model = ProcessRewardModel.from_pretrained(ppm.path).eval()
    assert model.likelihood
    with torch.no_grad():
        model.value_head.weight.normal_(std=0.05)
        model.likelihood_weight.fill_(0.3)
    renderer = PromptRenderer(AutoTokenizer.from_pretrained(ppm.path))
    items = [ScoreItem(QUESTION, STEPS[:1]), ScoreItem(QUESTION, STEPS[:3]), ScoreItem(QUESTION, STEPS)]
    expected = score_packed(model, [encode_packable(renderer, item, 1024) for item in items], pad_id=0)
    for item, scores in zip(items, expected, strict=True):
        prompt = pooling_prompt(renderer, item, 1024)
        assembled = assemble_scores(per_token_as_vllm_computes_it(model, prompt.ids), prompt.counted, prompt.positions)
        assert assembled == pytest.approx(scores, abs=1e-5)
    # The <output> block (the third step) is not the policy's: none of its tokens count.
    prompt = pooling_prompt(renderer, items[1], 1024)
    assert not any(prompt.positions[1] < index <= prompt.positions[2] for index in prompt.counted)


def test_the_engine_serves_the_saved_ppm_by_its_own_class(tmp_path: Path) -> None:
    policy, ppm = publish_micro_models(ModelStore(tmp_path))
    arguments = engine_arguments(ppm.path, {"dtype": "float32", "hf_overrides": {"head_dtype": "model"}})
    assert arguments["runner"] == "pooling" and arguments["dtype"] == "float32"
    assert arguments["hf_overrides"] == {"head_dtype": "model", "architectures": [ARCHITECTURE], LIKELIHOOD_KEY: True}
    assert arguments["model_class_overrides"] == {ARCHITECTURE: MODEL_CLASS}
    with pytest.raises(ConfigError, match="not a saved PPM"):
        engine_arguments(policy.path, {})
    config = json.loads((ppm.path / "config.json").read_text())
    (ppm.path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ConfigError, match="Qwen2-architecture PPMs only"):
        engine_arguments(ppm.path, {})


def test_the_backend_and_its_engine_arguments_are_checked_at_start_up() -> None:
    settings = load_settings(
        PPMSettings,
        environ={
            "THINKMESH_PPM_BACKEND": "vllm",
            "THINKMESH_PPM_VLLM_MAX_MODEL_LEN": "2048",
            "THINKMESH_PPM_VLLM_ENGINE_ARGS": '{"dtype": "float32"}',
        },
    )
    # The policy's settings group, composed: the same layers, the PPM's variables.
    assert settings.vllm.engine_args("ppm") == {**BASE, "max_model_len": 2048, "dtype": "float32"}
    assert settings.reload_mode == "replace"  # a second engine does not fit beside the first
    assert load_settings(PPMSettings, environ={}).backend == "hf"
    assert load_settings(PPMSettings, environ={}).reload_mode == "swap"
    with pytest.raises(ConfigError, match="THINKMESH_PPM_BACKEND: must be one of hf, vllm"):
        load_settings(PPMSettings, environ={"THINKMESH_PPM_BACKEND": "onnx"})
    for bad in ("[1]", "{not json", '{"model": "/elsewhere"}'):
        with pytest.raises(ConfigError, match="THINKMESH_PPM_VLLM_ENGINE_ARGS"):
            load_settings(PPMSettings, environ={"THINKMESH_PPM_BACKEND": "vllm", "THINKMESH_PPM_VLLM_ENGINE_ARGS": bad})
    with pytest.raises(ConfigError, match="THINKMESH_PPM_VLLM_PRESET='9b' must be one of"):
        load_settings(PPMSettings, environ={"THINKMESH_PPM_BACKEND": "vllm", "THINKMESH_PPM_VLLM_PRESET": "9b"})
