"""Bad input through the command line: one line on stderr, a non-zero exit, no traceback,
and the previous ``var/run`` left exactly as it was. Runs and lock holders are separate
processes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support import FIXTURE_DATA, run_cli

pytestmark = pytest.mark.integration

# two hours of BTC/ETH excerpts: a 1 h warm-up, then a short replay
SHORT = {"PROMETHEUS_WARMUP_HOURS": "1", "PROMETHEUS_DRAIN_HOURS": "0.1"}
SHORT_END = ["--end", "2025-05-21T01:20Z"]
RESULTS = ("summary.json", "ledger.json", "timings.json")


def _digest(run_dir: Path) -> dict[str, str]:
    return {n: hashlib.sha256((run_dir / n).read_bytes()).hexdigest() for n in RESULTS}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store imported from the excerpts and one completed run in ``var/``."""
    root = tmp_path_factory.mktemp("cli-errors")
    feathers = sorted(str(p) for p in FIXTURE_DATA.glob("*USDT_USDT-*.feather"))
    done = run_cli("data", "import", *feathers, "--store", str(root / "store"), cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    good = run_cli(
        "run", "--quiet", "--data", "store", "--var", "var", *SHORT_END, cwd=root, env=SHORT
    )
    assert good.returncode == 0, good.stderr[-3000:]
    return root


@pytest.fixture
def previous(workspace: Path) -> dict[str, str]:
    """The completed run's result files, to prove a failed run leaves them alone."""
    return _digest(workspace / "var" / "run")


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode != 0, done.stdout[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PROMETHEUS_TAKE_PROFIT_R": "abc"}, "PROMETHEUS_TAKE_PROFIT_R"),
        ({"PROMETHEUS_TAKE_PROFIT_R": "[]"}, "PROMETHEUS_TAKE_PROFIT_R"),
        ({"PROMETHEUS_TAKE_PROFIT_R": "[3, 2, 4]"}, "increasing"),
    ],
    ids=["not-json", "empty-list", "not-increasing"],
)
def test_a_bad_setting_is_one_line(
    workspace: Path, previous: dict[str, str], env: dict[str, str], needle: str
) -> None:
    done = run_cli("run", "--quiet", "--data", "store", "--var", "var", cwd=workspace, env=env)
    assert_one_line_error(done, needle)
    assert _digest(workspace / "var" / "run") == previous


def test_a_usage_error_is_one_line(workspace: Path) -> None:
    done = run_cli("run", "--bogus", cwd=workspace)
    assert_one_line_error(done, "--bogus", "prometheus-trader run --help")
    assert done.returncode == 2


def test_run_on_an_empty_folder_is_one_line(workspace: Path, previous: dict[str, str]) -> None:
    (workspace / "empty").mkdir(exist_ok=True)
    done = run_cli("run", "--quiet", "--data", "empty", "--var", "var", cwd=workspace, env=SHORT)
    assert_one_line_error(done, "no 1m candles")
    assert _digest(workspace / "var" / "run") == previous


