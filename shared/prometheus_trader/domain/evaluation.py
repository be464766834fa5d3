"""Post-trade evaluation (SPEC §7): one closed position → one journal entry.

Percentages are of the entry notional unless named ``equity_*``. The planned risk is the
stop distance (entry → original stop-loss, % of entry).

Categories:
- **perfect**: a win that hit the take-profit, or a win with a small MAE (≤ 25% of the
  planned stop distance) that kept most of its MFE;
- **could_be_better**: any other win (gave back ≥ 50% of the MFE, or a deep MAE first);
- **bad_plan**: a loss larger than planned (gross move beyond the stop by > 10%), or a
  stop hit within 15 minutes while the MFE stayed ≈ 0 (≤ 10% of the stop distance);
- **acceptable_loss**: any other loss (stopped at plan).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.journal import JournalEntry, TradeCategory
from prometheus_trader.domain.signals import AnalystView, Direction
from prometheus_trader.domain.trading import ExitReason, Position

_STOP_REASONS = (ExitReason.STOP_LOSS, ExitReason.TRAILING_STOP)


class EvaluationConfig(BaseModel):
    """Thresholds of the categorisation (fractions of the planned stop distance)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    small_mae_fraction: float = Field(0.25, ge=0)
    giveback_fraction: float = Field(0.5, gt=0, le=1)
    loss_overrun_fraction: float = Field(0.10, ge=0)
    no_mfe_fraction: float = Field(0.10, ge=0)
    quick_stop_minutes: float = Field(15.0, ge=0)


def evaluate_trade(
    position: Position,
    signal_views: list[AnalystView],
    strategy: str,
    equity_at_entry: float,
    *,
    config: EvaluationConfig | None = None,
) -> JournalEntry:
    """Journal entry for a closed ``position``; raises ValueError if it is not closed."""
    cfg = config or EvaluationConfig()
    if (
        position.exit_price is None
        or position.closed_at is None
        or position.closed_ms is None
        or position.exit_reason is None
    ):
        raise ValueError(f"position {position.id} is not closed")
    exit_price = position.exit_price
    notional = position.notional
    gross_move = position.move_pct(exit_price)
    fees = position.entry_fee + position.exit_fee
    pnl_quote = position.direction.sign * (exit_price - position.entry_price) * position.amount
    pnl_quote -= fees
    pnl_pct = pnl_quote / notional * 100
    equity_pnl_pct = pnl_quote / equity_at_entry * 100 if equity_at_entry > 0 else 0.0
    # the exit price itself is an excursion the tracker may not have seen
    mfe = max(position.mfe_pct, gross_move, 0.0)
    mae = min(position.mae_pct, gross_move, 0.0)
    planned = abs(position.entry_price - position.stop_loss) / position.entry_price * 100
    duration_s = (position.closed_ms - position.opened_ms) / 1000

    right, wrong = _judge_analysts(signal_views, position.entry_price, exit_price)
    category, giveback = _categorise(
        position.exit_reason, pnl_pct, gross_move, mfe, mae, planned, duration_s, cfg
    )
    rating = _rate(category, giveback, gross_move, planned)
    lessons = _lessons(
        category,
        position.exit_reason,
        pnl_pct,
        gross_move,
        mfe,
        mae,
        planned,
        giveback,
        duration_s,
        fees / notional * 100,
        right,
        wrong,
    )
    return JournalEntry(
        position_id=position.id,
        user_id=position.user_id,
        signal_id=position.signal_id,
        symbol=position.symbol,
        strategy=strategy,
        direction=position.direction,
        entry_price=position.entry_price,
        exit_price=exit_price,
        opened_at=position.opened_at,
        closed_at=position.closed_at,
        duration_s=duration_s,
        pnl_pct=pnl_pct,
        equity_pnl_pct=equity_pnl_pct,
        mfe_pct=mfe,
        mae_pct=mae,
        exit_reason=position.exit_reason,
        analysts_right=right,
        analysts_wrong=wrong,
        category=category,
        rating=rating,
        lessons=lessons,
    )


