"""Per-user running statistics the risk gate needs (breakers, drawdown, the daily ladder)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from pydantic import Field

from prometheus_trader.domain.breakers import (
    AccountState,
    BreakerTransition,
    consecutive_resume_at,
    observe_account,
    utc_day,
)
from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.portfolio import ladder_blocks_entries
from prometheus_trader.domain.trusted import trusted
from prometheus_trader.domain.users import User
from prometheus_trader.ports import Bus, Document, Filter, StateStore, StateTransaction
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections


class UserStats(AccountState):
    """Running per-user numbers, all in percent or counts (equity in quote currency).

    Written by the evaluator (trade results) and by :func:`observe_user` (equity readings,
    breaker transitions, the portfolio ladder), each in a transaction.
    """

    kind: str = "user"
    user_id: str
    trades: int = 0
    wins: int = 0
    losses: int = 0
    ladder_day: str = Field("", description="UTC day of ladder_step_pct")
    ladder_step_pct: float = Field(0.0, description="deepest drawdown-ladder step acted on today")

    def rolled_to(self, now: datetime, equity: float) -> UserStats:
        """The same stats seen from ``now`` (a new UTC day resets the daily figures); pure."""
        today = now.strftime("%Y-%m-%d")
        if self.day == today:
            return self
        return self.model_copy(
            update={
                "day": today,
                "day_start_equity": equity,
                "realized_pnl_today_pct": 0.0,
                "peak_equity": max(self.peak_equity, equity),
            }
        )

    def ladder_step_today(self, now: datetime) -> float:
        """The ladder step already acted on today (0 on a new day)."""
        return self.ladder_step_pct if self.ladder_day == utc_day(now) else 0.0


def user_stats_id(user_id: str) -> str:
    """Document id of a user's statistics."""
    return f"user-{user_id}"


def load_user_stats(state: StateStore, user_id: str, now: datetime, equity: float) -> UserStats:
    """Current stats for ``user_id`` as of ``now`` (fresh ones for a new user); read-only."""
    doc = state.get(Collections.STATS, user_stats_id(user_id))
    stats = UserStats.model_validate(doc) if doc else UserStats(user_id=user_id)
    return stats.rolled_to(now, equity)


_READ = UserStats.model_construct(user_id="")  # observe_user's default: read the document


def observe_user(
    state: StateStore,
    user: User,
    now: datetime,
    equity: float,
    held: UserStats | None = _READ,
) -> tuple[UserStats, list[BreakerTransition]]:
    """Record an equity reading: roll the day, raise the true peak, move the breakers.

    Written only when something changed, then in one transaction (the evaluator writes
    the same document). Most readings change nothing and are decided from a plain read,
    and the first one creates the document if absent: concurrent executors of one user
    (redeliveries, racers) then never contend on it (Firestore allows about one sustained
    write per second per document, and its emulator starves contending transactions).
    ``held``: the stored stats as the caller holds them (the exit monitor, from the
    change stream; None: no document) instead of reading them; a write still reads the
    document in its transaction.
    """
    ref = user_stats_id(user.user_id)

    def observe(doc: Document | None) -> tuple[UserStats, UserStats, list[BreakerTransition]]:
        return observe_stats_doc(doc, user, now, equity)

    def observe_stats(stats: UserStats) -> tuple[UserStats, UserStats, list[BreakerTransition]]:
        return observe_stats_model(stats, user, now, equity)

    if held is _READ:
        doc = state.get(Collections.STATS, ref)
        stored = doc is not None
        stats, new, transitions = observe(doc)
    else:
        stored = held is not None
        stats, new, transitions = observe_stats(held or UserStats(user_id=user.user_id))
    if stored and new == stats and not transitions:
        return new, transitions
    if not stored and state.create(Collections.STATS, ref, new.model_dump(mode="json")):
        return new, transitions

    def work(tx: StateTransaction) -> tuple[UserStats, list[BreakerTransition]]:
        current = tx.get(Collections.STATS, ref)
        stats, new, transitions = observe(current)
        if current is None or new != stats:
            tx.set(Collections.STATS, ref, new.model_dump(mode="json"))
        return new, transitions

    return state.transaction(work)


def publish_breaker_events(
    bus: Bus, state: StateStore, user_id: str, transitions: list[BreakerTransition]
) -> None:
    """One ``circuit_breaker`` event per trip or reset, with its numbers."""
    for t in transitions:
        publish_event(
            bus,
            state,
            EventType.CIRCUIT_BREAKER,
            key=f"{user_id}-{t.breaker.value}-{t.action}-{t.at.isoformat()}",
            now=t.at,
            user_id=user_id,
            severity=Severity.CRITICAL if t.action == "tripped" else Severity.INFO,
            payload={
                "breaker": t.breaker.value,
                "action": t.action,
                "reason": t.reason,
                **t.values,
            },
        )


def risk_account_fields(
    state: StateStore, bus: Bus, user: User, now: datetime, equity: float
) -> dict[str, object]:
    """Observe the account (breaker events published) and return the ``RiskContext`` fields
    that come from it: the executor's one call before the gate."""
    stats, transitions = observe_user(state, user, now, equity)
    publish_breaker_events(bus, state, user.user_id, transitions)
    return account_fields_from_stats(stats, user, now, equity)


# ---------------------------------------------------------------- pure, over documents
# A batched executor reads many users' stats documents in one call and computes each
# user's reading with these (no I/O); the functions above are the per-user path over them.


