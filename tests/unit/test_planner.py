"""Planner: sizing by risk %, rounding, order styles, resize, Kelly."""

from __future__ import annotations

import pytest
from _trading_fixtures import instrument, signal, user
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.domain.market import Side
from prometheus_trader.domain.planner import OrderStyle, kelly_risk_pct, plan_trade, resize_plan
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import OrderType
from prometheus_trader.domain.users import RiskProfile

pytestmark = pytest.mark.unit


def test_bracket_long_sizes_by_risk_including_fees() -> None:
    inst = instrument()
    plan = plan_trade(signal(), user(), inst, 10_000.0)
    # budget 1% of 10k = 100; per unit loss = 2 + 0.0005*(100+98) = 2.099
    expected = inst.round_amount(100 / 2.099)
    assert plan.amount == pytest.approx(expected)
    assert plan.risk_pct <= 1.0
    assert plan.risk_pct > 0.99
    assert plan.leverage == 5.0
    assert plan.notional == pytest.approx(plan.amount * 100.0)
    assert plan.margin == pytest.approx(plan.notional / 5.0)
    assert plan.position_pct == pytest.approx(plan.notional / 10_000 * 100)
    assert plan.stop_distance_pct == pytest.approx(2.0)
    assert plan.reward_risk == pytest.approx(2.0)  # bracket TP = first level 104
    legs = {o.leg: o for o in plan.orders}
    assert set(legs) == {"entry", "sl", "tp1"}
    assert legs["entry"].type is OrderType.MARKET and legs["entry"].side is Side.BUY
    assert legs["sl"].type is OrderType.STOP_MARKET and legs["sl"].reduce_only
    assert legs["sl"].stop_price == 98.0 and legs["sl"].side is Side.SELL
    assert legs["tp1"].type is OrderType.TAKE_PROFIT_MARKET and legs["tp1"].amount == plan.amount


def test_leverage_capped_by_exchange() -> None:
    plan = plan_trade(signal(), user(RiskProfile.AGGRESSIVE), instrument(max_leverage=3), 1000.0)
    assert plan.leverage == 3.0


def test_short_bracket_sides_and_stop_above_entry() -> None:
    sig = signal(Direction.SHORT, entry=100, stop=102, tps=(96, 94))
    plan = plan_trade(sig, user(), instrument(), 10_000.0)
    legs = {o.leg: o for o in plan.orders}
    assert legs["entry"].side is Side.SELL
    assert legs["sl"].side is Side.BUY and legs["sl"].stop_price == 102
    assert legs["tp1"].stop_price == 96
    assert plan.reward_risk == pytest.approx(2.0)


def test_no_stop_loss_gives_zero_plan_with_note() -> None:
    plan = plan_trade(signal(stop=None), user(), instrument(), 10_000.0)
    assert plan.stop_loss is None and plan.amount == 0 and plan.risk_pct == 0
    assert plan.orders == []
    assert any("no stop-loss" in n for n in plan.notes)


def test_stop_on_wrong_side_not_sized() -> None:
    plan = plan_trade(signal(stop=101.0), user(), instrument(), 10_000.0)
    assert plan.amount == 0 and plan.orders == []
    assert any("wrong side" in n for n in plan.notes)


def test_below_min_notional_gives_zero_with_note() -> None:
    plan = plan_trade(signal(), user(), instrument(min_notional=1_000_000), 10_000.0)
    assert plan.amount == 0 and plan.orders == []
    assert any("below exchange minimum" in n for n in plan.notes)


def test_ladder_one_tp_per_level_remainder_to_last() -> None:
    sig = signal(tps=(104, 106, 108), fractions=(0.5, 0.3, 0.2))
    inst = instrument(amount_step=0.01)
    plan = plan_trade(sig, user(), inst, 10_000.0, style=OrderStyle.LADDER)
    tps = [o for o in plan.orders if o.leg.startswith("tp")]
    assert [o.stop_price for o in tps] == [104, 106, 108]
    assert sum(o.amount for o in tps) == pytest.approx(plan.amount)
    assert tps[0].amount == inst.round_amount(plan.amount * 0.5)
    # size-weighted reward:risk: 0.5*2 + 0.3*3 + 0.2*4 = 2.7 (up to rounding)
    assert plan.reward_risk == pytest.approx(2.7, abs=0.05)
    assert sum(tp.size_fraction for tp in plan.take_profits) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("scaling", "increasing"), [("flat", None), ("increasing", True), ("decreasing", False)]
)
def test_scaled_entries_across_range(scaling: str, increasing: bool | None) -> None:
    sig = signal(entry=100, stop=95, tps=(110, 115), entry_low=98, entry_high=100)
    plan = plan_trade(
        sig,
        user(),
        instrument(),
        100_000.0,
        style=OrderStyle.SCALED,
        scaled_entries=5,
        scaling=scaling,  # type: ignore[arg-type]
    )
    entries = [o for o in plan.orders if o.leg.startswith("entry")]
    assert [o.leg for o in entries] == [f"entry{i}" for i in range(1, 6)]
    assert all(o.type is OrderType.LIMIT for o in entries)
    assert [o.price for o in entries] == [100.0, 99.5, 99.0, 98.5, 98.0]
    amounts = [o.amount for o in entries]
    if increasing is None:
        assert max(amounts) - min(amounts) <= 0.001 + 1e-12
    elif increasing:
        assert amounts == sorted(amounts) and amounts[0] < amounts[-1]
    else:
        assert amounts == sorted(amounts, reverse=True) and amounts[0] > amounts[-1]
    sl = next(o for o in plan.orders if o.leg == "sl")
    assert sl.amount == pytest.approx(sum(amounts))
    assert plan.risk_pct <= 1.0
    avg = sum(o.amount * (o.price or 0) for o in entries) / sum(amounts)
    assert plan.entry_price == pytest.approx(avg)


