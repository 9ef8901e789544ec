"""`tickstream serve | train | feed | replay | export | status | bench`: the commands a user
types.

Heavy imports (TensorFlow, the app) happen inside the commands that need them, so
`--help` and input errors answer at once.
"""

from __future__ import annotations

import logging
import threading
import typing
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import redis
import typer

from service import cli_learning
from service.cli_common import (
    connect,
    int_list,
    load_settings,
    on_signals,
    raise_exit,
    read_ticks_csv,
    with_settings_flags,
)
from service.config import Settings
from service.shards import Routing

if typing.TYPE_CHECKING:
    from models.artifact import Artifact

app = typer.Typer(
    help="Online multi-stock streaming predictor: one stateful LSTM, one batch row per ticker.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals would print the API key
    add_completion=False,
)
bench_app = typer.Typer(help="Measure what the design rests on.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")



# ---- serve


def _where(settings: Settings, embedded: bool) -> str:
    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    redis_line = (f"embedded at {settings.redis_url} (data in {settings.data_dir / 'redis'})"
                  if embedded else "as configured (TICKSTREAM_REDIS_URL / --redis-url)")
    return "\n".join([
        f"tickstream: model {settings.model_dir}; Redis {redis_line}",
        f"  dashboard    {base}/",
        f"  API docs     {base}/docs",
        f"  predictions  {base}/v1/predictions",
        f"  readiness    {base}/readyz   (answers once the model is loaded)",
    ])  # fmt: skip


def _start_feeder(settings: Settings, tickers: int, rate: float, stack: ExitStack) -> None:
    """A synthetic producer thread, so one command shows predictions moving."""
    from service.feed import feed_synthetic

    stop = threading.Event()
    client = connect(str(settings.redis_url))

    def run() -> None:
        try:
            feed_synthetic(client, Routing(settings.stream, settings.shards), tickers, rate,
                           stop=stop,
                           echo=lambda line: typer.echo(f"feed: {line}"), every_s=60.0)
        except redis.RedisError as e:
            typer.echo(f"feed: stopped, Redis error: {e}", err=True)

    thread = threading.Thread(target=run, name="tickstream-feed", daemon=True)
    thread.start()
    stack.callback(client.close)
    stack.callback(thread.join, 5.0)
    stack.callback(stop.set)


