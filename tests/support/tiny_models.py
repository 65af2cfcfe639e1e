"""A store with a micro policy and PPM (untrained weights, a real tokenizer), built in about a second.

Good for testing the machinery of services that load models; useless for quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from services.common.store import Lineage, ModelStore, ModelVersion
from services.math import stepfmt
from services.policy.tiny import PRESETS, tiny_config, train_tokenizer
from services.ppm.model import ProcessRewardModel

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"
STEPS = (
    stepfmt.render_step("apples after buying", "apples = 3 + 5"),
    stepfmt.render_step("print the answer", "print(apples)", last=True),
    stepfmt.render_output("8"),
    stepfmt.render_answer("8"),
)


def publish_micro_models(store: ModelStore, seed: int = 0) -> tuple[ModelVersion, ModelVersion]:
    torch.manual_seed(seed)
    corpus = [stepfmt.render_prompt(QUESTION.replace("3", str(n)), STEPS) for n in range(20)]
    tokenizer = train_tokenizer(corpus, 320)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, PRESETS["micro"]))

    def write_policy(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    policy = store.publish("policy", write_policy, Lineage(base_model="micro", source="test"))

    def write_ppm(directory: Path) -> None:
        ProcessRewardModel.from_pretrained(policy.path).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    ppm = store.publish("ppm", write_ppm, Lineage(base_model=f"policy {policy.version}", source="test"))
    return policy, ppm


# A chat template of Qwen2.5's shape, set by hand (no template can be downloaded here).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_chat_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A user's Hugging Face checkpoint as it would arrive: a micro Qwen2 causal LM whose tokenizer has a chat
    template and its turn markers, in a plain directory (not in any store)."""
    torch.manual_seed(seed)
    corpus = [stepfmt.render_prompt(QUESTION.replace("3", str(n)), STEPS) for n in range(20)]
    tokenizer = train_tokenizer(corpus, 320)
    tokenizer.add_special_tokens({"additional_special_tokens": [*stepfmt.MARKERS, "<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    model = Qwen2ForCausalLM(tiny_config(tokenizer, PRESETS["micro"]))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
