"""The process-wide request-weight budget (adapters/ccxt/weight_budget.py).

Many ccxt clients of one venue (one per account) share the venue's per-IP weight budget:
against the Binance stand-in, concurrent clients never put more than the budget's weight
into any window (checked on the times the stand-in recorded); one client alone is not
slowed beyond its own ccxt throttle. Threads are right here: the budget is per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.standins.binance_usdm import Stand, serve_binance
from tests.standins.engine import Engine

from prometheus_trader.adapters.ccxt import CcxtExchange, Credentials
from prometheus_trader.adapters.ccxt.weight_budget import WeightBudget
from prometheus_trader.app.settings import Settings

pytestmark = pytest.mark.integration

SYMBOL = "BTC/USDT:USDT"
LIMIT_W, WINDOW_S = 100.0, 2.0
# kline request limits and their USD-M weights (ccxt's byLimit table = Binance's weights)
LIMITS = {50: 1.0, 200: 2.0, 600: 5.0}


class FakeClock:
    """Time that moves only when the budget sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_budget_admits_at_most_its_limit_in_any_window() -> None:
    clock = FakeClock()
    b = WeightBudget(10, 10.0, clock=clock, sleep=clock.sleep, log_after_s=1e9)
    assert b.acquire(6) == 0.0 and b.acquire(4) == 0.0
    assert b.try_acquire(3) == pytest.approx(10.0)  # waits for the 6 to leave the window
    assert b.acquire(3) == pytest.approx(10.0)  # at t0+10 both the 6 and the 4 have left
    clock.t += 5.0
    assert b.try_acquire(8) == pytest.approx(5.0)  # 3 + 8 > 10: the 3 leaves at t0+20
    assert b.acquire(50) == pytest.approx(5.0)  # heavier than the budget: capped, not stuck
    # a long random-ish sequence: every window of 10 s holds at most 10
    taken: list[tuple[float, float]] = []
    for i in range(200):
        w = (i * 7) % 5 + 1
        b.acquire(w)
        taken.append((clock.t, float(w)))
        clock.t += (i % 3) * 0.7
    for t0, _ in taken:
        assert sum(w for t, w in taken if t0 <= t < t0 + 10.0) <= 10.0 + 1e-9


def test_long_waits_are_logged_once_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    b = WeightBudget(2, 4.0, label="binance demo", clock=clock, sleep=clock.sleep)
    b.acquire(2)
    with caplog.at_level("WARNING"):
        b.acquire(1)
    waits = [r for r in caplog.records if "waited" in r.getMessage()]
    assert len(waits) == 1 and "binance demo" in waits[0].getMessage()


