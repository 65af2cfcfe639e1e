"""Which versions can go into a running vLLM engine (`inplace` reload), decided without vLLM: the same
architecture and shapes, a tokenizer that behaves the same, the same prompt format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.store import Lineage, ModelStore
from services.policy.main import in_place_loader
from services.policy.vllm_engine import in_place_obstacle
from support.tiny_models import CHAT_TEMPLATE, publish_micro_models, write_chat_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("store"))
    publish_micro_models(store)
    return store


def retrained(store: ModelStore, edit_config: dict[str, object] | None = None) -> Path:
    """A version as a round writes it: the model and tokenizer loaded through transformers and saved again."""
    base = store.get("policy", "v1").path

    def write(directory: Path) -> None:
        AutoModelForCausalLM.from_pretrained(base).save_pretrained(directory)
        AutoTokenizer.from_pretrained(base).save_pretrained(directory)
        if edit_config:
            config = json.loads((directory / "config.json").read_text())
            (directory / "config.json").write_text(json.dumps({**config, **edit_config}))

    return store.publish("policy", write, Lineage(base_model="v1", source="test"), make_current=False).path


def test_a_rounds_version_goes_in_place_though_its_tokenizer_files_were_rewritten(store: ModelStore) -> None:
    base, new = store.get("policy", "v1").path, retrained(store)
    assert (base / "tokenizer.json").read_bytes() != (new / "tokenizer.json").read_bytes()
    assert in_place_obstacle(base, new) is None


def test_another_shape_or_tokenizer_cannot(store: ModelStore, tmp_path: Path) -> None:
    base = store.get("policy", "v1").path
    assert in_place_obstacle(base, retrained(store, {"num_hidden_layers": 3})) == (
        "config.json differs in num_hidden_layers"
    )
    assert in_place_obstacle(base, write_chat_checkpoint(tmp_path / "chat")) == "config.json differs in vocab_size"
    templated = retrained(store)
    tokenizer = AutoTokenizer.from_pretrained(templated)
    tokenizer.chat_template = CHAT_TEMPLATE  # the same vocabulary, another way to render a prompt
    tokenizer.save_pretrained(templated)
    assert in_place_obstacle(base, templated) == "the tokenizer differs"
    assert "no readable config.json" in str(in_place_obstacle(base, tmp_path / "missing"))


async def test_an_engine_without_in_place_reload_is_left_alone(store: ModelStore) -> None:
    class Other:
        version = "v1"

        async def close(self) -> None: ...

    assert await in_place_loader(store)(Other(), "v1") is False  # type: ignore[arg-type]
