"""Rows that hold a prefix once and several continuations of it, each reading as if it followed the prefix alone.

A causal model's states over a prefix do not depend on what follows, so the candidate steps of one node can
share one copy of the prefix: each continuation sees the prefix and its own earlier tokens (a 4D mask), and its
positions restart where the prefix ends. The trainer packs a node's step pairs this way; the scorer packs the
new children of a node, which a search tick scores together (4 children of a 250-token prefix: 1,000 tokens as
separate rows, about 350 packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedRow:
    prefix: list[int]
    continuations: list[list[int]]


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (rows, width), right-padded
    attention_mask: torch.Tensor  # (rows, 1, width, width) boolean
    position_ids: torch.Tensor  # (rows, width)
    ends: list[list[int]]  # per row, the index of each continuation's last token


def pack(rows: Sequence[PackedRow], pad_id: int) -> PackedBatch:
    """Right-padded `prefix + continuation_1 + … + continuation_k` rows with their masks and positions.

    Padding sees only itself (a query with nothing to attend to would give NaN)."""
    width = max(len(row.prefix) + sum(map(len, row.continuations)) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    ends: list[list[int]] = []
    for index, row in enumerate(rows):
        p = len(row.prefix)
        ids[index, :p] = torch.tensor(row.prefix, dtype=torch.long)
        positions[index, :p] = torch.arange(p)
        mask[index, 0, :p, :p] = causal[:p, :p]
        start, row_ends = p, []
        for continuation in row.continuations:
            n = len(continuation)
            ids[index, start : start + n] = torch.tensor(continuation, dtype=torch.long)
            positions[index, start : start + n] = torch.arange(p, p + n)
            mask[index, 0, start : start + n, :p] = True
            mask[index, 0, start : start + n, start : start + n] = causal[:n, :n]
            row_ends.append(start + n - 1)
            start += n
        ends.append(row_ends)
    return PackedBatch(ids, mask, positions, ends)
