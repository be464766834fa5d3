"""Properties through the user's own planner (every order style, Kelly) and the gate.

Never approved: without a stop-loss, beyond the exposure / position / open-position caps,
below the profile's R:R, while paused, killed, broken or blocked by the drawdown ladder.
Always: the loss if every entry fills and the stop is hit, taker fees on both sides
included, computed here from the plan's orders, is within the user's risk budget.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from _trading_fixtures import T0, instrument, position, signal, user
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.domain.planner import JournalEdge, plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import OrderType, RiskCode
from prometheus_trader.domain.users import OrderStyle

pytestmark = pytest.mark.unit

rarely = st.sampled_from([False, False, False, False, True])


@settings(max_examples=200, deadline=None)
@given(
    style=st.sampled_from(list(OrderStyle)),
    scaling=st.sampled_from(["flat", "increasing", "decreasing"]),
    entries=st.integers(1, 6),
    kelly=st.one_of(st.none(), st.floats(0.05, 1.0)),
    win_rate=st.floats(0, 1),
    win_loss=st.floats(0.1, 5),
    risk=st.floats(0.1, 3),
    leverage=st.floats(1, 20),
    max_pos=st.floats(10, 500),
    max_exp=st.floats(10, 800),
    max_open=st.integers(1, 4),
    stop_pct=st.one_of(st.none(), st.floats(0.1, 8)),
    rr=st.floats(0.5, 5),
    band_pct=st.floats(0, 0.5),
    direction=st.sampled_from(list(Direction)),
    paused=rarely,
    kill=rarely,
    n_open=st.integers(0, 4),
    realized=st.floats(-4, 1),
    consec=st.integers(0, 5),
    dd=st.floats(0, 20),
    blocked=rarely,
    free_margin=st.floats(0, 5_000),
)
def test_user_plans_never_pass_a_broken_rule_and_never_risk_more(
    style: OrderStyle,
    scaling: str,
    entries: int,
    kelly: float | None,
    win_rate: float,
    win_loss: float,
    risk: float,
    leverage: float,
    max_pos: float,
    max_exp: float,
    max_open: int,
    stop_pct: float | None,
    rr: float,
    band_pct: float,
    direction: Direction,
    paused: bool,
    kill: bool,
    n_open: int,
    realized: float,
    consec: int,
    dd: float,
    blocked: bool,
    free_margin: float,
) -> None:
    u = user(
        risk_per_trade_pct=risk,
        leverage=leverage,
        max_position_pct=max_pos,
        max_exposure_pct=max_exp,
        max_open_positions=max_open,
    ).model_copy(
        update={
            "order_style": style,
            "scaling": scaling,
            "scaled_entries": entries,
            "kelly_fraction": kelly,
            "kelly_min_trades": 10,
            "paused": paused,
            "kill_switch": kill,
        }
    )
    sign = direction.sign
    stop = None if stop_pct is None else 100 * (1 - sign * stop_pct / 100)
    distance = stop_pct if stop_pct is not None else 1.0
    tps = tuple(100 * (1 + sign * k * rr * distance / 100) for k in (1.0, 1.5, 2.0))
    sig = signal(
        direction,
        stop=stop,
        tps=tps,
        entry_low=100 * (1 - band_pct / 100),
        entry_high=100 * (1 + band_pct / 100),
    )
    inst = instrument()
    equity = 10_000.0
    edge = JournalEdge(trades=30, win_rate=win_rate, avg_win_loss_ratio=win_loss)
    plan = plan_for_user(sig, u, inst, equity, edge=edge)
    opens = [position(symbol=f"C{i}/USDT:USDT", amount=10.0, id=f"p{i}") for i in range(n_open)]
    ctx = RiskContext(
        now=T0 + timedelta(minutes=1),
        equity=equity,
        open_positions=opens,
        day_start_equity=equity,
        peak_equity=equity / (1 - dd / 100),
        realized_pnl_today_pct=realized,
        consecutive_losses=consec,
        free_margin=free_margin,
        entries_blocked="daily drawdown ladder" if blocked else None,
    )
    decision = evaluate_risk(sig, plan, u, ctx, inst)
    lim = u.limits
    # the loss at the stop, from the orders themselves, fees on entry and exit
    entry_legs = [o for o in plan.orders if o.leg.startswith("entry")]
    if plan.stop_loss is not None and entry_legs:
        loss = 0.0
        for leg in entry_legs:
            price = leg.price if leg.type is OrderType.LIMIT else plan.entry_price
            assert price is not None
            loss += leg.amount * (
                abs(price - plan.stop_loss) + inst.taker_fee * (price + plan.stop_loss)
            )
        assert loss <= equity * lim.risk_per_trade_pct / 100 * (1 + 1e-9)
    broken = (
        stop is None
        or paused
        or kill
        or blocked
        or n_open >= max_open
        or realized <= -lim.daily_loss_limit_pct
        or consec >= lim.max_consecutive_losses
        or dd >= lim.max_drawdown_pct * (1 + 1e-9)
    )
    if broken:
        assert not decision.approved and decision.plan is None
    if stop is None:
        assert RiskCode.NO_STOP_LOSS in decision.reasons
    if blocked:
        assert RiskCode.DAILY_LOSS_BREAKER in decision.reasons
    if decision.approved:
        final = decision.plan
        assert final is not None and final.stop_loss is not None
        assert any(o.type is OrderType.STOP_MARKET for o in final.orders)
        existing = sum(p.notional for p in opens) / equity * 100
        assert final.position_pct <= lim.max_position_pct
        assert existing + final.position_pct <= lim.max_exposure_pct
        assert final.margin + final.notional * inst.taker_fee <= free_margin
        assert final.reward_risk >= lim.min_reward_risk
        assert final.risk_pct <= lim.risk_per_trade_pct * (1 + 1e-9)
        if kelly is not None:
            assert (
                final.risk_pct
                <= max(0.0, (win_rate - (1 - win_rate) / win_loss)) * kelly * 100 + 1e-9
            )


def test_plan_for_user_follows_the_users_style() -> None:
    sig = signal(entry_low=99.5, entry_high=100.5)
    inst = instrument()
    base = user()
    bracket = plan_for_user(sig, base, inst, 10_000.0)
    assert [o.leg for o in bracket.orders] == ["entry", "sl", "tp1"]
    ladder = plan_for_user(
        sig, base.model_copy(update={"order_style": OrderStyle.LADDER}), inst, 1e4
    )
    assert [o.leg for o in ladder.orders] == ["entry", "sl", "tp1", "tp2", "tp3"]
    scaled_user = base.model_copy(
        update={"order_style": OrderStyle.SCALED, "scaled_entries": 4, "scaling": "increasing"}
    )
    scaled = plan_for_user(sig, scaled_user, inst, 10_000.0)
    legs = [o for o in scaled.orders if o.leg.startswith("entry")]
    assert [o.leg for o in legs] == ["entry1", "entry2", "entry3", "entry4"]
    assert all(o.type is OrderType.LIMIT for o in legs)
    assert legs[0].amount < legs[-1].amount  # increasing towards the better price
    # Kelly: a losing record sizes to zero, a good one within the profile's risk
    kelly_user = base.model_copy(update={"kelly_fraction": 0.5, "kelly_min_trades": 10})
    losing = plan_for_user(sig, kelly_user, inst, 1e4, edge=JournalEdge(30, 0.2, 1.0))
    assert losing.amount == 0
    good = plan_for_user(sig, kelly_user, inst, 1e4, edge=JournalEdge(30, 0.55, 2.0))
    assert 0 < good.risk_pct <= base.limits.risk_per_trade_pct
    few = plan_for_user(sig, kelly_user, inst, 1e4, edge=JournalEdge(5, 0.2, 1.0))
    assert few.risk_pct == pytest.approx(bracket.risk_pct)  # too few trades: profile risk
