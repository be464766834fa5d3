"""The close pool against a slow venue: one exit-monitor cycle at concurrency 4 closes
positions of several users through the real ccxt client on the Binance USD-M stand-in,
which waits 40–70 ms (seeded) before each request. Every position closes exactly once
(one exit order each at the venue, its stop and take-profit cancelled once), and each
user's closes reach the venue one after the other in the order the cycle decided them
(the pool runs one user's closes in order on one thread), while different users' closes
do overlap on several threads."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.integration.close_world import exit_client_id, venue_world

pytestmark = pytest.mark.integration

USERS, PER_USER = 3, 3


def test_concurrent_closes_on_a_slow_venue_close_once_each_in_each_users_order(
    tmp_path: Path,
) -> None:
    with venue_world(tmp_path, USERS, PER_USER) as world:
        by_id = {p.id: p for p in world.positions}
        assert len(by_id) == USERS * PER_USER
        world.stand.venue.latency_s, world.stand.venue.jitter_s = 0.04, 0.03
        monitor = world.monitor(4)
        threads: set[str] = set()
        create = monitor._exchange.create_order

        def recording_create(*args: Any, **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return create(*args, **kwargs)

        monitor._exchange.create_order = recording_create  # type: ignore[method-assign]
        log_from = len(world.engine.log)
        try:
            report = monitor.cycle()
        finally:
            monitor.close()
        log = world.engine.log[log_from:]

    assert report.failed == {}
    assert set(report.closed) == set(by_id), "every position closes in the cycle"
    decided = list(report.closed)  # the report lists the closes in decision order

    # exactly one exit order per position at the venue, with the position's client id
    exits = [e for e in log if e["action"] == "create" and e["reduce_only"]]
    assert Counter(e["client_id"] for e in exits) == Counter(
        exit_client_id(p) for p in by_id.values()
    )
    assert all(e["type"] == "MARKET" for e in exits)
    # and its two protective orders cancelled once each, nothing else created
    cancels = Counter((e["account"], e["symbol"]) for e in log if e["action"] == "cancel")
    assert cancels == Counter({(p.user_id, p.symbol): 2 for p in by_id.values()})
    assert len([e for e in log if e["action"] == "create"]) == len(by_id)

    for user in sorted({p.user_id for p in by_id.values()}):
        mine = [by_id[i] for i in decided if by_id[i].user_id == user]
        # the user's exit orders reached the venue in decision order ...
        assert [e["client_id"] for e in exits if e["account"] == user] == [
            exit_client_id(p) for p in mine
        ]
        # ... each close whole before the next (exit, fill, cancels: one block per symbol)
        symbols = [e["symbol"] for e in log if e["account"] == user]
        blocks = [s for k, s in enumerate(symbols) if k == 0 or symbols[k - 1] != s]
        assert blocks == [p.symbol for p in mine], (user, symbols)

    # the users' closes did run concurrently (else the ordering above proves nothing)
    assert len([t for t in threads if t.startswith("exit-close")]) > 1, threads
