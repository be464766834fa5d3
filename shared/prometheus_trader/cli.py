"""``prometheus-trader``: run the pipeline, import market data."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prometheus_trader.app.settings import Settings

app = typer.Typer(
    help="Prometheus trader: global market analysis, per-user risk-gated execution.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Market data: import recorded files into a market store.")
app.add_typer(data_app, name="data")
stack_app = typer.Typer(help="The emulated Google Cloud stack on 127.0.0.1.")
app.add_typer(stack_app, name="stack")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO time: {value!r} (e.g. 2025-05-21T06:00Z)") from None


DataOption = Annotated[
    Path | None,
    typer.Option(help="market store folder made by `data import` (default: bundled sample)"),
]
VarOption = Annotated[Path | None, typer.Option("--var", help="output folder (default: var)")]
StartOption = Annotated[str | None, typer.Option(help="replay start, ISO UTC")]
EndOption = Annotated[str | None, typer.Option(help="last time a signal may be published, ISO UTC")]
SynthesizerOption = Annotated[str | None, typer.Option(help="consensus | hierarchical")]
QuietOption = Annotated[bool, typer.Option(help="no progress bar")]


def _settings(
    data: Path | None = None,
    var_dir: Path | None = None,
    start: str | None = None,
    end: str | None = None,
    synthesizer: str | None = None,
) -> Settings:
    """Settings from the environment / .env, with the command line's overrides."""
    overrides: dict[str, object] = {}
    if data is not None:
        if not data.is_dir():
            raise typer.BadParameter(f"{data} is not a folder", param_hint="--data")
        overrides["data_dir"] = data
    if var_dir is not None:
        overrides["var_dir"] = var_dir
    if start is not None:
        overrides["replay_start"] = _parse_time(start)
    if end is not None:
        overrides["replay_end"] = _parse_time(end)
    if synthesizer is not None:
        overrides["synthesizer"] = synthesizer
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        console.print(f"[red]error:[/red] invalid settings: {problems}")
        raise typer.Exit(2) from None


def _replay(settings: Settings, quiet: bool, runner: Callable[..., dict[str, Any]]) -> None:
    """Run a replay with a progress bar; print the summary table."""
    from prometheus_trader.app.pipeline import DataRangeError

    try:
        with _progress(quiet) as bar:
            task = bar.add_task("replay", total=None)

            def report(done: int, total: int, stage: str) -> None:
                bar.update(task, completed=done, total=total, description=stage)

            summary = runner(settings, report)
    except DataRangeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _print_summary(summary)
    out.print(f"summary written to {settings.run_dir / 'summary.json'}")


@app.command()
def run(
    data: DataOption = None,
    var_dir: VarOption = None,
    start: StartOption = None,
    end: EndOption = None,
    synthesizer: SynthesizerOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run the whole pipeline on the embedded default, replaying recorded market data.

    Writes var/run/summary.json, the ledger, reports and JSON logs under var/run/.
    """
    from prometheus_trader.app.pipeline import run_pipeline

    _replay(_settings(data, var_dir, start, end, synthesizer), quiet, run_pipeline)


@stack_app.command("up")
def stack_up(var_dir: VarOption = None) -> None:
    """Start the emulators, serve every function locally behind push subscriptions, start
    the worker; everything on 127.0.0.1, recorded in var/stack/stack.json."""
    from prometheus_trader.app.emulators import EmulatorError
    from prometheus_trader.app.stack import StackError
    from prometheus_trader.app.stack import stack_up as up

    try:
        up(_settings(var_dir=var_dir), say=out.print)
    except (StackError, EmulatorError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@stack_app.command("down")
def stack_down(var_dir: VarOption = None) -> None:
    """Stop every process `stack up` started (whole process groups)."""
    from prometheus_trader.app.stack import stack_down as down

    stopped = down(_settings(var_dir=var_dir))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "no stack was up")


@stack_app.command("status")
def stack_status(var_dir: VarOption = None) -> None:
    """Show what `stack up` started."""
    from prometheus_trader.app.stack import read_info

    info = read_info(_settings(var_dir=var_dir))
    if info is None:
        out.print("no stack is up")
        raise typer.Exit(1)
    out.print_json(info.model_dump_json())


@stack_app.command("run")
def stack_run(
    data: DataOption = None,
    var_dir: VarOption = None,
    start: StartOption = None,
    end: EndOption = None,
    synthesizer: SynthesizerOption = None,
    quiet: QuietOption = False,
) -> None:
    """The `run` scenario on the emulated stack (Firestore, Pub/Sub push to the functions,
    Cloud Storage): same summary fields, same ledger. Uses an up stack's emulators, or
    starts (and stops) its own."""
    from prometheus_trader.app.emulators import EmulatorError
    from prometheus_trader.app.stack import stack_run as run_on_stack

    try:
        _replay(_settings(data, var_dir, start, end, synthesizer), quiet, run_on_stack)
    except EmulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def worker() -> None:
    """Run the always-on exit-monitor worker service (GET /healthz on $PORT, stops on SIGTERM).

    Adapters come from the environment (PROMETHEUS_BACKEND=gcp for the cloud ones).
    """
    from prometheus_trader.app.worker import main

    raise typer.Exit(main())


@data_app.command("import")
def import_data(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to import")],
    store: Annotated[Path, typer.Option(help="market store folder (created if missing)")],
    start: Annotated[str | None, typer.Option(help="keep rows from this ISO UTC time")] = None,
    end: Annotated[str | None, typer.Option(help="keep rows before this ISO UTC time")] = None,
    strict: Annotated[bool, typer.Option(help="stop at the first unreadable file")] = False,
) -> None:
    """Import freqtrade feather, Binance public-data zips, raw Binance websocket
    recordings and Tardis CSVs into a partitioned Parquet market store."""
    from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
    from prometheus_trader.adapters.importers import ImportFailed, import_paths

    missing = [p for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]error:[/red] no such file or folder: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    start_dt, end_dt = _parse_time(start), _parse_time(end)
    with _progress(False) as bar, DuckDBMarketStore(store) as market:
        task = bar.add_task("import", total=None)

        def report(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])

        try:
            result = import_paths(
                paths,
                market,
                start_ms=int(start_dt.timestamp() * 1000) if start_dt else None,
                end_ms=int(end_dt.timestamp() * 1000) if end_dt else None,
                progress=report,
                strict=strict,
            )
        except ImportFailed as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    table = Table(title=f"imported into {store}")
    table.add_column("kind")
    table.add_column("new rows", justify="right")
    for kind, rows in sorted(result.rows.items()):
        table.add_row(kind, str(rows))
    console.print(table)
    out.print(
        f"imported {len(result.files_imported)} file(s), {result.total_rows} new rows, "
        f"{len(result.skipped)} skipped"
    )
    for skipped in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {skipped.path}: {skipped.reason}")
    if result.skipped and not result.files_imported:
        raise typer.Exit(2)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not sys.stderr.isatty(),
        transient=True,
    )


def _print_summary(summary: dict[str, object]) -> None:
    table = Table(title="Prometheus run summary")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for key in (
        "signals_published",
        "users",
        "decisions",
        "rejection_reasons",
        "signals_with_divergent_decisions",
        "orders",
        "positions_opened",
        "positions_closed",
        "closed_by_reason",
        "ledger_sha256",
    ):
        value = summary.get(key)
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    out.print(table)


# registers `backtest` and `lookahead` (kept in their own module)
from prometheus_trader import cli_backtest as _cli_backtest  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
