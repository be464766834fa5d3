"""``ClosePool``: closes sharing a user or an account run in decision order on one thread;
different groups on several threads; outcomes come back in decision order."""

from __future__ import annotations

import threading
import time

import pytest

from prometheus_trader.domain.trading import Position
from prometheus_trader.usecases.close_pool import (
    CloseOutcome,
    ClosePool,
    DeferredCloses,
    PendingClose,
)

pytestmark = pytest.mark.unit


def _position(pid: str, user: str) -> Position:
    return Position.model_construct(id=pid, user_id=user)


def _groups(d: DeferredCloses) -> list[list[str]]:
    return sorted([p.position.id for p in g] for g in d.groups.values())


def test_closes_sharing_a_user_or_an_account_are_one_group_in_decision_order() -> None:
    d = DeferredCloses()
    noop = lambda: None  # noqa: E731
    d.add("acct-a", _position("p1", "u1"), "r", noop)
    d.add("acct-b", _position("p2", "u2"), "r", noop)
    d.add("acct-c", _position("p3", "u3"), "r", noop)
    assert _groups(d) == [["p1"], ["p2"], ["p3"]]
    d.add("acct-a", _position("p4", "u4"), "r", noop)  # shares u1's account
    d.add("acct-d", _position("p5", "u2"), "r", noop)  # u2 on a second account
    assert _groups(d) == [["p1", "p4"], ["p2", "p5"], ["p3"]]
    d.add("acct-d", _position("p6", "u3"), "r", noop)  # joins u3's group and u2's
    assert _groups(d) == [["p1", "p4"], ["p2", "p3", "p5", "p6"]]
    d.add("acct-e", _position("p7", "u4"), "r", noop)  # u4 is in acct-a's group
    assert _groups(d) == [["p1", "p4", "p7"], ["p2", "p3", "p5", "p6"]]
    assert d.accounts == {"acct-a", "acct-b", "acct-c", "acct-d", "acct-e"}


def test_groups_run_concurrently_each_in_order_outcomes_in_decision_order() -> None:
    pool = ClosePool(4)
    assert ClosePool(1).collector() is None  # 1: inline, nothing collected
    d = pool.collector()
    assert d is not None
    ran: list[tuple[str, str]] = []
    threads: dict[str, str] = {}
    barrier = threading.Barrier(3, timeout=10)  # three groups' first closes meet

    def close(pid: str, first: bool) -> None:
        if first:
            barrier.wait()  # only passes if the groups really run at the same time
        time.sleep(0.001)
        ran.append((pid[0], pid))
        threads[pid] = threading.current_thread().name

    for k in range(12):
        user = "abc"[k % 3]
        pid = f"{user}{k:02d}"
        d.add(f"acct-{user}", _position(pid, user), "r", lambda p=pid, f=k < 3: close(p, f))

    def one(pending: PendingClose) -> CloseOutcome:
        pending.run()
        return CloseOutcome(pending, None, (pending.position.id,))

    try:
        outcomes = pool.run(d, one)
    finally:
        pool.shutdown()
    assert [o.pending.seq for o in outcomes] == list(range(12))
    for user in "abc":
        mine = [pid for u, pid in ran if u == user]
        assert mine == sorted(mine)  # a group's closes in decision order
        assert len({threads[pid] for pid in mine}) == 1  # on one thread
    assert len(set(threads.values())) == 3
