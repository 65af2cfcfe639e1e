"""Untrained models of the embedded architecture (or a larger shape) in a scratch store: speed figures do not
depend on training, so the policy and PPM benchmarks run on an empty store too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.common.store import ModelStore

# Untrained architectures for speed figures when no trained model is at hand (speed does not depend on training).
SIZES = {
    "small": None,  # the embedded default (services.policy.tiny PRESETS["small"])
    # Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads (2 KV), intermediate 4864.
    "0.5b": {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864},
}


def store_with_models(
    store_root: str | None, scratch: Path, questions: Sequence[str], size: str = "small"
) -> ModelStore:
    """The store at `store_root` when it has a current policy and PPM, else untrained ones in `scratch`."""
    store = ModelStore(store_root)
    if store.current_name("policy") and store.current_name("ppm"):
        return store
    from dataclasses import replace

    from transformers import Qwen2ForCausalLM

    from services.common.store import Lineage
    from services.math import stepfmt
    from services.policy.tiny import PRESETS, tiny_config, train_tokenizer
    from services.ppm.model import ProcessRewardModel

    store = ModelStore(scratch / "store")
    tokenizer = train_tokenizer(
        [stepfmt.render_prompt(q, []) for q in list(questions) * 4], PRESETS["small"].vocab_size
    )
    shape = SIZES[size]
    preset = PRESETS["small"] if shape is None else replace(PRESETS["small"], max_positions=2048, **shape)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, preset))  # type: ignore[no-untyped-call]

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    policy = store.publish("policy", write, Lineage(source="bench (untrained)"))

    def write_ppm(directory: Path) -> None:
        ProcessRewardModel.from_pretrained(policy.path).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    store.publish("ppm", write_ppm, Lineage(source="bench (untrained)"))
    return store
