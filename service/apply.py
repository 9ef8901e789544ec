"""Applying a run of stream entries to the state, in stream order: the loop's one job that
knows nothing of Redis, shared by the live engine and the offline replay.

Ticks between control entries are admitted and stepped as one run; a control entry (e.g.
a reset) takes effect exactly between the ticks before and after it in the stream, so the
state after any entry is the same however the stream was cut into batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from models.artifact import Artifact
from service.admit import admit
from service.commit import DeadLetter, Outputs
from service.entries import Parsed, RawEntry, TickerCache, fields_of
from service.state import RowState


def apply_entries(state: RowState, artifact: Artifact, names: TickerCache,
                  entries: Sequence[RawEntry], parsed: Parsed,
                  publish: bool) -> tuple[Outputs, float]:
    """The outputs of `entries` (parsed already) and the seconds spent stepping."""
    if not parsed.controls:
        return _apply_ticks(state, artifact, names, entries, parsed, publish)
    outputs, step_s, start = Outputs(), 0.0, 0
    for i, control in [*parsed.controls, (len(entries), None)]:
        if i > start:
            o, s = _apply_ticks(state, artifact, names, entries[start:i], None, publish)
            outputs.merge(o)
            step_s += s
        if control is not None:
            row = state.registry.row(control.ticker)
            if row is not None:  # an unknown ticker has no memory to reset
                state.reset_memory(row)
        start = i + 1
    return outputs, step_s


def _apply_ticks(state: RowState, artifact: Artifact, names: TickerCache,
                 entries: Sequence[RawEntry], parsed: Parsed | None,
                 publish: bool) -> tuple[Outputs, float]:
    """One run of ticks without control entries: admit, step, outputs."""
    b = admit(entries, parsed, state, names)
    t0 = time.perf_counter()
    o = state.step(b, artifact, publish) if len(b.rows) else Outputs()
    o.applied = len(b.rows)
    o.evicted = b.evicted
    o.dead = [DeadLetter(fields_of(entries[i][1]), reason, entries[i][0].decode())
              for i, reason in b.dead]
    return o, time.perf_counter() - t0
