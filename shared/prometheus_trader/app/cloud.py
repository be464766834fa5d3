"""Composition root of the services (Cloud Functions and the exit-monitor worker).

``get_runtime()`` builds one :class:`CloudRuntime` per process from :class:`Settings` and
caches it: a function instance reuses its clients, caches and use-cases between
invocations. Every adapter and use-case is built lazily on first use, so the collector
never opens a Secret Manager client and importing a function's ``main.py`` does no I/O.

``settings.backend`` picks the adapters:

* ``gcp``: Firestore, Pub/Sub, Cloud Storage (blobs and the market store, cached under
  ``market_cache_dir``), Secret Manager;
* ``embedded``: SQLite, the in-process bus, local folders under ``var_dir/service`` (one
  process only: the worker run locally, tests).

The exchange routes by account (``adapters/routed_exchange.py``): paper accounts fill on
the paper ledger at the market store's prices (recorded data, or what the live collector
writes); a ``mode=live`` user's venue account (``binance-demo:alice``) trades through ccxt
with that user's keys from the secret store, in ``trading_env`` (live also needs
``allow_live``). Paper accounts persist in the state store (``adapters/paper``), so every function
instance, the worker and a restarted worker share one paper ledger. The notifier is the
console one (one line on stdout per notification), plus webhooks / SendGrid / Telegram
with ``notifier="routed"``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from prometheus_trader.adapters.embedded.clocks import SystemClock
from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.routed_exchange import RoutedExchange
from prometheus_trader.app.logging import configure_logging
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.streaming import LazyTickSource, build_trade_stream, stream_venue
from prometheus_trader.app.wiring import UseCases, paper_fills, wire
from prometheus_trader.domain.trading import Execution
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    BusMessage,
    Clock,
    Exchange,
    ExchangeError,
    MarketStore,
    Notifier,
    SecretStore,
    StateStore,
    TickSource,
)
from prometheus_trader.usecases.collect import CollectReport
from prometheus_trader.usecases.collect_live import CollectLiveMarketData, LiveCollectReport
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute_batch import BatchReport
from prometheus_trader.usecases.housekeeping import Housekeeping
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.notify import NotifyEvent
from prometheus_trader.usecases.rank import RankReport
from prometheus_trader.usecases.report import DailyReporter

T = TypeVar("T")


class ConfigurationError(RuntimeError):
    """The settings lack something the requested adapter needs."""


class ShiftedClock:
    """Real time moved by a fixed offset (recorded data replays at real speed), or run
    ``speed`` times faster.

    The clock reads ``start`` at the wall instant ``anchor`` (default: when the clock is
    made). Processes given the same anchor read the same time, so a restarted worker
    does not rewind to ``start``.
    """

    def __init__(
        self,
        start: datetime,
        base: Clock | None = None,
        *,
        speed: float = 1.0,
        anchor: datetime | None = None,
    ) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if anchor is not None and anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        self._base = base or SystemClock()
        self._speed = speed
        self._start_ms = int(start.timestamp() * 1000)
        self._anchor_ms = self._base.now_ms() if anchor is None else int(anchor.timestamp() * 1000)

    def __repr__(self) -> str:
        return f"ShiftedClock(start_ms={self._start_ms}, speed={self._speed})"

    def now(self) -> datetime:
        """Shifted UTC time, timezone-aware."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def now_ms(self) -> int:
        """Shifted time in epoch milliseconds."""
        return self._start_ms + int((self._base.now_ms() - self._anchor_ms) * self._speed)