class AccountReading(NamedTuple):
    """One equity reading of one user's account, computed from the stored stats document.

    ``fields``: the ``RiskContext`` fields that come from the account (what
    :func:`risk_account_fields` returns); ``transitions``: the breaker trips and resets to
    publish (:func:`publish_breaker_events`); ``new_doc``: the stats document to store
    (``UserStats`` JSON), None when the stored one is unchanged (nothing to write);
    ``stats``: the stats after the reading.
    """

    fields: dict[str, object]
    transitions: list[BreakerTransition]
    new_doc: Document | None
    stats: UserStats


def observe_stats_model(
    stats: UserStats, user: User, now: datetime, equity: float
) -> tuple[UserStats, UserStats, list[BreakerTransition]]:
    """``(stats, new stats, transitions)``: ``stats`` moved forward to ``now`` at ``equity``
    by the breakers (:func:`~prometheus_trader.domain.breakers.observe_account`); pure."""
    account, transitions = observe_account(
        stats,
        user.limits,
        now,
        equity,
        resume_requested_at=user.breakers_resume_requested_at,
    )
    if type(account) is not type(stats) or stats.__pydantic_extra__ is not None:
        update = account.model_dump(include=set(AccountState.model_fields))
        return stats, stats.model_copy(update=update), transitions
    # = stats.model_copy(update=account.model_dump(include=<AccountState fields>)):
    # observe_account copied ``stats`` and changed only AccountState fields, so its values
    # are the copy's (the dump copies the containers: tripped); the copy's fields set is
    # stats' plus every AccountState field
    values = dict(account.__dict__)
    values["tripped"] = dict(values["tripped"])
    new = trusted(type(stats), values, stats.__pydantic_fields_set__ | _ACCOUNT_FIELDS)
    return stats, new, transitions


_ACCOUNT_FIELDS = frozenset(AccountState.model_fields)


def observe_stats_doc(
    doc: Document | None, user: User, now: datetime, equity: float
) -> tuple[UserStats, UserStats, list[BreakerTransition]]:
    """:func:`observe_stats_model` of a stored stats document (None: no document yet)."""
    stats = UserStats.model_validate(doc) if doc else UserStats(user_id=user.user_id)
    return observe_stats_model(stats, user, now, equity)


def account_fields_from_stats(
    stats: UserStats, user: User, now: datetime, equity: float
) -> dict[str, object]:
    """The ``RiskContext`` fields of an observed account (``stats`` after the reading)."""
    daily_drawdown = max(0.0, -stats.day_change_pct(equity))
    return {
        "day_start_equity": stats.day_start_equity,
        "peak_equity": max(stats.peak_equity, equity),
        "realized_pnl_today_pct": stats.realized_pnl_today_pct,
        "consecutive_losses": stats.consecutive_losses,
        "consecutive_loss_resume_at": consecutive_resume_at(stats, user.limits),
        "entries_blocked": ladder_blocks_entries(stats.ladder_step_today(now), daily_drawdown),
        "daily_drawdown_pct": daily_drawdown,
        "breakers_tripped": sorted(stats.tripped),
    }


def account_fields(
    stats_doc: Document | None, user: User, now: datetime, equity: float
) -> AccountReading:
    """The account reading of ``user`` at ``now`` and ``equity`` from its stats document
    (``state.get(Collections.STATS, user_stats_id(user_id))``; None: none stored); pure.

    Values identical to :func:`risk_account_fields` (which also writes and publishes):
    the caller stores ``new_doc`` when it is not None (:func:`observe_user` does it in a
    transaction that re-reads the document: the evaluator writes it too) and publishes
    ``transitions``.
    """
    stats, new, transitions = observe_stats_doc(stats_doc, user, now, equity)
    changed = stats_doc is None or new != stats or bool(transitions)
    new_doc = new.model_dump(mode="json") if changed else None
    return AccountReading(
        account_fields_from_stats(new, user, now, equity), transitions, new_doc, new
    )


@dataclass(frozen=True)
class Tally:
    """Closed trades and wins of one group (a symbol, a strategy...)."""

    trades: int = 0
    wins: int = 0

    @property
    def win_rate(self) -> float:
        """Wins ÷ trades (0 when there is no trade)."""
        return self.wins / self.trades if self.trades else 0.0


def journal_since(state: StateStore, since: datetime) -> list[Document]:
    """Journal entries (one per closed trade) closed at or after ``since``."""
    # the journal stores closed_at as ISO-8601 UTC text, which sorts like the instant
    bound = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return state.query(Collections.JOURNAL, [Filter("closed_at", ">=", bound)])


def tally_by(entries: Iterable[Mapping[str, object]], field: str) -> dict[str, Tally]:
    """Trades and wins per value of ``field`` (``symbol``, ``strategy``...), from journal
    entries: aggregates are derived from per-trade facts, never kept in a shared counter."""
    counts: dict[str, list[int]] = {}
    for entry in entries:
        pnl = entry.get("pnl_pct")
        bucket = counts.setdefault(str(entry[field]), [0, 0])
        bucket[0] += 1
        bucket[1] += int(isinstance(pnl, int | float) and pnl > 0)
    return {key: Tally(trades=t, wins=w) for key, (t, w) in sorted(counts.items())}


def symbol_success_rates(state: StateStore, now: datetime, lookback: timedelta) -> dict[str, float]:
    """Win rate per symbol over the journal's last ``lookback`` (the ranker's 20 % input)."""
    return {
        symbol: tally.win_rate
        for symbol, tally in tally_by(journal_since(state, now - lookback), "symbol").items()
    }
