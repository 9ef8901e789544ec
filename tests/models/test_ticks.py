"""The tick rules of DESIGN.md, shared by training data, the stream and HTTP."""

from pathlib import Path

import pytest

from models.ticks import InvalidTick, parse_tick, read_csv


def test_valid_tick_is_case_folded_and_defaults_apply():
    tick = parse_tick({"ticker": "brk.b", "price": "412.5", "extra": "x"}, default_ts_ms=77)
    assert (tick.ticker, tick.price, tick.volume, tick.ts_ms) == ("BRK.B", 412.5, 0.0, 77)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"price": "1"}, "missing_field"),
    ({"ticker": "A"}, "missing_field"),
    ({"ticker": "A" * 2048, "price": "1"}, "bad_ticker"),
    ({"ticker": "A B", "price": "1"}, "bad_ticker"),
    ({"ticker": "", "price": "1"}, "bad_ticker"),
    ({"ticker": "A", "price": "abc"}, "bad_price"),
    ({"ticker": "A", "price": "nan"}, "bad_price"),
    ({"ticker": "A", "price": "inf"}, "bad_price"),
    ({"ticker": "A", "price": "0"}, "bad_price"),
    ({"ticker": "A", "price": "-3"}, "bad_price"),
    ({"ticker": "A", "price": "1" * 100}, "bad_price"),
    ({"ticker": "A", "price": "1e-300"}, "bad_price"),  # ln(1e300 / 1e-300) would be inf
    ({"ticker": "A", "price": "1e300"}, "bad_price"),
    ({"ticker": "A", "price": "1", "ts": "1767225600000000"}, "bad_ts"),  # microseconds
    ({"ticker": "A", "price": "1", "volume": "-1"}, "bad_volume"),
    ({"ticker": "A", "price": "1", "volume": "NaN"}, "bad_volume"),
    ({"ticker": "A", "price": "1", "ts": "1.5"}, "bad_ts"),
    ({"ticker": "A", "price": "1", "ts": "-5"}, "bad_ts"),
])
def test_invalid_ticks_name_their_reason(fields: dict[str, str], reason: str):
    with pytest.raises(InvalidTick) as info:
        parse_tick(fields, default_ts_ms=1)
    assert info.value.reason == reason


def test_csv_is_time_ordered_and_bad_rows_are_counted(tmp_path: Path):
    path = tmp_path / "ticks.csv"
    path.write_text("ticker,ts,price,volume\nb,2000,10,1\na,1000,5,\nc,1500,-1,1\n")
    table, skipped = read_csv(path)
    assert table.ticker.tolist() == ["A", "B"]
    assert table.ts_ms.tolist() == [1000, 2000]
    assert skipped == {"bad_price": 1}


def test_csv_without_required_columns_is_refused(tmp_path: Path):
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,price\nA,1\n")
    with pytest.raises(ValueError, match="missing"):
        read_csv(path)
