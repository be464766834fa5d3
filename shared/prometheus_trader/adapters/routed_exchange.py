"""One ``Exchange`` for a deployment whose users trade on paper and on a venue.

An account says where it lives (``domain.users.venue_account``): a plain user id is a
paper account (the paper ledger in the state store), ``binance-demo:alice`` is alice's
account at Binance's demo trading. Account calls go to that account's adapter; market
data (instruments, tickers, bars, funding, trades) comes from the paper exchange, which
reads the deployment's market store: the ranker, the risk gate and the exits read one
source of prices whatever the account.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence

from prometheus_trader.domain.market import (
    Candle,
    FundingRate,
    Instrument,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.domain.trading import Balance, ExchangePosition, Order, OrderRequest
from prometheus_trader.domain.users import parse_venue_account
from prometheus_trader.ports import Exchange, OrderRejected


class RoutedExchange:
    """Paper accounts to ``paper``; venue accounts to ``venue(name, env)`` (built once each)."""

    def __init__(self, paper: Exchange, venue: Callable[[str, str], Exchange]) -> None:
        self._paper = paper
        self._build_venue = venue
        self._venues: dict[tuple[str, str], Exchange] = {}
        self._lock = threading.Lock()

    def _for(self, account: str) -> Exchange:
        parsed = parse_venue_account(account)
        if parsed is None:
            return self._paper
        key = (parsed[0], parsed[1])
        with self._lock:
            venue = self._venues.get(key)
            if venue is None:
                venue = self._venues[key] = self._build_venue(*key)
            return venue

    # ----------------------------------------------------------- market data
    @property
    def exchange_id(self) -> str:
        """The market data's exchange id."""
        return self._paper.exchange_id

    def load_markets(self) -> list[Instrument]:
        """Instruments of the market data."""
        return self._paper.load_markets()

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Ticker]:
        """Tickers of the market data."""
        return self._paper.fetch_tickers(symbols)

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int = 1000
    ) -> list[Candle]:
        """Bars of the market data."""
        return self._paper.fetch_ohlcv(symbol, timeframe, since_ms, limit)

    def fetch_funding_rate(self, symbol: str) -> FundingRate | None:
        """Funding of the market data."""
        return self._paper.fetch_funding_rate(symbol)

    def fetch_open_interest(self, symbol: str) -> OpenInterest | None:
        """Open interest of the market data."""
        return self._paper.fetch_open_interest(symbol)

    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        """Trades of the market data."""
        return self._paper.fetch_trades(symbol, since_ms, limit)

    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        """New trades of the market data."""
        return self._paper.poll_trades(symbols, after_ms)

    # -------------------------------------------------------------- accounts
    def fetch_balance(self, account: str) -> Balance:
        """The account's balance where it lives."""
        return self._for(account).fetch_balance(account)

    def create_order(self, account: str, request: OrderRequest) -> Order:
        """An order on the account's venue (or the paper ledger)."""
        return self._for(account).create_order(account, request)

    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """Each venue's items in one ``create_orders`` call (an account's items keep their
        order: an account lives on one venue); the results in the requests' order."""
        groups: dict[int, tuple[Exchange, list[int]]] = {}
        for i, (account, _) in enumerate(requests):
            target = self._for(account)
            groups.setdefault(id(target), (target, []))[1].append(i)
        out: list[Order | OrderRejected | None] = [None] * len(requests)
        for target, indices in groups.values():
            results = target.create_orders([requests[i] for i in indices])
            for i, result in zip(indices, results, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def fetch_balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        """Each venue's accounts in one ``fetch_balances`` call; by account, in the
        accounts' order."""
        groups: dict[int, tuple[Exchange, list[str]]] = {}
        for account in dict.fromkeys(accounts):
            target = self._for(account)
            groups.setdefault(id(target), (target, []))[1].append(account)
        found: dict[str, Balance] = {}
        for target, names in groups.values():
            found.update(target.fetch_balances(names))
        return {account: found[account] for account in dict.fromkeys(accounts)}

    def fetch_order(self, account: str, order_id: str) -> Order:
        """One order of the account."""
        return self._for(account).fetch_order(account, order_id)

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """The account's resting orders."""
        return self._for(account).fetch_open_orders(account, symbol)

    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        """The account's resting orders on ``symbols``."""
        return self._for(account).fetch_open_orders_on(account, symbols)

    def cancel_order(self, account: str, order_id: str) -> Order:
        """Cancel one order of the account."""
        return self._for(account).cancel_order(account, order_id)

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        """The account's positions."""
        return self._for(account).fetch_positions(account)