class CloudRuntime:
    """Adapters and use-cases of one service process, each built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, object] = {}
        self._closers: list[Callable[[], None]] = []
        # re-entrant: building a use-case builds the adapters it needs
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"CloudRuntime(backend={self.settings.backend!r}, built={sorted(self._built)})"

    def _once(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = factory()
            return self._built[name]  # type: ignore[return-value]

    def close(self) -> None:
        """Close what was opened (last opened, first closed)."""
        with self._lock:
            for closer in reversed(self._closers):
                closer()
            self._closers.clear()
            self._built.clear()

    # ------------------------------------------------------------------ settings
    @property
    def project(self) -> str:
        """The Google Cloud project (settings, else $GOOGLE_CLOUD_PROJECT)."""
        project = self.settings.gcp_project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            raise ConfigurationError(
                "no Google Cloud project: set PROMETHEUS_GCP_PROJECT or GOOGLE_CLOUD_PROJECT"
            )
        return project

    def _bucket(self, name: str | None, what: str) -> str:
        bucket = name or self.settings.blob_bucket
        if not bucket:
            raise ConfigurationError(f"no bucket for {what}: set PROMETHEUS_BLOB_BUCKET")
        return bucket

    @property
    def _gcp(self) -> bool:
        return self.settings.backend == "gcp"

    @property
    def _service_dir(self) -> Path:
        return self.settings.var_dir / "service"

    # ------------------------------------------------------------------ adapters
    @property
    def clock(self) -> Clock:
        """System time, or shifted to ``settings.clock_start`` (replays)."""

        def make() -> Clock:
            s = self.settings
            if s.clock_start is None:
                return SystemClock()
            return ShiftedClock(s.clock_start, speed=s.clock_speed, anchor=s.clock_anchor)

        return self._once("clock", make)

    @property
    def state(self) -> StateStore:
        """The state store."""

        def make() -> StateStore:
            if self._gcp:
                from prometheus_trader.adapters.gcp.firestore_state_store import (
                    FirestoreStateStore,
                )

                firestore = FirestoreStateStore(
                    project=self.project,
                    database=self.settings.firestore_database,
                    prefix=self.settings.state_prefix,
                )
                self._closers.append(firestore.close)
                return firestore
            from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore

            sqlite = SqliteStateStore(self._service_dir / "state.sqlite")
            self._closers.append(sqlite.close)
            return sqlite

        return self._once("state", make)

    @property
    def bus(self) -> Bus:
        """The message bus (publishing only: subscriptions push to the functions)."""

        def make() -> Bus:
            if self._gcp:
                from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus

                return PubSubBus(
                    self.project,
                    topic_prefix=self.settings.topic_prefix,
                    max_delivery_attempts=self.settings.max_delivery_attempts,
                )
            from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus

            return InMemoryBus(max_delivery_attempts=self.settings.max_delivery_attempts)

        return self._once("bus", make)

    @property
    def storage_client(self) -> Any:
        """One Cloud Storage client shared by the blob and market stores."""

        # Any: google-cloud-storage ships no type information mypy can see
        def make() -> Any:
            from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

            return storage.Client(project=self.project)

        return self._once("storage_client", make)

    @property
    def blobs(self) -> BlobStore:
        """Reports and the append-only audit log."""

        def make() -> BlobStore:
            if self._gcp:
                from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore

                return GcsBlobStore(
                    self._bucket(None, "blobs"),
                    client=self.storage_client,
                    prefix=self.settings.blob_prefix,
                )
            from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore

            return LocalBlobStore(self._service_dir / "blobs")

        return self._once("blobs", make)

    def _market_store(self, prefix: str, cache: str, *, read_only: bool) -> MarketStore:
        if self._gcp:
            from prometheus_trader.adapters.gcp.gcs_market_store import GcsMarketStore

            gcs = GcsMarketStore(
                self._bucket(self.settings.market_bucket, "the market store"),
                self.settings.market_cache_dir / cache,
                client=self.storage_client,
                prefix=prefix,
                read_only=read_only,
            )
            self._closers.append(gcs.close)
            return gcs
        from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore

        root = self.settings.data_dir if read_only else self._service_dir / "market"
        duck = DuckDBMarketStore(root, read_only=read_only)
        self._closers.append(duck.close)
        return duck

    @property
    def market(self) -> MarketStore:
        """The market store the collector fills and the ranker/executor read."""
        return self._once(
            "market",
            lambda: self._market_store(self.settings.market_prefix, "market", read_only=False),
        )

    @property
    def replay_source(self) -> MarketStore:
        """Recorded data the replay exchange serves (read-only)."""
        return self._once(
            "replay_source",
            lambda: self._market_store(
                self.settings.replay_source_prefix, "replay", read_only=True
            ),
        )

    @property
    def paper_exchange(self) -> ReplayExchange:
        """Paper accounts (the ledger in the state store), filled at the market store's
        prices; also the market data every account reads."""

        def make() -> ReplayExchange:
            return ReplayExchange(
                self.replay_source,
                self.clock,
                ledger=self.state,  # shared by every instance: not exclusive
                **paper_fills(self.settings),
            )

        return self._once("paper_exchange", make)

    @property
    def exchange(self) -> Exchange:
        """Every account's exchange: paper accounts on the paper ledger, ``mode=live``
        users' venue accounts (``binance-demo:alice``) on ccxt with their own keys from
        the secret store (``adapters/routed_exchange.py``, docs/exchanges.md)."""

        def venue(name: str, env: str) -> Exchange:
            from prometheus_trader.adapters.ccxt.factory import build_ccxt_exchange

            if env not in ("demo", "live"):
                raise ExchangeError(f"unknown exchange environment {env!r}")
            return build_ccxt_exchange(
                name,
                cast(Literal["demo", "live"], env),
                secrets=self.secrets,
                state=self.state,
                allow_live=self.settings.allow_live,
                urls=self.settings.exchange_urls,
                weight_budget_fraction=self.settings.exchange_weight_budget_fraction,
            )

        return self._once("exchange", lambda: RoutedExchange(self.paper_exchange, venue))

    @property
    def notifier(self) -> Notifier:
        """Console notifier (stdout); with ``notifier="routed"`` also each user's webhook,
        email and Telegram endpoints (issue 10, docs/notifications.md)."""

        def make() -> Notifier:
            console = ConsoleNotifier(None, console=True)
            if self.settings.notifier != "routed":
                return console
            from prometheus_trader.app.notifications import routed_notifier

            return routed_notifier(
                self.settings,
                state=self.state,
                secrets=self.secrets,
                clock=self.clock,
                blobs=self.blobs,
                always=console,
            )

        return self._once("notifier", make)

    @property
    def secrets(self) -> SecretStore:
        """Per-user exchange keys."""

        def make() -> SecretStore:
            if self._gcp:
                from prometheus_trader.adapters.gcp.secret_manager_store import (
                    SecretManagerSecretStore,
                )

                return SecretManagerSecretStore(self.project, prefix=self.settings.secret_prefix)
            from prometheus_trader.adapters.embedded.encrypted_secret_store import (
                EncryptedFileSecretStore,
            )

            return EncryptedFileSecretStore(
                self._service_dir / "secrets.enc",
                key_file=self.settings.secret_key_file or self._service_dir / "secrets.key",
            )

        return self._once("secrets", make)

    # ----------------------------------------------------------------- use-cases
    @property
    def usecases(self) -> UseCases:
        """Every use-case over this runtime's adapters (wired as the pipeline wires them)."""
        return self._once(
            "usecases",
            lambda: wire(
                self.settings,
                clock=self.clock,
                exchange=self.exchange,
                market=self.market,
                state=self.state,
                bus=self.bus,
                blobs=self.blobs,
                notifier=self.notifier,
                ticks=self.trade_stream,
            ),
        )

    @property
    def trade_stream(self) -> TickSource | None:
        """The worker's live trades when ``stream_exchange`` is set (``app/streaming.py``);
        None: the monitor polls its exchange. The websocket opens on the first poll, so
        only the worker's monitor opens one (function instances wire the same use-cases)."""
        if not self.settings.stream_exchange:
            return None
        stream_venue(self.settings)  # a venue we cannot stream is refused at start

        def make() -> TickSource:
            stream = build_trade_stream(
                self.settings, bus=self.bus, state=self.state, clock=self.clock
            )
            self._closers.append(stream.close)
            return stream

        return LazyTickSource(lambda: self._once("trade_stream", make))

    @property
    def dispatcher(self) -> DispatchSignal:
        """``signals`` → ``executions`` messages: one per bucket of admitted users."""
        return self.usecases.dispatcher

    @property
    def evaluator(self) -> EvaluateClosedPosition:
        """``events`` → journal and statistics of closed positions."""
        return self.usecases.evaluator

    @property
    def notify(self) -> NotifyEvent:
        """``events`` → user notifications."""
        return self.usecases.notifier

    @property
    def monitor(self) -> ExitMonitor:
        """The worker's loop body."""
        return self.usecases.monitor

    @property
    def reporter(self) -> DailyReporter:
        """Scheduler, 00:00 UTC."""
        return self.usecases.reporter

    @property
    def housekeeping(self) -> Housekeeping:
        """Scheduler: expiries, watchlist notices, top-liquid list, email digests."""
        return self.usecases.housekeeping

    # ------------------------------------------------------- one invocation each
    def refresh_market(self) -> None:
        """Make the next market read see the bucket as it is now.

        ``GcsMarketStore`` mirrors the bucket when it opens; a warm function instance
        would otherwise read the partitions of its first invocation. Reopening re-lists
        the bucket and downloads only changed partitions (the cache stays in /tmp).
        Dependent use-cases are rebuilt with it. Embedded: nothing to do.
        """
        if not self._gcp:
            return
        with self._lock:
            store = self._built.pop("market", None)
            self._built.pop("usecases", None)  # rebuilt over the reopened store
            self._built.pop("live_collector", None)  # likewise (issue 9)
            if store is not None:
                close = store.close  # type: ignore[attr-defined]
                self._closers.remove(close)
                close()

    @property
    def live_collector(self) -> CollectLiveMarketData:
        """The ccxt collector of ``settings.collector_exchange`` (issue 9): its exchange
        (markets loaded once) outlives market-store refreshes, the collector does not."""
        from prometheus_trader.app import collector

        exchange = self._once(
            "collector_exchange",
            lambda: collector.build_collector_exchange(self.settings, self.clock),
        )
        return self._once(
            "live_collector",
            lambda: collector.build_live_collector(
                self.settings,
                exchange=exchange,
                market=self.market,
                state=self.state,
                clock=self.clock,
            ),
        )

    def collect(self) -> CollectReport | LiveCollectReport:
        """Collector: one round, written to the market store (a live venue when
        ``collector_exchange`` is set, else the replay exchange)."""
        with self._lock:
            self.refresh_market()
            if self.settings.collector_exchange:
                live = self.live_collector.run()
                self.market.flush()
                return live
            report = self.usecases.collector.run()
            self.market.flush()
            return report

    def rank(self) -> RankReport:
        """Ranker over the current market store."""
        with self._lock:
            self.refresh_market()
            return self.usecases.ranker.run()

    def execute(self, message: BusMessage) -> Execution | BatchReport:
        """Executor over the current market store (a user's message or a bucket's)."""
        with self._lock:
            self.refresh_market()
            return self.usecases.executor.handle_message(message)


