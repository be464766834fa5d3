"""The exit monitor's skip filter changes nothing: two identical worlds over the bundled
real sample, one monitor skipping the positions that provably hold (``HoldBands``), one
evaluating every position every cycle; every cycle's report, every stored position
(tracking writes included) and every exchange order are the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_usecases_embedded import World, world

from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration
__all__ = ["world"]

CONFIGS = {
    "default": ExitConfig(max_hold_minutes=9),  # the default rules, a shorter hold
    # rules 1 and 2 silent: positions live long, so the levels and the trail decide
    "levels": ExitConfig(
        order_flow_long_exit_ratio=1e-9,
        order_flow_short_exit_ratio=1e9,
        adverse_move_thresholds=[(0.3, 10**6)],
        adverse_move_default=10**6,
        trail_arm_r=0.3,
        max_hold_minutes=12,
    ),
}


def _open(w: World) -> None:
    """Eight users, longs and shorts with stops from 0.1 % to 1 %."""
    for k in range(8):
        user = w.add_user(User.with_profile(f"user{k}", RiskProfile.AGGRESSIVE))
        direction = Direction.LONG if k % 2 == 0 else Direction.SHORT
        signal = w.signal(direction=direction, stop_pct=(0.1, 0.2, 0.4, 1.0)[k % 4])
        w.executor.handle(w.execution_message(signal.id, user.user_id))


def _snapshot(w: World) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    positions = sorted(w.state.query(Collections.POSITIONS, []), key=lambda d: str(d["id"]))
    orders = {f"user{k}": w.orders(f"user{k}") for k in range(8)}
    return positions, orders


@pytest.mark.parametrize("rules", sorted(CONFIGS))
def test_skipping_quiet_positions_decides_exactly_as_evaluating_all(
    rules: str, tmp_path: Path
) -> None:
    config = CONFIGS[rules]
    gen = world.__wrapped__  # type: ignore[attr-defined]
    worlds = [gen(tmp_path / "skip"), gen(tmp_path / "full")]
    skip_w, full_w = (next(g) for g in worlds)
    try:
        monitors = []
        for w in (skip_w, full_w):
            _open(w)
            monitors.append(ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, config))
        skipping, full = monitors
        full._bands.quiet = lambda *a: {}  # type: ignore[method-assign]
        checks = {"skip": 0, "full": 0}
        for name, monitor in (("skip", skipping), ("full", full)):
            inner = monitor._check

            def counted(*a: Any, _inner: Any = inner, _n: str = name) -> Any:
                checks[_n] += 1
                return _inner(*a)

            monitor._check = counted  # type: ignore[method-assign]
        closed = 0
        for _ in range(600):  # 20 minutes of 2-second cycles
            reports = []
            for w, monitor in ((skip_w, skipping), (full_w, full)):
                w.clock.advance(2)
                reports.append(monitor.cycle())
            assert reports[0] == reports[1]
            assert _snapshot(skip_w) == _snapshot(full_w)  # tracking writes too
            closed += len(reports[0].closed)
        assert closed >= 3, "the rules acted"
        assert checks["skip"] < checks["full"] / 2, checks
    finally:
        for g in worlds:
            next(g, None)
