"""Trade planner (SPEC §5.1): size one signal for one user, in % of equity.

Sizing rule: the equity lost if every entry fills and the stop-loss is hit, *including the
round-trip taker fees*, is at most ``risk%`` of equity::

    amount = equity × risk% ÷ Σ wᵢ·(|entryᵢ − stop| + fee·(entryᵢ + stop))

Prices (stop, limit entries, take-profits) are rounded to the instrument's price step
*before* sizing, and amounts are rounded *down* to the amount step, so the planned risk
never exceeds the user's risk% after rounding. Nothing here raises on a bad signal: a
plan that cannot be sized gets ``amount == 0`` and a note, and the risk gate rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_trader.domain.market import Instrument, MarketType, Side
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import OrderType, PlannedOrder, TradePlan
from prometheus_trader.domain.trusted import copied, trusted
from prometheus_trader.domain.users import OrderStyle, Scaling, User

__all__ = ["OrderStyle", "Scaling", "kelly_risk_pct", "plan_for_user", "plan_trade", "resize_plan"]

# Shrinking multiplies by slightly less than the exact ratio so float noise can never
# leave a resized plan a hair above its cap.
_SHRINK_SAFETY = 1.0 - 1e-9


class _EntryLeg(NamedTuple):  # a tuple: built per leg per user (a frozen dataclass is slower)
    leg: str
    type: OrderType
    price: float  # price used for the risk math (reference price for a market order)
    amount: float


def kelly_risk_pct(
    win_rate: float, avg_win_loss_ratio: float, fraction: float = 0.25, *, cap_pct: float
) -> float:
    """Fractional Kelly risk per trade in % of equity, clamped to ``[0, cap_pct]``.

    Full Kelly is ``f* = W − (1 − W) / R`` (W win rate 0–1, R average win ÷ average loss);
    we risk ``fraction × f*``. A non-positive edge or ratio gives 0.
    """
    if avg_win_loss_ratio <= 0 or not 0 <= win_rate <= 1:
        return 0.0
    full = win_rate - (1 - win_rate) / avg_win_loss_ratio
    return max(0.0, min(cap_pct, full * fraction * 100))


def plan_trade(
    signal: OpportunitySignal,
    user: User,
    instrument: Instrument,
    equity: float,
    *,
    entry_price: float | None = None,
    style: OrderStyle = OrderStyle.BRACKET,
    scaled_entries: int = 3,
    scaling: Scaling = "flat",
    risk_pct: float | None = None,
) -> TradePlan:
    """Size ``signal`` for ``user``.

    ``entry_price`` overrides the signal's reference entry (e.g. the live last price) for
    market entries. ``risk_pct`` (e.g. from :func:`kelly_risk_pct`) may lower the user's
    risk per trade, never raise it. Never raises on a bad signal: see the module doc.
    """
    limits = user.limits
    target_risk = limits.risk_per_trade_pct
    notes: list[str] = []
    if risk_pct is not None:
        target_risk = max(0.0, min(risk_pct, limits.risk_per_trade_pct))
        notes.append(
            f"risk per trade {target_risk:.4g}% "
            f"(override; user max {limits.risk_per_trade_pct:.4g}%)"
        )
    leverage = max(1.0, min(limits.leverage, instrument.max_leverage))
    direction = signal.direction
    terms = _signal_terms(signal, instrument, entry_price, style, scaled_entries, scaling)
    stop, prices, weights = terms.stop, terms.prices, terms.weights
    leg_names, leg_type, tp_targets = terms.leg_names, terms.leg_type, terms.tp_targets

    amounts = [0.0] * len(prices)
    if terms.unsized_note is not None:
        notes.append(terms.unsized_note)
    elif equity <= 0:
        notes.append(f"equity {equity} is not positive: not sized")
    else:
        budget = equity * target_risk / 100
        total = budget / terms.per_unit
        amounts = [instrument.round_amount(total * w) for w in weights]
        if not any(amounts):
            notes.append(
                f"size {total:.6g} rounds down to zero (amount step {instrument.amount_step})"
            )

    legs = [
        _EntryLeg(name, leg_type, p, a)
        for name, p, a in zip(leg_names, prices, amounts, strict=True)
    ]
    return _assemble(
        signal_id=signal.id,
        user_id=user.user_id,
        symbol=signal.symbol,
        exchange=signal.exchange,
        market_type=signal.market_type,
        direction=direction,
        legs=legs,
        stop=stop,
        tp_targets=tp_targets,
        equity=equity,
        leverage=leverage,
        instrument=instrument,
        notes=notes,
        fallback_entry=prices[0],
    )


@dataclass(frozen=True)
class _SignalTerms:
    """What sizing needs from the signal and the instrument alone (not the user's equity
    or risk): the same for every user of a fan-out with one order style."""

    stop: float | None
    prices: list[float]  # entry prices (the reference price when a step rounds to zero)
    weights: list[float]
    leg_names: list[str]
    leg_type: OrderType
    tp_targets: list[tuple[float, float]]
    unsized_note: str | None  # why no user can be sized on this signal, if so
    per_unit: float  # quote lost per unit of total size at the stop (fees included)


def _signal_terms(
    signal: OpportunitySignal,
    instrument: Instrument,
    entry_price: float | None,
    style: OrderStyle,
    scaled_entries: int,
    scaling: Scaling,
) -> _SignalTerms:
    """The sizing terms of a signal, remembered per signal value, instrument and style
    (prices are validated positive: equal keys are equal values, never -0.0 or NaN)."""
    scaled = style is OrderStyle.SCALED
    key = (
        id(instrument),
        style,
        scaled_entries if scaled else 0,
        scaling if scaled else "",
        entry_price,
        signal.direction,
        signal.entry_price,
        signal.entry_low,
        signal.entry_high,
        signal.stop_loss,
        *[(tp.price, tp.size_fraction) for tp in signal.take_profits],
    )
    hit = _TERMS.get(key)
    if hit is not None and hit[0] is instrument:  # the id is of this very instrument
        return hit[1]
    terms = _compute_terms(signal, instrument, entry_price, style, scaled_entries, scaling)
    if len(_TERMS) >= _TERMS_MAX:
        _TERMS.clear()
    _TERMS[key] = (instrument, terms)
    return terms


_TERMS: dict[tuple[object, ...], tuple[Instrument, _SignalTerms]] = {}
_TERMS_MAX = 256


def _compute_terms(
    signal: OpportunitySignal,
    instrument: Instrument,
    entry_price: float | None,
    style: OrderStyle,
    scaled_entries: int,
    scaling: Scaling,
) -> _SignalTerms:
    direction = signal.direction
    reference = entry_price if entry_price is not None else signal.entry_price
    stop = instrument.round_price(signal.stop_loss) if signal.stop_loss is not None else None

    if style is OrderStyle.SCALED:
        prices = _scaled_prices(signal, instrument, scaled_entries)
        weights = _scaling_weights(len(prices), scaling)
        leg_names = [f"entry{i + 1}" for i in range(len(prices))]
        leg_type = OrderType.LIMIT
    else:
        prices = [instrument.round_price(reference)]
        weights = [1.0]
        leg_names = ["entry"]
        leg_type = OrderType.MARKET

    all_tps = [instrument.round_price(tp.price) for tp in signal.take_profits]
    fractions = [tp.size_fraction for tp in signal.take_profits]
    if style is OrderStyle.BRACKET:
        tp_targets = [(all_tps[0], 1.0)]
    else:
        tp_targets = list(zip(all_tps, fractions, strict=True))

    note: str | None = None
    per_unit = 0.0
    if stop is None:
        note = "signal has no stop-loss: not sized"
    elif min(prices) <= 0 or stop <= 0:
        note = f"price step {instrument.price_step} rounds a price to zero: not sized"
        prices = [reference] * len(prices)
    elif any(direction.sign * (p - stop) <= 0 for p in prices):
        note = f"stop-loss {stop} is on the wrong side of the entry: not sized"
    else:
        per_unit = sum(
            w * _unit_loss(p, stop, instrument.taker_fee)
            for p, w in zip(prices, weights, strict=True)
        )
    return _SignalTerms(stop, prices, weights, leg_names, leg_type, tp_targets, note, per_unit)


def resize_plan(plan: TradePlan, instrument: Instrument, max_position_pct: float) -> TradePlan:
    """Shrink ``plan`` so its notional is at most ``max_position_pct`` of its equity.

    Every entry leg is scaled by the same factor and rounded down again; the stop-loss
    covers the new total and the take-profit legs keep their size fractions (remainder to
    the last). A plan already within the cap is returned unchanged. If the shrunk size is
    below the exchange minimum the plan gets ``amount == 0`` (the gate rejects it).
    """
    if plan.position_pct <= max_position_pct or plan.amount <= 0:
        return plan.model_copy(deep=True)
    factor = max(0.0, max_position_pct / plan.position_pct) * _SHRINK_SAFETY
    legs = [
        _EntryLeg(
            o.leg,
            o.type,
            o.price if o.price is not None else plan.entry_price,
            instrument.round_amount(o.amount * factor),
        )
        for o in plan.orders
        if o.leg.startswith("entry")
    ]
    notes = [
        *plan.notes,
        f"shrunk from {plan.position_pct:.4g}% to at most {max_position_pct:.4g}% of equity",
    ]
    return _assemble(
        signal_id=plan.signal_id,
        user_id=plan.user_id,
        symbol=plan.symbol,
        exchange=plan.exchange,
        market_type=plan.market_type,
        direction=plan.direction,
        legs=legs,
        stop=plan.stop_loss,
        tp_targets=[(tp.price, tp.size_fraction) for tp in plan.take_profits],
        equity=plan.equity,
        leverage=plan.leverage,
        instrument=instrument,
        notes=notes,
        fallback_entry=plan.entry_price,
    )


def _unit_loss(price: float, stop: float, fee: float) -> float:
    """Quote lost per unit between ``price`` and ``stop``, plus taker fees on both fills."""
    return abs(price - stop) + fee * (price + stop)


def _scaled_prices(signal: OpportunitySignal, instrument: Instrument, n: int) -> list[float]:
    """``n`` rounded limit prices across the entry range, nearest to the market first.

    Long: from ``entry_high`` down to ``entry_low``; short: from ``entry_low`` up. A
    degenerate range (or n ≤ 1) gives a single entry at the reference price.
    """
    low, high = signal.entry_low, signal.entry_high
    if n <= 1 or high <= low:
        return [instrument.round_price(signal.entry_price)]
    start, end = (high, low) if signal.direction is Direction.LONG else (low, high)
    raw = [start + (end - start) * i / (n - 1) for i in range(n)]
    prices: list[float] = []
    for p in raw:
        rounded = instrument.round_price(p)
        if rounded not in prices:  # coarse price steps can collapse neighbouring levels
            prices.append(rounded)
    return prices


def _scaling_weights(n: int, scaling: Scaling) -> list[float]:
    """Weights summing to 1; 'increasing' grows size towards the most favourable price."""
    if scaling == "increasing":
        raw = [float(i + 1) for i in range(n)]
    elif scaling == "decreasing":
        raw = [float(n - i) for i in range(n)]
    else:
        raw = [1.0] * n
    total = sum(raw)
    return [r / total for r in raw]


def _split_take_profits(
    total: float, targets: list[tuple[float, float]], instrument: Instrument
) -> list[tuple[float, float]]:
    """(price, amount) per TP leg: fractions normalised, rounded down, remainder to last."""
    if not targets:
        return []
    weight_sum = sum(f for _, f in targets)
    out: list[tuple[float, float]] = []
    allocated = 0.0
    for price, fraction in targets[:-1]:
        amount = instrument.round_amount(total * fraction / weight_sum)
        if amount > 0:
            out.append((price, amount))
            allocated += amount
    remainder = instrument.round_amount(total - allocated)
    if remainder > 0:
        out.append((targets[-1][0], remainder))
    return out


def _assemble(
    *,
    signal_id: str,
    user_id: str,
    symbol: str,
    exchange: str,
    market_type: MarketType,
    direction: Direction,
    legs: list[_EntryLeg],
    stop: float | None,
    tp_targets: list[tuple[float, float]],
    equity: float,
    leverage: float,
    instrument: Instrument,
    notes: list[str],
    fallback_entry: float,
) -> TradePlan:
    """Turn sized entry legs into a consistent :class:`TradePlan` (orders + metrics)."""
    notes = list(notes)
    sign = direction.sign
    kept = [leg for leg in legs if leg.amount > 0 and _meets_minimum(leg, instrument)]
    if len(kept) < len([leg for leg in legs if leg.amount > 0]):
        notes.append("entry legs below the exchange minimum were dropped")
    total = instrument.round_amount(sum(leg.amount for leg in kept)) if kept else 0.0
    notional = sum(leg.amount * leg.price for leg in kept)
    if kept and (total < instrument.min_amount or notional < instrument.min_notional):
        kept, total, notional = [], 0.0, 0.0
    if not kept and any(leg.amount > 0 for leg in legs):
        notes.append(
            f"size below exchange minimum (min amount {instrument.min_amount}, "
            f"min notional {instrument.min_notional})"
        )

    entry = notional / total if total > 0 else fallback_entry
    tp_targets = [(p, f) for p, f in tp_targets if p > 0 and sign * (p - entry) > 0]
    stop_ok = stop is not None and sign * (entry - stop) > 0
    stop_distance = abs(entry - stop) if stop is not None else 0.0
    stop_distance_pct = stop_distance / entry * 100 if stop is not None else 0.0

    tp_legs = _split_take_profits(total, tp_targets, instrument) if total > 0 else []
    if tp_legs:
        reward = sum(a * abs(p - entry) for p, a in tp_legs) / total
        take_profits = [
            _take_profit(p, abs(p - entry) / entry * 100, a / total) for p, a in tp_legs
        ]
    else:
        weight_sum = sum(f for _, f in tp_targets) or 1.0
        reward = sum(f * abs(p - entry) for p, f in tp_targets) / weight_sum
        take_profits = [
            _take_profit(p, abs(p - entry) / entry * 100, min(1.0, f / weight_sum))
            for p, f in tp_targets
        ]
    if not tp_targets:
        notes.append("no take-profit level beyond the entry")
    reward_risk = reward / stop_distance if stop_ok and stop_distance > 0 else 0.0

    risk_quote = (
        sum(leg.amount * _unit_loss(leg.price, stop, instrument.taker_fee) for leg in kept)
        if stop is not None
        else 0.0
    )
    orders: list[PlannedOrder] = []
    if total > 0 and stop is not None:
        entry_side = Side.BUY if sign > 0 else Side.SELL
        exit_side = Side.SELL if sign > 0 else Side.BUY
        for leg in kept:
            orders.append(
                _order(
                    leg.leg,
                    entry_side,
                    leg.type,
                    leg.amount,
                    leg.price if leg.type is OrderType.LIMIT else None,
                    None,
                    False,
                    _ENTRY_ORDER_FIELDS,
                )
            )
        orders.append(
            _order("sl", exit_side, OrderType.STOP_MARKET, total, None, stop, True, _EXIT_FIELDS)
        )
        for i, (price, amount) in enumerate(tp_legs, start=1):
            orders.append(
                _order(
                    f"tp{i}",
                    exit_side,
                    OrderType.TAKE_PROFIT_MARKET,
                    amount,
                    None,
                    price,
                    True,
                    _EXIT_FIELDS,
                )
            )
    positive_equity = equity > 0
    values: dict[str, Any] = {
        "signal_id": signal_id,
        "user_id": user_id,
        "symbol": symbol,
        "exchange": exchange,
        "market_type": market_type,
        "direction": direction,
        "entry_price": float(entry),
        "stop_loss": None if stop is None else float(stop),
        "take_profits": take_profits,
        "amount": float(total),
        "notional": float(notional),
        "equity": float(max(0.0, equity)),
        "leverage": float(leverage),
        "margin": float(notional / leverage),
        "risk_pct": float(risk_quote / equity * 100) if positive_equity else 0.0,
        "stop_distance_pct": float(stop_distance_pct),
        "position_pct": float(notional / equity * 100) if positive_equity else 0.0,
        "reward_risk": float(reward_risk),
        "orders": orders,
        "notes": notes,
    }
    # every number was computed here and is a float now: built without re-validation
    # unless a constraint fails or a text/enum is not of its type (then validation
    # converts or raises as it always did)
    nonnegative = (
        total, notional, values["equity"], values["margin"], values["risk_pct"],
        stop_distance_pct, values["position_pct"], reward_risk, values["leverage"] - 1,
    )  # fmt: skip
    if (
        all(v >= 0 for v in nonnegative)
        and type(signal_id) is str
        and type(user_id) is str
        and type(symbol) is str
        and type(exchange) is str
        and type(market_type) is MarketType
        and type(direction) is Direction
    ):
        return trusted(TradePlan, values)
    return TradePlan.model_validate(values)


# PlannedOrder fields passed by the planner (the others keep their defaults)
_ENTRY_ORDER_FIELDS = frozenset({"leg", "side", "type", "amount", "price"})
_EXIT_FIELDS = frozenset({"leg", "side", "type", "amount", "stop_price", "reduce_only"})


def _order(
    leg: str,
    side: Side,
    type_: OrderType,
    amount: float,
    price: float | None,
    stop_price: float | None,
    reduce_only: bool,
    fields_set: frozenset[str],
) -> PlannedOrder:
    """``PlannedOrder(...)`` of the planner's own values, without re-validation."""
    if not amount > 0:  # validation refuses it
        return PlannedOrder(leg=leg, side=side, type=type_, amount=amount)
    return trusted(
        PlannedOrder,
        {
            "leg": leg,
            "side": side,
            "type": type_,
            "amount": float(amount),
            "price": None if price is None else float(price),
            "stop_price": None if stop_price is None else float(stop_price),
            "reduce_only": reduce_only,
        },
        set(fields_set),
    )