def test_risk_override_cannot_exceed_user_limit() -> None:
    base = plan_trade(signal(), user(), instrument(), 10_000.0)
    higher = plan_trade(signal(), user(), instrument(), 10_000.0, risk_pct=5.0)
    lower = plan_trade(signal(), user(), instrument(), 10_000.0, risk_pct=0.5)
    assert higher.amount == base.amount
    assert lower.amount < base.amount and lower.risk_pct <= 0.5


def test_resize_plan_shrinks_and_keeps_legs_consistent() -> None:
    sig = signal(tps=(104, 106, 108), fractions=(0.5, 0.3, 0.2))
    # tight stop → huge position
    sig = sig.model_copy(update={"stop_loss": 99.8})
    inst = instrument()
    plan = plan_trade(sig, user(), inst, 10_000.0, style=OrderStyle.LADDER)
    assert plan.position_pct > 150
    small = resize_plan(plan, inst, 100.0)
    assert small.position_pct <= 100.0
    assert small.amount < plan.amount and small.risk_pct < plan.risk_pct
    sl = next(o for o in small.orders if o.leg == "sl")
    entry = next(o for o in small.orders if o.leg == "entry")
    tps = [o for o in small.orders if o.leg.startswith("tp")]
    assert sl.amount == entry.amount == small.amount
    assert sum(o.amount for o in tps) == pytest.approx(small.amount)
    assert any("shrunk" in n for n in small.notes)
    assert resize_plan(small, inst, 100.0) == small  # already within the cap


def test_kelly() -> None:
    # W=0.6, R=2 → f* = 0.6 - 0.4/2 = 0.4; quarter Kelly → 10% → capped
    assert kelly_risk_pct(0.6, 2.0, cap_pct=2.0) == 2.0
    assert kelly_risk_pct(0.6, 2.0, fraction=0.01, cap_pct=2.0) == pytest.approx(0.4)
    assert kelly_risk_pct(0.3, 1.0, cap_pct=2.0) == 0.0
    assert kelly_risk_pct(0.5, 0.0, cap_pct=2.0) == 0.0


def test_deterministic() -> None:
    a = plan_trade(signal(), user(), instrument(), 12_345.0, style=OrderStyle.LADDER)
    b = plan_trade(signal(), user(), instrument(), 12_345.0, style=OrderStyle.LADDER)
    assert a.model_dump_json() == b.model_dump_json()


@settings(max_examples=300, deadline=None)
@given(
    direction=st.sampled_from(list(Direction)),
    entry=st.floats(0.01, 100_000),
    stop_pct=st.floats(0.05, 20),
    equity=st.floats(10, 10_000_000),
    risk=st.floats(0.05, 5),
    price_step_exp=st.integers(-6, 0),
    amount_step_exp=st.integers(-4, 1),
    style=st.sampled_from(list(OrderStyle)),
    scaling=st.sampled_from(["flat", "increasing", "decreasing"]),
)
def test_planned_risk_never_exceeds_user_risk(
    direction: Direction,
    entry: float,
    stop_pct: float,
    equity: float,
    risk: float,
    price_step_exp: int,
    amount_step_exp: int,
    style: OrderStyle,
    scaling: str,
) -> None:
    inst = instrument(
        price_step=10.0**price_step_exp,
        amount_step=10.0**amount_step_exp,
        min_notional=0.0,
        min_amount=0.0,
    )
    sign = direction.sign
    stop = entry * (1 - sign * stop_pct / 100)
    tps = tuple(entry * (1 + sign * k * stop_pct / 100) for k in (2, 3))
    sig = signal(direction, entry=entry, stop=stop, tps=tps)
    u = user(risk_per_trade_pct=risk)
    plan = plan_trade(sig, u, inst, equity, style=style, scaling=scaling)  # type: ignore[arg-type]
    assert plan.risk_pct <= risk * (1 + 1e-9)
    if plan.amount > 0:
        assert plan.stop_loss is not None
        # long: SL below every entry; short: above
        for o in plan.orders:
            if o.leg.startswith("entry"):
                assert sign * ((o.price or plan.entry_price) - plan.stop_loss) > 0
                assert o.amount > 0
        sl = next(o for o in plan.orders if o.leg == "sl")
        assert sl.amount == pytest.approx(plan.amount)
        tp_total = sum(o.amount for o in plan.orders if o.leg.startswith("tp"))
        assert tp_total <= plan.amount * (1 + 1e-9)
        assert plan.position_pct == pytest.approx(plan.notional / equity * 100)