_runtime: CloudRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime(settings_factory: Callable[[], Settings] = Settings) -> CloudRuntime:
    """This process's runtime, built on first call (settings read from the environment)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = settings_factory()
            # Cloud Functions parse one JSON object per stdout line into Cloud Logging
            configure_logging(settings.log_level, stream=sys.stdout)
            _runtime = CloudRuntime(settings)
        return _runtime


def install_runtime(runtime: object) -> None:
    """Make ``get_runtime()`` return ``runtime`` (``stack run``, tests).

    Duck-typed: any object with the attributes the functions reach (``execute``,
    ``dispatcher.handle``, ...). The previous runtime is closed.
    """
    global _runtime
    reset_runtime()
    with _runtime_lock:
        _runtime = cast(CloudRuntime, runtime)


def reset_runtime() -> None:
    """Close (when it can) and forget the cached runtime (tests; a changed environment)."""
    global _runtime
    with _runtime_lock:
        close = getattr(_runtime, "close", None)
        if callable(close):
            close()
        _runtime = None


def describe(runtime: CloudRuntime) -> dict[str, Any]:
    """What the runtime is configured to use (health endpoints)."""
    s = runtime.settings
    return {"backend": s.backend, "exchange_mode": s.exchange_mode, "exchange": s.exchange}


__all__ = [
    "CloudRuntime",
    "ConfigurationError",
    "ShiftedClock",
    "describe",
    "get_runtime",
    "install_runtime",
    "reset_runtime",
]
