"""The live collector's wiring (issue 9): ``Settings.collector_*`` → a ``CcxtExchange`` on
public market data only and a ``CollectLiveMarketData`` over the deployment's stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_trader.app.settings import Settings
from prometheus_trader.ports import Clock, Exchange, MarketStore, StateStore
from prometheus_trader.usecases.collect_live import CollectLiveMarketData, LiveCollectConfig

if TYPE_CHECKING:
    from prometheus_trader.adapters.ccxt.exchange import CcxtExchange

# ccxt ids people type for our venue names
ALIASES = {"binanceusdm": "binance", "binance": "binance", "bybit": "bybit"}


def venue_name(exchange: str) -> str:
    """Our venue name for ``exchange`` (``binanceusdm`` → ``binance``)."""
    try:
        return ALIASES[exchange.lower()]
    except KeyError:
        raise ValueError(
            f"unknown collector exchange {exchange!r}; known: {sorted(ALIASES)}"
        ) from None


def build_collector_exchange(settings: Settings, clock: Clock) -> CcxtExchange:
    """A market-data-only ``CcxtExchange`` for ``settings.collector_exchange``."""
    from prometheus_trader.adapters.ccxt.exchange import CcxtExchange

    if not settings.collector_exchange:
        raise ValueError("PROMETHEUS_COLLECTOR_EXCHANGE is not set")

    def no_keys(account: str) -> object:
        raise AssertionError("the collector never uses an account")  # public_only refuses first

    exchange = CcxtExchange(
        venue_name(settings.collector_exchange),
        settings.collector_env,
        no_keys,  # type: ignore[arg-type]
        urls=settings.collector_urls,
        clock=clock,
        public_only=True,
        rate_limit=True,  # ccxt's throttle, always on for market data
        rate_limit_ms=settings.collector_rate_limit_ms,
        weight_budget_fraction=settings.exchange_weight_budget_fraction,
    )
    return exchange


def build_live_collector(
    settings: Settings, *, exchange: Exchange, market: MarketStore, state: StateStore, clock: Clock
) -> CollectLiveMarketData:
    """The collector over ``exchange`` (see ``build_collector_exchange``)."""
    config = LiveCollectConfig(
        backfill_minutes=settings.collector_backfill_minutes,
        gap_attempts=settings.collector_gap_attempts,
        shortlist=settings.collector_shortlist,
        symbols=tuple(settings.collector_symbols) if settings.collector_symbols else None,
    )
    return CollectLiveMarketData(exchange, market, state, clock, config)
