"""The one place where ccxt's exceptions become ours, and where transient ones are retried.

- ``InsufficientFunds``, ``InvalidOrder``, ``BadRequest`` (bad symbol, size, precision),
  ``OperationRejected`` on an order → ``OrderRejected``: final, never retried.
- a plain ``ExchangeError`` on an order (a code ccxt has no class for) → retried like a
  transient failure, after a lookup by client order id (an unknown outcome, not a "no");
  on a cancel (``changing``) too: cancelling again is harmless (Bybit answers a 503 with
  ``retCode`` 10016, which ccxt leaves a plain ``ExchangeError``).
- ``OperationFailed``: ``NetworkError`` and its kinds (``RequestTimeout``,
  ``ExchangeNotAvailable``, ``DDoSProtection``, ``RateLimitExceeded``, ``InvalidNonce``) and
  answers whose outcome is unknown (Binance 503/-1001) → retried a bounded number of times
  with exponential backoff; a ``Retry-After`` header (429/418) sets the wait.
- everything else → ``ExchangeError``.

Messages are scrubbed: a ccxt message may quote the signed URL or the response body; ours
keep neither query strings nor the caller's key material.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from prometheus_trader.ports import ExchangeError, OrderRejected

T = TypeVar("T")
_QUERY = re.compile(r"\?[^\s\"']*")
_DUPLICATE = re.compile(r"-4116|duplicat|OrderLinkedID is duplicate|110072", re.IGNORECASE)


class OrderMissing(ExchangeError):
    """The exchange does not know this order (used to resolve lookups by client id)."""


class NotPlaced(ExchangeError):
    """Every attempt failed and a look-up by client id after the last one found nothing:
    the id is free to be sent again (by this instance or another)."""


class TransientFailure(ExchangeError):
    """A failure worth retrying; ``retry_after`` is the server's requested wait, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, waits ``base_s * 2**n`` capped by
    ``max_wait_s``; a server ``Retry-After`` is honoured up to ``max_wait_s``."""

    attempts: int = 5
    base_s: float = 0.5
    max_wait_s: float = 30.0

    def wait_after(self, attempt: int, err: TransientFailure) -> float:
        """Seconds to wait after the failed attempt number ``attempt`` (0-based)."""
        backoff: float = min(self.base_s * 2.0**attempt, self.max_wait_s)
        if err.retry_after is not None:
            return min(max(err.retry_after, backoff), self.max_wait_s)
        return backoff

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt."""
        backoff: float = min(self.base_s * 2.0 ** (state.attempt_number - 1), self.max_wait_s)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientFailure) and exc.retry_after is not None:
            return min(max(exc.retry_after, backoff), self.max_wait_s)
        return backoff


def scrub(message: str, *secrets: str | None) -> str:
    """Drop query strings (signed URLs) and any key material from an error message."""
    out = _QUERY.sub("?…", message)
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return out[:500]


def retry_after(client: Any) -> float | None:
    """The ``Retry-After`` of the last response, in seconds, if the server sent one."""
    headers = getattr(client, "last_response_headers", None) or {}
    for name, value in dict(headers).items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(str(value)))
            except (TypeError, ValueError):
                return None
    return None


def is_duplicate_client_id(exc: BaseException) -> bool:
    """The exchange refused a client order id it already has."""
    return isinstance(exc, ccxt.DuplicateOrderId) or bool(_DUPLICATE.search(str(exc)))


def translate(
    exc: BaseException,
    client: Any,
    *,
    placing: bool,
    secrets: tuple[str, ...] = (),
    changing: bool = False,
) -> Exception:
    """Our exception for a ccxt one (``placing``: the call placed an order; ``changing``:
    it placed or cancelled one)."""
    if isinstance(exc, ExchangeError):  # already ours (e.g. EndpointRefused)
        return exc
    msg = scrub(f"{type(exc).__name__}: {exc}", *secrets)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderMissing(msg)
    if isinstance(exc, ccxt.OperationFailed):
        # network errors, and answers like Binance's 503/-1001 "unable to process": the
        # outcome is unknown, so retry (orders: after a lookup by client id)
        return TransientFailure(msg, retry_after(client))
    if isinstance(exc, ccxt.InsufficientFunds):
        return OrderRejected(f"insufficient margin: {msg}") if placing else ExchangeError(msg)
    if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest | ccxt.OperationRejected):
        return OrderRejected(msg) if placing else ExchangeError(msg)
    if (placing or changing) and type(exc) is ccxt.ExchangeError:
        # a code ccxt has no class for (e.g. Bybit 10016 "server error" on a 503): the
        # outcome is unknown, so it is retried after a lookup by client order id, never
        # taken for a final "no"
        return TransientFailure(msg, retry_after(client))
    if isinstance(exc, ccxt.BaseError):
        return ExchangeError(msg)
    return exc if isinstance(exc, Exception) else ExchangeError(msg)


def call(
    client: Any,
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    *,
    placing: bool = False,
    secrets: tuple[str, ...] = (),
    changing: bool = False,
) -> T:
    """Run one ccxt call: translate its errors; retry transient ones within ``policy``."""

    def once() -> T:
        try:
            return fn()
        except ccxt.BaseError as exc:
            raise translate(
                exc, client, placing=placing, secrets=secrets, changing=changing or placing
            ) from None

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait,
        retry=retry_if_exception_type(TransientFailure),
        sleep=sleep,
        reraise=True,
    )
    return retrying(once)