def _judge_analysts(
    views: list[AnalystView], entry: float, exit_price: float
) -> tuple[list[str], list[str]]:
    """Right = voted the way the price moved entry → exit; abstainers are neither."""
    if exit_price == entry:
        return [], []
    moved = Direction.LONG if exit_price > entry else Direction.SHORT
    right = [v.analyst for v in views if v.direction is moved]
    wrong = [v.analyst for v in views if v.direction is not None and v.direction is not moved]
    return right, wrong


def _categorise(
    reason: ExitReason,
    pnl_pct: float,
    gross_move: float,
    mfe: float,
    mae: float,
    planned: float,
    duration_s: float,
    cfg: EvaluationConfig,
) -> tuple[TradeCategory, float]:
    """Category and the fraction of the MFE given back (0–1)."""
    giveback = (mfe - max(gross_move, 0.0)) / mfe if mfe > 0 else 0.0
    if pnl_pct > 0:
        small_mae = -mae <= cfg.small_mae_fraction * planned
        if reason is ExitReason.TAKE_PROFIT or (small_mae and giveback < cfg.giveback_fraction):
            return TradeCategory.PERFECT, giveback
        return TradeCategory.COULD_BE_BETTER, giveback
    overrun = planned > 0 and -gross_move > planned * (1 + cfg.loss_overrun_fraction)
    quick_dud = (
        reason in _STOP_REASONS
        and mfe <= cfg.no_mfe_fraction * planned
        and duration_s <= cfg.quick_stop_minutes * 60
    )
    if overrun or quick_dud:
        return TradeCategory.BAD_PLAN, giveback
    return TradeCategory.ACCEPTABLE_LOSS, giveback


def _rate(category: TradeCategory, giveback: float, gross_move: float, planned: float) -> int:
    if category is TradeCategory.PERFECT:
        return 5
    if category is TradeCategory.COULD_BE_BETTER:
        return 4 if giveback < 0.75 else 3
    if category is TradeCategory.ACCEPTABLE_LOSS:
        # cut early (well inside the plan) beats riding it to the stop
        return 3 if planned > 0 and -gross_move <= planned / 2 else 2
    return 1


def _lessons(
    category: TradeCategory,
    reason: ExitReason,
    pnl_pct: float,
    gross_move: float,
    mfe: float,
    mae: float,
    planned: float,
    giveback: float,
    duration_s: float,
    fee_pct: float,
    right: list[str],
    wrong: list[str],
) -> list[str]:
    minutes = duration_s / 60
    out = [
        f"{category.value}: {reason.value} after {minutes:.1f} min, PnL {pnl_pct:+.2f}% after "
        f"{fee_pct:.3f}% fees (move {gross_move:+.2f}%, MFE {mfe:.2f}%, MAE {mae:.2f}%, "
        f"planned risk {planned:.2f}%)"
    ]
    if category is TradeCategory.COULD_BE_BETTER and giveback > 0:
        out.append(
            f"gave back {giveback * 100:.0f}% of a {mfe:.2f}% MFE: tighten the trail or take "
            f"partial profit earlier"
        )
    if category is TradeCategory.COULD_BE_BETTER and -mae > 0.25 * planned:
        out.append(f"MAE {mae:.2f}% was {-mae / planned * 100:.0f}% of the stop: entry was early")
    if category is TradeCategory.BAD_PLAN:
        if -gross_move > planned:
            out.append(
                f"loss {-gross_move:.2f}% exceeded the planned {planned:.2f}% by "
                f"{-gross_move - planned:.2f}%: check stop placement and slippage"
            )
        else:
            out.append(
                f"stopped after {minutes:.1f} min with MFE {mfe:.2f}%: the move never started; "
                f"review entry timing and direction"
            )
    if 0 < pnl_pct < fee_pct:
        out.append(f"profit {pnl_pct:.3f}% barely covered {fee_pct:.3f}% fees")
    if gross_move > 0 >= pnl_pct:
        out.append(f"fees {fee_pct:.3f}% turned a {gross_move:.3f}% move into a loss")
    if right or wrong:
        out.append(
            f"analysts right {len(right)}/{len(right) + len(wrong)}: "
            f"right [{', '.join(right)}], wrong [{', '.join(wrong)}]"
        )
    return out
