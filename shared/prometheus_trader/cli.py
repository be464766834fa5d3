"""``prometheus-trader``: run the pipeline, import market data."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# typer vendors click (pinned by uv.lock): its usage errors are these classes
from typer._click import exceptions as click_exceptions

from prometheus_trader.app.settings import Settings
from prometheus_trader.cli_collect import collect
from prometheus_trader.cli_keys import keys_app
from prometheus_trader.cli_users import users_app


class CliError(Exception):
    """A bad input or a failed command: one line on stderr, a non-zero exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Interrupted(BaseException):
    """Ctrl-C, raised by our SIGINT handler (not KeyboardInterrupt, which the command
    framework would turn into a silent exit)."""


class _Guard:
    """Process-wide CLI state: ``--debug`` and whether Ctrl-C was pressed."""

    debug = False
    interrupted = False


def _on_sigint(_signum: int, _frame: object) -> None:
    if _Guard.interrupted:
        return  # a second Ctrl-C while cleaning up: let the cleanup finish
    _Guard.interrupted = True
    raise _Interrupted


def one_line(exc: BaseException) -> str:
    """An exception as one short line (pydantic errors listed field by field)."""
    if isinstance(exc, SettingsError):
        field_name = re.search(r'field "([^"]+)"', str(exc))
        name = f"PROMETHEUS_{field_name.group(1).upper()}" if field_name else "a setting"
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        text = f"invalid setting {name}: not a valid JSON value{cause}"
    elif isinstance(exc, ValidationError):
        text = "invalid settings: " + "; ".join(
            f"{_setting_name(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    elif isinstance(exc, CliError | OSError | ValueError | LookupError | RuntimeError):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def _setting_name(loc: tuple[int | str, ...]) -> str:
    name = ".".join(str(p) for p in loc)
    return f"PROMETHEUS_{name.upper()}" if len(loc) == 1 else name or "value"


class _GuardedTyper(typer.Typer):
    """The command, with every error as one line on stderr (a traceback with --debug)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # a SIGINT ignored by the parent (e.g. a `cmd &` in a script) stays ignored
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, _on_sigint)
        try:
            # not standalone: usage errors reach us (one line) instead of click's box
            code = super().__call__(*args, **{**kwargs, "standalone_mode": False})
        except SystemExit:
            raise
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help text, as the command framework would print it
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            ctx = exc.ctx if isinstance(exc, click_exceptions.UsageError) else None
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except typer.Abort:
            _fail("interrupted", 130)
        except BaseException as exc:
            if _Guard.interrupted or isinstance(exc, _Interrupted | KeyboardInterrupt):
                _fail("interrupted (Ctrl-C)", 130)
            if _Guard.debug:
                raise
            code = exc.code if isinstance(exc, CliError) else 1
            _fail(
                one_line(exc) + ("" if isinstance(exc, CliError) else " (--debug shows more)"), code
            )
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


app = _GuardedTyper(
    help="Prometheus trader: global market analysis, per-user risk-gated execution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Market data: import recorded files into a market store.")
app.add_typer(data_app, name="data")
stack_app = typer.Typer(help="The emulated Google Cloud stack on 127.0.0.1.")
app.add_typer(stack_app, name="stack")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")  # issue 10: operator user/token commands
app.command("collect")(collect)  # issue 9: the live ccxt collector (cli_collect.py)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="show a traceback when a command fails")
    ] = False,
) -> None:
    """Prometheus trader: global market analysis, per-user risk-gated execution."""
    _Guard.debug = debug


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"not an ISO time: {value!r} (e.g. 2025-05-21T06:00Z)") from None


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
            raise CliError(f"--data {data} is not a folder")
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
    except (ValidationError, SettingsError) as exc:
        raise CliError(one_line(exc)) from exc


def _replay(settings: Settings, quiet: bool, runner: Callable[..., dict[str, Any]]) -> None:
    """Run a replay with a progress bar; print the summary table."""
    from prometheus_trader.app.run_folder import RunFolderBusy
    from prometheus_trader.app.run_window import DataRangeError

    try:
        with _progress(quiet) as bar, _LogLines(quiet, "run") as lines:
            task = bar.add_task("replay", total=None)

            def report(done: int, total: int, stage: str) -> None:
                bar.update(task, completed=done, total=total, description=stage)
                lines.update(done, total, stage)

            summary = runner(settings, report)
    except (DataRangeError, RunFolderBusy) as exc:
        raise CliError(str(exc)) from exc
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
def stack_up(
    var_dir: VarOption = None,
    seed_demo: Annotated[
        bool,
        typer.Option(help="load the demo users and the bundled sample; services replay it"),
    ] = False,
) -> None:
    """Start the emulators, serve every function locally behind push subscriptions, start
    the worker; everything on 127.0.0.1, recorded in var/stack/stack.json."""
    from prometheus_trader.app.emulators import EmulatorError
    from prometheus_trader.app.stack import StackError
    from prometheus_trader.app.stack import stack_up as up

    try:
        up(_settings(var_dir=var_dir), say=out.print, seed=seed_demo)
    except (StackError, EmulatorError) as exc:
        raise CliError(str(exc)) from exc


@stack_app.command("down")
def stack_down(var_dir: VarOption = None) -> None:
    """Stop every process `stack up` started (whole process groups)."""
    from prometheus_trader.app.stack import stack_down as down

    stopped = down(_settings(var_dir=var_dir))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "no stack was up")


@stack_app.command("restart")
def stack_restart(
    name: Annotated[str, typer.Argument(help="worker, or function:<name>")] = "worker",
    var_dir: VarOption = None,
) -> None:
    """Start one of the stack's processes again (killed first if alive), as Cloud Run
    replaces a crashed instance: same command, port and environment."""
    from prometheus_trader.app.stack import StackError, restart

    try:
        pid = restart(_settings(var_dir=var_dir), name)
    except StackError as exc:
        raise CliError(str(exc)) from exc
    out.print(f"{name} restarted (pid {pid})")


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
        raise CliError(str(exc)) from exc


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
        raise CliError(f"no such file or folder: {', '.join(map(str, missing))}")
    start_dt, end_dt = _parse_time(start), _parse_time(end)
    with (
        _progress(False) as bar,
        _LogLines(False, "import") as lines,
        DuckDBMarketStore(store) as market,
    ):
        task = bar.add_task("import", total=None)

        def report(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])
            lines.update(done, total, f"file {done}/{total} {name}")

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
            raise CliError(str(exc)) from exc
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
    if result.derived_candles:
        out.print(f"built {result.derived_candles} new 1m candles from the trades")
    for skipped in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(skipped.path)}: {escape(skipped.reason)}")
    for path, count in sorted(result.bad_lines.items()):
        console.print(f"[yellow]skipped {count} unreadable line(s)[/yellow] in {escape(path)}")
    if result.skipped and not result.files_imported:
        raise typer.Exit(2)


class _LogLines:
    """Progress for a non-terminal stderr (a pipe, a CI log): one plain line every
    ``PROMETHEUS_PROGRESS_SECONDS`` (default 10) with what is being done, % done and ETA."""

    def __init__(self, quiet: bool, command: str) -> None:
        self.enabled = not quiet and not sys.stderr.isatty()
        self.command = command
        self.every = float(os.environ.get("PROMETHEUS_PROGRESS_SECONDS", "10") or 10)
        self.began = self.last = time.monotonic()

    def __enter__(self) -> _LogLines:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def update(self, done: int, total: int, what: str) -> None:
        """Print a line when the interval has passed (and once at 100 %)."""
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if now - self.last < self.every and done < total:
            return
        self.last = now
        fraction = min(done / total, 1.0)
        elapsed = now - self.began
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        eta_text = _duration(eta) if eta == eta else "?"
        print(
            f"{self.command}: {what} {fraction:.0%} done, {_duration(elapsed)} elapsed, "
            f"ETA {eta_text}",
            file=sys.stderr,
            flush=True,
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


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
    run = summary.get("run")
    bars = run.get("bar_timeframe", "1m") if isinstance(run, dict) else "1m"
    if bars != "1m":  # say it before the numbers: they come from coarser data (docs/data.md)
        out.print(
            f"resolution: {bars} bars, not 1m: signals from {bars} "
            f"bars, exits checked on each {bars} bar's open/high/low/close path"
        )
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
    from prometheus_trader.app.summary import summary_tables

    for extra in summary_tables(summary):  # per-user PnL and explained rejections (i13)
        out.print(extra)


# registers `backtest` and `lookahead` (kept in their own module)
from prometheus_trader import cli_backtest as _cli_backtest  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
