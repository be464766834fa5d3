"""Venues, environments, endpoints and keys of the ccxt adapter family.

A venue is described once (``VenueSpec``); a second exchange is one more entry in
``VENUES``. Environments are ``demo`` (the exchange's demo trading) and ``live``; each has
its own set of hosts, derived from ccxt's own URL tables, and a request to a host outside
the environment's set never leaves the process (``guard_hosts``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import ccxt

from prometheus_trader.ports import ExchangeError, SecretNotFound, SecretStore

Env = Literal["demo", "live"]
ENVS: tuple[Env, ...] = ("demo", "live")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class LiveTradingRefused(ExchangeError):
    """Live trading needs both the deployment switch and the user's own setting."""


class EndpointRefused(ExchangeError):
    """A request would have gone to a host outside its environment (never sent)."""


class KeysMissing(ExchangeError):
    """No keys stored for this user, exchange and environment."""


@dataclass(frozen=True)
class VenueSpec:
    """What differs between venues; the adapter code is the same for all."""

    exchange_id: str  # our name (market store, documents)
    ccxt_id: str
    options: Mapping[str, Any]
    demo_urls_key: str  # where ccxt keeps the demo-trading URL table
    trigger_params: Mapping[str, Any]  # how ccxt addresses conditional orders
    client_id_param: str = "clientOrderId"
    default_max_leverage: float = 20.0
    # "type": STOP_MARKET / TAKE_PROFIT_MARKET order types with stopPrice (Binance);
    # "sltp": a market order with stopLossPrice / takeProfitPrice (Bybit's conditional orders)
    conditional_style: str = "type"
    plain_params: Mapping[str, Any] = field(default_factory=dict)  # non-conditional listing
    fetch_params: Mapping[str, Any] = field(default_factory=dict)  # fetch_order by id
    # the venue's request weight of an open-orders listing without a symbol, in listings
    # of one symbol (Binance USD-M: 40 for GET openOrders and openAlgoOrders; ccxt's
    # throttle waits that many rate-limit slots): fetch_open_orders_on lists per symbol
    # while that is cheaper
    account_listing_weight: int = 1
    # the venue's request-weight budget per IP (weight per window), shared by every client
    # of the venue in the process (weight_budget.py); ip_weight_is_cost: a request weighs
    # ccxt's endpoint cost (Binance USD-M: ccxt's fapi costs are the venue's weights), else
    # 1 per request (Bybit counts requests per IP; ccxt's costs there are per-UID limits)
    ip_budget: float = 0.0  # 0: no shared budget
    ip_window_s: float = 60.0
    ip_weight_is_cost: bool = True

    def new_client(self, config: Mapping[str, Any] | None = None) -> Any:
        """A fresh ccxt client with this venue's options (no network)."""
        cls = getattr(ccxt, self.ccxt_id)
        client = cls({"enableRateLimit": True, **(config or {})})
        client.options.update(dict(self.options))
        return client


VENUES: dict[str, VenueSpec] = {
    "binance": VenueSpec(
        exchange_id="binance",
        ccxt_id="binanceusdm",
        # currencies come from a spot (sapi) endpoint that USD-M keys and demo lack
        options={
            "fetchCurrencies": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "defaultType": "swap",
        },
        demo_urls_key="demo",
        trigger_params={"trigger": True},
        account_listing_weight=40,
        ip_budget=2400.0,  # REQUEST_WEIGHT per minute per IP (exchangeInfo rateLimits)
        ip_window_s=60.0,
    ),
    "bybit": VenueSpec(
        exchange_id="bybit",
        ccxt_id="bybit",
        options={
            "defaultType": "swap",
            "defaultSubType": "linear",
            "fetchMarkets": {"types": ["linear"]},
            "loadAllOptions": False,
            "enableUnifiedAccount": True,
            "enableUnifiedMargin": False,
        },
        demo_urls_key="demotrading",
        trigger_params={"trigger": True},
        conditional_style="sltp",
        plain_params={"orderFilter": "Order"},
        fetch_params={"acknowledged": True},
        ip_budget=600.0,  # HTTP requests per 5 s per IP (Bybit v5 rate-limit rules)
        ip_window_s=5.0,
        ip_weight_is_cost=False,
    ),
}


def venue(exchange: str) -> VenueSpec:
    """The spec of one of our exchange names (``binance``, ``bybit``)."""
    try:
        return VENUES[exchange]
    except KeyError:
        raise ExchangeError(f"unknown exchange {exchange!r}; known: {sorted(VENUES)}") from None


def _hosts(urls: Any, hostname: str) -> set[str]:
    out: set[str] = set()
    if isinstance(urls, str):
        host = urlsplit(urls.replace("{hostname}", hostname)).hostname
        if host:
            out.add(host)
    elif isinstance(urls, Mapping):
        for value in urls.values():
            out |= _hosts(value, hostname)
    return out


