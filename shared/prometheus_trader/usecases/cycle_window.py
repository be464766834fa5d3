"""One cycle's read-only view of a symbol's trade window, answering each query once.

Every position on a symbol asks its window the same questions in a cycle (order-flow
ratios over 1/5/15 min, the live trade count, the last price, the price range since the
previous cycle, adverse moves per direction): with 20 positions per symbol the answers
were computed 20 times. The view memoises them for one cycle; the exit rules
(``evaluate_exit``) read it exactly as they read the window, so decisions are the same.
A view must not outlive its cycle: the monitor makes new ones every cycle.
"""

from __future__ import annotations

from typing import Any

from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import TradeWindow


class CycleWindow(TradeWindow):
    """Memoised reads of ``window`` (no writes: ``add``/``prune`` belong to the window)."""

    def __init__(self, window: TradeWindow) -> None:  # a view: the window keeps the data
        self.symbol = window.symbol
        self._inner = window
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __getattr__(self, name: str) -> Any:
        # anything not memoised here (internals of base-class methods too) is the window's
        return getattr(self._inner, name)

    def _get(self, key: tuple[Any, ...], compute: Any, *args: Any) -> Any:
        memo = self._memo
        if key in memo:
            return memo[key]
        value = memo[key] = compute(*args)
        return value

    def __len__(self) -> int:
        return len(self._inner)

    def buy_sell_volume(self, window_ms: int, now_ms: int) -> tuple[float, float]:
        """As the window's, once per cycle."""
        return self._get(  # type: ignore[no-any-return]
            ("v", window_ms, now_ms), self._inner.buy_sell_volume, window_ms, now_ms
        )

    def real_trade_count(self, window_ms: int, now_ms: int) -> int:
        """As the window's, once per cycle."""
        return self._get(  # type: ignore[no-any-return]
            ("n", window_ms, now_ms), self._inner.real_trade_count, window_ms, now_ms
        )

    def flow_ratio(self, window_ms: int, now_ms: int) -> float | None:
        """As the window's, once per cycle."""
        return self._get(  # type: ignore[no-any-return]
            ("f", window_ms, now_ms), self._inner.flow_ratio, window_ms, now_ms
        )

    def last_price(self, now_ms: int) -> float | None:
        """As the window's, once per cycle."""
        return self._get(("l", now_ms), self._inner.last_price, now_ms)  # type: ignore[no-any-return]

    def price_range(self, since_ms: int, now_ms: int) -> tuple[float, float] | None:
        """As the window's, once per cycle."""
        return self._get(  # type: ignore[no-any-return]
            ("r", since_ms, now_ms), self._inner.price_range, since_ms, now_ms
        )

    def adverse_moves(self, direction: Direction, now_ms: int, since_ms: int) -> int:
        """As the window's, once per cycle."""
        return self._get(  # type: ignore[no-any-return]
            ("a", direction, now_ms, since_ms),
            self._inner.adverse_moves,
            direction,
            now_ms,
            since_ms,
        )


__all__ = ["CycleWindow"]
