"""Snapshots: the whole state at a stream position, so recovery replays only what follows.

The tick stream is the log; a snapshot says where in it the state stands. One is written
every SNAPSHOT_EVERY_S (or SNAPSHOT_EVERY_TICKS) and at a clean stop, as a new generation
hash written in pieces (no single command stalls Redis at N=10,000), expiring on its own
unless switched in. The switch is one fenced Lua call: it makes the generation current,
drops the previous one, advances the consumer group to the cursor (so XINFO GROUPS shows
operators the lag) and trims the tick stream behind the cursor (TICK_RETENTION).

A generation (format `tickstream.snapshot.v2`, every number little-endian):
  header   JSON: format, model_version, cursor, entries_read, tickers (k), row_floats (S),
           pieces, arrays ([name, dtype, shape, pieces] each), sha256 (of every other
           field's bytes, in the order listed here), taken_at_ms
  tickers  the k tickers in row order, joined by "\\n" (row i is line i)
  last     k x float64 last price, then k x int64 last ts (epoch ms); price 0: no tick yet
  steps    k x int64 ticks applied to each row
  rows:<j> piece j of the (k, S) float32 matrix of h_0, c_0, h_1, c_1, ... per row
  array:<name>:<j>  piece j of a named array, C order, of the dtype the header names:
           the learner's weights, optimizer and chunk state (`learn.*`), the live scores
           (`eval.*`); see models/online.py and models/evaluation.py
A v1 generation (no arrays) is still read: it holds no learning or scores yet.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import redis

from service.commit import raise_if_lease_lost
from service.layout import Layout
from service.records import StateError, parse_id
from service.types import StreamId

FORMAT = "tickstream.snapshot.v2"
READABLE = (FORMAT, "tickstream.snapshot.v1")
ARRAY_DTYPES = {"<f4", "<f8", "<i8", "|b1"}  # all a snapshot needs; nothing that holds objects
PIECE_BYTES = 1 << 20  # per HSET: Redis copies ~1 MB in well under a millisecond
PENDING_TTL_MS = 600_000  # a generation never switched in (its writer died) goes away

# KEYS: owner, snapshot pointer, new generation, current generation (expected), model key,
#       tick stream
# ARGV: token, generation name, cursor, entries_read ('' unknown), model_version, group,
#       trim MINID ('' no trim), '1' if XGROUP SETID takes ENTRIESREAD, expected current name
SWITCH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASELOST ' .. KEYS[1] .. ' is held by another engine')
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('snapshot generation ' .. KEYS[3] .. ' is incomplete or expired')
end
local current = redis.call('HGET', KEYS[2], 'generation') or ''
if current ~= ARGV[9] then
  return redis.error_reply('snapshot pointer moved to ' .. current .. ' meanwhile')
end
-- first a write Redis may refuse (maxmemory): refused, the switch writes nothing
redis.call('HSET', KEYS[2], 'generation', ARGV[2], 'cursor', ARGV[3], 'entries_read', ARGV[4])
redis.call('PERSIST', KEYS[3])
redis.call('SET', KEYS[5], ARGV[5])
if current ~= '' and current ~= ARGV[2] then redis.call('UNLINK', KEYS[4]) end
local moved
if ARGV[8] == '1' and ARGV[4] ~= '' then
  moved = redis.pcall('XGROUP', 'SETID', KEYS[6], ARGV[6], ARGV[3], 'ENTRIESREAD', ARGV[4])
else
  moved = redis.pcall('XGROUP', 'SETID', KEYS[6], ARGV[6], ARGV[3])
end
if type(moved) == 'table' and moved.err then
  redis.pcall('XGROUP', 'CREATE', KEYS[6], ARGV[6], ARGV[3], 'MKSTREAM')
end
if ARGV[7] ~= '' then redis.call('XTRIM', KEYS[6], 'MINID', ARGV[7]) end
return 1
"""


@dataclass(frozen=True)
class SnapshotData:
    """The state after stream entry `cursor`: rows in registry order (row i = tickers[i])."""

    model_version: str
    cursor: StreamId | None  # None: before the first entry
    entries_read: int | None  # stream entries ever added up to the cursor (None: unknown)
    tickers: list[str]
    rows: np.ndarray  # (k, S) float32
    last_price: np.ndarray  # (k,) float64
    last_ts: np.ndarray  # (k,) int64
    steps: np.ndarray  # (k,) int64
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)  # learner and scores


