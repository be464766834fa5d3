"""Pure parts of the ccxt adapter: the one error mapping, retry waits, order ids, scrubbing."""

from __future__ import annotations

import ccxt
import pytest
from tenacity import RetryCallState

from prometheus_trader.adapters.ccxt.config import Credentials, secret_name
from prometheus_trader.adapters.ccxt.errors import (
    OrderMissing,
    RetryPolicy,
    TransientFailure,
    scrub,
    translate,
)
from prometheus_trader.adapters.ccxt.parse import decode_order_id, encode_order_id
from prometheus_trader.ports import ExchangeError, OrderRejected

pytestmark = pytest.mark.unit


class Client:
    def __init__(self) -> None:
        self.last_response_headers = {"Retry-After": "7"}


@pytest.mark.parametrize(
    ("exc", "placing", "expected"),
    [
        (ccxt.InsufficientFunds("x"), True, OrderRejected),
        (ccxt.InvalidOrder("x"), True, OrderRejected),
        (ccxt.BadSymbol("x"), True, OrderRejected),
        (ccxt.ExchangeError('{"retCode":10016}'), True, TransientFailure),
        (ccxt.ExchangeError('{"retCode":10016}'), False, ExchangeError),
        (ccxt.OperationRejected("x"), True, OrderRejected),
        (ccxt.InsufficientFunds("x"), False, ExchangeError),
        (ccxt.RequestTimeout("x"), True, TransientFailure),
        (ccxt.RateLimitExceeded("x"), False, TransientFailure),
        (ccxt.DDoSProtection("x"), True, TransientFailure),
        (ccxt.ExchangeNotAvailable("x"), True, TransientFailure),
        (ccxt.OperationFailed("-1001"), True, TransientFailure),
        (ccxt.OrderNotFound("x"), False, OrderMissing),
        (ccxt.AuthenticationError("x"), True, ExchangeError),
    ],
)
def test_one_mapping_for_every_ccxt_error(
    exc: Exception, placing: bool, expected: type[Exception]
) -> None:
    out = translate(exc, Client(), placing=placing)
    assert type(out) is expected
    if isinstance(out, TransientFailure):
        assert out.retry_after == 7.0


def test_an_unknown_answer_to_a_cancel_is_retried_other_reads_are_not() -> None:
    # Bybit's 503 "server error" (10016) has no ccxt class: cancelling again is harmless
    bybit_503 = ccxt.ExchangeError('{"retCode":10016}')
    assert type(translate(bybit_503, Client(), placing=False, changing=True)) is TransientFailure
    assert type(translate(bybit_503, Client(), placing=False)) is ExchangeError
    rejected = translate(ccxt.InsufficientFunds("x"), Client(), placing=False, changing=True)
    assert type(rejected) is ExchangeError  # a cancel is never an order rejection


def test_retry_waits_honour_retry_after_within_the_cap() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.5, max_wait_s=10.0)

    def state(n: int, exc: Exception) -> RetryCallState:
        s = RetryCallState(None, lambda: None, (), {})
        s.attempt_number = n
        s.set_exception((type(exc), exc, None))
        return s

    assert policy.wait(state(1, TransientFailure("x"))) == 0.5
    assert policy.wait(state(3, TransientFailure("x"))) == 2.0
    assert policy.wait(state(1, TransientFailure("x", retry_after=4))) == 4.0
    assert policy.wait(state(1, TransientFailure("x", retry_after=60))) == 10.0
    assert policy.wait(state(6, TransientFailure("x"))) == 10.0


def test_messages_lose_signed_query_strings_and_key_material() -> None:
    msg = "GET https://demo-fapi.binance.com/fapi/v3/account?timestamp=1&signature=abc KEY sec"
    out = scrub(msg, "KEY", "sec")
    assert "signature" not in out and "KEY" not in out and " sec" not in out
    assert "demo-fapi.binance.com/fapi/v3/account?…" in out


def test_order_ids_carry_kind_and_symbol() -> None:
    oid = encode_order_id("123", "BTC/USDT:USDT", True)
    assert decode_order_id(oid) == ("123", "BTC/USDT:USDT", True)
    with pytest.raises(ExchangeError):
        decode_order_id("no-such-order")


def test_credentials_never_show_in_repr_and_names_follow_secret_manager() -> None:
    creds = Credentials("binance", "demo", "KEY123", "SECRET456")
    assert "KEY123" not in repr(creds) and "SECRET456" not in repr(creds)
    assert Credentials.from_secret(creds.to_secret()) == creds
    assert secret_name("a.b@c", "binance", "live") == "exchange-keys-binance-live-a_b_c"
    with pytest.raises(ExchangeError, match="unreadable") as err:
        Credentials.from_secret('{"env": "prod", "api_key": "KEY123"}')
    assert "KEY123" not in str(err.value)
