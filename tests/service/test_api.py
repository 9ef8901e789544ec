"""The HTTP API against a real redis-server and a real Engine (TestClient runs the lifespan)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.artifact import Artifact
from service.app import create_app
from service.config import Settings
from service.embedded_redis import EmbeddedRedis
from service.feed import feed_synthetic
from service.records import parse_id

KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(redis_url: str, artifact: Artifact) -> Callable[..., Any]:
    """`with client(**settings) as c:` an app on the session Redis, lifespan on."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        fields = {"redis_url": redis_url, "block_ms": 20, "api_key": None, **overrides}
        with TestClient(create_app(Settings(**fields), artifact)) as c:
            yield c

    return make


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll until `check()` is truthy; its last value, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout}s")


def post_json(c: TestClient, body: str, **headers: str) -> Any:
    """Raw JSON text, so NaN and broken JSON reach the server as a client would send them."""
    return c.post("/v1/ticks", content=body.encode(),
                  headers={"content-type": "application/json", **headers})


def steps_of(c: TestClient) -> dict[str, int]:
    return {t: p["steps"] for t, p in c.get("/v1/predictions").json()["predictions"].items()}


# ---- writes, then reads


def test_posted_ticks_become_predictions_with_steps_equal_to_count(client, artifact) -> None:
    ticks = [{"ticker": "aaa", "price": 10.0, "volume": 5, "ts": 1_000},
             {"ticker": "BBB", "price": 20.5},
             {"ticker": "AAA", "price": 10.5, "ts": 2_000},
             {"ticker": "AAA", "price": 11.0, "volume": 1.5, "ts": 3_000}]
    with client() as c:
        r = c.post("/v1/ticks", json=ticks)
        assert r.status_code == 202, r.text
        ids = r.json()["ids"]
        assert len(ids) == 4 and ids == sorted(ids, key=parse_id)

        wait_for(lambda: steps_of(c) == {"AAA": 3, "BBB": 1})
        body = c.get("/v1/predictions").json()
        aaa = body["predictions"]["AAA"]
        assert aaa["last_price"] == 11.0 and aaa["as_of"] == 3_000
        assert aaa["stream_id"] == ids[3] and body["stream_id"] == ids[3]
        assert aaa["model_version"] == artifact.meta.model_version
        assert math.isclose(aaa["predicted_price"], 11.0 * math.exp(aaa["prediction"]))
        assert body["unknown"] == [] and 0 <= body["snapshot_age_s"] < 60
        bbb = body["predictions"]["BBB"]
        assert bbb["as_of"] == int(ids[1].split("-")[0])  # no ts: the stream ID's time


def test_one_ticker_is_case_folded_unknown_is_404_bad_is_422(client) -> None:
    with client() as c:
        c.post("/v1/ticks", json={"ticker": "MSFT", "price": 400.0})
        wait_for(lambda: c.get("/v1/predictions/msft").status_code == 200)
        one = c.get("/v1/predictions/msft").json()
        assert one["ticker"] == "MSFT" and one["steps"] == 1 and one["snapshot_age_s"] >= 0

        missing = c.get("/v1/predictions/ZZZ")
        assert missing.status_code == 404
        assert "ZZZ" in missing.json()["detail"] and "POST /v1/ticks" in missing.json()["detail"]

        bad = c.get("/v1/predictions/" + "X" * 40)
        assert bad.status_code == 422 and "1-16 chars" in bad.json()["detail"]


def test_after_answers_once_that_entry_is_served_without_polling(client, redis_client) -> None:
    """Read-your-writes: a GET with `after` set to an entry not yet in the stream waits for
    it, and answers with that entry's prediction as soon as it is served."""
    with client() as c:
        first = c.post("/v1/ticks", json={"ticker": "AFT1", "price": 10.0}).json()["ids"][0]
        served = c.get(f"/v1/predictions/aft1?after={first}&wait=5").json()
        assert served["stream_id"] == first and served["steps"] == 1  # the first GET
        # an entry the producer has not sent yet, with an ID it will give it explicitly
        later = f"{parse_id(first)[0] + 1}-7"
        answers: list[Any] = []
        waiting = threading.Thread(target=lambda: answers.append(
            c.get(f"/v1/predictions/AFT1?after={later}&wait=5")))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive()  # not answered: the entry is not in the stream yet
        redis_client.xadd("ticks", {"ticker": "AFT1", "price": "10.5"}, id=later)
        waiting.join(10)
        assert answers[0].status_code == 200
        assert answers[0].json()["stream_id"] == later and answers[0].json()["steps"] == 2

        # never served within `wait`: what is served then (the client compares stream_id)
        t0 = time.monotonic()
        stale = c.get(f"/v1/predictions/AFT1?after={parse_id(later)[0] + 60_000}&wait=0.2")
        assert stale.status_code == 200 and stale.json()["stream_id"] == later
        assert time.monotonic() - t0 >= 0.2
        # a dead-lettered entry is served too (as a dead letter): the wait ends at it
        bad = redis_client.xadd("ticks", {"ticker": "AFT1", "price": "-1"}).decode()
        t0 = time.monotonic()
        dead = c.get(f"/v1/predictions/AFT1?after={bad}&wait=5")
        assert dead.json()["stream_id"] == later and time.monotonic() - t0 < 4


