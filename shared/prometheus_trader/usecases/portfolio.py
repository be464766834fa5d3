"""Portfolio protection in the exit monitor (SPEC §6): kill switch, daily drawdown ladder,
BTC dump. The rules are pure (``domain.portfolio``); this module reads the accounts and the
market, acts through the monitor's own close, and stores every action with its reason and
numbers (collection ``portfolio_actions``, plus a ``circuit_breaker`` event).

Also the executor's two portfolio helpers: the user's journal edge (for Kelly sizing) and
"an opposite signal closes the open position first".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_trader.domain.breakers import (
    Breaker,
    BreakerTransition,
    consecutive_resume_at,
    utc_day,
)
from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import client_order_id, stable_id
from prometheus_trader.domain.market import MINUTE_MS, Side
from prometheus_trader.domain.planner import JournalEdge, journal_edge
from prometheus_trader.domain.portfolio import (
    DEFAULT_PORTFOLIO,
    LadderAction,
    OpenExposure,
    PortfolioConfig,
    btc_dump_closes,
    ladder_decision,
    pct_change,
    returns_correlation,
)
from prometheus_trader.domain.signals import Direction, OpportunitySignal
from prometheus_trader.domain.trading import (
    ExitReason,
    OrderRequest,
    OrderType,
    Position,
    PositionStatus,
    position_account,
)
from prometheus_trader.domain.users import RiskLimits, User
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    ChangeFeed,
    Clock,
    Exchange,
    Filter,
    StateStore,
)
from prometheus_trader.usecases.audit import audit_order
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.live_docs import LiveDocs
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.scaled import sync_scaled_entries
from prometheus_trader.usecases.stats import (
    UserStats,
    observe_user,
    publish_breaker_events,
    user_stats_id,
)

log = logging.getLogger(__name__)

Closer = Callable[[Position, ExitReason, dict[str, float | str]], None]


@dataclass(frozen=True)
class _Quiet:
    """An equity reading that changed nothing: the same inputs change nothing again until
    the UTC day rolls or the consecutive-loss cool-down ends (``observe_account``)."""

    user: User
    stats: UserStats
    equity: float
    day: str
    resume_at: datetime | None


@dataclass
class PortfolioReport:
    """What one pass of the portfolio rules did."""

    closed: dict[str, str] = field(default_factory=dict)  # position id -> reason
    cancelled: list[str] = field(default_factory=list)  # order ids
    actions: list[str] = field(default_factory=list)  # stored action ids


class PortfolioGuard:
    """Runs the portfolio rules once per monitor cycle (see the module doc)."""

    def __init__(
        self,
        state: StateStore,
        exchange: Exchange,
        bus: Bus,
        blobs: BlobStore,
        clock: Clock,
        close: Closer,
        config: PortfolioConfig = DEFAULT_PORTFOLIO,
    ) -> None:
        self._state = state
        self._exchange = exchange
        self._bus = bus
        self._blobs = blobs
        self._clock = clock
        self._close = close
        self._config = config
        self._btc_checked_minute: int | None = None
        self._flat_seen: set[str] = set()
        # the users' stats held from the change stream (one read per user and cycle was
        # a quarter of a quiet 10,000-position cycle, and 1,000 emulator round trips);
        # without a change feed each user's document is read as before
        self._stats_docs: LiveDocs[UserStats] | None = None
        if isinstance(state, ChangeFeed):
            self._stats_docs = LiveDocs(
                state,
                clock,
                Collections.STATS,
                [Filter("kind", "==", "user")],
                UserStats,
                id_field="user_id",
            )
        self._quiet: dict[str, _Quiet] = {}
        # user -> the held stats when this guard wrote that user's document
        self._wrote: dict[str, UserStats | None] = {}
        # below the ladder's first step no step is reached (``ladder_decision`` says None)
        self._first_step = min((p for p, _ in config.ladder), default=math.inf)

    def close(self) -> None:
        """Stop following the stats' change stream."""
        if self._stats_docs is not None:
            self._stats_docs.close()

    def run(self, positions: list[Position], active: list[User] | None = None) -> PortfolioReport:
        """Apply kill switch, ladder and BTC dump to every active user's open positions.

        ``active``: the active users when the caller holds them (the exit monitor keeps
        them in memory from the change stream); else they are queried."""
        report = PortfolioReport()
        sync_scaled_entries(self._state, self._exchange, self._bus, self._blobs, self._clock)
        users = active
        if users is None:
            users = [
                User.model_validate(d)
                for d in self._state.query(Collections.USERS, [Filter("active", "==", True)])
            ]
        by_user: dict[str, list[Position]] = {}
        for p in positions:
            by_user.setdefault(p.user_id, []).append(p)
        # priced only when a ladder step is reached (rarely): a quiet cycle reads no ticker
        prices = _LazyPrices(self._prices, {p.symbol for p in positions})
        held = self._held_stats()
        for user in sorted(users, key=lambda u: u.user_id):
            mine = by_user.get(user.user_id, [])
            if report.closed:
                mine = [p for p in mine if p.id not in report.closed]
            if user.kill_switch:
                self.kill_switch(user, mine, report)
                continue
            if not mine and user.user_id in self._flat_seen:
                continue  # a flat account's equity cannot move: one reading is enough
            self._ladder(user, mine, prices, report, held)
            if mine:
                self._flat_seen.discard(user.user_id)
            else:
                self._flat_seen.add(user.user_id)
        open_left = (
            [p for p in positions if p.id not in report.closed] if report.closed else positions
        )
        self._btc_dump(open_left, report)
        return report

    def settled(self, users: list[User]) -> bool:
        """Whether ``run`` without positions does nothing for ``users`` (each read flat
        already, kill switch off): only a change to the store can make it act again."""
        return all(not u.kill_switch and u.user_id in self._flat_seen for u in users)

    # ---------------------------------------------------------------- kill switch
    def kill_switch(
        self, user: User, positions: list[Position], report: PortfolioReport | None = None
    ) -> PortfolioReport:
        """Cancel every resting order and close every position of the user, on every
        symbol (tracked or not) of every account they trade on: the current one and each
        one their positions are on (each closes on its own account). Idempotent: a second
        pass finds nothing to do."""
        report = report or PortfolioReport()
        accounts = sorted({user.exchange_account, *(position_account(p, user) for p in positions)})
        # close first: each close places its exit before cancelling that position's stop,
        # so a position whose exit fails keeps its stop (never left unprotected)
        closed: list[str] = []
        still_protected: set[str] = set()
        for position in positions:
            try:
                self._close(position, ExitReason.KILL_SWITCH, {"kill_switch": "on"})
            except Exception:
                still_protected.update(
                    filter(None, [position.stop_order_id, *position.take_profit_order_ids])
                )
                continue
            closed.append(position.id)
            report.closed[position.id] = ExitReason.KILL_SWITCH.value
        cancelled: list[str] = []
        flattened: list[str] = []
        for account in accounts:
            for order in self._exchange.fetch_open_orders(account):
                if order.id in still_protected:
                    continue
                self._exchange.cancel_order(account, order.id)
                self._audit("cancel_order", user.user_id, order.id, order.symbol, "kill_switch")
                cancelled.append(order.id)
            # whatever the exchange still holds (not tracked by us): flatten it too
            for held in self._exchange.fetch_positions(account):
                side = Side.SELL if held.direction is Direction.LONG else Side.BUY
                now_ms = self._clock.now_ms()
                request = OrderRequest(
                    client_order_id=client_order_id(f"kill-{now_ms}", user.user_id, held.symbol),
                    symbol=held.symbol,
                    side=side,
                    type=OrderType.MARKET,
                    amount=abs(held.amount),
                    reduce_only=True,
                )
                order = self._exchange.create_order(account, request)
                self._audit("close_untracked", user.user_id, order.id, held.symbol, "kill_switch")
                flattened.append(held.symbol)
        report.cancelled.extend(cancelled)
        if cancelled or closed or flattened:
            self._record(
                user.user_id,
                "kill_switch",
                key=str(self._clock.now_ms()),
                reason="kill switch on: cancel every order, close every position",
                numbers={
                    "orders_cancelled": float(len(cancelled)),
                    "positions_closed": float(len(closed)),
                    "untracked_flattened": float(len(flattened)),
                },
                ids={"cancelled": cancelled, "closed": closed, "flattened": flattened},
                report=report,
            )
        return report

    # --------------------------------------------------------------------- ladder
    def _ladder(
        self,
        user: User,
        positions: list[Position],
        prices: _LazyPrices,
        report: PortfolioReport,
        held: dict[str, UserStats] | None = None,
    ) -> None:
        now = self._clock.now()
        equity = self._exchange.fetch_balance(user.exchange_account).equity
        stats, transitions = self._observe(user, now, equity, held)
        publish_breaker_events(self._bus, self._state, user.user_id, transitions)
        drawdown = max(0.0, -stats.day_change_pct(equity))
        if drawdown < self._first_step:
            return  # no ladder step reached: ladder_decision is None
        step_done = stats.ladder_step_today(now)
        # no step to act on is decided without the positions: price them only if needed
        if ladder_decision(drawdown, step_done, [], self._config) is None:
            return
        exposures = [_exposure(p, prices.get()) for p in positions]
        decision = ladder_decision(drawdown, step_done, exposures, self._config)
        if decision is None:
            return
        detail: dict[str, float | str] = {
            "daily_drawdown_pct": drawdown,
            "ladder_step_pct": decision.step_pct,
            "action": decision.action.value,
        }
        closing = {p.id: p for p in positions}
        for position_id in decision.close:
            self._close(closing[position_id], ExitReason.DRAWDOWN, detail)
            report.closed[position_id] = ExitReason.DRAWDOWN.value
        self._state.update(
            Collections.STATS,
            user_stats_id(user.user_id),
            {"ladder_day": now.strftime("%Y-%m-%d"), "ladder_step_pct": decision.step_pct},
        )
        if held is not None:  # the held stats are older than this write
            self._wrote[user.user_id] = held.get(user.user_id)
            self._quiet.pop(user.user_id, None)
        halt = decision.action is LadderAction.CLOSE_ALL_AND_HALT
        self._record(
            user.user_id,
            "daily_drawdown_ladder",
            key=f"{now:%Y-%m-%d}-{decision.step_pct}",
            reason=f"daily drawdown {drawdown:.2f}% >= {decision.step_pct:g}%: "
            f"{decision.action.value}"
            + (" (trading stopped until the next UTC day)" if halt else ""),
            numbers={
                "daily_drawdown_pct": drawdown,
                "ladder_step_pct": decision.step_pct,
                "equity": equity,
                "day_start_equity": stats.day_start_equity,
                "open_positions": float(len(positions)),
                "positions_closed": float(len(decision.close)),
            },
            ids={"closed": decision.close},
            report=report,
        )

    def _held_stats(self) -> dict[str, UserStats] | None:
        """The users' stats by user id, from the change stream (None: read per user)."""
        if self._stats_docs is None:
            return None
        return {s.user_id: s for s in self._stats_docs.refresh().values()}

    def _observe(
        self, user: User, now: datetime, equity: float, held: dict[str, UserStats] | None
    ) -> tuple[UserStats, list[BreakerTransition]]:
        """``observe_user`` on the held stats; a reading that changed nothing is not
        recomputed while its inputs stay the same (see ``_Quiet``)."""
        if held is None:
            return observe_user(self._state, user, now, equity)
        uid = user.user_id
        current = held.get(uid)
        if uid in self._wrote:
            if self._wrote[uid] is current:
                # this guard wrote the stats and the stream has not brought that back yet
                # (a remote listener lags): read the document, as before
                return observe_user(self._state, user, now, equity)
            del self._wrote[uid]
        day = utc_day(now)  # = now.strftime("%Y-%m-%d"), remembered for this instant
        quiet = self._quiet.get(uid)
        if (
            quiet is not None
            and quiet.stats is current
            and quiet.user is user
            and (quiet.equity == equity or unchanged_at(current, user.limits, equity))
            and quiet.day == day
            and (quiet.resume_at is None or now < quiet.resume_at)
        ):
            return quiet.stats, []
        stats, transitions = observe_user(self._state, user, now, equity, current)
        if current is not None and not transitions and stats == current:
            resume_at = consecutive_resume_at(current, user.limits)
            self._quiet[uid] = _Quiet(user, current, equity, day, resume_at)
        else:  # it may have written: held stats are stale until the stream has it
            self._quiet.pop(uid, None)
            self._wrote[uid] = current
        return stats, transitions

    # ------------------------------------------------------------------- BTC dump
    def _btc_dump(self, positions: list[Position], report: PortfolioReport) -> None:
        longs = [p for p in positions if p.direction is Direction.LONG]
        now_ms = self._clock.now_ms()
        minute = now_ms // MINUTE_MS
        if not longs or minute == self._btc_checked_minute:
            return  # 1m closes change once a minute
        self._btc_checked_minute = minute
        cfg = self._config
        since = now_ms - (cfg.btc_dump_minutes + 3) * MINUTE_MS
        closes = [c.close for c in self._exchange.fetch_ohlcv(cfg.btc_symbol, "1m", since)]
        change = pct_change(closes, cfg.btc_dump_minutes)
        if change is None or change > -cfg.btc_dump_pct:
            return
        correlations = {
            s: self._correlation(s)
            for s in sorted({p.symbol for p in longs})
            if s != cfg.btc_symbol
        }
        prices = self._prices({p.symbol for p in longs})
        exposures = [_exposure(p, prices) for p in longs]
        to_close = btc_dump_closes(change, exposures, correlations, cfg)
        by_id = {p.id: p for p in longs}
        for position_id in to_close:
            p = by_id[position_id]
            corr = 1.0 if p.symbol == cfg.btc_symbol else correlations.get(p.symbol)
            self._close(
                p,
                ExitReason.BTC_DUMP,
                {"btc_change_pct": change, "correlation_24h": corr if corr is not None else -2.0},
            )
            report.closed[position_id] = ExitReason.BTC_DUMP.value
        numbers: dict[str, float] = {
            "btc_change_pct": change,
            "window_minutes": float(cfg.btc_dump_minutes),
            "correlation_min": cfg.btc_correlation_min,
            "positions_closed": float(len(to_close)),
        }
        numbers.update(
            {f"correlation_24h[{s}]": c for s, c in correlations.items() if c is not None}
        )
        for user_id in sorted({p.user_id for p in longs}):
            mine = sorted(pid for pid in to_close if by_id[pid].user_id == user_id)
            self._record(
                user_id,
                "btc_dump",
                key=str(minute),
                reason=f"BTC {change:.2f}% in {cfg.btc_dump_minutes} min: close longs with "
                f"24h correlation > {cfg.btc_correlation_min:g}",
                numbers=numbers,
                ids={"closed": mine},
                report=report,
            )

    def _correlation(self, symbol: str) -> float | None:
        cfg = self._config
        tf = f"{cfg.correlation_timeframe_minutes}m"
        since = self._clock.now_ms() - cfg.correlation_hours * 60 * MINUTE_MS
        limit = cfg.correlation_hours * 60 // cfg.correlation_timeframe_minutes + 2
        a = {c.ts_ms: c.close for c in self._exchange.fetch_ohlcv(symbol, tf, since, limit)}
        b = {c.ts_ms: c.close for c in self._exchange.fetch_ohlcv(cfg.btc_symbol, tf, since, limit)}
        common = sorted(set(a) & set(b))
        return returns_correlation([a[t] for t in common], [b[t] for t in common])

    # -------------------------------------------------------------------- helpers
    def _prices(self, symbols: Iterable[str]) -> dict[str, float]:
        wanted = sorted(set(symbols))
        if not wanted:
            return {}
        return {t.symbol: t.last for t in self._exchange.fetch_tickers(wanted)}

    def _audit(self, action: str, user_id: str, order_id: str, symbol: str, reason: str) -> None:
        audit_order(
            self._blobs,
            self._clock.now(),
            {
                "action": action,
                "user_id": user_id,
                "order_id": order_id,
                "symbol": symbol,
                "reason": reason,
                "ts_ms": self._clock.now_ms(),
            },
        )

    def _record(
        self,
        user_id: str,
        rule: str,
        *,
        key: str,
        reason: str,
        numbers: dict[str, float],
        ids: dict[str, list[str]],
        report: PortfolioReport,
    ) -> None:
        action_id = stable_id("portfolio", rule, user_id, key)
        now = self._clock.now()
        doc: dict[str, Any] = {
            "id": action_id,
            "rule": rule,
            "user_id": user_id,
            "at": now.isoformat(),
            "at_ms": self._clock.now_ms(),
            "reason": reason,
            "numbers": numbers,
            **ids,
        }
        if not self._state.create(Collections.PORTFOLIO_ACTIONS, action_id, doc):
            return
        report.actions.append(action_id)
        publish_event(
            self._bus,
            self._state,
            EventType.CIRCUIT_BREAKER,
            key=action_id,
            now=now,
            user_id=user_id,
            severity=Severity.CRITICAL,
            payload={"breaker": rule, "action": "tripped", "reason": reason, **numbers, **ids},
        )
        log.warning(
            "portfolio rule %s: %s",
            rule,
            reason,
            extra=labels(stage="monitor", user=user_id),
        )


