"""How much of the caller's time the search may use: the rest carries the result back."""

from __future__ import annotations

import pytest

from services.search.service.core import _search_time


@pytest.mark.parametrize(
    ("budget", "searched"),
    [(60.0, 51.0), (10.0, 8.5), (4.0, 3.0), (1.5, 0.75), (0.5, 0.25)],
)
def test_the_search_keeps_back_a_share_at_least_a_second_at_most_half(budget: float, searched: float) -> None:
    assert _search_time(budget) == pytest.approx(searched)
