"""Rows that hold a prefix once and several continuations of it, each reading as if it followed the prefix alone.

A causal model's states over a prefix do not depend on what follows, so the candidate steps of one node can
share one copy of the prefix: each continuation sees the prefix and its own earlier tokens (a 4D mask), and its
positions restart where the prefix ends. The trainer packs a node's step pairs this way; the scorer packs the
new children of a node, which a search tick scores together (4 children of a 250-token prefix: 1,000 tokens as
separate rows, about 350 packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class PackedRow:
    prefix: list[int]
    continuations: list[list[int]]
    # Which tokens the policy wrote (read by a likelihood PPM, services.ppm.model): per prefix token, and per
    # continuation one flag for all of its tokens (a continuation is one step). Empty: none.
    prefix_counted: list[bool] = field(default_factory=list)
    continuations_counted: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (rows, width), right-padded
    attention_mask: torch.Tensor  # (rows, 1, width, width) boolean
    position_ids: torch.Tensor  # (rows, width)
    counted: torch.Tensor  # (rows, width) bool: tokens the policy wrote
    ends: list[list[int]]  # per row, the index of each continuation's last token


def pack(rows: Sequence[PackedRow], pad_id: int) -> PackedBatch:
    """Right-padded `prefix + continuation_1 + … + continuation_k` rows with their masks and positions.

    Padding sees only itself (a query with nothing to attend to would give NaN)."""
    width = max(len(row.prefix) + sum(map(len, row.continuations)) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    counted = torch.zeros((len(rows), width), dtype=torch.bool)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    ends: list[list[int]] = []
    for index, row in enumerate(rows):
        p = len(row.prefix)
        ids[index, :p] = torch.tensor(row.prefix, dtype=torch.long)
        positions[index, :p] = torch.arange(p)
        if row.prefix_counted:
            counted[index, :p] = torch.tensor(row.prefix_counted, dtype=torch.bool)
        mask[index, 0, :p, :p] = causal[:p, :p]
        start, row_ends = p, []
        for number, continuation in enumerate(row.continuations):
            n = len(continuation)
            ids[index, start : start + n] = torch.tensor(continuation, dtype=torch.long)
            if row.continuations_counted:
                counted[index, start : start + n] = row.continuations_counted[number]
            positions[index, start : start + n] = torch.arange(p, p + n)
            mask[index, 0, start : start + n, :p] = True
            mask[index, 0, start : start + n, start : start + n] = causal[:n, :n]
            row_ends.append(start + n - 1)
            start += n
        ends.append(row_ends)
    return PackedBatch(ids, mask, positions, counted, ends)