class _LazyPrices:
    """The last prices of a run's symbols, read from the exchange on first use (the run
    reads at one time: the first answer is the run's)."""

    def __init__(self, read: Callable[[Iterable[str]], dict[str, float]], symbols: set[str]):
        self._read = read
        self._symbols = symbols
        self._prices: dict[str, float] | None = None

    def get(self) -> dict[str, float]:
        """The prices by symbol."""
        if self._prices is None:
            self._prices = self._read(self._symbols)
        return self._prices


def unchanged_at(stats: UserStats, limits: RiskLimits, equity: float) -> bool:
    """Whether a reading at ``equity`` leaves ``stats`` as they are, given that a reading
    at another equity did (same user, same UTC day, the cool-down not over): of
    ``observe_account``'s steps only these read the equity: the day's first equity (set
    while ``day_start_equity <= 0 < equity``), the peak (raised above it) and the
    max-drawdown trip (not yet tripped: trips at ``drawdown_pct >= limit``).
    ``tests/unit/test_portfolio_quiet.py`` checks it against ``observe_stats_model``."""
    if equity > stats.peak_equity or stats.day_start_equity <= 0 < equity:
        return False
    return (
        Breaker.MAX_DRAWDOWN.value in stats.tripped
        or stats.drawdown_pct(equity) < limits.max_drawdown_pct
    )


