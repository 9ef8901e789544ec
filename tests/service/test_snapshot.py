"""Predictions as persisted: the hand-formatted JSON must be real JSON and round-trip."""

import json
import math

import pytest

from service.snapshot import Prediction, Snapshot


@pytest.mark.parametrize("value", [1e-05, -0.0123456789012345, 0.0, 123456.789, 5e-324])
def test_json_round_trips_and_is_standard_json(value: float) -> None:
    p = Prediction("BRK.B", value, 101.5, 100.25, 1767225600123, "1767225600123-7", 42, "ab12")
    text = p.to_json()
    assert json.loads(text) == {
        "ticker": "BRK.B", "prediction": value, "predicted_price": 101.5,
        "last_price": 100.25, "as_of": 1767225600123, "stream_id": "1767225600123-7",
        "steps": 42, "model_version": "ab12",
    }  # fmt: skip
    assert Prediction.from_json(text) == p


def test_non_finite_values_still_round_trip() -> None:
    p = Prediction("A", 800.0, math.inf, 1.0, 1, "1-0", 1, "v")
    assert Prediction.from_json(p.to_json()) == p


def test_snapshot_predictions_are_read_only() -> None:
    snap = Snapshot.of({"A": Prediction("A", 0.0, 1.0, 1.0, 1, "1-0", 1, "v")}, 0.0, "1-0")
    with pytest.raises(TypeError):
        snap.predictions["B"] = snap.predictions["A"]  # type: ignore[index]
