"""The decision code after the speed work gives exactly what it gave before.

``decision_v0`` holds frozen copies of the planner, the risk gate, the breakers and the
stats reading as they were; on many generated users, signals, instruments, accounts and
stats documents, the live modules must return the same plans, risk decisions, account
fields, transitions and stats documents: equal values of the same types (a float stays a
float), the same fields set, and byte-identical stored JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _trading_fixtures import T0, instrument, position, signal
from decision_v0 import planner_v0, risk_v0, stats_v0
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from prometheus_trader.domain import planner, risk
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import RiskDecision
from prometheus_trader.domain.users import PROFILE_LIMITS, OrderStyle, RiskProfile, User
from prometheus_trader.usecases import stats
from prometheus_trader.usecases.portfolio import edge_from_journal

pytestmark = pytest.mark.unit

# most generated users and accounts pass most rules, so that approvals and shrinks are
# frequent; the rare values reach every rejection
rarely = st.sampled_from([False] * 9 + [True])


def same(a: Any, b: Any, path: str = "") -> None:
    """Equal values of the same types, recursively (models: fields in order, fields set)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, BaseModel):
        assert a.model_fields_set == b.model_fields_set, f"{path}: fields set"
        assert a.__pydantic_extra__ == b.__pydantic_extra__, path
        assert a.__pydantic_private__ == b.__pydantic_private__, path
        same(a.__dict__, b.__dict__, path)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert repr(a) == repr(b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def stored(model: BaseModel) -> str:
    """The canonical stored text of a model (as the SQLite store writes it)."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


users = st.builds(
    dict,
    profile=st.sampled_from(list(RiskProfile)),
    style=st.sampled_from(list(OrderStyle)),
    scaling=st.sampled_from(["flat", "increasing", "decreasing"]),
    entries=st.integers(1, 6),
    kelly=st.one_of(st.none(), st.none(), st.none(), st.floats(0.05, 1.0)),
    kelly_min=st.integers(1, 30),
    risk=st.one_of(st.none(), st.floats(0.05, 10)),
    leverage=st.one_of(st.none(), st.floats(1, 125)),
    max_pos=st.one_of(st.none(), st.floats(1, 500)),
    max_exp=st.one_of(st.none(), st.floats(1, 900)),
    max_open=st.one_of(st.none(), st.integers(1, 6)),
    shrink=st.one_of(st.none(), st.booleans()),
    paused=rarely,
    kill=rarely,
    excluded=rarely,
    resume=st.one_of(st.none(), st.integers(-600, 600)),
)


def make_user(u: dict[str, Any]) -> User:
    limits = PROFILE_LIMITS[u["profile"]]
    updates = {
        k: v
        for k, v in {
            "risk_per_trade_pct": u["risk"],
            "leverage": u["leverage"],
            "max_position_pct": u["max_pos"],
            "max_exposure_pct": u["max_exp"],
            "max_open_positions": u["max_open"],
            "shrink_to_fit": u["shrink"],
        }.items()
        if v is not None
    }
    doc = User.with_profile(
        "alice",
        u["profile"],
        limits=limits.model_copy(update=updates),
        order_style=u["style"],
        scaling=u["scaling"],
        scaled_entries=u["entries"],
        kelly_fraction=u["kelly"],
        kelly_min_trades=u["kelly_min"],
        paused=u["paused"],
        paused_reason="away" if u["paused"] and u["kill"] else None,
        kill_switch=u["kill"],
        excluded_symbols=["btc"] if u["excluded"] else [],
        breakers_resume_requested_at=(
            None if u["resume"] is None else T0 + timedelta(minutes=u["resume"])
        ),
    ).model_dump(mode="json")
    return User.model_validate(doc)  # as the executor holds it: parsed from its document


# peak_equity and day_start_equity are multiples of the account's equity (see scaled())
benign_stats = st.builds(
    dict,
    kind=st.just("user"),
    user_id=st.just("alice"),
    consecutive_losses=st.integers(0, 2),
    last_loss_at=st.one_of(
        st.none(), st.integers(-600, 0).map(lambda m: (T0 + timedelta(minutes=m)).isoformat())
    ),
    peak_equity=st.sampled_from([0.0, 1.0, 1.01]),
    day=st.just("2024-05-01"),
    day_start_equity=st.sampled_from([1.0, 1.005]),
    realized_pnl_today_pct=st.sampled_from([0.0, -0.5, 1.0]),
    tripped=st.just({}),
    resumed_at=st.none(),
    trades=st.integers(0, 50),
    wins=st.integers(0, 50),
    losses=st.integers(0, 50),
    ladder_day=st.just(""),
    ladder_step_pct=st.just(0.0),
)
any_stats = st.builds(
    dict,
    kind=st.just("user"),
    user_id=st.just("alice"),
    consecutive_losses=st.integers(0, 6),
    last_loss_at=st.one_of(
        st.none(),
        st.integers(-600, 60).map(lambda m: (T0 + timedelta(minutes=m)).isoformat()),
    ),
    peak_equity=st.one_of(st.just(0.0), st.floats(0, 3)),
    day=st.sampled_from(["", "2024-04-30", "2024-05-01"]),
    day_start_equity=st.one_of(st.just(0.0), st.floats(0, 3)),
    realized_pnl_today_pct=st.floats(-6, 3),
    tripped=st.dictionaries(
        st.sampled_from(["daily_loss", "consecutive_losses", "max_drawdown"]),
        st.sampled_from(["2024-05-01T08:00:00+00:00", "2024-04-30T23:00:00+00:00"]),
    ),
    resumed_at=st.one_of(
        st.none(),
        st.integers(-900, 0).map(lambda m: (T0 + timedelta(minutes=m)).isoformat()),
    ),
    trades=st.integers(0, 50),
    wins=st.integers(0, 50),
    losses=st.integers(0, 50),
    ladder_day=st.sampled_from(["", "2024-05-01"]),
    ladder_step_pct=st.sampled_from([0.0, 2.0, 3.0, 5.0]),
)
stats_docs = st.one_of(st.none(), benign_stats, benign_stats, any_stats)


def scaled(doc: dict[str, Any] | None, equity: float) -> dict[str, Any] | None:
    """The stats document with its equity figures in quote currency."""
    if doc is None:
        return None
    factor = max(equity, 0.0)
    return {
        **doc,
        "peak_equity": doc["peak_equity"] * factor,
        "day_start_equity": doc["day_start_equity"] * factor,
    }


@settings(max_examples=400, deadline=None)
@given(
    u=users,
    direction=st.sampled_from(list(Direction)),
    stop_pct=st.one_of(st.floats(0.02, 8), *[st.floats(0.5, 3)] * 6, st.sampled_from([None, -0.5])),
    rr=st.one_of(st.floats(0.3, 5), st.floats(2.6, 5), st.floats(2.6, 5)),
    band_pct=st.floats(0, 0.8),
    n_tps=st.integers(1, 3),
    market=st.sampled_from(
        [  # (price, price step, amount step): real-like, and a few coarse ones
            (0.0123, 0.00001, 1.0),
            (1.7, 0.0001, 0.1),
            (100.0, 0.01, 0.01),
            (2500.0, 0.01, 0.001),
            (65000.0, 0.1, 0.001),
            (65000.0, 10.0, 0.001),
            (0.0123, 0.01, 1.0),
            (100.0, 0.5, 1.0),
        ]
    ),
    min_notional=st.sampled_from([0.0, 5.0, 5.0, 100.0]),
    max_leverage=st.sampled_from([1.0, 20.0, 125.0]),
    equity=st.one_of(st.floats(1, 1e6), *[st.floats(1000, 1e6)] * 4, st.sampled_from([0.0, -5.0])),
    free_frac=st.one_of(st.just(1.0), st.floats(-0.2, 1.2)),
    journal=st.lists(st.floats(-5, 5), max_size=40),
    opens=st.lists(
        st.tuples(rarely, st.sampled_from(list(Direction)), st.floats(0.01, 0.6)),
        max_size=3,
    ),
    stats_doc=stats_docs,
    now_min=st.integers(-5, 22),
    data_age=st.floats(0, 130),
    quality=st.sampled_from([True] * 9 + [False]),
    strategy_rr=st.one_of(st.none(), st.floats(0, 4)),
)
def test_decisions_identical_to_the_frozen_reference(
    u: dict[str, Any],
    direction: Direction,
    stop_pct: float | None,
    rr: float,
    band_pct: float,
    n_tps: int,
    market: tuple[float, float, float],
    min_notional: float,
    max_leverage: float,
    equity: float,
    free_frac: float,
    journal: list[float],
    opens: list[tuple[bool, Direction, float]],
    stats_doc: dict[str, Any] | None,
    now_min: int,
    data_age: float,
    quality: bool,
    strategy_rr: float | None,
) -> None:
    usr = make_user(u)
    price, price_step, amount_step = market
    stats_doc = scaled(stats_doc, equity)
    sign = direction.sign
    stop = None if stop_pct is None else price * (1 - sign * stop_pct / 100)
    distance = abs(stop_pct) if stop_pct else 1.0
    tps = tuple(price * (1 + sign * k * rr * distance / 100) for k in (1.0, 1.5, 2.0)[:n_tps])
    sig = signal(
        direction,
        entry=price,
        stop=stop if stop is None or stop > 0 else None,
        tps=tuple(t for t in tps if t > 0) or (price * 1.5,),
        entry_low=price * (1 - band_pct / 100),
        entry_high=price * (1 + band_pct / 100),
    )
    inst = instrument(
        price_step=price_step,
        amount_step=amount_step,
        min_amount=amount_step,
        min_notional=min_notional,
        max_leverage=max_leverage,
    )
    now = T0 + timedelta(minutes=now_min)
    journal_docs = [{"user_id": "alice", "equity_pnl_pct": p} for p in journal]
    edge = edge_from_journal(journal_docs) if usr.kelly_fraction is not None else None
    edge_v0 = planner_v0.journal_edge(journal) if usr.kelly_fraction is not None else None
    same(vars(edge) if edge else None, vars(edge_v0) if edge_v0 else None, "edge")

    try:
        plan_v0 = planner_v0.plan_for_user(sig, usr, inst, equity, edge=edge_v0)
    except ValueError as exc:  # the reference refuses (a validation error): so must we
        with pytest.raises(type(exc)):
            planner.plan_for_user(sig, usr, inst, equity, edge=edge)
        return
    plan = planner.plan_for_user(sig, usr, inst, equity, edge=edge)
    same(plan, plan_v0, "plan")
    assert stored(plan) == stored(plan_v0)

    reading = stats.account_fields(stats_doc, usr, now, equity)
    old_stats, new_v0, transitions_v0 = _observe_v0(stats_doc, usr, now, equity)
    fields_v0 = _fields_v0(new_v0, usr, now, equity)
    same(reading.fields, fields_v0, "fields")
    same(reading.stats.__dict__, new_v0.__dict__, "stats")
    assert reading.stats.model_fields_set == new_v0.model_fields_set
    same(
        [t.model_dump(mode="json") for t in reading.transitions],
        [t.model_dump(mode="json") for t in transitions_v0],
        "transitions",
    )
    changed = stats_doc is None or new_v0 != old_stats or bool(transitions_v0)
    same(reading.new_doc, new_v0.model_dump(mode="json") if changed else None, "new_doc")

    positions = [
        position(
            direction=d,
            entry=price,
            stop=price * (1 - d.sign * 0.01),
            tps=(price * (1 + d.sign * 0.03),),
            amount=max(share * equity / price, 1e-6),  # a share of the equity
            symbol=sig.symbol if in_symbol else f"C{i}/USDT:USDT",
            id=f"p{i}",
        )
        for i, (in_symbol, d, share) in enumerate(opens)
    ]
    common: dict[str, Any] = {
        "now": now,
        "equity": equity,
        "free_margin": equity * free_frac,
        "open_positions": positions,
        "data_quality_ok": quality,
        "data_age_s": data_age,
        "max_data_age_s": 120.0,
    }
    ctx = risk.RiskContext(**common, **reading.fields)
    ctx_v0 = risk_v0.RiskContext(**common, **fields_v0)
    try:
        decision_v0 = risk_v0.evaluate_risk(
            sig, plan_v0, usr, ctx_v0, inst, min_reward_risk=strategy_rr
        )
    except ValueError as exc:
        with pytest.raises(type(exc)):
            risk.evaluate_risk(sig, plan, usr, ctx, inst, min_reward_risk=strategy_rr)
        return
    decision = risk.evaluate_risk(sig, plan, usr, ctx, inst, min_reward_risk=strategy_rr)
    same(decision, decision_v0, "decision")
    event("approved" if decision.approved else "rejected")
    for code in decision.reasons:
        event(f"reason {code.value}")
    event(f"shrunk={decision.shrunk}")
    event(f"transitions={len(reading.transitions)}")
    event(f"stats written={reading.new_doc is not None}")
    assert stored(decision) == stored(decision_v0)
    assert RiskDecision.model_validate(decision.model_dump()) == decision
    same(
        risk.breaker_state(ctx, usr.limits).model_dump(),
        risk_v0.breaker_state(ctx_v0, usr.limits).model_dump(),
        "breakers",
    )


def _observe_v0(
    doc: dict[str, Any] | None, user: User, now: datetime, equity: float
) -> tuple[Any, Any, list[Any]]:
    s = stats_v0.UserStats.model_validate(doc) if doc else stats_v0.UserStats(user_id="alice")
    account, transitions = stats_v0.observe_account(
        s, user.limits, now, equity, resume_requested_at=user.breakers_resume_requested_at
    )
    new = s.model_copy(update=account.model_dump(include=set(stats_v0.AccountState.model_fields)))
    return s, new, transitions


def _fields_v0(s: Any, user: User, now: datetime, equity: float) -> dict[str, object]:
    daily_drawdown = max(0.0, -s.day_change_pct(equity))
    return {
        "day_start_equity": s.day_start_equity,
        "peak_equity": max(s.peak_equity, equity),
        "realized_pnl_today_pct": s.realized_pnl_today_pct,
        "consecutive_losses": s.consecutive_losses,
        "consecutive_loss_resume_at": stats_v0.consecutive_resume_at(s, user.limits),
        "entries_blocked": stats_v0.ladder_blocks_entries(s.ladder_step_today(now), daily_drawdown),
        "daily_drawdown_pct": daily_drawdown,
        "breakers_tripped": sorted(s.tripped),
    }


def test_the_reference_is_not_the_live_code() -> None:
    """The comparison above would prove nothing if the copies were the live modules."""
    assert risk_v0.evaluate_risk is not risk.evaluate_risk
    assert planner_v0.plan_trade is not planner.plan_trade
    assert stats_v0.UserStats is not stats.UserStats
    assert datetime.now(UTC) > T0