@pytest.mark.parametrize(("query", "says"), [
    ("after=abc", "must be a stream ID"), ("after=1-2-3", "must be a stream ID"),
    ("after=1-0%0A", "must be a stream ID"),  # a trailing newline, which `$` would let in
    ("after=1-0&wait=9", "from 0 to 5"), ("after=1-0&wait=-1", "from 0 to 5"),
    ("after=1-0&wait=nan", "from 0 to 5"), ("after=1-0&wait=soon", "from 0 to 5"),
    ("after=1-0&wait=0_1", "from 0 to 5"),
    ("wait=6", "from 0 to 5"),  # without `after` too: the schema's range holds either way
])
def test_a_bad_after_or_wait_is_422(client, query: str, says: str) -> None:
    with client() as c:
        r = c.get(f"/v1/predictions/X1?{query}")
    assert r.status_code == 422 and says in r.json()["detail"], r.text


def test_predictions_filter_names_the_unknown(client) -> None:
    with client() as c:
        c.post("/v1/ticks", json=[{"ticker": "A1", "price": 1.0}, {"ticker": "B2", "price": 2.0}])
        wait_for(lambda: len(steps_of(c)) == 2)
        body = c.get("/v1/predictions", params={"tickers": "a1, zz9"}).json()
        assert list(body["predictions"]) == ["A1"] and body["unknown"] == ["ZZ9"]


def test_tickers_lists_rows_capacity_and_max(client) -> None:
    with client(initial_rows=2, max_tickers=50) as c:
        c.post("/v1/ticks", json=[{"ticker": t, "price": 1.0} for t in ("X", "Y", "Z")])
        wait_for(lambda: c.get("/v1/tickers").json()["count"] == 3)
        body = c.get("/v1/tickers").json()
        assert sorted(body["tickers"].values()) == [0, 1, 2] and set(body["tickers"]) == set("XYZ")
        assert body["capacity"] == 4  # grew by doubling from 2
        assert body["max_tickers"] == 50 and body["snapshot_age_s"] >= 0


def test_reset_zeroes_the_row_through_the_stream(client, redis_client) -> None:
    with client() as c:
        c.post("/v1/ticks", json=[{"ticker": "R", "price": p, "volume": 9} for p in (1, 2, 3)])
        wait_for(lambda: steps_of(c).get("R") == 3)
        row = c.get("/v1/tickers").json()["tickers"]["R"]
        engine = c.app.state.engine
        assert np.any(engine.capture().rows[row] != 0)

        r = c.post("/v1/tickers/r/reset")
        assert r.status_code == 200 and r.json() == {"ticker": "R", "row": row, "reset": True}
        assert np.all(engine.capture().rows[row] == 0)
        (_, control), = redis_client.xrevrange("ticks", count=1)
        assert control == {b"control": b"reset", b"ticker": b"R"}

        unknown = c.post("/v1/tickers/NOPE/reset")
        assert unknown.status_code == 404 and "GET /v1/tickers" in unknown.json()["detail"]


# ---- bad bodies: 422 with a message, and nothing reaches the stream


