"""A position carries the exchange account its orders went to (``Position.exchange_account``):
a user switched between paper and live while an execution was in flight (the race the
switch's in-flight refusal closes; simulated here by writing the new account directly)
keeps the position where it is. The monitor's cycle, reconciliation and the kill switch's
close act on the position's own account, and nothing reaches the other one. The runtime is
the deployment's (``CloudRuntime``: a ``RoutedExchange`` over the paper ledger and the
Binance stand-in), as in test_live_mode_orders.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.integration.ccxt_executors import SYMBOL, long_signal, message
from tests.standins.binance_usdm import serve_binance
from tests.standins.engine import DEFAULT_NOW_MS, Engine

from prometheus_trader.app.cloud import CloudRuntime
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.trading import OrderStatus, OrderType
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.usecases.controls import Controls, ExchangeKeys
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.user_settings import Settings as UserSettings
from prometheus_trader.usecases.user_settings import SettingsUpdate

pytestmark = pytest.mark.integration

KEY, SECRET = "alice-demo-key", "alice-demo-secret"
VENUE = "binance-demo:alice"


class World:
    """The runtime, the venue stand-in and alice (keys connected, on paper)."""

    def __init__(self, rt: CloudRuntime, engine: Engine) -> None:
        self.rt, self.engine = rt, engine
        self.controls = Controls(
            rt.state,
            rt.clock,
            secrets=lambda: rt.secrets,
            blobs=lambda: rt.blobs,
            trading_env="demo",
        )
        self.settings = UserSettings(rt.state, self.controls.trading_account, rt.clock)

    def open_position(self, signal_id: str) -> dict[str, object]:
        signal = long_signal(signal_id, self.engine.last_price(SYMBOL), self.rt.clock.now())
        self.rt.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
        done = self.rt.execute(message(signal.id, "alice"))
        assert done.outcome is not None and done.outcome.value == "accepted", done
        [position] = self.rt.state.query(Collections.POSITIONS)
        return position

    def move_alice_to(self, mode: TradingMode, account: str) -> None:
        """The race: alice's account changes under her open position (written directly,
        as a switch that ran while the execution was in flight would have)."""
        self.rt.state.update(
            Collections.USERS, "alice", {"mode": mode.value, "exchange_account": account}
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = Engine(keys={KEY: SECRET})
    now = datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC)
    with serve_binance(engine) as stand:
        rt = CloudRuntime(
            Settings(
                backend="embedded",
                var_dir=tmp_path / "var",
                clock_start=now,
                trading_env="demo",
                exchange_urls=stand.urls,
                warmup_hours=2,
            )
        )
        try:
            user = User.with_profile("alice", RiskProfile.AGGRESSIVE)
            rt.state.create(Collections.USERS, "alice", user.model_dump(mode="json"))
            w = World(rt, engine)
            w.controls.connect_keys(
                "alice", ExchangeKeys(exchange="binance", env="demo", api_key=KEY, secret=SECRET)
            )
            rt.collect()  # the market store the executor's freshness check reads
            yield w
        finally:
            rt.close()


def test_a_paper_position_stays_on_paper_after_a_switch_to_live(world: World) -> None:
    rt, engine = world.rt, world.engine
    position = world.open_position("sig-paper-then-live")
    assert position["exchange_account"] == "alice"
    paper = rt.paper_exchange
    assert len(paper.orders("alice")) == 3  # entry, stop, target on the ledger
    world.move_alice_to(TradingMode.LIVE, VENUE)

    # reconciliation checks it on paper (clean), looks at both accounts
    report = rt.monitor.reconcile()
    assert report.clean, report.as_document()
    assert report.checked == 1 and report.accounts == 2
    # the monitor's cycle checks it on paper: no failed check, still open
    cycle = rt.monitor.cycle()
    assert cycle.positions == 1 and cycle.failed == {}

    # the kill switch closes it: exit and stop cancel on the paper ledger
    world.controls.kill("alice")
    cycle = rt.monitor.cycle()
    assert cycle.failed == {}
    stored = rt.state.get(Collections.POSITIONS, str(position["id"]))
    assert stored is not None and stored["status"] == "closed", stored
    assert stored["exit_reason"] == "kill_switch"
    orders = {o.id: o for o in paper.orders("alice")}
    assert orders[str(position["stop_order_id"])].status is OrderStatus.CANCELED
    exit_order = orders[str(stored["exit_order_id"])]
    assert exit_order.type is OrderType.MARKET and exit_order.status is OrderStatus.FILLED
    assert paper.fetch_positions("alice") == []
    # nothing ever reached the venue for it
    assert engine.orders == {} and engine.log == []
    assert rt.monitor.reconcile().clean


def test_a_live_position_stays_on_the_venue_after_a_switch_back_to_paper(world: World) -> None:
    rt, engine = world.rt, world.engine
    world.settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    position = world.open_position("sig-live-then-paper")
    assert position["exchange_account"] == VENUE
    assert len(engine.orders) == 3  # entry, stop, target at the venue
    world.move_alice_to(TradingMode.PAPER, "alice")

    report = rt.monitor.reconcile()
    assert report.clean, report.as_document()
    assert report.checked == 1 and report.accounts == 2
    cycle = rt.monitor.cycle()
    assert cycle.positions == 1 and cycle.failed == {}

    world.controls.kill("alice")
    assert rt.monitor.cycle().failed == {}
    stored = rt.state.get(Collections.POSITIONS, str(position["id"]))
    assert stored is not None and stored["status"] == "closed", stored
    stop = rt.exchange.fetch_order(VENUE, str(position["stop_order_id"]))
    assert stop.status is OrderStatus.CANCELED
    exit_order = rt.exchange.fetch_order(VENUE, str(stored["exit_order_id"]))
    assert exit_order.type is OrderType.MARKET and exit_order.status is OrderStatus.FILLED
    assert rt.exchange.fetch_positions(VENUE) == []
    # the paper ledger never saw alice
    assert rt.paper_exchange.orders("alice") == []
    assert rt.monitor.reconcile().clean


def test_the_switch_is_refused_while_an_execution_is_in_flight(world: World) -> None:
    rt = world.rt
    now = rt.clock.now()
    record = {
        "id": "exec-in-flight",
        "signal_id": "sig-in-flight",
        "user_id": "alice",
        "symbol": SYMBOL,
        "created_at": now.isoformat(),
        "completed_at": None,
    }
    rt.state.create(Collections.EXECUTIONS, "exec-in-flight", record)
    with pytest.raises(Exception, match="a trade is being executed") as refused:
        world.settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    assert type(refused.value).__name__ == "Conflict"  # the API's 409
    alice = rt.state.get(Collections.USERS, "alice")
    assert alice is not None and alice["exchange_account"] == "alice"
    # other settings still change while it runs
    world.settings.update("alice", SettingsUpdate(display_name="Alice"))
    # completed: the switch goes through
    rt.state.update(Collections.EXECUTIONS, "exec-in-flight", {"completed_at": now.isoformat()})
    world.settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    alice = rt.state.get(Collections.USERS, "alice")
    assert alice is not None and alice["exchange_account"] == VENUE


def test_a_redelivered_execution_keeps_the_account_it_was_decided_for(world: World) -> None:
    """An execution decided on paper whose delivery comes back after alice went live (a
    crash between the decision and the entry) places its orders on paper: the account
    is recorded with the decision."""
    rt, engine = world.rt, world.engine
    world.open_position("sig-first")  # a completed execution on paper: its decision
    [first] = rt.state.query(Collections.EXECUTIONS)
    assert first["exchange_account"] == "alice"
    signal = long_signal("sig-redelivered", engine.last_price(SYMBOL), rt.clock.now())
    rt.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    exec_id = execution_id(signal.id, "alice")
    decided = {
        **first,
        "id": exec_id,
        "signal_id": signal.id,
        "outcome": None,
        "order_ids": [],
        "position_id": None,
        "completed_at": None,
    }
    rt.state.create(Collections.EXECUTIONS, exec_id, decided)
    world.move_alice_to(TradingMode.LIVE, VENUE)
    done = rt.execute(message(signal.id, "alice"))
    assert done.outcome is not None and done.outcome.value == "accepted", done
    position = rt.state.get(Collections.POSITIONS, exec_id)
    assert position is not None and position["exchange_account"] == "alice"
    assert len(rt.paper_exchange.orders("alice")) == 6  # both executions' three orders
    assert engine.orders == {} and engine.log == []
    assert rt.monitor.reconcile().clean