@dataclass(frozen=True)
class Written:
    generation: str
    cursor: StreamId | None
    size_bytes: int
    seconds: float
    at: float  # time.time() of the switch


def encode(data: SnapshotData) -> dict[str, bytes]:
    """The generation's fields, header last (it holds the digest of the rest)."""
    k, s = data.rows.shape
    if not (len(data.tickers) == k == len(data.last_price) == len(data.last_ts)
            == len(data.steps)):
        raise ValueError(f"snapshot of {len(data.tickers)} tickers has {k} rows")
    body = np.ascontiguousarray(data.rows, "<f4").tobytes()
    per_piece = max(1, PIECE_BYTES // max(1, 4 * s))  # whole rows per piece
    width = 4 * s * per_piece
    fields = {
        "tickers": "\n".join(data.tickers).encode(),
        "last": (np.asarray(data.last_price, "<f8").tobytes()
                 + np.asarray(data.last_ts, "<i8").tobytes()),
        "steps": np.asarray(data.steps, "<i8").tobytes(),
    }
    n_pieces = _put_pieces(fields, "rows", body, width)
    arrays = []
    for name, value in data.arrays.items():
        a = np.asarray(value, value.dtype.newbyteorder("<"), order="C")
        if a.dtype.str not in ARRAY_DTYPES:
            raise ValueError(f"snapshot array {name} has dtype {a.dtype}")
        arrays.append([name, a.dtype.str, list(a.shape),
                       _put_pieces(fields, f"array:{name}", a.tobytes(), PIECE_BYTES)])
    header = {"format": FORMAT, "model_version": data.model_version, "cursor": data.cursor,
              "entries_read": data.entries_read, "tickers": k, "row_floats": s,
              "pieces": n_pieces, "arrays": arrays, "sha256": _digest(fields),
              "taken_at_ms": round(time.time() * 1000)}
    return {**fields, "header": json.dumps(header).encode()}


def _put_pieces(fields: dict[str, bytes], prefix: str, body: bytes, width: int) -> int:
    """`body` as fields prefix:0, prefix:1, ... of at most `width` bytes; returns how many."""
    n = -(-len(body) // width) if body else 0
    for j in range(n):
        fields[f"{prefix}:{j}"] = body[j * width : (j + 1) * width]
    return n


def _digest(fields: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for value in fields.values():
        h.update(value)
    return h.hexdigest()


def decode(raw: Mapping[bytes, bytes], row_floats: int, model_version: str,
           where: str) -> SnapshotData:
    """A generation's fields -> SnapshotData, refusing what this model must not resume."""
    try:
        header = json.loads(raw[b"header"])
        if header.get("format") not in READABLE:
            raise StateError(f"snapshot {where} is {header.get('format')!r}; this code "
                             f"reads {', '.join(READABLE)}")
        if header["model_version"] != model_version:
            raise StateError(
                f"the state in {where} was written by model {header['model_version']}, this is "
                f"{model_version}: pick another TICKSTREAM_NAME or delete those keys to start "
                "this model fresh")
        k, s = int(header["tickers"]), int(header["row_floats"])
        fields = {"tickers": raw[b"tickers"], "last": raw[b"last"], "steps": raw[b"steps"]}
        for j in range(int(header["pieces"])):
            fields[f"rows:{j}"] = raw[f"rows:{j}".encode()]
        listed = header.get("arrays", [])
        for name, dtype, _, pieces in listed:
            if dtype not in ARRAY_DTYPES:
                raise ValueError(f"array {name} has dtype {dtype}")
            for j in range(int(pieces)):
                fields[f"array:{name}:{j}"] = raw[f"array:{name}:{j}".encode()]
    except (KeyError, ValueError, TypeError) as e:
        raise StateError(f"snapshot {where} is damaged: {type(e).__name__}: {e}") from None
    if _digest(fields) != header["sha256"]:
        raise StateError(f"snapshot {where} does not match its sha256: damaged")
    if s != row_floats:
        raise StateError(f"snapshot {where} holds {s} floats per row; the model needs "
                         f"{row_floats} (a model with other units wrote it?)")
    tickers = fields["tickers"].decode().split("\n") if k else []
    body = b"".join(fields[f"rows:{j}"] for j in range(int(header["pieces"])))
    if len(tickers) != k or len(body) != 4 * k * s or len(fields["last"]) != 16 * k:
        raise StateError(f"snapshot {where}: sizes do not match its {k} tickers")
    arrays = {}
    for name, dtype, shape, pieces in listed:
        blob = b"".join(fields[f"array:{name}:{j}"] for j in range(int(pieces)))
        try:
            arrays[name] = np.frombuffer(blob, dtype).reshape(shape).astype(dtype[1:])
        except ValueError as e:
            raise StateError(f"snapshot {where}: array {name}: {e}") from None
    return SnapshotData(
        model_version=model_version, cursor=header["cursor"],
        entries_read=header["entries_read"], tickers=tickers,
        rows=np.frombuffer(body, "<f4").reshape(k, s).astype(np.float32),
        last_price=np.frombuffer(fields["last"], "<f8", k).astype(np.float64),
        last_ts=np.frombuffer(fields["last"], "<i8", k, 8 * k).astype(np.int64),
        steps=np.frombuffer(fields["steps"], "<i8").astype(np.int64), arrays=arrays)


def trim_minid(cursor: StreamId | None, retention_ms: int | None) -> str | None:
    """XTRIM MINID that keeps `retention_ms` of stream behind `cursor`, never past it."""
    if retention_ms is None or cursor is None:
        return None
    ms, seq = parse_id(cursor)
    if retention_ms == 0:
        return f"{ms}-{seq + 1}"  # everything up to and including the cursor
    return f"{max(0, ms - retention_ms)}-0"


class SnapshotStore:
    """Reads the current generation; writes a new one and switches to it, fenced."""

    def __init__(self, client: redis.Redis, layout: Layout, token: bytes,
                 retention_ms: int | None) -> None:
        self.client = client
        self.layout = layout
        self.token = token
        self.retention_ms = retention_ms
        self._switch_sha = ""
        self.setid_entries_read = False  # Redis >= 7: XGROUP SETID ... ENTRIESREAD

    def load_scripts(self) -> None:
        """After every (re)connect: a restarted Redis has forgotten them."""
        self._switch_sha = self.client.script_load(SWITCH_LUA)
        version = self.client.info("server")["redis_version"]
        self.setid_entries_read = int(str(version).split(".")[0]) >= 7

    def current(self) -> str | None:
        name = self.client.hget(self.layout.snapshot, "generation")
        return name.decode() if name else None

    def load(self, row_floats: int, model_version: str) -> SnapshotData | None:
        """The current snapshot; None if there is none yet."""
        name = self.current()
        if name is None:
            return None
        key = self.layout.generation(name)
        raw = self.client.hgetall(key)
        if not raw:
            raise StateError(f"the snapshot pointer {self.layout.snapshot} names {key}, "
                             "which is gone: restore that key or delete the pointer")
        return decode(raw, row_floats, model_version, key)

    def write(self, data: SnapshotData) -> Written:
        """Write `data` as a new generation in pieces, then switch to it (fenced)."""
        t0 = time.perf_counter()
        fields = encode(data)
        name = f"{data.cursor or '0-0'}.{uuid.uuid4().hex[:8]}"
        key = self.layout.generation(name)
        pipe = self.client.pipeline(transaction=False)
        for i, (f, value) in enumerate(fields.items()):
            pipe.hset(key, f, value)
            if i == 0:
                pipe.pexpire(key, PENDING_TTL_MS)
        pipe.execute()
        current = self.current() or ""
        minid = trim_minid(data.cursor, self.retention_ms)
        lay = self.layout
        try:
            self.client.evalsha(
                self._switch_sha, 6, lay.owner, lay.snapshot, key,
                lay.generation(current) if current else key, lay.model, lay.stream,
                self.token, name, data.cursor or "0-0",
                "" if data.entries_read is None else data.entries_read, data.model_version,
                lay.group, minid or "", "1" if self.setid_entries_read else "0", current)
        except redis.ResponseError as e:
            self.client.delete(key)
            raise_if_lease_lost(e)
            raise
        return Written(name, data.cursor, sum(map(len, fields.values())),
                       time.perf_counter() - t0, time.time())


class SnapshotWriter:
    """Writes snapshots on a thread of its own, one at a time, so the loop never waits."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tickstream-snapshot")
        self._pending: Future[Written] | None = None
        self.last: Written | None = None
        self.written = 0
        self.failed = 0

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def submit(self, data: SnapshotData) -> None:
        self._pending = self._pool.submit(self.store.write, data)

    def collect(self, wait: bool = False) -> None:
        """Note the outcome of the write in progress; raises LeaseLost and Redis errors."""
        pending = self._pending
        if pending is None or not (wait or pending.done()):
            return
        self._pending = None
        try:
            self.last = pending.result()
            self.written += 1
        except Exception:
            self.failed += 1
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