def _log_to_stderr() -> None:
    """The service's own lines (restore, replay progress, snapshots, errors) on stderr,
    beside uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _preflight(settings: Settings, artifact: Artifact) -> None:
    """Fail before uvicorn starts, with a message instead of a lifespan traceback, when
    Redis is unreachable or holds state another model wrote."""
    from service.layout import Layout
    from service.migrate import has_legacy_state, load_legacy
    from service.records import StateError
    from service.sharded import check_topology
    from service.shards import check_shard_count
    from service.snapshots import SnapshotStore

    client = connect(str(settings.redis_url))
    shards = [settings] if settings.shards == 1 else [
        settings.for_shard(s) for s in range(settings.shards)]
    row_floats, version = artifact.stepper(1).row_state_size, artifact.meta.model_version
    try:
        check_topology(settings, isinstance(client, redis.RedisCluster))
        if settings.shards > 1:
            unsharded = Layout.from_settings(settings)
            check_shard_count(client, settings.name, settings.shards,
                              [unsharded.snapshot, unsharded.output_cursor])
        for layout in map(Layout.from_settings, shards):
            written_by = client.get(layout.model)
            if written_by is not None and written_by.decode() != version:
                raise StateError(f"the state under {layout.prefix} was written by model "
                                 f"{written_by.decode()}, this is {version}: pick another "
                                 "TICKSTREAM_NAME or delete those keys to start this model "
                                 "fresh")
        layout = Layout.from_settings(settings)
        if settings.shards == 1 and has_legacy_state(client, layout) and SnapshotStore(
                client, layout, b"", None).load(row_floats, version) is None:
            load_legacy(client, layout, row_floats, version)
    except (StateError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--name / --model-dir / --shards") from None
    finally:
        client.close()


@app.command()
@with_settings_flags
def serve(
    synthetic_feed: Annotated[bool, typer.Option(
        help="also feed a synthetic market into the stream")] = False,
    feed_tickers: Annotated[int, typer.Option(min=1, help="with --synthetic-feed")] = 20,
    feed_rate: Annotated[float, typer.Option(min=0.001, help="ticks/s, with --synthetic-feed")
                         ] = 40.0,
    **flags: Any,
) -> None:
    """Serve predictions over HTTP while stepping the model on the tick stream.

    No Redis URL: start an embedded redis-server (AOF on, data under DATA_DIR/redis).
    No model dir: use DATA_DIR/model, training a small synthetic model there the first time.
    """
    settings = load_settings(**flags)
    _log_to_stderr()

    import uvicorn

    from models.quiet import native_noise_filtered

    with native_noise_filtered():  # TensorFlow's C++ start-up lines
        from models.artifact import ArtifactError, load_artifact
        from models.online import make_deterministic
        from models.train import ensure_default_model
        from service.app import create_app
        from service.embedded_redis import EmbeddedRedis

        make_deterministic()  # before TensorFlow's first op: the learner's thread counts

    with ExitStack() as stack:
        stack.enter_context(on_signals(raise_exit))  # uvicorn re-raises what stopped it
        embedded = settings.redis_url is None
        if embedded:
            try:
                server = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis"))
            except (OSError, RuntimeError) as e:
                typer.echo(f"cannot start the embedded Redis: {e}", err=True)
                raise typer.Exit(1) from None
            settings = settings.model_copy(update={"redis_url": server.url})
        if settings.model_dir is None:
            with native_noise_filtered():
                model_dir = ensure_default_model(settings.data_dir / "model")
            settings = settings.model_copy(update={"model_dir": model_dir})
        try:
            with native_noise_filtered():  # the first device query: cuInit on a CPU machine
                artifact = load_artifact(Path(settings.model_dir))
        except ArtifactError as e:
            raise typer.BadParameter(str(e), param_hint="--model-dir") from None
        _preflight(settings, artifact)
        if synthetic_feed:
            _start_feeder(settings, feed_tickers, feed_rate, stack)
        typer.echo(_where(settings, embedded))
        uvicorn.run(create_app(settings, artifact), host=settings.host, port=settings.port,
                    access_log=settings.access_log)


# ---- train


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="artifact directory to write")],
    csv: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="ticks as ticker,ts,price[,volume] with a header")
    ] = None,
    synthetic: Annotated[bool, typer.Option(help="train on the synthetic market")] = False,
    tickers: Annotated[int, typer.Option(min=1, help="with --synthetic")] = 20,
    ticks_per_ticker: Annotated[int, typer.Option(min=2, help="with --synthetic")] = 400,
    seed: Annotated[int, typer.Option(help="market and weight-init seed")] = 0,
    regime_every: Annotated[int | None, typer.Option(
        min=1, metavar="TICKS", help="with --synthetic: every TICKS ticks (all tickers) the "
        "market changes regime: new AR(1) coefficients, sign flipped, and volatilities; "
        "default: never")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="default: TrainConfig's")] = None,
    units: Annotated[list[str] | None, typer.Option(
        help="units per LSTM layer: --units 32 --units 16 or --units 32,16; "
             "default: TrainConfig's")] = None,
    look_back: Annotated[int | None, typer.Option(
        min=1, help="steps per training window; default: TrainConfig's")] = None,
) -> None:
    """Train a model on a CSV or the synthetic market and save it as an artifact."""
    if (csv is None) == (not synthetic):
        raise typer.BadParameter("give exactly one of --csv FILE or --synthetic",
                                 param_hint="--csv / --synthetic")
    config_kwargs: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        config_kwargs["epochs"] = epochs
    if units:
        config_kwargs["units"] = tuple(int_list(units, "--units"))
    if look_back is not None:
        config_kwargs["look_back"] = look_back

    from models.train import TrainConfig, synthetic_ticks
    from models.train import train as fit

    if csv is not None:
        ticks, source = read_ticks_csv(csv), f"csv {csv}"
    else:
        ticks = synthetic_ticks(tickers, ticks_per_ticker, seed, regime_every)
        source = f"synthetic tickers={tickers} seed={seed}" + (
            "" if regime_every is None else f" regime_every={regime_every}")

    try:
        artifact, _ = fit(ticks, TrainConfig(**config_kwargs), out, verbose=2, source=source)
    except ValueError as e:
        typer.echo(f"cannot train: {e}", err=True)
        raise typer.Exit(2) from None
    meta = artifact.meta
    typer.echo(f"saved {out} (model_version {meta.model_version})")
    if "val_rmse" in meta.training:
        typer.echo(f"validation RMSE {meta.training['val_rmse']:.6g} "
                   f"vs {meta.training['val_zero_rmse']:.6g} for always predicting 0")


# ---- feed


@app.command()
def feed(
    synthetic: Annotated[bool, typer.Option(help="a live synthetic market")] = False,
    csv: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="replay ticker,ts,price[,volume] in ts order")
    ] = None,
    tickers: Annotated[int, typer.Option(min=1, help="with --synthetic")] = 20,
    rate: Annotated[float, typer.Option(
        min=0, help="ticks/s in all, with --synthetic; 0 = as fast as possible")] = 40.0,
    count: Annotated[int | None, typer.Option(
        min=1, help="with --synthetic: stop after this many; default: never")] = None,
    seed: Annotated[int, typer.Option(help="with --synthetic")] = 0,
    regime_every: Annotated[int | None, typer.Option(
        min=1, metavar="TICKS", help="with --synthetic: every TICKS ticks (all tickers) the "
        "market changes regime: new AR(1) coefficients, sign flipped, and volatilities; "
        "default: never")
    ] = None,
    speed: Annotated[float, typer.Option(
        min=0, help="with --csv: times real time; 0 = as fast as possible")] = 1.0,
    redis_url: Annotated[str | None, typer.Option(
        help="default: TICKSTREAM_REDIS_URL; `serve` prints its embedded Redis URL")
    ] = None,
    stream: Annotated[str | None, typer.Option(
        help="default: TICKSTREAM_STREAM, else ticks")] = None,
    shards: Annotated[int | None, typer.Option(
        min=1, help="default: TICKSTREAM_SHARDS, else 1; above 1 each tick goes to its "
        "ticker's shard stream, STREAM:{CRC32(ticker) mod SHARDS}")] = None,
) -> None:
    """Write ticks into the stream: a synthetic market (paced) or a CSV replay.

    Synthetic ticks carry no ts, so the stream ID's time is their time.
    Replayed ticks keep their CSV ts: a second replay of a file is dead-lettered.
    """
    if synthetic == (csv is not None):
        raise typer.BadParameter("give exactly one of --synthetic or --csv FILE",
                                 param_hint="--synthetic / --csv")
    settings = load_settings(redis_url=redis_url, stream=stream, shards=shards)
    route = Routing(settings.stream, settings.shards)
    if settings.redis_url is None:
        raise typer.BadParameter("no Redis to write to: pass --redis-url or set "
                                 "TICKSTREAM_REDIS_URL", param_hint="--redis-url")

    from service.feed import feed_replay, feed_synthetic

    table = None if csv is None else read_ticks_csv(csv)
    stop = threading.Event()
    with connect(settings.redis_url) as client, on_signals(stop.set):
        try:
            if table is not None:
                feed_replay(client, route, table, speed, stop, typer.echo, str(csv))
            else:
                feed_synthetic(client, route, tickers, rate, count, seed, stop,
                               typer.echo, regime_every=regime_every)
        except redis.RedisError as e:
            typer.echo(f"Redis error, feed stopped: {e}", err=True)
            raise typer.Exit(1) from None



# ---- replay and export (service/cli_learning.py), listed after feed

app.command()(cli_learning.replay)
app.command()(cli_learning.export)


# ---- status


@app.command()
def status(
    url: Annotated[str | None, typer.Option(
        help="the service; default: http://TICKSTREAM_HOST:TICKSTREAM_PORT")] = None,
) -> None:
    """A one-screen summary of a running service: ready, ticks/s, lag, tickers, model."""
    import httpx

    from service.status import summary

    settings = load_settings()
    url = url or f"http://{settings.host}:{settings.port}"
    key = settings.read_api_key or settings.api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        typer.echo("\n".join(summary(url, headers)))
    except (httpx.HTTPError, ValueError, KeyError) as e:
        typer.echo(f"no tickstream answering at {url}: {e}", err=True)
        raise typer.Exit(1) from None


# ---- bench


@bench_app.command("step")
def bench_step(
    sizes: Annotated[list[str], typer.Option(help="batch sizes N (tickers)")] = ["10,100,500,2000"],  # noqa: B006
    units: Annotated[int, typer.Option(min=1, help="LSTM units H")] = 64,
    steps: Annotated[list[str], typer.Option(help="ticks per row per call T")] = ["1,4,16"],  # noqa: B006
    repeats: Annotated[int, typer.Option(min=1, help="timed runs per figure")] = 5,
    predict_sample: Annotated[int, typer.Option(min=1, help="Keras calls timed")] = 20,
    skew: Annotated[bool, typer.Option(
        help="instead: step_ticks on 1,000-tick batches of each traffic shape")] = False,
) -> None:
    """One online step of the numpy stepper vs Keras predict/eager, as a Markdown table."""
    from bench.step import format_skew_table, format_table, run_skew_bench, run_step_bench

    def progress(message: str) -> None:
        typer.echo(message, err=True)

    if skew:
        typer.echo(format_skew_table(run_skew_bench(units=units, repeats=repeats,
                                                    progress=progress)))
        return
    rows = run_step_bench(int_list(sizes, "--sizes"), units, int_list(steps, "--steps"),
                          repeats, predict_sample, progress=progress)
    typer.echo(format_table(rows))


@bench_app.command("e2e")
def bench_e2e(
    quick: Annotated[bool, typer.Option(help="smoke test: every scenario, small, < 2 min")] = False,
) -> None:
    """Drain, naive loop, latency, HTTP and memory against private servers (BENCHMARKS.md)."""
    from bench.e2e import main as run_e2e

    run_e2e(quick=quick)
