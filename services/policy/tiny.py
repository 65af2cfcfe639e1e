"""The embedded default's tiny policy: its tokenizer and its Qwen2-architecture configuration.

No pretrained weights can be downloaded where thinkmesh is built, so the embedded default trains its own.
Two choices matter more than size:
- the step markers are special tokens, so a step ends in exactly one token and stopping is exact;
- digits are split one per token: the model must copy numbers from the question, and copying digit by digit is
  far easier to learn than copying multi-digit tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config

from services.math import stepfmt

PAD = "<pad>"
EOS = "<eos>"


@dataclass(frozen=True)
class TinyPreset:
    """Sizes of the tiny model. `small` ≈ 3.4M parameters: learns the curriculum's levels 1–2 in minutes on CPU."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 768
    max_positions: int = 1024
    vocab_size: int = 640


PRESETS = {
    "small": TinyPreset(),
    # For tests: seconds to train, learns nothing useful.
    "micro": TinyPreset(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, vocab_size=384),
}


def special_tokens() -> list[str]:
    return [PAD, EOS, *stepfmt.MARKERS]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the given texts, with the markers as single tokens and one token per digit."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS)  # type: ignore[no-untyped-call]
    fast.add_special_tokens({"additional_special_tokens": list(stepfmt.MARKERS)})
    fast.padding_side = "left"  # decoder-only generation pads on the left
    return fast


def tiny_config(tokenizer: PreTrainedTokenizerFast, preset: TinyPreset) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        intermediate_size=preset.intermediate,
        max_position_embeddings=preset.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )
