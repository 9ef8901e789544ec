"""`tickstream replay` and `tickstream export`: the service's loop offline, and the weights
the stream taught as an artifact. Registered on the app by service/cli.py."""

from __future__ import annotations

import sys
import typing
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from service.config import Settings

if typing.TYPE_CHECKING:
    from models.artifact import Artifact

from service.cli_common import connect, load_settings, read_ticks_csv, with_settings_flags


def _artifact(settings: Settings) -> Artifact:
    """The artifact `serve` would use (MODEL_DIR, else the default under DATA_DIR), with
    TensorFlow made deterministic first: the learner's weights must not depend on threads."""
    from models.online import make_deterministic
    from models.quiet import native_noise_filtered

    with native_noise_filtered():
        from models.artifact import ArtifactError, load_artifact
        from models.train import ensure_default_model

        make_deterministic()
        model_dir = settings.model_dir or ensure_default_model(settings.data_dir / "model")
        try:
            return load_artifact(Path(model_dir))
        except ArtifactError as e:
            raise typer.BadParameter(str(e), param_hint="--model-dir") from None


SHARD_OPTION = typer.Option(
    min=0, help="with SHARDS > 1: the shard to read (0 .. SHARDS-1), each has its own stream "
    "and weights")


def _one_shard(settings: Settings, shard: int | None) -> Settings:
    """The settings of the shard the command reads from Redis (unsharded: as they are)."""
    if settings.shards == 1:
        if shard not in (None, 0):
            raise typer.BadParameter("SHARDS is 1: there is no other shard", param_hint="--shard")
        return settings
    if shard is None or shard >= settings.shards:
        raise typer.BadParameter(f"SHARDS={settings.shards}: each shard has its own stream and "
                                 f"weights; pick one with --shard 0..{settings.shards - 1}",
                                 param_hint="--shard")
    return settings.for_shard(shard)


def _need_redis(settings: Settings) -> str:
    if settings.redis_url is None:
        raise typer.BadParameter("no Redis to read from: pass --redis-url or set "
                                 "TICKSTREAM_REDIS_URL (`serve` prints its embedded Redis URL)",
                                 param_hint="--redis-url")
    return settings.redis_url


@with_settings_flags
def replay(
    out: Annotated[Path, typer.Option(help="CSV of every prediction: ticker, stream_id, as_of, "
                                      "last_price, prediction, realised, model_version")],
    csv: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="ticks from ticker,ts,price[,volume]")] = None,
    from_redis: Annotated[bool, typer.Option(
        "--from-redis",
        help="ticks from the stream in Redis (STREAM at REDIS_URL), from its first entry")
    ] = False,
    state_out: Annotated[Path | None, typer.Option(
        help="also write the end state (rows, learner, scores) as an .npz of plain arrays")
    ] = None,
    shard: Annotated[int | None, SHARD_OPTION] = None,
    **flags: Any,
) -> None:
    """Run the service's loop offline over a tick table, writing to no Redis.

    Every prediction with its realised return goes to OUT, a quality summary to OUT's stem
    + .summary.json. The same settings as `serve` (--learn/--no-learn, --learn-window, ...).
    """
    import json

    import numpy as np

    from service.replay import csv_entries, redis_entries, replay, state_arrays

    if (csv is None) == (not from_redis):
        raise typer.BadParameter("give exactly one of --csv FILE or --from-redis",
                                 param_hint="--csv / --from-redis")
    settings = load_settings(**flags)
    if from_redis:
        settings = _one_shard(settings, shard)
    url = _need_redis(settings) if from_redis else None
    table = None if csv is None else read_ticks_csv(csv)
    artifact = _artifact(settings)
    with ExitStack() as stack:
        if table is not None:
            total, batches = len(table), csv_entries(table, settings.batch_count)
        else:
            client = stack.enter_context(connect(str(url)))
            total = client.xlen(settings.stream)
            batches = redis_entries(client, settings.stream, settings.batch_count)
        out.parent.mkdir(parents=True, exist_ok=True)
        f = stack.enter_context(open(out, "w", newline=""))
        bar = stack.enter_context(typer.progressbar(length=total, label="replaying",
                                                    file=sys.stderr))
        state, result = replay(artifact, settings, batches, f, bar.update)
    summary_path = out.with_name(out.stem + ".summary.json")
    summary_path.write_text(json.dumps(result, indent=2) + "\n")
    if state_out is not None:
        np.savez(state_out, **state_arrays(state))
    q, learning = result["quality"], result["learning"]
    typer.echo(f"{result['entries']:,} entries, {result['applied']:,} ticks applied, "
               f"{result['tickers']} tickers; {learning['updates']} updates "
               f"({sum(learning['skipped'].values())} skipped); model {result['model_version']}")
    if result["rmse_ratio"] is not None:
        typer.echo(f"RMSE model {result['rmse_model']:.6g} vs zero forecast "
                   f"{result['rmse_zero']:.6g}: ratio {result['rmse_ratio']:.4f}, skill "
                   f"{q['skill_total']:.4f}, signs right {q['sign_hit_rate'] or 0:.1%}")
    typer.echo(f"wrote {out} and {summary_path}")


@with_settings_flags
def export(
    out: Annotated[Path, typer.Option(help="artifact directory to write")],
    shard: Annotated[int | None, SHARD_OPTION] = None,
    **flags: Any,
) -> None:
    """Write the weights the stream has taught as an artifact (as of the last snapshot).

    model.keras + model.json, for `serve --model-dir` or plain Keras.
    """
    from models.artifact import save_artifact
    from models.online import learned_model
    from service.layout import Layout
    from service.records import StateError
    from service.snapshots import SnapshotStore

    settings = _one_shard(load_settings(**flags), shard)
    url = _need_redis(settings)
    artifact = _artifact(settings)
    base = artifact.meta.model_version
    layout = Layout.from_settings(settings)
    with connect(url) as client:
        try:
            data = SnapshotStore(client, layout, b"", None).load(
                artifact.stepper(1).row_state_size, base)
        except StateError as e:
            raise typer.BadParameter(str(e), param_hint="--name / --model-dir") from None
    if data is None or "learn.weight.0" not in data.arrays:
        typer.echo(f"no snapshot with learned weights under {layout.prefix}: has `serve` run "
                   "with this model and name?", err=True)
        raise typer.Exit(1)
    updates = int(data.arrays["learn.counts"][0])
    meta = artifact.meta.model_copy(update={"training": {
        **artifact.meta.training,
        "online": {"base_version": base, "updates": updates, "cursor": data.cursor,
                   "name": settings.name, "stream": settings.stream}}})
    saved = save_artifact(out, learned_model(artifact.model, data.arrays), meta)
    typer.echo(f"saved {out} (model_version {saved.model_version}: {base} + {updates} "
               f"updates, as of stream entry {data.cursor})")


