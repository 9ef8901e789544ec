"""The predictions stream's entry format: what the loop writes is what consumers read."""

import numpy as np
import pytest

from service.prediction_stream import FORMAT, entry_fields, predictions_of, stream_predictions
from service.snapshot import Prediction


def fields_of(args: list) -> dict[bytes, bytes]:
    """XADD field/value arguments as Redis hands them back: bytes to bytes."""
    def raw(v: object) -> bytes:
        return v if isinstance(v, bytes) else str(v).encode()
    return {raw(k): raw(v) for k, v in zip(args[::2], args[1::2], strict=True)}


def test_round_trip_is_exact_and_in_order() -> None:
    ret = np.array([1e-4, -3.0000000000000004e-05, 0.1 + 0.2])  # floats that repr badly
    args = entry_fields("v1", "9-3", ["B", "A", "B"], [b"7-0", b"8-1", b"9-3"],
                        np.array([10, 11, 12]), np.array([4, 1, 5]), ret, ret + 100.0,
                        np.array([100.0, 99.5, 100.25]))
    entry = fields_of(args)
    assert entry[b"format"] == FORMAT.encode() and entry[b"count"] == b"3"
    assert stream_predictions([(b"1-0", entry)]) == [
        Prediction("B", ret[0], ret[0] + 100.0, 100.0, 10, "7-0", 4, "v1"),
        Prediction("A", ret[1], ret[1] + 100.0, 99.5, 11, "8-1", 1, "v1"),
        Prediction("B", ret[2], ret[2] + 100.0, 100.25, 12, "9-3", 5, "v1"),
    ]


@pytest.mark.parametrize("change", [{b"format": b"tickstream.predictions.v0"},
                                    {b"count": b"3"}, {b"ticker": b"A B C"}])
def test_an_entry_it_cannot_read_is_refused(change: dict[bytes, bytes]) -> None:
    args = entry_fields("v1", "2-0", ["A", "B"], [b"1-0", b"2-0"], np.array([1, 2]),
                        np.array([1, 1]), np.zeros(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError):
        stream_predictions([(b"1-0", {**fields_of(args), **change})])


def test_entry_fields_read_back_as_written() -> None:
    fields = entry_fields("v+3", "9-1", ["A", "B"], [b"5-0", b"9-1"], np.array([5, 9]),
                          np.array([1, 4]), np.array([0.5, -1e-3]), np.array([2.0, 3.0]),
                          np.array([1.0, 3.003]))
    got = predictions_of(fields)
    assert [(p.ticker, p.stream_id, p.steps, p.prediction, p.model_version) for p in got] == [
        ("A", "5-0", 1, 0.5, "v+3"), ("B", "9-1", 4, -1e-3, "v+3")]