def _take_profit(price: float, pct: float, size_fraction: float) -> TakeProfitLevel:
    """``TakeProfitLevel(...)`` of the planner's own values, without re-validation."""
    if price > 0 and pct > 0 and 0 < size_fraction <= 1:
        return trusted(
            TakeProfitLevel,
            {"price": float(price), "pct": float(pct), "size_fraction": float(size_fraction)},
        )
    return TakeProfitLevel(price=price, pct=pct, size_fraction=size_fraction)


def _meets_minimum(leg: _EntryLeg, instrument: Instrument) -> bool:
    return leg.amount >= instrument.min_amount and leg.amount * leg.price >= instrument.min_notional


@dataclass(frozen=True)
class JournalEdge:
    """A user's own record: closed trades, win rate (0–1) and average win ÷ average loss."""

    trades: int
    win_rate: float
    avg_win_loss_ratio: float


def journal_edge(pnl_pcts: list[float]) -> JournalEdge:
    """The edge of a list of closed-trade returns (any consistent unit, e.g. % of equity)."""
    wins = [p for p in pnl_pcts if p > 0]
    losses = [-p for p in pnl_pcts if p <= 0]
    if not pnl_pcts:
        return JournalEdge(0, 0.0, 0.0)
    avg_loss = sum(losses) / len(losses) if losses else 0.0
    avg_win = sum(wins) / len(wins) if wins else 0.0
    # no losses yet: the ratio is unknown, not infinite; 1.0 keeps Kelly = 2W − 1
    ratio = avg_win / avg_loss if avg_loss > 0 else (1.0 if wins else 0.0)
    return JournalEdge(len(pnl_pcts), len(wins) / len(pnl_pcts), ratio)