@pytest.mark.parametrize(("body", "where", "says"), [
    ('{"ticker": "AAA"}', "body[0].price", "Field required"),
    ('{"ticker": "AAA", "price": NaN}', "body[0].price", "finite"),
    ('{"ticker": "AAA", "price": Infinity}', "body[0].price", "finite"),
    ('{"ticker": "AAA", "price": -3}', "body[0].price", "greater than or equal to 0.000000001"),
    ('{"ticker": "AAA", "price": 0}', "body[0].price", "greater than or equal to 0.000000001"),
    ('{"ticker": "AAA", "price": 2e12}', "body[0].price", "less than or equal to 1000000000000"),
    ('{"ticker": "AAA", "price": "12"}', "body[0].price", "valid number"),
    ('{"ticker": "AAA", "price": 1, "volume": -1}', "body[0].volume", "greater than or equal"),
    ('{"ticker": "AAA", "price": 1, "ts": 1.5}', "body[0].ts", "valid integer"),
    ('{"ticker": "AAA", "price": 1, "ts": -1}', "body[0].ts", "greater than or equal to 0"),
    ('{"ticker": "' + "A" * 2048 + '", "price": 1}', "body[0].ticker", "should match pattern"),
    ('{"ticker": " AAA", "price": 1}', "body[0].ticker", "should match pattern"),
    ('[{"ticker": "OK", "price": 1}, {"ticker": "BAD", "price": -1}]', "body[1].price",
     "greater than or equal"),
    ("[]", "body", "at least 1"),
    ('{"ticker": ', "body", "invalid JSON"),
])
def test_bad_ticks_get_422_and_write_nothing(client, redis_client, body, where, says) -> None:
    with client() as c:
        r = post_json(c, body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith(f"{where}: ") and says in detail, detail
    assert "A" * 100 not in r.text  # the oversized input is not echoed back
    assert redis_client.xlen("ticks") == 0


# ---- auth


def test_writes_need_the_key_reads_stay_open(client) -> None:
    tick = {"ticker": "AUTH", "price": 5.0}
    with client(api_key=KEY) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-key-000"},
                        {"Authorization": f"Basic {KEY}"}):
            for path in ("/v1/ticks", "/v1/tickers/AUTH/reset"):
                r = c.post(path, json=tick, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert "Authorization: Bearer" in r.json()["detail"]
                assert r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/ticks", json=tick, headers=AUTH).status_code == 202
        wait_for(lambda: c.get("/v1/predictions/AUTH").status_code == 200)
        assert c.post("/v1/tickers/AUTH/reset", headers=AUTH).status_code == 200
        for path in ("/v1/predictions", "/v1/tickers", "/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200, path


def test_reads_can_need_a_key_too(client) -> None:
    with client(api_key=KEY, read_api_key="read-key-456") as c:
        for path in ("/v1/predictions", "/v1/predictions/X", "/v1/tickers"):
            r = c.get(path)
            assert r.status_code == 401 and "READ_API_KEY" in r.json()["detail"], path
            assert c.get(path, headers={"Authorization": "Bearer wrong-key-0"}).status_code == 401
            ok = {200, 404}
            assert c.get(path, headers={"Authorization": "Bearer read-key-456"}).status_code in ok
            assert c.get(path, headers=AUTH).status_code in ok  # the write key reads too
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert c.get(path).status_code in (200, 503), path
        schema = c.get("/openapi.json").json()
        assert schema["paths"]["/v1/tickers"]["get"]["security"] == [{"HTTPBearer": []}]


def test_without_a_key_the_schema_asks_for_none(client) -> None:
    with client() as c:
        schema = c.get("/openapi.json").json()
    assert "security" not in schema["paths"]["/v1/ticks"]["post"]


def test_a_quiet_healthy_stream_stays_fresh(client) -> None:
    with client() as c:
        c.post("/v1/ticks", json={"ticker": "Q", "price": 1.0})
        wait_for(lambda: c.get("/readyz").status_code == 200)
        time.sleep(1.5)  # nothing arrives: the loop still confirms it is current
        assert c.get("/v1/predictions/Q").json()["snapshot_age_s"] < 0.5
        assert c.get("/readyz").json()["snapshot_age_s"] < 0.5


# ---- health and metrics


def test_ready_holds_under_a_steady_feed(client, redis_client) -> None:
    """A feed of one tick every millisecond or so keeps the loop busy (a commit in flight,
    a read waiting behind it for the next tick) but caught up: /readyz stays 200 and the
    restore's replay is reported over."""
    with client() as c:
        stop = threading.Event()
        feeder = threading.Thread(target=feed_synthetic, daemon=True, kwargs={
            "client": redis_client, "stream": "ticks", "tickers": 8, "rate": 1000.0,
            "stop": stop, "echo": lambda _: None})
        feeder.start()
        try:
            wait_for(lambda: c.get("/readyz").status_code == 200)
            answers = []
            for _ in range(30):
                answers.append(c.get("/readyz").status_code)
                time.sleep(0.05)
            replaying = c.get("/readyz").json()["replaying"]
        finally:
            stop.set()
            feeder.join()
    assert answers.count(200) >= 27 and replaying is None, answers


def test_health_ready_and_docs(client) -> None:
    with client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = wait_for(lambda: (r := c.get("/readyz")).status_code == 200 and r.json())
        assert ready["ready"] is True and ready["reasons"] == [] and ready["connected"] is True
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v1/predictions/{ticker}", "/v1/ticks", "/v1/tickers/{ticker}/reset",
                "/readyz", "/metrics"} <= set(paths)
        assert c.get("/docs").status_code == 200


def test_history_is_newest_last_and_limited(client) -> None:
    with client(batch_count=2) as c:
        for p in (1.0, 2.0, 3.0, 4.0, 5.0):
            c.post("/v1/ticks", json=[{"ticker": "H", "price": p}, {"ticker": "OTHER", "price": p}])
        wait_for(lambda: steps_of(c).get("H") == 5)
        body = c.get("/v1/predictions/h/history", params={"limit": 3}).json()
        assert body["ticker"] == "H"
        assert [p["last_price"] for p in body["history"]] == [3.0, 4.0, 5.0]
        assert [p["steps"] for p in body["history"]] == [3, 4, 5]
        assert c.get("/v1/predictions/NONE/history").json()["history"] == []
        assert c.get("/v1/predictions/H/history", params={"limit": 0}).status_code == 422


def test_metrics_count_applied_ticks_and_dead_letters(client, redis_client) -> None:
    with client() as c:
        c.post("/v1/ticks", json=[{"ticker": "M", "price": p} for p in (1.0, 2.0)])
        redis_client.xadd("ticks", {"ticker": "M", "price": "nan"})  # straight to the stream
        wait_for(lambda: 'tickstream_dead_letters_total{reason="bad_price"} 1.0'
                 in c.get("/metrics").text)
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "tickstream_ticks_applied_total 2.0" in r.text
    assert "tickstream_snapshot_age_seconds " in r.text
    assert "tickstream_state_snapshots_total" in r.text and "tickstream_replaying 0.0" in r.text
    for histogram in ("tickstream_batch_seconds", "tickstream_tick_to_commit_seconds"):
        assert f'{histogram}_bucket{{le="+Inf"}}' in r.text and f"{histogram}_count" in r.text
    assert 'tickstream_http_request_seconds_count{method="POST",route="/v1/ticks"} 1.0' \
        in r.text
    assert 'tickstream_model_info{model_version="' in r.text


def test_redis_down_reads_keep_answering_readyz_goes_503_and_back(
    tmp_path: Path, artifact: Artifact
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        settings = Settings(redis_url=server.url, block_ms=20, api_key=None)
        with TestClient(create_app(settings, artifact)) as c:
            c.post("/v1/ticks", json={"ticker": "UP", "price": 7.0})
            wait_for(lambda: c.get("/readyz").status_code == 200
                     and c.get("/v1/predictions/UP").status_code == 200)

            server.kill()
            down = wait_for(lambda: (r := c.get("/readyz")).status_code == 503 and r.json())
            assert down["ready"] is False and any("Redis" in m for m in down["reasons"])
            read = c.get("/v1/predictions/UP")  # from the last snapshot, with its age
            assert read.status_code == 200 and read.json()["last_price"] == 7.0
            time.sleep(0.5)
            assert c.get("/v1/predictions/UP").json()["snapshot_age_s"] > read.json()[
                "snapshot_age_s"]  # nothing confirms it is current: it ages
            write = c.post("/v1/ticks", json={"ticker": "UP", "price": 8.0})
            assert write.status_code == 503 and "Redis is unreachable" in write.json()["detail"]

            server.start()
            wait_for(lambda: c.get("/readyz").status_code == 200, timeout=30)
    finally:
        server.stop()


def test_all_predictions_body_matches_its_documented_schema(client) -> None:
    """The list route writes its JSON by hand for speed; it must still be what /docs says
    and agree with the one-ticker route field for field."""
    from service.api.routes.predictions import AllPredictions

    with client() as c:
        c.post("/v1/ticks", json=[{"ticker": "SCH1", "price": 3.25},
                                  {"ticker": "SCH2", "price": 1e-3, "volume": 7}])
        wait_for(lambda: len(steps_of(c)) == 2)
        body = AllPredictions.model_validate_json(c.get("/v1/predictions?tickers=sch2,x").text)
        one = c.get("/v1/predictions/SCH2").json()
    assert body.unknown == ["X"] and list(body.predictions) == ["SCH2"]
    assert body.predictions["SCH2"].model_dump() == {k: v for k, v in one.items()
                                                    if k != "snapshot_age_s"}


def test_one_prediction_body_matches_its_documented_schema(client) -> None:
    """The one-ticker route also writes its JSON by hand; /docs must still be true."""
    from service.api.routes.predictions import OnePrediction

    with client() as c:
        c.post("/v1/ticks", json={"ticker": "ONE1", "price": 12.5, "volume": 3})
        wait_for(lambda: "ONE1" in steps_of(c))
        response = c.get("/v1/predictions/one1")
    assert response.headers["content-type"] == "application/json"
    one = OnePrediction.model_validate_json(response.text)
    assert one.ticker == "ONE1" and one.steps == 1 and one.last_price == 12.5
    assert one.snapshot_age_s >= 0


def test_one_prediction_documents_its_path_parameter_and_errors(redis_url, artifact) -> None:
    """The route reads `ticker` itself (no declared parameter): /docs must still list it."""
    app = create_app(Settings(redis_url=redis_url), artifact)
    get = app.openapi()["paths"]["/v1/predictions/{ticker}"]["get"]
    ticker, after, wait = get["parameters"]
    assert ticker == {"in": "path", "name": "ticker", "required": True,
                      "description": "any case",
                      "schema": {"title": "Ticker", "type": "string",
                                 "pattern": "^[A-Za-z0-9._-]{1,16}$"}}
    assert (after["in"], after["name"], after["required"]) == ("query", "after", False)
    assert after["schema"]["pattern"] == "^[0-9]{1,20}(-[0-9]{1,20})?$"
    assert (wait["name"], wait["schema"]["minimum"], wait["schema"]["maximum"]) == ("wait", 0, 5)
    assert {"200", "401", "404", "422"} <= set(get["responses"])
    assert get["tags"] == ["predictions"]


# ---- learning and live scores


def test_model_quality_and_skill_report_the_learning_service(client, artifact) -> None:
    base = artifact.meta.model_version
    ticks = [{"ticker": f"Q{j}", "price": 10.0 * (1 + 0.01 * ((i * 7 + j) % 5 - 2)),
              "ts": 1_000 * (i + 1)} for i in range(12) for j in range(3)]
    with client(learn=True, learn_window=2, learn_batch=2, learn_rate=0.01) as c:
        assert c.post("/v1/ticks", json=ticks).status_code == 202
        report = wait_for(lambda: (q := c.get("/v1/quality").json())["overall"]["scored"] == 33
                          and q)
        model = c.get("/v1/model").json()
        preds = c.get("/v1/predictions").json()["predictions"]
        one = c.get("/v1/predictions/q1").json()
        some = c.get("/v1/quality?tickers=q0,zzz").json()
        metrics = c.get("/metrics").text
    assert model["base_version"] == base and model["updates"] > 0
    assert model["model_version"] == f"{base}+{model['updates']}"
    assert model["learning"] == {"on": True, "window": 2, "batch": 2, "rate": 0.01,
                                 "clipnorm": 1.0, "max_loss_ratio": 10.0}
    assert model["skipped"] == {"nonfinite": 0, "outlier": 0} and model["running_loss"] > 0
    assert {p["model_version"] for p in preds.values()} == {model["model_version"]}
    # each ticker's 12 ticks score its first 11 predictions
    assert {t: q["scored"] for t, q in report["tickers"].items()} == {"Q0": 11, "Q1": 11,
                                                                      "Q2": 11}
    q1 = report["tickers"]["Q1"]
    assert one["skill"] == q1["skill"] == preds["Q1"]["skill"]
    assert q1["skill"] == 1 - q1["mse_model"] / q1["mse_zero"]
    assert 0 <= q1["sign_hit_rate"] <= 1
    assert list(some["tickers"]) == ["Q0"] and some["unknown"] == ["ZZZ"]
    assert f"tickstream_model_updates_total {float(model['updates'])}" in metrics
    assert "tickstream_skill " in metrics and 'tickstream_mse{forecast="zero"}' in metrics


def test_learning_off_keeps_the_artifacts_weights(client, artifact) -> None:
    with client(learn=False, learn_window=2, learn_batch=1) as c:
        c.post("/v1/ticks", json=[{"ticker": "FRZ", "price": 10.0 + i, "ts": 1000 * (i + 1)}
                                  for i in range(10)])
        wait_for(lambda: steps_of(c).get("FRZ") == 10)
        model = c.get("/v1/model").json()
        one = c.get("/v1/predictions/FRZ").json()
    assert model["updates"] == 0 and model["learning"]["on"] is False
    assert one["model_version"] == artifact.meta.model_version
    assert one["skill"] is not None  # scored all the same: evaluation does not need learning