def env_hosts(spec: VenueSpec) -> dict[Env, frozenset[str]]:
    """The hosts each environment may reach, from ccxt's own URL tables."""
    return _env_hosts(spec.exchange_id)


@functools.cache
def _env_hosts(exchange_id: str) -> dict[Env, frozenset[str]]:
    spec = VENUES[exchange_id]
    client = spec.new_client()
    hostname = str(getattr(client, "hostname", "") or "")
    live = _hosts(client.urls["api"], hostname)
    demo = _hosts(client.urls[spec.demo_urls_key], hostname)
    return {"live": frozenset(live - demo), "demo": frozenset(demo - live)}


def allowed_hosts(spec: VenueSpec, env: Env, overrides: Mapping[str, str] | None) -> frozenset[str]:
    """The environment's hosts, plus loopback when the URLs are overridden (the stand-in).

    Overrides can only add loopback hosts: a demo client pointed at a live host (or the
    reverse) is refused whatever its URL table says."""
    hosts = env_hosts(spec)
    extra = {h for h in _hosts(overrides or {}, "") if h in LOOPBACK}
    return hosts[env] | frozenset(extra)


def guard_hosts(client: Any, allowed: frozenset[str], label: str) -> None:
    """Wrap the client's single HTTP entry point: a URL outside ``allowed`` is refused
    before any socket is opened (ccxt routes every REST call through ``fetch``)."""
    send: Callable[..., Any] = client.fetch

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        host = urlsplit(url).hostname or ""
        if host not in allowed:
            raise EndpointRefused(f"{label}: host {host!r} is not an endpoint of this environment")
        return send(url, method, headers, body)

    client.fetch = fetch


def point_at(client: Any, urls: Mapping[str, str]) -> None:
    """Send every request to ``urls`` (a stand-in). ccxt picks its error tables by URL
    (e.g. Binance's linear-futures codes by ``https://demo-fapi...``), so the lookup still
    sees the endpoint each overridden URL replaces."""
    real = {
        urls[k].rstrip("/"): str(v).rstrip("/")
        for k, v in dict(client.urls["api"]).items()
        if k in urls and isinstance(v, str)
    }
    client.urls["api"] = dict(urls)
    lookup = getattr(client, "get_exceptions_by_url", None)
    if lookup is None:
        return

    def by_url(url: str | None, kind: str) -> Any:
        for fake in sorted(real, key=len, reverse=True):
            if url is not None and url.startswith(fake):
                url = real[fake] + url[len(fake) :]
                break
        return lookup(url, kind)

    client.get_exceptions_by_url = by_url


# ------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class Credentials:
    """One user's API key for one exchange and environment. ``repr`` never shows it."""

    exchange: str
    env: Env
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)

    def to_secret(self) -> str:
        """The secret-store value (JSON)."""
        return json.dumps(
            {
                "exchange": self.exchange,
                "env": self.env,
                "api_key": self.api_key,
                "secret": self.secret,
                "password": self.password,
            }
        )

    @classmethod
    def from_secret(cls, value: str) -> Credentials:
        """Parse a stored value; the error never quotes it."""
        try:
            data = json.loads(value)
            env = data["env"]
            if env not in ENVS:
                raise ValueError
            return cls(
                exchange=str(data["exchange"]),
                env=env,
                api_key=str(data["api_key"]),
                secret=str(data["secret"]),
                password=data.get("password"),
            )
        except (ValueError, KeyError, TypeError):
            raise ExchangeError("stored exchange keys are unreadable") from None


def secret_name(user_id: str, exchange: str, env: Env) -> str:
    """Secret name of a user's keys (letters, digits, ``-``, ``_``: Secret Manager's set)."""
    if env not in ENVS:
        raise ValueError(f"env must be one of {ENVS}")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in user_id)
    return f"exchange-keys-{exchange}-{env}-{safe}"


def keys_from_store(store: SecretStore, exchange: str, env: Env) -> Callable[[str], Credentials]:
    """Look a user's keys up in the secret store (per exchange and environment)."""

    def load(user_id: str) -> Credentials:
        try:
            creds = Credentials.from_secret(store.get_secret(secret_name(user_id, exchange, env)))
        except SecretNotFound:
            raise KeysMissing(f"no {env} keys for user {user_id!r} on {exchange}") from None
        if creds.env != env or creds.exchange != exchange:
            raise KeysMissing(f"stored keys of user {user_id!r} are not {env} keys for {exchange}")
        return creds

    return load


def hosts_of(urls: Iterable[str]) -> set[str]:
    """Hostnames of some URLs (for tests and diagnostics)."""
    return {h for u in urls if (h := urlsplit(u).hostname)}
