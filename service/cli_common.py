"""What every command shares: settings as flags (one --flag per Settings field), signals,
Redis connections and tick CSVs, with errors a person can act on."""

from __future__ import annotations

import inspect
import signal
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, UnionType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import typer
from pydantic import SecretStr, ValidationError

from service import topology
from service.config import Settings
from service.topology import AnyRedis

if typing.TYPE_CHECKING:
    from models.ticks import TickTable

SETTINGS_PANEL = "Settings (each also an env var TICKSTREAM_<NAME>)"
LEARNING_PANEL = "Online learning and live scores (env vars TICKSTREAM_<NAME> too)"
SWITCHES = {"learn"}  # settings spelled --x / --no-x (the other booleans take true/false)


# ---- Settings as flags: one --flag per field, so a new field is a new flag for free


def _flag_type(annotation: Any) -> Any:
    """The type typer parses a field's flag as: `X | None` -> X, a secret -> plain text."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return str if annotation is SecretStr else annotation


def _settings_params() -> list[inspect.Parameter]:
    params = []
    for name, field in Settings.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if name in SWITCHES:
            flag = f"{flag}/--no-{flag[2:]}"
        option = typer.Option(None, flag, help=field.description or "",
                              show_default=False if field.default is None else str(field.default),
                              rich_help_panel=LEARNING_PANEL
                              if name.startswith(("learn", "eval")) else SETTINGS_PANEL)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=_flag_type(field.annotation) | None))
    return params


def with_settings_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command(..., **flags)` one option per Settings field (None: not given)."""
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    command.__signature__ = sig.replace(parameters=own + _settings_params())  # type: ignore[attr-defined]
    return command


def load_settings(**flags: Any) -> Settings:
    """Flags given on the command line win over env vars, which win over defaults."""
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(
            f"--{str(err['loc'][0]).replace('_', '-')} (or TICKSTREAM_{str(err['loc'][0]).upper()})"
            f": {err['msg']}" for err in e.errors()
        )
        raise typer.BadParameter(problems) from None


@contextmanager
def on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call `stop` instead of killing the process, so cleanups still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def raise_exit() -> None:
    raise typer.Exit(0)


def redacted(url: str) -> str:
    """The URL fit to print: a password in it becomes ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> AnyRedis:
    """A client for one Redis or a Redis Cluster, by what `url` answers. No automatic
    retries: a resent XADD pipeline whose reply was lost writes twice."""
    try:
        client = topology.client(url, topology.is_cluster(url), socket_connect_timeout=3.0)
        client.ping()
    except redis.RedisError as e:
        typer.echo(f"cannot reach Redis at {redacted(url)}: {e}", err=True)
        raise typer.Exit(1) from None
    return client


def read_ticks_csv(path: Path) -> TickTable:
    """The file's valid ticks in ts order, saying what was skipped; BadParameter if none."""
    from models.ticks import read_csv

    try:
        table, skipped = read_csv(path)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--csv") from None
    if skipped:
        typer.echo(f"{path}: skipped invalid rows {skipped}")
    return table


def int_list(values: list[str], flag: str) -> list[int]:
    """`--x 1 --x 2` and `--x 1,2` alike; every item a positive integer."""
    try:
        out = [int(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise typer.BadParameter(f"{values} must be positive integers, e.g. 32,32",
                                 param_hint=flag)
    return out


