"""The backtest's memory and monitor shortcuts change no output.

The backtest skips the monitor cycles that could only write the heartbeat (nothing open,
nothing pending, the portfolio guard settled, no document written since the last such
cycle: ``ExitMonitor.idle``) and drops the replay exchange's past trade hours every
simulated hour. Both are compared with a backtest that runs every cycle and keeps every
cached hour: every file it writes must be byte-identical (timings aside), with fewer
monitor cycles.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.app.backtest.live import BacktestExchange
from prometheus_trader.app.backtest.runner import run_backtest
from prometheus_trader.app.settings import Settings
from prometheus_trader.usecases.monitor import ExitMonitor

pytestmark = pytest.mark.integration

# the equivalence test's window: positions open and close, breakers reject
WINDOW = {"replay_end": datetime(2025, 5, 21, 10, 0, tzinfo=UTC), "drain_hours": 1.0}


def _outputs(var: Path) -> tuple[dict[str, bytes], int]:
    settings = Settings(var_dir=var, **WINDOW)  # type: ignore[arg-type]
    run_backtest(settings)
    root = settings.var_dir / "backtest"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "timings.json")
    cycles = int(json.loads((root / "timings.json").read_text())["monitor_cycles"])
    return {str(p.relative_to(root)): p.read_bytes() for p in files}, cycles


def test_skipped_cycles_and_dropped_hours_change_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, fast_cycles = _outputs(tmp_path / "fast")
    with monkeypatch.context() as m:
        m.setattr(ExitMonitor, "idle", lambda self: False)
        m.setattr(BacktestExchange, "forget_before", lambda self, now_ms: None)
        full, full_cycles = _outputs(tmp_path / "full")
    assert "ledger.json" in full and any(name.endswith(".html") for name in full)
    assert fast.keys() == full.keys()
    for name in full:
        assert fast[name] == full[name], name
    assert fast_cycles < full_cycles


def test_the_write_count_moves_with_every_write_and_no_read() -> None:
    store = MemoryStateStore()
    counts = [store.writes]
    store.create("users", "a", {"user_id": "a"})
    counts.append(store.writes)
    store.get("users", "a")
    store.query("users")
    counts.append(store.writes)
    store.update("users", "a", {"active": True})
    counts.append(store.writes)
    store.create("users", "a", {"user_id": "b"})  # exists: nothing written
    counts.append(store.writes)
    store.delete("users", "a")
    counts.append(store.writes)
    assert counts == [0, 1, 1, 2, 2, 3]


def test_idle_needs_nothing_open_nothing_pending_and_every_user_settled() -> None:
    from prometheus_trader.app.backtest.data import MemoryMarketData
    from prometheus_trader.app.backtest.runner import build_engine, window_for
    from prometheus_trader.app.demo import DEMO_USERS
    from prometheus_trader.usecases.names import Collections

    settings = Settings()  # the bundled sample
    data = MemoryMarketData.from_parquet(settings.data_dir, settings.exchange, settings.market_type)
    start, until, end = window_for(settings, data)
    engine = build_engine(settings, data, DEMO_USERS, start, until, end)
    monitor, state = engine.live.monitor, engine.live.state
    assert not monitor.idle()  # the guard has read no user yet
    assert monitor.cycle().positions == 0
    assert monitor.idle()
    pending = {"id": "s1", "status": "pending", "user_id": DEMO_USERS[0].user_id}
    state.set(Collections.SCALED_ENTRIES, "s1", pending)
    assert not monitor.idle()  # a resting leg may fill with time alone
    state.update(Collections.SCALED_ENTRIES, "s1", {"status": "done"})
    assert monitor.idle()
    user = DEMO_USERS[0].model_copy(update={"kill_switch": True})
    state.set(Collections.USERS, user.user_id, user.model_dump(mode="json"))
    monitor.cycle()
    assert not monitor.idle()  # every cycle flattens a kill-switched account again
