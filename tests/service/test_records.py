"""The binary records: bit-exact codecs and refusal of foreign bytes."""

import pickle
import struct

import numpy as np
import pytest

from service.records import (
    HEADER,
    MAGIC,
    VERSION,
    StateError,
    decode_last,
    decode_prediction,
    decode_row,
    encode_last,
    encode_predictions,
    encode_rows,
    format_id,
    parse_id,
)
from service.snapshot import Prediction

N_FLOATS = 6


def random_bits(k: int, n: int, seed: int = 0) -> np.ndarray:
    """float32 of random bit patterns: NaN payloads, -0.0, subnormals, infinities."""
    bits = np.random.default_rng(seed).integers(0, 2**32, (k, n), dtype=np.uint64)
    return bits.astype(np.uint32).view(np.float32)


def test_row_codec_round_trips_every_bit_pattern() -> None:
    packed = random_bits(50, N_FLOATS)
    packed[0, :3] = [-0.0, np.float32(1e-45), np.inf]
    blobs = encode_rows(packed)
    assert len(blobs) == 50
    back = np.array([decode_row(b, N_FLOATS) for b in blobs])
    assert back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), packed.view(np.uint32))


def test_row_blob_is_header_then_little_endian_float32() -> None:
    packed = np.array([[1.0, -2.5, 3.25]], np.float32)
    (blob,) = encode_rows(packed)
    assert blob[:4] == MAGIC
    assert HEADER.unpack_from(blob) == (MAGIC, VERSION, 3)
    assert blob[HEADER.size :] == struct.pack("<3f", 1.0, -2.5, 3.25)


def good_blob() -> bytes:
    return encode_rows(np.ones((1, N_FLOATS), np.float32))[0]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "shorter than its header"),
        (b"TSR", "shorter than its header"),
        (pickle.dumps(np.ones(N_FLOATS, np.float32)), "not ours"),
        (np.ones(N_FLOATS, "<f4").tobytes(), "not ours"),
        (HEADER.pack(MAGIC, VERSION + 1, N_FLOATS) + bytes(4 * N_FLOATS), "format v2"),
        (HEADER.pack(MAGIC, VERSION, N_FLOATS + 1) + bytes(4 * N_FLOATS + 4), "model needs 6"),
        (good_blob()[:-1], "model needs 6"),
        (good_blob() + b"\0", "model needs 6"),
    ],
)
def test_foreign_or_damaged_row_bytes_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        decode_row(blob, N_FLOATS)


@pytest.mark.parametrize(("price", "ts"), [(123.456789012345, 1767225600123), (0.0, 0),
                                           (5e-324, 2**53)])
def test_last_tick_codec_round_trips_exactly(price: float, ts: int) -> None:
    (blob,) = encode_last(np.array([price]), np.array([ts]))
    assert decode_last(blob) == (price, ts)
    assert decode_last(f"{price!r} {ts}".encode()) == (price, ts)  # earlier versions' text


def test_prediction_codec_round_trips_exactly() -> None:
    written = [Prediction("A", 0.1 + 0.2, float("inf"), 5e-324, 2**53, "1767225600000-12", 7,
                          "v1"), Prediction("BB", -1e-300, 1.0, 2.0, 0, "1-0", 1, "v1")]
    blobs = encode_predictions(written)
    assert [decode_prediction(p.ticker, b, "v1") for p, b in zip(written, blobs, strict=True)
            ] == written
    assert decode_prediction("BB", written[1].to_json().encode(), "v1") == written[1]  # JSON


@pytest.mark.parametrize("text", [b"", b"1.0", b"1.0 2 3", b"abc 5", b"nan 5", b"-1.0 5",
                                  b"1.0 2.5"])
def test_bad_last_tick_is_refused(text: bytes) -> None:
    with pytest.raises(StateError):
        decode_last(text)


def test_stream_ids_order_as_the_stream_does() -> None:
    assert parse_id("1700000000000-10") > parse_id("1700000000000-9")
    assert parse_id("1700000000001-0") > parse_id("1700000000000-99")
    assert parse_id("5") == (5, 0)
    assert format_id(parse_id("1700000000000-10")) == "1700000000000-10"
