"""Portfolio rules and breakers on real recorded bars (the bundled 2025-05-21/22 sample).

Positions are opened on the paper exchange at the real prices of the moment, then the
clock moves over the real bars and the monitor (or the executor) acts. Each test asserts
the exact positions closed and orders cancelled, and the stored action with its numbers.

On 2025-05-21 BTC fell from 109,736 (17:22 close) to 108,616 (17:28 close), −1.02 % in
5 minutes, the deepest 5-minute fall of BTC in the whole recorded month: no −1.5 % dump
exists in the data, so the BTC-dump scenario runs the same rule with a 1 % threshold
(and checks that the SPEC's 1.5 % does not fire on it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.market import MarketType, Side
from prometheus_trader.domain.portfolio import PortfolioConfig
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    RiskCode,
)
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage, Filter
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics
from prometheus_trader.usecases.notify import NotifyEvent
from prometheus_trader.usecases.stats import user_stats_id

pytestmark = pytest.mark.integration

BTC, ETH, SOL, XRP = (f"{b}/USDT:USDT" for b in ("BTC", "ETH", "SOL", "XRP"))
OPEN_AT = datetime(2025, 5, 21, 16, 30, tzinfo=UTC)
BEFORE_DUMP = datetime(2025, 5, 21, 17, 23, tzinfo=UTC)
# the per-position rules are tested elsewhere: here only the portfolio rules act
PORTFOLIO_ONLY = ExitConfig(
    enable_order_flow=False,
    enable_adverse_moves=False,
    enable_trailing_stop=False,
    enable_stop_loss=False,
    enable_take_profit=False,
    enable_profit_lock=False,
    enable_max_hold=False,
)
DUMP_AT = datetime(2025, 5, 21, 17, 29, tzinfo=UTC)  # BTC's 17:28 bar is visible


@dataclass
class World:
    clock: SimulatedClock
    source: DuckDBMarketStore
    exchange: ReplayExchange
    state: SqliteStateStore
    bus: InMemoryBus
    blobs: LocalBlobStore

    def monitor(self, portfolio: PortfolioConfig | None = None) -> ExitMonitor:
        return ExitMonitor(
            self.state,
            self.exchange,
            self.bus,
            self.blobs,
            self.clock,
            PORTFOLIO_ONLY,
            portfolio=portfolio,
        )

    def add_user(self, user: User) -> User:
        self.state.set(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        return user

    def open(
        self,
        user: User,
        symbol: str,
        direction: Direction,
        notional: float,
        stop_pct: float = 10.0,
    ) -> Position:
        """A market entry with its exchange-side stop (10 % away), stored as a position."""
        price = self.exchange.fetch_tickers([symbol])[0].last
        pid = f"{user.user_id}-{symbol.split('/')[0]}"
        entry_side = Side.BUY if direction is Direction.LONG else Side.SELL
        exit_side = Side.SELL if direction is Direction.LONG else Side.BUY
        account = user.exchange_account
        entry = self.exchange.create_order(
            account,
            OrderRequest(
                client_order_id=client_order_id(pid, user.user_id, "entry"),
                symbol=symbol,
                side=entry_side,
                type=OrderType.MARKET,
                amount=round(notional / price, 3),
                leverage=10,
            ),
        )
        assert entry.average is not None
        stop_price = entry.average * (1 - direction.sign * stop_pct / 100)
        stop = self.exchange.create_order(
            account,
            OrderRequest(
                client_order_id=client_order_id(pid, user.user_id, "sl"),
                symbol=symbol,
                side=exit_side,
                type=OrderType.STOP_MARKET,
                amount=entry.filled,
                stop_price=stop_price,
                reduce_only=True,
            ),
        )
        position = Position(
            id=pid,
            user_id=user.user_id,
            signal_id=f"sig-{pid}",
            exchange="binance",
            market_type=MarketType.PERP,
            symbol=symbol,
            direction=direction,
            amount=entry.filled,
            entry_price=entry.average,
            entry_fee=entry.fee,
            leverage=10,
            stop_loss=stop_price,
            take_profits=[],
            trailing_stop_pct=0.5,
            best_price=entry.average,
            worst_price=entry.average,
            stop_order_id=stop.id,
            entry_order_id=entry.id,
            opened_at=self.clock.now(),
            opened_ms=entry.updated_ms,
            max_hold_minutes=10_000,
        )
        self.state.create(Collections.POSITIONS, pid, position.model_dump(mode="json"))
        return position

    def open_ids(self, user_id: str) -> list[str]:
        docs = self.state.query(
            Collections.POSITIONS,
            [Filter("user_id", "==", user_id), Filter("status", "==", "open")],
        )
        return sorted(d["id"] for d in docs)

    def status(self, account: str, order_id: str | None) -> OrderStatus:
        assert order_id is not None
        return self.exchange.fetch_order(account, order_id).status

    def actions(self, rule: str) -> list[dict[str, object]]:
        return sorted(
            (d for d in self.state.query(Collections.PORTFOLIO_ACTIONS) if d["rule"] == rule),
            key=lambda d: str(d["at"]),
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = SimulatedClock(OPEN_AT)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    w = World(
        clock=clock,
        source=source,
        exchange=ReplayExchange(source, clock),
        state=SqliteStateStore(),
        bus=InMemoryBus(),
        blobs=LocalBlobStore(tmp_path / "blobs"),
    )
    yield w
    w.state.close()
    source.close()


def _audit_lines(w: World) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for key in w.blobs.list("audit/")
        for line in w.blobs.get(key).decode().splitlines()
    ]


# --------------------------------------------------------------------------- BTC dump
def test_btc_dump_closes_correlated_longs_only(world: World) -> None:
    user = world.add_user(User.with_profile("u1", RiskProfile.AGGRESSIVE))
    world.clock.set(BEFORE_DUMP)
    eth = world.open(user, ETH, Direction.LONG, 2_000)
    sol = world.open(user, SOL, Direction.LONG, 2_000)
    xrp_short = world.open(user, XRP, Direction.SHORT, 2_000)
    world.clock.set(DUMP_AT)
    # the SPEC's threshold: a −1.02 % move is no dump
    assert world.monitor().cycle().closed == {}
    report = world.monitor(PortfolioConfig(btc_dump_pct=1.0)).cycle()
    assert report.closed == {eth.id: "btc_dump", sol.id: "btc_dump"}
    assert world.open_ids("u1") == [xrp_short.id]
    account = user.exchange_account
    assert world.status(account, eth.stop_order_id) is OrderStatus.CANCELED
    assert world.status(account, sol.stop_order_id) is OrderStatus.CANCELED
    assert world.status(account, xrp_short.stop_order_id) is OrderStatus.OPEN
    [action] = world.actions("btc_dump")
    numbers = action["numbers"]
    assert isinstance(numbers, dict)
    assert numbers["btc_change_pct"] == pytest.approx(-1.0206, abs=1e-3)
    assert numbers[f"correlation_24h[{ETH}]"] > 0.7
    assert numbers[f"correlation_24h[{SOL}]"] > 0.7
    assert action["closed"] == [eth.id, sol.id]
    closed = world.state.get(Collections.POSITIONS, eth.id)
    assert closed is not None and closed["exit_reason"] == "btc_dump"
    cancels = [a for a in _audit_lines(world) if a["action"] in ("cancel_order", "exchange_cancel")]
    assert sorted(str(a["order_id"]) for a in cancels) == sorted(
        [str(eth.stop_order_id), str(sol.stop_order_id)]
    )


# -------------------------------------------------------------------- drawdown ladder
@pytest.mark.parametrize(
    ("day_loss_pct", "step", "action", "closed"),
    [
        (1.5, None, None, []),
        (2.1, 2.0, "alert", []),
        (3.1, 3.0, "close_worst_half", ["u1-BTC", "u1-SOL"]),
        (4.1, 4.0, "close_all", ["u1-BTC", "u1-ETH", "u1-SOL"]),
        (5.1, 5.0, "close_all_and_halt", ["u1-BTC", "u1-ETH", "u1-SOL"]),
    ],
)
def test_daily_drawdown_ladder_steps(
    world: World, day_loss_pct: float, step: float | None, action: str | None, closed: list[str]
) -> None:
    user = world.add_user(User.with_profile("u1", RiskProfile.AGGRESSIVE))
    positions = {
        p.id: p
        for p in (
            world.open(user, BTC, Direction.LONG, 3_000),
            world.open(user, ETH, Direction.SHORT, 3_000),
            world.open(user, SOL, Direction.LONG, 3_000),
        )
    }
    world.clock.set(DUMP_AT)  # the longs are under water, the short is in profit
    equity = world.exchange.fetch_balance(user.exchange_account).equity
    # the day started higher: earlier today the user lost day_loss_pct (more or less)
    world.state.set(
        Collections.STATS,
        user_stats_id("u1"),
        {
            "user_id": "u1",
            "day": "2025-05-21",
            "day_start_equity": equity / (1 - day_loss_pct / 100),
            "peak_equity": equity / (1 - day_loss_pct / 100),
        },
    )
    report = world.monitor().cycle()
    assert sorted(report.closed) == closed
    assert all(report.closed[c] == "drawdown" for c in closed)
    account = user.exchange_account
    for pid, p in positions.items():
        expected = OrderStatus.CANCELED if pid in closed else OrderStatus.OPEN
        assert world.status(account, p.stop_order_id) is expected
    ladder = world.actions("daily_drawdown_ladder")
    if step is None:
        assert ladder == []
        return
    [stored] = ladder
    numbers = stored["numbers"]
    assert isinstance(numbers, dict)
    assert numbers["ladder_step_pct"] == step
    assert numbers["daily_drawdown_pct"] == pytest.approx(day_loss_pct, abs=1e-6)
    assert stored["closed"] == closed and action in str(stored["reason"])
    # the step acts once a day: the next cycle does nothing more
    assert world.monitor().cycle().closed == {}
    assert len(world.actions("daily_drawdown_ladder")) == 1
    events = [e for e in world.state.query(Collections.EVENTS) if e["type"] == "circuit_breaker"]
    assert any(e["payload"]["breaker"] == "daily_drawdown_ladder" for e in events)


# ----------------------------------------------------------------------- kill switch
def test_kill_switch_cancels_everything_on_every_symbol_idempotently(world: World) -> None:
    user = world.add_user(User.with_profile("u1", RiskProfile.AGGRESSIVE))
    other = world.add_user(User.with_profile("u2", RiskProfile.AGGRESSIVE))
    btc = world.open(user, BTC, Direction.LONG, 2_000)
    eth = world.open(user, ETH, Direction.SHORT, 2_000)
    bystander = world.open(other, ETH, Direction.LONG, 2_000)
    account = user.exchange_account
    # a resting entry order (no position behind it) on a third symbol
    price = world.exchange.fetch_tickers([SOL])[0].last
    resting = world.exchange.create_order(
        account,
        OrderRequest(
            client_order_id="pt-resting-sol",
            symbol=SOL,
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=1.0,
            price=round(price * 0.9, 2),
            leverage=10,
        ),
    )
    world.clock.set(OPEN_AT + timedelta(minutes=10))
    world.add_user(user.model_copy(update={"kill_switch": True}))
    report = world.monitor().cycle()
    assert report.closed == {btc.id: "kill_switch", eth.id: "kill_switch"}
    assert world.open_ids("u1") == [] and world.open_ids("u2") == [bystander.id]
    assert world.status(account, btc.stop_order_id) is OrderStatus.CANCELED
    assert world.status(account, eth.stop_order_id) is OrderStatus.CANCELED
    assert world.status(account, resting.id) is OrderStatus.CANCELED
    assert world.exchange.fetch_open_orders(account) == []
    assert world.exchange.fetch_positions(account) == []
    [stored] = world.actions("kill_switch")
    assert stored["closed"] == [btc.id, eth.id]
    # positions close first (exit before stop), so their stops go with the close; the
    # kill switch then cancels what still rests: the entry order on the third symbol
    assert stored["cancelled"] == [resting.id]
    # idempotent: a second pass finds nothing to do and records nothing
    orders_before = len(world.exchange.orders(account))
    world.clock.set(OPEN_AT + timedelta(minutes=11))
    assert world.monitor().cycle().closed == {}
    assert len(world.exchange.orders(account)) == orders_before
    assert len(world.actions("kill_switch")) == 1
    assert world.status(other.exchange_account, bystander.stop_order_id) is OrderStatus.OPEN


# ------------------------------------------------- max drawdown breaker in the executor
def _signal(world: World, symbol: str, n: int) -> OpportunitySignal:
    price = world.exchange.fetch_tickers([symbol])[0].last
    now = world.clock.now()
    stop = price * 0.975
    signal = OpportunitySignal(
        id=f"sig-{n}",
        symbol=symbol,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=stop,
        stop_loss_pct=2.5,
        take_profits=[TakeProfitLevel(price=price * 1.075, pct=7.5, size_fraction=1.0)],
        reward_risk=3.0,
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )
    world.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    return signal


def _execute(world: World, executor: ExecuteSignalForUser, signal: OpportunitySignal) -> str:
    data = ExecutionRequest(signal_id=signal.id, user_id="dd").model_dump(mode="json")
    execution = executor.handle(BusMessage(Topics.EXECUTIONS, signal.id, data))
    assert execution.outcome is not None
    return execution.outcome.value


def test_max_drawdown_trips_at_the_right_decision_and_resumes_by_the_user(
    world: World,
) -> None:
    limits = User.with_profile("x", RiskProfile.AGGRESSIVE).limits.model_copy(
        update={"risk_per_trade_pct": 10.0, "max_drawdown_pct": 3.0, "max_exposure_pct": 2000}
    )
    user = world.add_user(User.with_profile("dd", RiskProfile.AGGRESSIVE, limits=limits))
    executor = ExecuteSignalForUser(
        world.state, world.exchange, world.source, world.bus, world.blobs, world.clock
    )
    outbox = world.blobs.path_for("outbox.jsonl")
    notifier = NotifyEvent(ConsoleNotifier(outbox), world.state)
    world.bus.subscribe(Topics.EVENTS, Subscriptions.NOTIFIER, notifier.handle)
    world.clock.set(datetime(2025, 5, 21, 17, 20, tzinfo=UTC))
    assert _execute(world, executor, _signal(world, BTC, 1)) == "accepted"
    peak = world.exchange.fetch_balance(user.exchange_account).equity
    decisions: list[tuple[str, str, float]] = []
    for minute in range(21, 32):  # BTC falls ~1 % over these minutes: 4x notional
        world.clock.set(datetime(2025, 5, 21, 17, minute, tzinfo=UTC))
        outcome = _execute(world, executor, _signal(world, ETH, minute))
        doc = world.state.get(Collections.EXECUTIONS, execution_id(f"sig-{minute}", "dd"))
        assert doc is not None
        dd = next(c for c in doc["decision"]["checks"] if c["code"] == RiskCode.MAX_DRAWDOWN)
        decisions.append((f"17:{minute}", outcome, dd["values"]["drawdown_pct"]))
        if not dd["passed"]:
            break
    _when, outcome, drawdown = decisions[-1]
    assert outcome == "rejected" and drawdown >= 3.0
    assert all(d < 3.0 for _, _, d in decisions[:-1])  # the first decision past the limit
    assert dd["values"]["peak_equity"] >= peak  # the true peak, not the day start
    trips = [
        e
        for e in world.state.query(Collections.EVENTS)
        if e["type"] == "circuit_breaker" and e["payload"]["breaker"] == "max_drawdown"
    ]
    assert [e["payload"]["action"] for e in trips] == ["tripped"]
    assert trips[0]["payload"]["drawdown_pct"] == pytest.approx(drawdown)
    # still tripped on the next UTC day (only the daily figures reset); the user's resume
    # lifts it (the peak restarts at the equity of that moment)
    world.clock.set(datetime(2025, 5, 22, 0, 5, tzinfo=UTC))
    assert _execute(world, executor, _signal(world, SOL, 100)) == "rejected"
    assert _reasons(world, 100) == [RiskCode.MAX_DRAWDOWN.value]
    world.add_user(user.model_copy(update={"breakers_resume_requested_at": world.clock.now()}))
    world.clock.set(world.clock.now() + timedelta(minutes=1))
    outcome = _execute(world, executor, _signal(world, XRP, 101))
    assert outcome == DecisionOutcome.ACCEPTED.value, _reasons(world, 101)
    resets = [
        e
        for e in world.state.query(Collections.EVENTS)
        if e["type"] == "circuit_breaker" and e["payload"]["action"] == "reset"
    ]
    assert [e["payload"]["breaker"] for e in resets] == ["max_drawdown"]
    # the trip and the reset reached the notifier, with their numbers
    world.bus.drain_all()
    sent = [json.loads(line) for line in Path(outbox).read_text().splitlines()]
    breaker_notes = [n for n in sent if n["event_type"] == "circuit_breaker"]
    assert [(n["body"]["breaker"], n["body"]["action"]) for n in breaker_notes] == [
        ("max_drawdown", "tripped"),
        ("max_drawdown", "reset"),
    ]
    assert breaker_notes[0]["body"]["drawdown_pct"] == pytest.approx(drawdown)


def _reasons(world: World, n: int) -> list[str]:
    doc = world.state.get(Collections.EXECUTIONS, execution_id(f"sig-{n}", "dd"))
    assert doc is not None
    return [str(r) for r in doc["reasons"]]


def test_exchange_side_stop_fill_and_cancels_are_audited(world: World) -> None:
    user = world.add_user(User.with_profile("u1", RiskProfile.AGGRESSIVE))
    world.clock.set(BEFORE_DUMP)
    eth = world.open(user, ETH, Direction.LONG, 2_000, stop_pct=0.3)
    world.clock.set(DUMP_AT + timedelta(minutes=1))
    report = world.monitor().cycle()
    assert report.closed == {eth.id: "exchange-side exit"}
    fills = [a for a in _audit_lines(world) if a["action"] == "exchange_fill"]
    assert [(a["order_id"], a["reason"], a["status"]) for a in fills] == [
        (eth.stop_order_id, "stop_loss", "filled")
    ]
    closed = world.state.get(Collections.POSITIONS, eth.id)
    assert closed is not None and closed["exit_reason"] == "stop_loss"
