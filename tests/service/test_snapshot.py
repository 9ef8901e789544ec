"""Predictions as persisted: the hand-formatted JSON must be real JSON and round-trip."""

import json
import math
import random
from collections.abc import Mapping
from types import MappingProxyType

import pytest

from service.snapshot import LayeredPredictions, Prediction, Snapshot, with_latest


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


def test_published_predictions_read_as_the_full_copy_did() -> None:
    """Batches of moved and evicted tickers, published with `with_latest`, read exactly as
    a dict copied and updated per batch (get, [], in, len, order, items) after every batch,
    and no published map changes once a later batch is published."""
    rng = random.Random(7)
    model: dict[str, Prediction] = {}
    published: Mapping[str, Prediction] = MappingProxyType({})
    kept: list[tuple[Mapping[str, Prediction], dict[str, Prediction]]] = []
    layered = merged = 0
    for step in range(2_000):
        n_moved = rng.choice([1, 1, 2, 5, 40, 300])
        latest = [Prediction(f"T{rng.randrange(600)}", float(step), 1.0, 1.0, step,
                             f"{step}-{i}", step, "v") for i in range(n_moved)]
        evicted = [f"T{rng.randrange(600)}"] if rng.random() < 0.01 else []
        published = with_latest(published, latest, evicted)
        for t in evicted:
            model.pop(t, None)
        model.update((p.ticker, p) for p in latest)
        assert list(published) == list(model) and len(published) == len(model)
        assert dict(published.items()) == model
        probe = f"T{rng.randrange(700)}"  # some never seen
        assert published.get(probe) == model.get(probe) and (probe in published) == (
            probe in model)
        if probe in model:
            assert published[probe] == model[probe]
        else:
            with pytest.raises(KeyError):
                published[probe]
        layered += isinstance(published, LayeredPredictions)
        merged += not isinstance(published, LayeredPredictions)
        if step % 97 == 0:
            kept.append((published, dict(model)))
    assert layered > 100 and merged > 100  # both shapes were exercised
    for old, then in kept:
        assert dict(old.items()) == then  # readers holding an older map see it unchanged