class Recording(WeightBudget):
    """A budget that records when it granted what (the budget's own view)."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.grants: list[tuple[float, float]] = []
        self.delays: list[float] = []
        self.mine = threading.local()  # this thread's last grant time

    def _expire(self, now: float) -> None:
        # called under the budget's lock with the instant its decision uses: the grant's
        # own time (a clock read after try_acquire returns can be late by a preemption,
        # which moved a grant into the next window on a loaded machine)
        self.mine.now = now
        super()._expire(now)

    def try_acquire(self, weight: float) -> float:
        delay = super().try_acquire(weight)
        self.delays.append(delay)
        if delay == 0.0:
            self.mine.at = self.mine.now
            self.grants.append((self.mine.at, min(float(weight), self.limit)))
        return delay


def worst_window(taken: list[tuple[float, float]], width: float) -> float:
    return max(sum(w for t, w in taken if t0 <= t < t0 + width) for t0, _ in taken)


@pytest.fixture
def stand() -> Iterator[Stand]:
    with serve_binance(Engine(keys={"alice": "alice-secret"})) as s:
        yield s


def never(account: str) -> Credentials:
    raise AssertionError("public calls only")


def client(stand: Stand, budget: WeightBudget | None, rate_ms: float) -> CcxtExchange:
    return CcxtExchange(
        "binance",
        "demo",
        never,
        urls=stand.urls,
        rate_limit=True,
        rate_limit_ms=rate_ms,
        weight_budget=budget,
        weight_budget_fraction=0.0,
    )


def klines(ex: CcxtExchange, limit: int, since: int | None = None) -> Any:
    return ex.run_public(lambda c: c.fetch_ohlcv(SYMBOL, "1m", since, limit))


def weighted(stand: Stand) -> list[tuple[float, float]]:
    """(time, weight) of every public request the stand-in saw."""
    out = []
    for t, path, params in stand.engine.market_requests:
        w = LIMITS.get(int(params["limit"]), 0.0) if path.endswith("/klines") else 1.0
        assert w > 0, (path, params)
        out.append((t, w))
    return sorted(out)


def test_many_clients_share_the_budget_in_every_window(stand: Stand) -> None:
    budget = Recording(LIMIT_W, WINDOW_S, label="binance demo")
    clients = [client(stand, budget, rate_ms=1.0) for _ in range(8)]
    for ex in clients:
        ex.load_markets()  # weight 1 each, through the same budget

    granted: dict[int, float] = {}  # request tag (its startTime) -> when the budget let it go

    def burst(ex: CcxtExchange, k: int) -> None:
        for i in range(12):
            tag = 1_000_000 + 100 * k + i
            klines(ex, list(LIMITS)[(i + k) % 3], since=tag * 60_000)
            granted[tag] = budget.mine.at

    threads = [threading.Thread(target=burst, args=(ex, k)) for k, ex in enumerate(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    seen = weighted(stand)
    total = sum(w for _, w in seen)
    assert len(seen) == 8 + 8 * 12 and total > 2 * LIMIT_W  # the burst needed >2 windows
    grants = sorted(budget.grants)
    assert sum(w for _, w in grants) == total  # every request took its ccxt weight
    assert worst_window(grants, WINDOW_S) <= LIMIT_W  # exact, at the budget
    # at the venue: a request reaches the stand-in a little after its grant (GIL, the
    # socket); with every arrival within `lag` of its grant, any window of WINDOW_S - lag
    # at the stand-in holds only requests granted within one WINDOW_S
    arrivals = {
        int(p["startTime"]) // 60_000: t
        for t, path, p in stand.engine.market_requests
        if path.endswith("/klines")
    }
    assert arrivals.keys() == granted.keys()
    lag = max(arrivals[k] - granted[k] for k in granted)
    assert 0 <= lag < 0.5
    assert worst_window(seen, WINDOW_S - lag) <= LIMIT_W
    assert seen[-1][0] - seen[0][0] >= 2 * WINDOW_S - lag  # it did wait, not just spread


def test_one_client_alone_keeps_its_own_throttle_and_is_not_slowed(stand: Stand) -> None:
    rate_ms, n = 20.0, 15
    roomy = Recording(10_000, 60.0)
    runs: dict[str, float] = {}
    for name, budget in (("alone", None), ("budget", roomy), ("alone2", None), ("budget2", roomy)):
        ex = client(stand, budget, rate_ms)
        ex.load_markets()
        start = time.perf_counter()
        for _ in range(n):
            klines(ex, 50)  # weight 1: ccxt spaces them rate_ms apart
        runs[name] = time.perf_counter() - start
    assert roomy.delays and all(d == 0.0 for d in roomy.delays)  # the shared budget never held it
    last = [t for t, _ in weighted(stand)][-n:]  # the last run's klines
    assert (last[-1] - last[0]) / (n - 1) >= rate_ms / 1000 * 0.9  # ccxt's spacing applies
    with_budget = runs["budget"] + runs["budget2"]
    without = runs["alone"] + runs["alone2"]
    assert with_budget <= 1.5 * without, runs


def test_every_client_of_a_venue_shares_one_budget_and_the_setting_turns_it_off() -> None:
    a = CcxtExchange("binance", "live", never, public_only=True)
    b = CcxtExchange("binance", "live", never, public_only=True)
    bybit = CcxtExchange("bybit", "live", never, public_only=True)
    off = CcxtExchange("binance", "live", never, public_only=True, weight_budget_fraction=0.0)
    assert a._budget is not None and a._budget is b._budget  # one per venue and env
    assert a._budget.limit == pytest.approx(2400 * 0.8) and a._budget.window_s == 60.0
    assert bybit._budget is not None and bybit._budget.limit == pytest.approx(600 * 0.8)
    assert off._budget is None
    assert Settings().exchange_weight_budget_fraction == 0.8
