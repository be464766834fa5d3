"""Order claims: one sender per client order id; waiters get the order; a final "no"
frees the id; an abandoned claim is taken over once stale."""

from __future__ import annotations

import pytest

from prometheus_trader.adapters.ccxt.claims import ClaimPolicy, OrderClaims
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import ExchangeError, OrderRejected

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def claims(state: SqliteStateStore, clock: Clock, **kw: float) -> OrderClaims:
    return OrderClaims(state, ClaimPolicy(**kw), now_s=clock.now, sleep=clock.sleep)


def test_only_the_claimant_sends_and_a_waiter_gets_the_order() -> None:
    state, clock = SqliteStateStore(), Clock()
    sent: list[str] = []
    first = claims(state, clock).run(
        "b:demo", "alice", "c1", lambda: sent.append("a") or "order", lambda: None
    )
    appeared = iter([None, None, "order"])
    waiter = claims(state, clock)
    got = waiter.run(
        "b:demo", "alice", "c1", lambda: sent.append("b") or "other", lambda: next(appeared)
    )
    assert (first, got, sent) == ("order", "order", ["a"])
    assert clock.t == pytest.approx(1000.0 + 0.05 + 0.1)  # backing-off look-ups


def test_a_final_rejection_frees_the_id_and_a_stale_claim_is_taken_over() -> None:
    state, clock = SqliteStateStore(), Clock()

    def refuse() -> str:
        raise OrderRejected("insufficient margin")

    with pytest.raises(OrderRejected):
        claims(state, clock).run("b:demo", "alice", "c1", refuse, lambda: None)
    assert (
        claims(state, clock).run("b:demo", "alice", "c1", lambda: "placed", lambda: None)
        == "placed"
    )

    def lost() -> str:
        raise ExchangeError("not placed after 5 attempts")

    with pytest.raises(ExchangeError):
        claims(state, clock).run("b:demo", "bob", "c2", lost, lambda: None)
    later = claims(state, clock, stale_after_s=30.0, wait_s=120.0)
    assert later.run("b:demo", "bob", "c2", lambda: "resent", lambda: None) == "resent"
    assert clock.t > 1000.0 + 30.0


def test_a_waiter_gives_up_when_the_order_never_appears() -> None:
    state, clock = SqliteStateStore(), Clock()
    claims(state, clock).run("b:demo", "alice", "c1", lambda: "order", lambda: None)
    with pytest.raises(ExchangeError, match="has not appeared"):
        claims(state, clock, wait_s=5.0, stale_after_s=1e9).run(
            "b:demo", "alice", "c1", lambda: "dup", lambda: None
        )


def test_a_send_confirmed_not_placed_frees_the_id_at_once() -> None:
    # every attempt failed and the look-up after the last found nothing: the next attempt
    # (a redelivery, the monitor's next cycle) sends at once instead of waiting for staleness
    from prometheus_trader.adapters.ccxt.errors import NotPlaced

    state, clock = SqliteStateStore(), Clock()

    def outage() -> str:
        raise NotPlaced("order c3 not placed after 5 attempts")

    with pytest.raises(NotPlaced):
        claims(state, clock).run("b:demo", "bob", "c3", outage, lambda: None)
    again = claims(state, clock, stale_after_s=30.0, wait_s=120.0)
    assert again.run("b:demo", "bob", "c3", lambda: "resent", lambda: None) == "resent"
    assert clock.t == 1000.0
