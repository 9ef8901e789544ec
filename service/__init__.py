"""Streaming and serving: Redis I/O, registry, snapshots and commits, ingest, HTTP, CLI."""
