"""The exit worker's live trades (issue 9): ``Settings.stream_*`` → a ``CcxtTradeStream``
on Binance USD-M or Bybit linear perpetuals.

The worker follows every symbol with an open position on ccxt's websocket API
(``watch_trades_for_symbols``), falls back to REST (``fetch_trades`` on a public-only
``CcxtExchange``) for a symbol whose feed went stale, and turns each stale episode into
one ``system_error`` event (critical), which the notifier delivers like any other alert.
While a feed is stale the monitor evaluates exits only on the trades it actually has;
the exchange-side stop placed with every entry stays in place (docs/streaming.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_trader.app.collector import venue_name
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ticks import TickBatch
from prometheus_trader.ports import Bus, Clock, StateStore, TickSource
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import labels

if TYPE_CHECKING:
    from prometheus_trader.adapters.streaming.ccxt_trade_stream import CcxtTradeStream

log = logging.getLogger(__name__)

# the venues with a stream (each has a loopback stand-in speaking its wire format:
# tests/standins/binance_ws.py, bybit_ws.py) → the ``stream_urls`` key of the REST URL the
# stream client loads its markets from (ccxt's ``urls['api']`` entry)
STREAMED_VENUES = {"binance": "fapiPublic", "bybit": "public"}


def stream_venue(settings: Settings) -> str:
    """The venue the worker streams from (``stream_exchange``), checked."""
    if not settings.stream_exchange:
        raise ValueError("PROMETHEUS_STREAM_EXCHANGE is not set")
    try:
        venue = venue_name(settings.stream_exchange)
    except ValueError:  # not a venue at all: refused below with the streamed ones named
        venue = settings.stream_exchange
    if venue not in STREAMED_VENUES:
        raise ValueError(
            f"trade streaming is implemented for {', '.join(STREAMED_VENUES)}, not {venue!r}; "
            "unset PROMETHEUS_STREAM_EXCHANGE to let the worker poll its exchange"
        )
    return venue


class LazyTickSource:
    """A ``TickSource`` built on its first poll (the runtime wires one set of use-cases
    for the functions and the worker; only the worker's monitor polls)."""

    def __init__(self, build: Callable[[], TickSource]) -> None:
        self._build = build

    def poll_ticks(self, symbols: Sequence[str], after_ms: int) -> Mapping[str, TickBatch]:
        """The built source's ``poll_ticks``."""
        return self._build().poll_ticks(symbols, after_ms)


class StaleFeedAlert:
    """``on_stale`` for the stream: one critical ``system_error`` event per stale episode."""

    def __init__(self, venue: str, bus: Bus, state: StateStore, clock: Clock) -> None:
        self._venue = venue
        self._bus = bus
        self._state = state
        self._clock = clock

    def __call__(self, symbol: str, silent_seconds: float) -> None:
        now = self._clock.now()
        log.warning(
            "trade feed stale: no message for %.1f s; REST polling until it resumes",
            silent_seconds,
            extra=labels(stage="stream", symbol=symbol),
        )
        try:
            publish_event(
                self._bus,
                self._state,
                EventType.SYSTEM_ERROR,
                # one episode, one event: the stream calls this once per episode
                key=f"feed-stale-{self._venue}-{symbol}-{self._clock.now_ms()}",
                now=now,
                severity=Severity.CRITICAL,
                payload={
                    "error": "trade feed stale",
                    "venue": self._venue,
                    "symbol": symbol,
                    "silent_seconds": round(silent_seconds, 1),
                    "meanwhile": "REST polling; the exchange-side stop stays in place",
                },
            )
        except Exception:  # the stream's loop thread must not die on an alert failure
            log.exception("stale-feed alert failed", extra=labels(stage="stream", symbol=symbol))


def build_trade_stream(
    settings: Settings, *, bus: Bus, state: StateStore, clock: Clock
) -> CcxtTradeStream:
    """The worker's ``TickSource`` for ``settings.stream_exchange``."""
    from prometheus_trader.adapters.ccxt.exchange import CcxtExchange
    from prometheus_trader.adapters.streaming.ccxt_trade_stream import (
        CcxtTradeStream,
        binance_usdm_client_factory,
        bybit_linear_client_factory,
    )

    venue = stream_venue(settings)
    urls = dict(settings.stream_urls or {})
    ws_url = urls.pop("ws", None)

    def no_keys(account: str) -> object:
        raise AssertionError("the stream never uses an account")  # public_only refuses first

    rest = CcxtExchange(
        venue,
        settings.stream_env,
        no_keys,  # type: ignore[arg-type]
        urls=urls or None,
        clock=clock,
        public_only=True,
        rate_limit=True,
        weight_budget_fraction=settings.exchange_weight_budget_fraction,
    )
    make_factory = {
        "binance": binance_usdm_client_factory,  # USD-M
        "bybit": bybit_linear_client_factory,  # linear (USDT) perpetuals
    }[venue]
    factory = make_factory(
        ws_url=ws_url,
        rest_url=urls.get(STREAMED_VENUES[venue]),
        demo=settings.stream_env == "demo",
    )
    return CcxtTradeStream(
        factory,
        exchange_id=venue,  # the trades' venue (binance: what settings.exchange names)
        market_type=settings.market_type,
        rest=rest,
        stale_after_s=settings.stream_stale_after_seconds,
        on_stale=StaleFeedAlert(venue, bus, state, clock),
    )
