"""The ticker <-> row map: dense rows, doubling growth, the ceiling, opt-in recycling."""

import numpy as np
import pytest

from service.registry import Registry, RegistryError, capacity_for


def test_new_tickers_take_the_next_row_and_keep_it() -> None:
    reg = Registry(initial_rows=4, max_tickers=10)
    assert [reg.assign(t) for t in ("A", "B", "C")] == [0, 1, 2]
    assert reg.row("B") == 1 and reg.ticker(2) == "C" and reg.row("Z") is None
    assert reg.as_dict() == {"A": 0, "B": 1, "C": 2} and len(reg) == 3
    with pytest.raises(ValueError, match="already has row"):
        reg.assign("A")


def test_capacity_doubles_up_to_max_tickers_then_refuses() -> None:
    reg = Registry(initial_rows=2, max_tickers=5)
    capacities = []
    for i in range(5):
        assert reg.assign(f"T{i}") == i
        capacities.append(reg.capacity)
    assert capacities == [2, 2, 4, 4, 5]
    assert reg.assign("T5") is None
    assert reg.row("T5") is None and len(reg) == 5 and reg.capacity == 5


@pytest.mark.parametrize(
    ("n", "initial", "max_tickers", "expected"),
    [(0, 64, 10_000, 64), (65, 64, 10_000, 128), (3, 64, 5, 5), (9, 2, 6, 9), (0, 1, 1, 1)],
)
def test_capacity_for(n: int, initial: int, max_tickers: int, expected: int) -> None:
    assert capacity_for(n, initial, max_tickers) == expected


def test_restored_map_keeps_rows_and_derives_capacity() -> None:
    reg = Registry(initial_rows=2, max_tickers=100, rows={"X": 2, "Y": 0, "Z": 1})
    assert reg.capacity == 4 and reg.ticker(0) == "Y" and reg.ticker(2) == "X"
    assert reg.assign("W") == 3 and reg.capacity == 4
    assert reg.assign("V") == 4 and reg.capacity == 8


@pytest.mark.parametrize("rows", [{"A": 0, "B": 0}, {"A": 0, "B": 2}, {"A": 1}, {"A": -1}])
def test_a_map_with_holes_or_duplicates_is_refused(rows: dict[str, int]) -> None:
    with pytest.raises(RegistryError):
        Registry(4, 10, rows=rows)


def test_no_recycling_unless_enabled() -> None:
    reg = Registry(2, 2, recycle_idle_ms=None, rows={"A": 0, "B": 1})
    assert reg.recycle("C", 10**9, np.array([0, 0]), busy=()) is None
    assert reg.as_dict() == {"A": 0, "B": 1}


def test_recycling_takes_the_longest_idle_row_past_the_limit() -> None:
    reg = Registry(2, 3, recycle_idle_ms=1000, rows={"A": 0, "B": 1, "C": 2})
    last_ts = np.array([5_000, 1_000, 3_000, 0])  # one spare capacity row at the end
    assert reg.recycle("D", 1_900, last_ts, busy=()) is None  # nobody idle for 1 s yet
    assert reg.recycle("D", 4_500, last_ts, busy=()) == (1, "B")
    assert reg.as_dict() == {"A": 0, "D": 1, "C": 2} and reg.ticker(1) == "D"


def test_recycling_never_takes_a_busy_row() -> None:
    reg = Registry(2, 2, recycle_idle_ms=1000, rows={"A": 0, "B": 1})
    last_ts = np.array([0, 100])
    assert reg.recycle("C", 10_000, last_ts, busy={0}) == (1, "B")
    assert reg.recycle("D", 10_000, last_ts, busy={0, 1}) is None
