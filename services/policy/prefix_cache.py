"""The keys and values of prompts already encoded, so that a child's prompt encodes only what is new in it.

A search tick asks for candidate steps of dozens of prompts, each the question and the steps of a path so far.
A child's prompt is its parent's, which the tick before encoded, plus one step (and the program's output): on
the embedded models nine prompt tokens in ten had been encoded before. `PrefixCache` keeps every encoded
prompt's keys and values per layer (least recently used first out, bounded in bytes) and finds, for a new
prompt, the longest one it starts with. Prompts are made of whole steps (services/math/prompting.py: each
followed by its newline), so only the positions after a `boundary` token are tried.

A causal model's keys and values for a prefix depend on the prefix alone, so an answer drawn with a cached
prefix is the one drawn without, up to the rounding of the different batch shapes the two were computed in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Layers = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values), each [heads, tokens, head_dim]


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0
    tokens_asked: int = 0  # prompt tokens of every lookup
    tokens_reused: int = 0  # of them, read from the cache instead of encoded


class PrefixCache:
    def __init__(self, max_bytes: int, boundary: int | None) -> None:
        self._entries: OrderedDict[tuple[int, ...], Layers] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0
        self._boundary = boundary
        self.stats = CacheStats()

    def longest(self, ids: Sequence[int]) -> tuple[int, Layers | None]:
        """The longest cached prompt that `ids` starts with, shorter than `ids` (one token must be left to encode:
        it gives the next token's logits), and its length; (0, None) when none is."""
        self.stats.lookups += 1
        self.stats.tokens_asked += len(ids)
        for end in range(len(ids) - 1, 0, -1):
            if self._boundary is not None and ids[end - 1] != self._boundary:
                continue
            entry = self._entries.get(tuple(ids[:end]))
            if entry is not None:
                self._entries.move_to_end(tuple(ids[:end]))
                self.stats.hits += 1
                self.stats.tokens_reused += end
                return end, entry
        return 0, None

    def put(self, ids: Sequence[int], layers: Layers) -> None:
        key = tuple(ids)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if key in self._entries or size > self._max_bytes:
            return
        self._entries[key] = layers
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in evicted)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes
