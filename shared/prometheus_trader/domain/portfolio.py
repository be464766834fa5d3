"""Portfolio-level exit rules (SPEC §6), pure: the daily drawdown ladder, the BTC dump
exit and the kill switch. The use-case (``usecases.portfolio``) reads the account and the
market, asks these rules what to do and acts.

**Daily drawdown ladder** (per user; drawdown = equity below the UTC day's start equity,
in %). Our reading of SPEC §6 ("2% alert, 3% close worst half, 4% close all, 5% close all +
stop trading until next UTC day") together with the issue ("reduce, stop new entries,
close losers, close all"):

* ≥ 2 %: alert only (a ``circuit_breaker`` event with the numbers);
* ≥ 3 %: close the worst half of the open positions (by unrealized return, ⌈n/2⌉) and no
  new entries while the drawdown stays ≥ 3 %;
* ≥ 4 %: close every open position (the losers and the rest);
* ≥ 5 %: close every open position and stop trading until the next UTC day, even if the
  equity recovers.

Each step acts once per UTC day (the deepest step acted on is stored); a deeper step acts
even when a shallower one already did.

**BTC dump**: BTC's last 1m close ≥ ``btc_dump_pct`` below its close ``btc_dump_minutes``
earlier closes every *long* whose correlation of 5-minute returns with BTC over the last
24 h is above ``btc_correlation_min`` (BTC itself: correlation 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class LadderAction(StrEnum):
    """What one step of the daily drawdown ladder does."""

    ALERT = "alert"
    CLOSE_WORST_HALF = "close_worst_half"
    CLOSE_ALL = "close_all"
    CLOSE_ALL_AND_HALT = "close_all_and_halt"


class PortfolioConfig(BaseModel):
    """Portfolio-rule thresholds (percent of equity or of price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ladder: tuple[tuple[float, LadderAction], ...] = (
        (2.0, LadderAction.ALERT),
        (3.0, LadderAction.CLOSE_WORST_HALF),
        (4.0, LadderAction.CLOSE_ALL),
        (5.0, LadderAction.CLOSE_ALL_AND_HALT),
    )
    btc_symbol: str = "BTC/USDT:USDT"
    btc_dump_pct: float = Field(1.5, gt=0)
    btc_dump_minutes: int = Field(5, ge=1)
    btc_correlation_min: float = Field(0.7, ge=-1, le=1)
    correlation_hours: int = Field(24, ge=1)
    correlation_timeframe_minutes: int = Field(5, ge=1)

    @property
    def block_entries_pct(self) -> float:
        """Drawdown from which new entries stop (the close-worst-half step)."""
        return next((p for p, a in self.ladder if a is LadderAction.CLOSE_WORST_HALF), math.inf)

    @property
    def halt_pct(self) -> float:
        """The step that stops trading for the rest of the day."""
        return next((p for p, a in self.ladder if a is LadderAction.CLOSE_ALL_AND_HALT), math.inf)


DEFAULT_PORTFOLIO = PortfolioConfig()


class OpenExposure(BaseModel):
    """One open position as the portfolio rules see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position_id: str
    symbol: str
    long: bool
    unrealized_pct: float = Field(description="current return on entry notional, %")


class LadderDecision(BaseModel):
    """The ladder step reached now and the positions it closes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_pct: float
    action: LadderAction
    close: list[str]
    daily_drawdown_pct: float


def ladder_decision(
    daily_drawdown_pct: float,
    step_done_pct: float,
    positions: Sequence[OpenExposure],
    config: PortfolioConfig = DEFAULT_PORTFOLIO,
) -> LadderDecision | None:
    """The deepest ladder step reached and not yet acted on today, or None."""
    reached = [(p, a) for p, a in sorted(config.ladder) if daily_drawdown_pct >= p]
    if not reached or reached[-1][0] <= step_done_pct:
        return None
    step, action = reached[-1]
    if action is LadderAction.ALERT:
        close: list[str] = []
    elif action is LadderAction.CLOSE_WORST_HALF:
        close = worst_half(positions)
    else:
        close = sorted(p.position_id for p in positions)
    return LadderDecision(
        step_pct=step, action=action, close=close, daily_drawdown_pct=daily_drawdown_pct
    )


def worst_half(positions: Sequence[OpenExposure]) -> list[str]:
    """Ids of the ⌈n/2⌉ positions with the lowest unrealized return (ties by id)."""
    ranked = sorted(positions, key=lambda p: (p.unrealized_pct, p.position_id))
    return sorted(p.position_id for p in ranked[: math.ceil(len(ranked) / 2)])


def ladder_blocks_entries(
    step_done_pct: float, daily_drawdown_pct: float, config: PortfolioConfig = DEFAULT_PORTFOLIO
) -> str | None:
    """Why the ladder blocks new entries now (None: it does not)."""
    # the default thresholds, computed once (every executor decision asks)
    halt, block = (
        _DEFAULT_STEPS
        if config is DEFAULT_PORTFOLIO
        else (config.halt_pct, config.block_entries_pct)
    )
    if step_done_pct >= halt:
        return (
            f"daily drawdown ladder reached {step_done_pct:g}%: "
            "trading stopped until the next UTC day"
        )
    if daily_drawdown_pct >= block:
        return f"daily drawdown {daily_drawdown_pct:.2f}% >= {block:g}%: no new entries"
    return None


_DEFAULT_STEPS = (DEFAULT_PORTFOLIO.halt_pct, DEFAULT_PORTFOLIO.block_entries_pct)


def pct_change(closes: Sequence[float], minutes: int) -> float | None:
    """Change of the last close vs the close ``minutes`` bars earlier, in % (1m closes)."""
    if len(closes) <= minutes or closes[-1 - minutes] <= 0:
        return None
    return (closes[-1] / closes[-1 - minutes] - 1) * 100


def returns_correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation of the simple returns of two aligned close series."""
    n = min(len(a), len(b))
    if n < 3:
        return None
    ra = [a[i] / a[i - 1] - 1 for i in range(len(a) - n + 1, len(a)) if a[i - 1] > 0]
    rb = [b[i] / b[i - 1] - 1 for i in range(len(b) - n + 1, len(b)) if b[i - 1] > 0]
    if len(ra) != len(rb) or len(ra) < 2:
        return None
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va <= 0 or vb <= 0:
        return None
    return cov / math.sqrt(va * vb)


def btc_dump_closes(
    btc_change_pct: float | None,
    positions: Sequence[OpenExposure],
    correlations: dict[str, float | None],
    config: PortfolioConfig = DEFAULT_PORTFOLIO,
) -> list[str]:
    """Ids of the longs a BTC dump closes (empty when BTC did not dump)."""
    if btc_change_pct is None or btc_change_pct > -config.btc_dump_pct:
        return []
    out = []
    for p in positions:
        corr = 1.0 if p.symbol == config.btc_symbol else correlations.get(p.symbol)
        if p.long and corr is not None and corr > config.btc_correlation_min:
            out.append(p.position_id)
    return sorted(out)
