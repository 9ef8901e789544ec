"""Every Redis key and stream the engine reads or writes, named once.

Keys live under `tickstream:{name}:` (docs/architecture.md has the full table):
  owner            str   the lease: which engine may write (service/lease.py)
  model            str   model_version of the state: other weights must not resume it
  snapshot         hash  the current snapshot: generation (a key), cursor, entries_read
  snapshot:<gen>   hash  one snapshot generation, written in pieces (service/snapshots.py)
  output_cursor    str   the last tick stream ID whose outputs are written
  predictions      hash  ticker -> its latest prediction record (service/records.py)
The streams are the settings' names (`ticks`, `ticks:dead`, `predictions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings

LEGACY_FIELDS = ("rows", "state", "last", "cursor")  # per-batch checkpoint, before snapshots


@dataclass(frozen=True)
class Layout:
    prefix: str
    stream: str
    dead_stream: str
    predictions_stream: str
    predictions_maxlen: int  # 0: no predictions stream
    predictions_retention_ms: int  # 0: no time bound
    dead_maxlen: int
    group: str

    @classmethod
    def from_settings(cls, s: Settings) -> Layout:
        return cls(s.key_prefix, s.stream, s.dead_stream, s.predictions_stream,
                   s.predictions_maxlen, round(s.predictions_retention_s * 1000),
                   s.dead_maxlen, s.group)

    @property
    def owner(self) -> str:
        return f"{self.prefix}owner"

    @property
    def model(self) -> str:
        return f"{self.prefix}model"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}snapshot"

    def generation(self, name: str) -> str:
        return f"{self.prefix}snapshot:{name}"

    @property
    def output_cursor(self) -> str:
        return f"{self.prefix}output_cursor"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}predictions"

    def legacy(self, name: str) -> str:
        """A key of the per-batch checkpoint layout (rows, state, last, cursor)."""
        if name not in LEGACY_FIELDS:
            raise KeyError(name)
        return f"{self.prefix}{name}"
