"""All settings, from `TICKSTREAM_*` environment variables or the matching CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.shards import Shard, shard_stream, shard_tag

if TYPE_CHECKING:
    from models.online import LearnConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKSTREAM_", env_file=None, extra="ignore",
                                      env_ignore_empty=True)  # VAR= means unset

    # where things are
    redis_url: str | None = Field(None, description="None: start an embedded redis-server")
    data_dir: Path = Field(Path("data"), description="embedded Redis data + default model")
    model_dir: Path | None = Field(None, description="None: train/load the default model")
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      description="model name: Redis keys live under tickstream:{name}:")
    shards: int = Field(
        1, ge=1, le=1024, description="tickers split by CRC32 over this many shards, each "
        "with its own stream (<STREAM>:{s}), state and lease, for several engines and Redis "
        "Cluster; fixed once the state exists")

    # the streams
    stream: str = "ticks"
    dead_stream: str = "ticks:dead"
    predictions_stream: str = "predictions"
    predictions_retention_s: float = Field(
        60.0, ge=0, description="seconds of the predictions stream kept (by entry time), "
        "whatever the batch sizes; 0: bounded by PREDICTIONS_MAXLEN only")
    predictions_maxlen: int = Field(
        100_000, ge=0, description="approximate cap in entries (one per batch); 0 = no stream")
    dead_maxlen: int = Field(100_000, ge=1, description="approximate cap of the dead stream")
    group: str = Field("tickstream", description="consumer group advanced to each snapshot's "
                       "cursor, so XINFO GROUPS shows operators the lag")
    start_from: Literal["begin", "new"] = Field(
        "begin", description="where a new state starts reading: every tick already in the "
        "stream, or only new ones")

    # the ingest loop
    batch_count: int = Field(1000, ge=1, le=100_000, description="max entries per micro-batch")
    block_ms: int = Field(50, ge=1, le=10_000, description="max wait for a micro-batch")
    initial_rows: int = Field(64, ge=1, description="batch rows before the first growth")
    max_tickers: int = Field(10_000, ge=1, description="beyond this, ticks are dead-lettered")
    lease_ttl_s: float = Field(
        10.0, gt=0, le=600, description="one engine per model: a second one stands by until "
        "the first stops or its lease goes this long unrenewed")
    recycle_idle_s: float | None = Field(
        None, gt=0, description="None: never recycle; else rows idle this long may be reused")

    # snapshots and retention: the stream is the log, a snapshot says where to replay from
    snapshot_every_s: float = Field(5.0, gt=0, le=86_400,
                                    description="write a snapshot of the whole state this often")
    snapshot_every_ticks: int = Field(
        200_000, ge=1, description="... or after this many stream entries, whichever is first")
    tick_retention: str = Field(
        "3600", pattern=r"^(none|[0-9]+(\.[0-9]*)?)$",
        description="seconds of the tick stream kept behind the snapshot's cursor (by entry "
        "ID time); 0: trim all the snapshot covers; none: never trim")
    accept_gap: bool = Field(
        False, description="start even if entries after the snapshot were trimmed away")

    # online learning and live evaluation (models/online.py, models/evaluation.py)
    learn: bool = Field(True, description="learn online from each prediction's target as it "
                        "arrives; false: the weights stay as they are")
    learn_window: int = Field(16, ge=1, le=1024,
                              description="ticks per training chunk (truncated BPTT length)")
    learn_batch: int = Field(32, ge=1, le=4096, description="chunks per optimizer step")
    learn_rate: float = Field(1e-3, gt=0, le=1, description="Adam's learning rate")
    learn_clipnorm: float = Field(1.0, gt=0, description="gradients clipped to this global norm")
    learn_max_loss_ratio: float = Field(
        10.0, gt=1, description="an update whose loss exceeds this x the running loss is "
        "skipped (and counted): one bad tick must not blow the weights up")
    eval_halflife: float = Field(100.0, gt=0, description="half-life, in a ticker's ticks, "
                                 "of the exponentially weighted live scores")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(None, description="if set, write routes need Bearer auth")
    read_api_key: SecretStr | None = Field(
        None, description="if set, GET /v1/... need Bearer auth with it (or API_KEY)")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=1 << 30,
                                description="larger request bodies are refused with 413")
    access_log: bool = Field(False, description="a log line per HTTP request (costs each GET "
                             "~10-20% more event-loop time)")

    _shard: int | None = PrivateAttr(None)  # set by for_shard: this copy is one shard's

    def for_shard(self, shard: int) -> Settings:
        """The settings of one shard's engine: its streams and keys carry the shard's tag."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not one of {self.shards}")
        copy = self.model_copy(update={
            name: shard_stream(getattr(self, name), shard)
            for name in ("stream", "dead_stream", "predictions_stream")})
        copy._shard = shard
        return copy

    @property
    def shard(self) -> Shard | None:
        """The one shard these settings run (None: unsharded, or every shard)."""
        return None if self._shard is None else Shard(self._shard, self.shards)

    @field_validator("api_key", "read_api_key")
    @classmethod
    def _key_not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().strip()) < 8:
            raise ValueError("an API key must be at least 8 characters when set")
        return v

    @property
    def recycle_idle_ms(self) -> int | None:
        return None if self.recycle_idle_s is None else round(self.recycle_idle_s * 1000)

    @property
    def learn_config(self) -> LearnConfig:
        from models.online import LearnConfig  # TensorFlow: not for `--help`

        return LearnConfig(self.learn_window, self.learn_batch, self.learn_rate,
                           self.learn_clipnorm, self.learn_max_loss_ratio)

    @property
    def tick_retention_ms(self) -> int | None:
        """None: never trim the tick stream."""
        if self.tick_retention == "none":
            return None
        return round(float(self.tick_retention) * 1000)

    @property
    def key_prefix(self) -> str:
        tag = "" if self._shard is None else f"{shard_tag(self._shard)}:"
        return f"tickstream:{self.name}:{tag}"
