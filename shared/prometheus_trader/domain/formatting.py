"""Numbers for people: one place that decides how reports, summaries and CSVs print them.

Floats carry noise (``3.8433311800000003``); nothing here prints more digits than a
reader can use. ``clean`` rounds every float inside a JSON-like value to 10 significant
digits so JSON files carry no noise either, while staying exact enough to recompute.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

DASH = "–"  # shown where a metric is undefined (no trades, no losses, …)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def num(value: float | None, decimals: int = 2) -> str:
    """``1234.5678`` → ``1,234.57``; undefined → ``–``."""
    if value is None or not _finite(value):
        return DASH
    if round(value, decimals) == 0:
        value = 0.0  # no "-0.00"
    return f"{value:,.{decimals}f}"


def pct(value: float | None, decimals: int = 2, *, signed: bool = False) -> str:
    """A percentage: ``-3.68 %``; ``signed`` adds ``+`` to gains."""
    if value is None or not _finite(value):
        return DASH
    text = num(value, decimals)
    plus = "+" if signed and not text.startswith("-") and text.strip("0.,") else ""
    return f"{plus}{text} %"


def money(value: float | None, currency: str = "USDT", *, signed: bool = False) -> str:
    """A quote-currency amount to the cent: ``-50.10 USDT``."""
    if value is None or not _finite(value):
        return DASH
    text = num(value, 2)
    plus = "+" if signed and not text.startswith("-") and text.strip("0.,") else ""
    return f"{plus}{text} {currency}"


def price(value: float | None) -> str:
    """A price with 6 significant digits (``2550.26``, ``3.8441``, ``0.0000123400``)."""
    if value is None or not _finite(value):
        return DASH
    if value == 0:
        return "0"
    digits = max(0, 6 - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    """A unitless ratio (Sharpe, profit factor, R): two decimals."""
    return num(value, 2)


def qty(value: float | None) -> str:
    """A quantity: up to 8 decimals, trailing zeros dropped."""
    if value is None or not _finite(value):
        return DASH
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def to_cents(value: float) -> Decimal:
    """``value`` to the cent, half away from zero, after dropping float noise (so 0.215
    built as 0.10 + 0.055 + 0.06 is 0.22, as on paper)."""
    exact = Decimal(repr(sig(value, 12))).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return exact + 0 if exact else Decimal("0.00")  # no "-0.00"


def cents(value: float) -> str:
    """Plain two-decimal text for CSV columns (no thousands separator)."""
    return str(to_cents(value))


def sig(value: float, digits: int = 10) -> float:
    """``value`` rounded to ``digits`` significant digits (kills float noise)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def clean(data: Any, digits: int = 10) -> Any:
    """``data`` with every float rounded by ``sig`` (dicts, lists, tuples walked)."""
    if isinstance(data, bool) or data is None:
        return data
    if isinstance(data, float):
        return sig(data, digits)
    if isinstance(data, dict):
        return {k: clean(v, digits) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [clean(v, digits) for v in data]
    return data