def plan_for_user(
    signal: OpportunitySignal,
    user: User,
    instrument: Instrument,
    equity: float,
    *,
    edge: JournalEdge | None = None,
    entry_price: float | None = None,
) -> TradePlan:
    """Plan ``signal`` in the user's own order style, sizing and (optional) Kelly risk.

    With ``user.kelly_fraction`` set and at least ``user.kelly_min_trades`` journal trades,
    the risk per trade is fractional Kelly from the user's edge, capped by the profile's
    ``risk_per_trade_pct`` (a losing record sizes to zero: the gate then rejects).
    """
    risk_pct: float | None = None
    if (
        user.kelly_fraction is not None
        and edge is not None
        and edge.trades >= user.kelly_min_trades
    ):
        risk_pct = kelly_risk_pct(
            edge.win_rate,
            edge.avg_win_loss_ratio,
            user.kelly_fraction,
            cap_pct=user.limits.risk_per_trade_pct,
        )
    plan = plan_trade(
        signal,
        user,
        instrument,
        equity,
        entry_price=entry_price,
        style=user.order_style,
        scaled_entries=user.scaled_entries,
        scaling=user.scaling,
        risk_pct=risk_pct,
    )
    if risk_pct is not None and edge is not None:
        note = (
            f"Kelly x{user.kelly_fraction:g} over {edge.trades} trades "
            f"(win {edge.win_rate:.0%}, win/loss {edge.avg_win_loss_ratio:.2f})"
        )
        plan = copied(plan, {"notes": [*plan.notes, note]})
    return plan
