"""The sizing arithmetic of docs/operations.md, against the models' published sizes and its own rules."""

from __future__ import annotations

import pytest

from services.trainer.training.sizing import GIB, SHAPES, estimate, smallest_fit, table


@pytest.mark.parametrize(("key", "published"), [("0.5b", 0.49e9), ("1.5b", 1.54e9), ("7b", 7.62e9)])
def test_the_shapes_have_the_published_parameter_counts(key: str, published: float) -> None:
    assert abs(SHAPES[key].parameters - published) / published < 0.01


def test_sharding_divides_the_state_and_adds_the_gathered_layers() -> None:
    shape = SHAPES["7b"]
    one, eight = estimate(shape, 1, 1, 4096), estimate(shape, 8, 1, 4096)
    assert one.state == 16 * shape.parameters and eight.state == 16 * shape.parameters // 8
    assert one.gathered == 0 < eight.gathered < 4 * GIB
    assert one.activations == eight.activations  # per GPU: the micro batch is the same
    # Checkpointing keeps a layer input per layer instead of every layer's internals.
    assert estimate(shape, 8, 1, 4096, checkpointing=False).activations > 2 * eight.activations


def test_a_7b_full_fine_tune_needs_several_80_gib_gpus_and_a_1_5b_one_fits_on_one() -> None:
    assert smallest_fit(SHAPES["7b"], 80 * GIB, 1, 4096) == 2
    assert smallest_fit(SHAPES["1.5b"], 80 * GIB, 1, 4096) == 1
    assert smallest_fit(SHAPES["7b"], 24 * GIB, 1, 4096) == 16


def test_the_table_has_a_row_per_model() -> None:
    rows = [line for line in table().splitlines() if line.startswith("| Qwen")]
    assert [row.split("|")[1].strip() for row in rows] == ["Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B"]
