"""The decode pixel budget: what it admits, and that after a refusal it refuses before the body (`full`)
until the decoders have worked it down to its low-water mark."""

from __future__ import annotations

import pytest

from service.engine import PixelBudget
from service.errors import Overloaded


def test_admits_what_fits_and_a_lone_oversized_request() -> None:
    budget = PixelBudget(100)
    budget.take(60)
    budget.take(40)
    assert budget.full
    budget.release(100)
    budget.take(500)  # larger than the whole budget: admitted while nothing else is held
    assert budget.used == 500
    with pytest.raises(Overloaded):
        budget.take(1)


def test_after_a_refusal_it_counts_as_full_until_the_low_water_mark() -> None:
    budget = PixelBudget(100)
    budget.take(80)
    assert not budget.full
    with pytest.raises(Overloaded):
        budget.take(30)  # 110 > 100
    assert budget.full  # new requests are refused before their body is read
    budget.take(10)  # one already past that check and priced still gets in if it fits
    budget.release(14)
    assert budget.full  # 76 used: over the low-water mark (75 % of 100)
    budget.release(1)
    assert not budget.full  # 75
    budget.take(20)
    assert not budget.full


def test_an_idle_budget_never_counts_as_full() -> None:
    budget = PixelBudget(100)
    for _ in range(50):
        budget.take(30)
        budget.release(30)
    assert not budget.full and budget.used == 0


def test_a_refusal_under_the_low_water_mark_does_not_close_admission() -> None:
    budget = PixelBudget(100)
    budget.take(10)
    with pytest.raises(Overloaded):
        budget.take(95)  # too big for the room left, but the budget is mostly free
    assert not budget.full
