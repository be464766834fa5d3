"""``prometheus-trader backtest`` and ``lookahead``: evaluate the strategy on recorded data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from prometheus_trader.cli import (
    DataOption,
    EndOption,
    QuietOption,
    StartOption,
    SynthesizerOption,
    VarOption,
    _print_summary,
    _progress,
    _settings,
    app,
    console,
    out,
)

UsersFileOption = Annotated[
    Path | None,
    typer.Option("--users-file", help="JSON list of user documents (default: the demo users)"),
]
ProfileOption = Annotated[
    list[str] | None,
    typer.Option("--profile", help="risk profile of generated users (repeatable)"),
]
CountOption = Annotated[int, typer.Option("--users", help="generate this many users")]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="output folder (default: <var>/backtest)")
]


class PipedProgress:
    """Progress as plain lines (every 10 %) where no live bar can be drawn (a pipe, a
    log file): the rich bar is disabled there."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._shown = -1

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self._stream is None or total <= 0:
            return
        tenth = done * 10 // total
        if tenth > self._shown:
            self._shown = tenth
            print(f"{stage}: {tenth * 10:3d} % ({done}/{total} minutes)", file=self._stream)
            self._stream.flush()


@app.command()
def backtest(
    data: DataOption = None,
    var_dir: VarOption = None,
    start: StartOption = None,
    end: EndOption = None,
    synthesizer: SynthesizerOption = None,
    users_file: UsersFileOption = None,
    profile: ProfileOption = None,
    users: CountOption = 0,
    out_dir: OutOption = None,
    quiet: QuietOption = False,
) -> None:
    """Backtest the strategy: the live domain code on an in-memory event loop.

    Same decisions, orders and closed trades as `run` on the same data, in a fraction of
    the time. Writes summary.json, ledger.json, metrics.json, trades.json and the daily
    reports under <var>/backtest/ (or --out).
    """
    from prometheus_trader.app.backtest.runner import run_backtest, users_for
    from prometheus_trader.app.run_window import DataRangeError

    settings = _settings(data, var_dir, start, end, synthesizer)
    chosen = users_for(users_file, profile, users)
    target = out_dir or settings.var_dir / "backtest"
    try:
        with _progress(quiet) as bar:
            task = bar.add_task("backtest", total=None)
            piped = PipedProgress(None if quiet or not bar.disable else sys.stderr)

            def report(done: int, total: int, stage: str) -> None:
                bar.update(task, completed=done, total=total, description=stage)
                piped(done, total, stage)

            summary = run_backtest(settings, report, users=chosen, out_dir=target)
    except DataRangeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _print_summary(summary)
    metrics = json.loads((target / "metrics.json").read_text())["all"]
    out.print(
        f"trades {metrics['trades']}, win rate {metrics['win_rate_pct']}, "
        f"total return {metrics['total_return_pct']} %"
    )
    out.print(f"results written to {target}")


CutsOption = Annotated[int, typer.Option("--cuts", help="how many cut times to test")]


@app.command()
def lookahead(
    data: DataOption = None,
    var_dir: VarOption = None,
    start: StartOption = None,
    end: EndOption = None,
    synthesizer: SynthesizerOption = None,
    cuts: CutsOption = 8,
    quiet: QuietOption = False,
) -> None:
    """Look-ahead analysis: re-run the backtest on data cut at many times and report any
    decision that differs from the full-data run (exit status 1 if one does).

    Writes <var>/lookahead.json.
    """
    from prometheus_trader.app.backtest.lookahead import analyse
    from prometheus_trader.app.run_window import DataRangeError

    settings = _settings(data, var_dir, start, end, synthesizer)
    try:
        with _progress(quiet) as bar:
            task = bar.add_task("lookahead", total=None)
            piped = PipedProgress(None if quiet or not bar.disable else sys.stderr)

            def report(done: int, total: int, stage: str) -> None:
                bar.update(task, completed=done, total=total, description=stage)
                piped(done, total, stage)

            result = analyse(settings, cuts=cuts, progress=report)
    except DataRangeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    target = settings.var_dir / "lookahead.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    out.print(
        f"{len(result.cuts)} cut times, {result.compared} decisions compared, "
        f"{len(result.differences)} differ"
    )
    for d in result.differences:
        out.print(f"  cut {d.cut}: {d.kind} {d.key} differs in {', '.join(d.fields())}")
    out.print(f"report written to {target}")
    if result.differences:
        raise typer.Exit(1)
