"""The exit monitor's record of which open positions provably hold this cycle.

After each full evaluation that holds, the monitor settles the position here with its
:class:`~prometheus_trader.domain.exit_bands.HoldBand`. Each cycle, per symbol and
direction, the window's prices since the previous cycle are compared with the bands
(first with the tightest band of the group: usually the whole group holds at once), and
the positions that provably hold are skipped. A position object that changed (the
store's, a tracking update) is no longer the settled one and is evaluated again. Memory
only: a restarted monitor settles every position again in its first cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_trader.domain.exit_bands import HoldBand, in_band, price_span, symbol_quiet
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import TradeWindow
from prometheus_trader.domain.trading import Position

Key = tuple[str, Direction]


@dataclass(frozen=True, slots=True)
class _Tightest:
    """The intersection of a group's bands (all of them hold where it holds)."""

    lo: float
    hi: float
    from_ms: int
    until_ms: int
    opened_ms: int

    @classmethod
    def of(cls, bands: Iterable[HoldBand]) -> _Tightest:
        rows = list(bands)
        return cls(
            lo=max(b.lo for b in rows),
            hi=min(b.hi for b in rows),
            from_ms=max(b.from_ms for b in rows),
            until_ms=min(b.until_ms for b in rows),
            opened_ms=max(b.opened_ms for b in rows),
        )


class HoldBands:
    """Settled positions and their bands, grouped by symbol and direction."""

    def __init__(self, config: ExitConfig) -> None:
        self._config = config
        self._held: dict[str, tuple[Position, Key]] = {}
        self._groups: dict[str, dict[Direction, dict[str, HoldBand]]] = {}  # by symbol
        self._tightest: dict[Key, _Tightest] = {}  # absent: recompute
        # per user, the protective order ids of its settled positions (one check per
        # account and cycle that they all still rest, instead of one per position)
        self._protective: dict[str, set[str]] = {}

    def settle(self, position: Position, band: HoldBand) -> None:
        """``position`` (as held after its evaluation) holds inside ``band``."""
        self.drop(position.id)
        key = (position.symbol, position.direction)
        self._held[position.id] = (position, key)
        self._groups.setdefault(key[0], {}).setdefault(key[1], {})[position.id] = band
        self._tightest.pop(key, None)
        self._protective.setdefault(position.user_id, set()).update(_orders(position))

    def drop(self, position_id: str) -> None:
        """Forget a position (closed, or evaluated again)."""
        known = self._held.pop(position_id, None)
        if known is None:
            return
        position, key = known
        mine = self._protective[position.user_id]
        mine.difference_update(_orders(position))
        if not mine:
            del self._protective[position.user_id]
        groups = self._groups[key[0]]
        group = groups[key[1]]
        del group[position_id]
        self._tightest.pop(key, None)
        if not group:
            del groups[key[1]]
            if not groups:
                del self._groups[key[0]]

    def protective(self, user_id: str) -> set[str]:
        """The protective order ids of the user's settled positions."""
        return self._protective.get(user_id, set())

    def keep_only(self, held: set[str]) -> None:
        """Forget positions no longer open (cheap unless some left)."""
        if len(self._held) > len(held):
            for gone in [i for i in self._held if i not in held]:
                self.drop(gone)

    def quiet(
        self,
        view: Callable[[str], TradeWindow | None],
        now_ms: int,
        since_ms: int,
    ) -> dict[str, Position]:
        """The settled positions whose evaluation at ``now_ms`` (previous one:
        ``since_ms``) provably holds and changes nothing, by id, as settled: a position
        that is not this very object changed since and is not quiet."""
        candidates: list[str] = []
        for symbol, groups in self._groups.items():
            window = view(symbol)
            span = None if window is None else price_span(window, since_ms, now_ms)
            if window is None or span is None:  # the monitor evaluates nothing then
                for group in groups.values():
                    candidates.extend(group)
                continue
            low, high = span
            for direction, group in groups.items():
                if not symbol_quiet(window, direction, now_ms, self._config):
                    continue
                key = (symbol, direction)
                tight = self._tightest.get(key)
                if tight is None:
                    tight = self._tightest[key] = _Tightest.of(group.values())
                if (
                    tight.lo <= low
                    and high <= tight.hi
                    and tight.from_ms <= now_ms < tight.until_ms
                    and tight.opened_ms <= since_ms
                ):
                    candidates.extend(group)
                else:
                    candidates.extend(
                        i for i, b in group.items() if in_band(b, low, high, now_ms, since_ms)
                    )
        held = self._held
        return {i: held[i][0] for i in candidates}


def _orders(position: Position) -> list[str]:
    """The position's protective order ids (stop and take-profits)."""
    ids = list(position.take_profit_order_ids)
    if position.stop_order_id:
        ids.append(position.stop_order_id)
    return ids


__all__ = ["HoldBands"]