def _exposure(position: Position, prices: dict[str, float]) -> OpenExposure:
    price = prices.get(position.symbol, position.entry_price)
    return OpenExposure(
        position_id=position.id,
        symbol=position.symbol,
        long=position.direction is Direction.LONG,
        unrealized_pct=position.move_pct(price),
    )


# ------------------------------------------------------------------ executor helpers
def user_edge(state: StateStore, user: User) -> JournalEdge | None:
    """The user's own record from the journal (only read when Kelly sizing is on)."""
    if user.kelly_fraction is None:
        return None
    docs = state.query(Collections.JOURNAL, [Filter("user_id", "==", user.user_id)])
    return edge_from_journal(docs)


def edge_from_journal(docs: Iterable[Mapping[str, Any]]) -> JournalEdge:
    """The edge of a user's journal documents (``Collections.JOURNAL`` with ``user_id`` ==
    the user; any order); pure: a batched caller reads many users' journals at once."""
    return journal_edge([float(d["equity_pnl_pct"]) for d in docs])


def close_opposite(
    state: StateStore,
    exchange: Exchange,
    bus: Bus,
    blobs: BlobStore,
    clock: Clock,
    user: User,
    signal: OpportunitySignal,
) -> list[str]:
    """Close the user's open positions in ``signal.symbol`` that face the other way."""
    docs = state.query(
        Collections.POSITIONS,
        [
            Filter("user_id", "==", user.user_id),
            Filter("status", "==", PositionStatus.OPEN.value),
        ],
    )
    opposite = [
        p
        for p in (Position.model_validate(d) for d in docs)
        if p.symbol == signal.symbol and p.direction is not signal.direction
    ]
    if not opposite:
        return []
    # imported here: the monitor imports the executor's module graph
    from prometheus_trader.usecases.monitor import ExitMonitor

    monitor = ExitMonitor(state, exchange, bus, blobs, clock, worker_id="executor")
    for p in opposite:
        monitor.close_position(
            p,
            ExitReason.OPPOSITE_SIGNAL,
            {"signal_id": signal.id, "direction": signal.direction.value},
        )
    return [p.id for p in opposite]
