"""Accounts say where they live: the router sends each account call to its venue's adapter
(built once per venue and environment) and market data to the paper exchange."""

from __future__ import annotations

from typing import Any

import pytest

from prometheus_trader.adapters.routed_exchange import RoutedExchange
from prometheus_trader.domain.users import parse_venue_account, venue_account

pytestmark = pytest.mark.unit


class Recorder:
    """An exchange double behind the port: records which calls reached it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> str:
            self.calls.append((method, args))
            return self.name

        return call


def test_venue_accounts_round_trip_and_paper_accounts_are_user_ids() -> None:
    assert venue_account("alice", "binance", "demo") == "binance-demo:alice"
    assert parse_venue_account("binance-demo:alice") == ("binance", "demo", "alice")
    assert parse_venue_account("alice") is None
    with pytest.raises(ValueError, match="not an exchange account"):
        parse_venue_account("binance:alice")


def test_account_calls_go_to_the_accounts_venue_and_market_data_to_paper() -> None:
    paper = Recorder("paper")
    built: dict[tuple[str, str], Recorder] = {}

    def venue(name: str, env: str) -> Recorder:
        built[(name, env)] = Recorder(f"{name}-{env}")
        return built[(name, env)]

    router = RoutedExchange(paper, venue)  # type: ignore[arg-type]
    assert router.fetch_balance("bob") == "paper"
    assert router.create_order("binance-demo:alice", "req") == "binance-demo"  # type: ignore[arg-type,comparison-overlap]
    assert router.fetch_open_orders("binance-demo:carol") == "binance-demo"  # type: ignore[comparison-overlap]
    assert router.cancel_order("binance-live:dave", "o1") == "binance-live"  # type: ignore[comparison-overlap]
    assert router.fetch_tickers(["BTC/USDT:USDT"]) == "paper"  # type: ignore[comparison-overlap]
    assert sorted(built) == [("binance", "demo"), ("binance", "live")], "one adapter per venue"
    # the account is passed on unchanged: the venue adapter maps it to the user's keys
    assert built[("binance", "demo")].calls[0] == ("create_order", ("binance-demo:alice", "req"))
    assert paper.calls == [("fetch_balance", ("bob",)), ("fetch_tickers", (["BTC/USDT:USDT"],))]


class Batcher:
    """An exchange double answering the batch calls with (venue, item) tags."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches: list[list[Any]] = []

    def create_orders(self, requests: list[tuple[str, str]]) -> list[str]:
        self.batches.append(list(requests))
        return [f"{self.name}:{request}" for _, request in requests]

    def fetch_balances(self, accounts: list[str]) -> dict[str, str]:
        self.batches.append(list(accounts))
        return {a: f"{self.name}:{a}" for a in reversed(accounts)}


def test_batches_go_to_each_venue_once_and_come_back_in_order() -> None:
    paper = Batcher("paper")
    venues: dict[tuple[str, str], Batcher] = {}

    def venue(name: str, env: str) -> Batcher:
        return venues.setdefault((name, env), Batcher(f"{name}-{env}"))

    router = RoutedExchange(paper, venue)  # type: ignore[arg-type]
    items = [
        ("bob", "r1"),
        ("binance-demo:alice", "r2"),
        ("bob", "r3"),
        ("binance-live:dave", "r4"),
        ("binance-demo:alice", "r5"),
    ]
    results = router.create_orders(items)  # type: ignore[arg-type]
    assert results == [  # type: ignore[comparison-overlap]
        "paper:r1",
        "binance-demo:r2",
        "paper:r3",
        "binance-live:r4",
        "binance-demo:r5",
    ]
    assert paper.batches == [[("bob", "r1"), ("bob", "r3")]]
    assert venues[("binance", "demo")].batches == [
        [("binance-demo:alice", "r2"), ("binance-demo:alice", "r5")]
    ]
    balances = router.fetch_balances(["binance-demo:alice", "bob", "bob", "carol"])
    assert list(balances.items()) == [  # type: ignore[comparison-overlap]
        ("binance-demo:alice", "binance-demo:binance-demo:alice"),
        ("bob", "paper:bob"),
        ("carol", "paper:carol"),
    ]
    assert paper.batches[-1] == ["bob", "carol"]