def test_a_truncated_parquet_in_the_store_is_one_line(
    workspace: Path, previous: dict[str, str]
) -> None:
    bad = workspace / "truncated"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(workspace / "store", bad)
    victim = sorted(bad.rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    done = run_cli("run", "--quiet", "--data", "truncated", "--var", "var", cwd=workspace)
    line = assert_one_line_error(done, "truncated")
    assert "magic bytes" in line
    # the same store through `data import` (which opens it to write)
    again = run_cli(
        "data", "import", str(FIXTURE_DATA / "tardis_trades.csv"), "--store", "truncated",
        cwd=workspace,
    )  # fmt: skip
    assert_one_line_error(again, "truncated")
    debug = run_cli(
        "--debug", "run", "--quiet", "--data", "truncated", "--var", "var", cwd=workspace
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr  # --debug shows it
    assert _digest(workspace / "var" / "run") == previous


def _start_run(workspace: Path, var: str, *, short: bool = True) -> subprocess.Popen[str]:
    """A run over the sample's whole window in its own process (SIGINT at its default, as
    in a terminal); ``short``: with a short warm-up and drain (a few seconds)."""
    return subprocess.Popen(
        [sys.executable, "-m", "prometheus_trader", "run", "--quiet", "--data=store", "--var", var],
        cwd=workspace,
        env={**os.environ, **(SHORT if short else {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_staging(var: Path, proc: subprocess.Popen[str]) -> None:
    """Until the run has opened its fresh folder (it is inside the run, holding the lock)."""
    deadline = time.monotonic() + 120
    while not list(var.glob(".run-staging-*/log.jsonl")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)


def test_ctrl_c_during_a_run_is_one_line_and_keeps_the_previous_run(
    workspace: Path, previous: dict[str, str]
) -> None:
    # the default warm-up and drain: the run is still going seconds after it staged, even
    # when this process is scheduled late on a loaded machine (a short run had finished)
    proc = _start_run(workspace, "var", short=False)
    _wait_for_staging(workspace / "var", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert_one_line_error(done, "interrupted")
    assert proc.returncode == 130
    assert _digest(workspace / "var" / "run") == previous
    assert not list((workspace / "var").glob(".run-staging-*"))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from prometheus_trader.app.run_folder import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_the_same_var_is_refused_until_the_holder_dies(
    workspace: Path, previous: dict[str, str]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workspace / "var")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = run_cli(
            "run", "--quiet", "--data", "store", "--var", "var", *SHORT_END,
            cwd=workspace, env=SHORT,
        )  # fmt: skip
        line = assert_one_line_error(refused, "another run is using")
        assert f"pid {holder.pid}" in line
        assert _digest(workspace / "var" / "run") == previous
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock
        holder.wait()
    after = run_cli(
        "run", "--quiet", "--data", "store", "--var", "var", *SHORT_END, cwd=workspace, env=SHORT
    )
    assert after.returncode == 0, after.stderr[-3000:]
    # same input, same ledger: the replacement is a complete run
    assert _digest(workspace / "var" / "run")["ledger.json"] == previous["ledger.json"]


def test_two_runs_at_once_one_is_refused(workspace: Path) -> None:
    first = _start_run(workspace, "var-race")
    try:
        _wait_for_staging(workspace / "var-race", first)
        # frozen mid-run (it holds the folder) so the second surely starts while it does
        first.send_signal(signal.SIGSTOP)
        second = run_cli(
            "run", "--quiet", "--data", "store", "--var", "var-race", cwd=workspace, env=SHORT
        )
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert_one_line_error(second, "another run is using", f"pid {first.pid}")
    assert first.returncode == 0, first_err[-3000:]
    assert (workspace / "var-race" / "run" / "summary.json").is_file()
    assert not list((workspace / "var-race").glob(".run-staging-*"))


def test_progress_is_logged_when_stderr_is_a_pipe(workspace: Path) -> None:
    """No terminal (CI, `| tee`): plain lines with the simulated time, % done and ETA."""
    env = {**SHORT, "PROMETHEUS_PROGRESS_SECONDS": "0"}
    done = run_cli(
        "run", "--data", "store", "--var", "var-progress", *SHORT_END, cwd=workspace, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("run: ")]
    pattern = r"run: replay 2025-05-21T\d\d:\d\dZ \d+% done, \d+s elapsed, ETA (\d+m)?\d+s"
    assert len(lines) > 10 and all(re.fullmatch(pattern, ln) for ln in lines), lines[:3]
    assert " 100% done" in lines[-1]
    imported = run_cli(
        "data", "import", str(FIXTURE_DATA / "tardis_trades.csv"), "--store", "store-progress",
        cwd=workspace, env=env,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "import: file 1/1 " in imported.stderr and "100% done" in imported.stderr
