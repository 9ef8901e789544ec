"""Streaming and serving: Redis I/O, the ticker registry, checkpoints, ingest, HTTP, CLI."""
