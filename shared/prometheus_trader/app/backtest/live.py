"""The live use-cases the backtest runs, wired to in-memory adapters.

The backtest keeps its own fast ranking (arrays read by index) but executes, monitors and
evaluates with the very use-cases ``run`` wires (``ExecuteSignalForUser``, ``ExitMonitor``
with its ``PortfolioGuard``, ``EvaluateClosedPosition``, ``DispatchSignal``): so a change
there reaches the backtest without a hand-kept mirror. Their documents live in a private
in-memory SQLite store (the same store the paper exchange keeps its ledger in), their
messages on the in-process bus, their audit lines in memory.

The store is a ``MemoryStateStore`` (dicts, no SQL or JSON round trip; one process only):
the same query semantics as the SQLite store, and the same ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MINUTE_MS, Ticker
from prometheus_trader.ports import Clock, MarketStore, SeriesKey, StateStore
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute import ExecuteSignalForUser, ExecutorConfig
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Subscriptions, Topics


class MemoryBlobStore:
    """``BlobStore`` in a dict (the use-cases' audit lines; nothing is read back).

    Appended lines are kept as a list per object and joined when read: a month's audit
    log appended a line at a time would otherwise be copied whole at every line.
    """

    def __init__(self) -> None:
        self._objects: dict[str, list[bytes]] = {}

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store an object."""
        self._objects[key] = [bytes(data)]
        return f"memory://{key}"

    def get(self, key: str) -> bytes:
        """Read an object (KeyError if missing)."""
        parts = self._objects[key]
        if len(parts) > 1:
            parts[:] = [b"".join(parts)]
        return parts[0]

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return key in self._objects

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        return sorted(k for k in self._objects if k.startswith(prefix))

    def append_line(self, key: str, line: str) -> None:
        """Append one line."""
        self._objects.setdefault(key, []).append(line.rstrip("\n").encode() + b"\n")

    def signed_url(self, key: str, expires_in_s: int = 900) -> str:
        """A ``memory://`` link (KeyError if missing)."""
        self.get(key)
        return f"memory://{key}"


class BacktestExchange(ReplayExchange):
    """The replay exchange, with its tickers kept while the bars they are read from stay
    the same: the portfolio rules ask every monitor cycle (2 simulated seconds), and a
    ticker only changes when a 1m bar closes or leaves its 24 h window."""

    _tickers_key: tuple[int, int, tuple[str, ...] | None] | None = None
    _tickers: tuple[Ticker, ...] = ()

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Ticker]:
        """``ReplayExchange.fetch_tickers``: the same bars, the same tickers."""
        now = self._clock.now_ms()
        # the bars read: opened at or after now - 24 h, closed by now (1m-aligned opens)
        key = (
            -((DAY_MS - now) // MINUTE_MS),
            now // MINUTE_MS,
            None if symbols is None else tuple(sorted(set(symbols))),
        )
        if key != self._tickers_key:
            self._tickers = tuple(super().fetch_tickers(symbols))
            self._tickers_key = key
        return list(self._tickers)

    def forget_before(self, now_ms: int) -> None:
        """Drop the cached trade hours that ended over an hour before ``now_ms``: the
        backtest only moves forward, so the replay exchange's cache (512 symbol-hours of
        derived trades, ~45 MiB on the 16-perp month) would hold mostly hours nobody reads
        again; a dropped hour read again is rebuilt from the same bars (the cache never
        decides a value)."""
        first = now_ms // HOUR_MS - 1
        with self._lock:
            for key in [k for k in self._trade_chunks if k[1] < first]:
                del self._trade_chunks[key]


class CollectedCandles:
    """The one ``MarketStore`` read the executor makes: the newest collected 1m bar."""

    def __init__(self, last_collected_ms: Callable[[SeriesKey], int | None]) -> None:
        self._last = last_collected_ms

    def last_candle_ms(self, key: SeriesKey, timeframe: str) -> int | None:
        """The open time of the newest bar collected by now (the backtest's timeframe)."""
        return self._last(key)


@dataclass
class LiveUseCases:
    """The state store, bus and use-cases of one backtest."""

    state: StateStore
    bus: InMemoryBus
    blobs: MemoryBlobStore
    executor: ExecuteSignalForUser
    monitor: ExitMonitor
    evaluator: EvaluateClosedPosition

    @classmethod
    def wire(
        cls,
        state: StateStore,
        exchange: ReplayExchange,
        clock: Clock,
        market: CollectedCandles,
        *,
        exit_config: ExitConfig,
        max_data_age_minutes: float,
        max_delivery_attempts: int,
        bar_timeframe: str = "1m",
    ) -> LiveUseCases:
        """As ``wiring.wire`` wires them (the notifier aside: it changes no trade)."""
        bus = InMemoryBus(max_delivery_attempts=max_delivery_attempts)
        blobs = MemoryBlobStore()
        executor = ExecuteSignalForUser(
            state,
            exchange,
            # only ``last_candle_ms`` is read (the data-age check of the risk gate)
            cast(MarketStore, market),
            bus,
            blobs,
            clock,
            ExecutorConfig(max_data_age_minutes=max_data_age_minutes, bar_timeframe=bar_timeframe),
        )
        evaluator = EvaluateClosedPosition(state, clock)
        monitor = ExitMonitor(state, exchange, bus, blobs, clock, exit_config)
        dispatcher = DispatchSignal(state, bus, clock)
        bus.subscribe(Topics.SIGNALS, Subscriptions.DISPATCHER, dispatcher.handle)
        bus.subscribe(Topics.EXECUTIONS, Subscriptions.EXECUTOR, executor.handle)
        bus.subscribe(Topics.EVENTS, Subscriptions.EVALUATOR, evaluator.handle)
        return cls(state, bus, blobs, executor, monitor, evaluator)


HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

__all__ = ["BacktestExchange", "CollectedCandles", "LiveUseCases", "MemoryBlobStore"]
