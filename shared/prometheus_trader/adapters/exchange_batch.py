"""The ``Exchange`` port's batch calls as loops over the single calls.

An adapter without a cheaper batch (a venue's REST API takes one account per request)
implements ``create_orders`` / ``fetch_balances`` with these, so every adapter gives the
same answer as the single calls one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from prometheus_trader.domain.trading import Balance, Order, OrderRequest
from prometheus_trader.ports import OrderRejected


def orders_one_by_one(
    create_order: Callable[[str, OrderRequest], Order],
    requests: Sequence[tuple[str, OrderRequest]],
) -> list[Order | OrderRejected]:
    """``create_order`` for each (account, request) in order; a refusal in its place.

    Any other error propagates: the items before it stay placed (a retry of the whole
    call finds them by client order id)."""
    out: list[Order | OrderRejected] = []
    for account, request in requests:
        try:
            out.append(create_order(account, request))
        except OrderRejected as exc:
            out.append(exc)
    return out


def balances_one_by_one(
    fetch_balance: Callable[[str], Balance], accounts: Sequence[str]
) -> dict[str, Balance]:
    """``fetch_balance`` of each account once, by account (in first-seen order)."""
    out: dict[str, Balance] = {}
    for account in accounts:
        if account not in out:
            out[account] = fetch_balance(account)
    return out


__all__ = ["balances_one_by_one", "orders_one_by_one"]


def open_orders_on(
    fetch_open_orders: Callable[[str], list[Order]], account: str, symbols: Collection[str]
) -> list[Order]:
    """``fetch_open_orders_on`` for a venue where one account-wide listing costs no more
    than one per symbol (a ledger in memory or in the state store): that listing, kept to
    ``symbols``; nothing is read when there are none."""
    if not symbols:
        return []
    wanted = set(symbols)
    return [o for o in fetch_open_orders(account) if o.symbol in wanted]
