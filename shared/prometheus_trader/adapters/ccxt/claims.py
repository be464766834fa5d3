"""One sender per client order id across processes: a create-if-absent claim in the state
store before an order is sent.

Why: Binance documents ``newClientOrderId`` as unique among *open* orders only, so a
market order that filled at once does not block a second one with the same id; two
executor instances racing on one execution would both be filled. The port promises
idempotency on the client order id, so the adapter serialises senders itself:

- the instance that creates the claim sends (and deletes the claim if the exchange says
  a final no, or if every attempt failed and a look-up after the last found nothing
  (``NotPlaced``), so the id leaves no trace and the next attempt sends at once: a
  failing exit must not hold the monitor's cycle for ``stale_after_s``);
- the others wait for the order to appear on the exchange (looked up by client id), or
  for the claim to disappear (then they try to claim), or for it to go stale (its owner
  died before sending: the exchange has no such order, so taking over cannot duplicate).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_trader.adapters.ccxt.errors import NotPlaced
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.ports import ExchangeError, StateStore, StateTransaction

T = TypeVar("T")
COLLECTION = "exchange_order_claims"


@dataclass(frozen=True)
class ClaimPolicy:
    """How long a waiter waits and when an unanswered claim counts as abandoned."""

    wait_s: float = 60.0
    poll_s: float = 0.05  # first look-up delay; doubles up to max_poll_s (API weight)
    max_poll_s: float = 1.0
    stale_after_s: float = 30.0


class OrderClaims:
    """Claims in a ``StateStore`` (SQLite embedded, Firestore deployed)."""

    def __init__(
        self,
        state: StateStore,
        policy: ClaimPolicy | None = None,
        *,
        now_s: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._state = state
        self._policy = policy or ClaimPolicy()
        self._now = now_s
        self._sleep = sleep
        self._token = secrets.token_hex(8)

    @staticmethod
    def doc_id(scope: str, account: str, client_order_id: str) -> str:
        return stable_id("claim", scope, account, client_order_id, length=32)

    def run(
        self,
        scope: str,
        account: str,
        client_order_id: str,
        send: Callable[[], T],
        lookup: Callable[[], T | None],
    ) -> T:
        """``send`` once across every instance sharing the store; others get ``lookup``."""
        doc = self.doc_id(scope, account, client_order_id)
        deadline = self._now() + self._policy.wait_s
        poll = self._policy.poll_s
        while True:
            claim = {"owner": self._token, "at_s": self._now(), "account": account}
            if self._state.create(COLLECTION, doc, claim) or self._take_over_stale(doc):
                try:
                    result = send()
                except ExchangeError as exc:
                    if _final(exc) or isinstance(exc, NotPlaced):
                        self._state.delete(COLLECTION, doc)  # nothing was placed: the id is free
                    raise
                return result
            found = lookup()
            if found is not None:
                return found
            if self._now() > deadline:
                raise ExchangeError(
                    f"order {client_order_id}: another instance is sending it and it has not "
                    f"appeared within {self._policy.wait_s:.0f}s"
                )
            self._sleep(poll)
            poll = min(poll * 2, self._policy.max_poll_s)

    def _take_over_stale(self, doc: str) -> bool:
        stale_before = self._now() - self._policy.stale_after_s
        token, now = self._token, self._now()

        def take(tx: StateTransaction) -> bool:
            current: dict[str, Any] | None = tx.get(COLLECTION, doc)
            if current is None:
                tx.set(COLLECTION, doc, {"owner": token, "at_s": now})
                return True
            if float(current.get("at_s", 0.0)) < stale_before:
                tx.set(COLLECTION, doc, {**current, "owner": token, "at_s": now})
                return True
            return False

        return self._state.transaction(take)


def _final(exc: ExchangeError) -> bool:
    from prometheus_trader.ports import OrderRejected

    return isinstance(exc, OrderRejected)
